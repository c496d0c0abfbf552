"""media_pool + media_worker: streams run in real worker processes, driven from this process.

The peer is a plain UDP socket of the test: it sends G.711 and RFC 4733 packets and reads what
the worker sends. The pool runs on this test's event loop, as it does in siproc's control
process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from siproc.media.codecs import get_codec
from siproc.media.codecs.g711 import decode_ulaw, encode_ulaw
from siproc.media.player import MediaFileError
from siproc.media.recorder import RecordFileError
from siproc.net.media_pool import INLINE_STREAMS, PACK_STREAMS, MediaPool, RemoteStream

HOST = "127.0.0.1"
PORTS = (42000, 43999)
RATE = 8000
EVENT_PT = 101
WIDE_EVENT_PT = 99  # telephone-event/48000, also negotiated


def _tone(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(RATE * seconds)) / RATE
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * freq * t), RATE, subtype="PCM_16")
    return path


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def _rtp(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, 0x1234) + payload


class Peer:
    """The far end: one UDP socket on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.received: list[bytes] = []
        self.seq = 0

    def drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(2048))
            except BlockingIOError:
                return

    def payloads(self, pt: int) -> list[bytes]:
        return [p[12:] for p in self.received if p[1] & 0x7F == pt]

    async def send_tone(self, port: int, freq: float, seconds: float) -> None:
        """G.711 u-law packets of a tone, one every 20 ms."""
        frames = int(seconds * 50)
        t = np.arange(160 * frames) / RATE
        pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        for i in range(frames):
            payload = encode_ulaw(pcm[160 * i : 160 * (i + 1)])
            self.sock.sendto(_rtp(0, self.seq, 160 * self.seq, payload, i == 0), (HOST, port))
            self.seq += 1
            self.drain()
            await asyncio.sleep(0.02)

    def send_digit(self, port: int, event: int, pt: int = EVENT_PT) -> None:
        """One RFC 4733 event: start, two updates, three end packets (same timestamp)."""
        ts = 160 * self.seq
        for n, (end, duration) in enumerate(
            [(0, 160), (0, 320), (0, 480), (1, 640), (1, 640), (1, 640)]
        ):
            payload = struct.pack("!BBH", event, (end << 7) | 10, duration)
            self.sock.sendto(_rtp(pt, self.seq, ts, payload, n == 0), (HOST, port))
            self.seq += 1

    def close(self) -> None:
        self.sock.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _closed(stream: RemoteStream) -> None:
    done = asyncio.get_running_loop().create_future()
    stream.close()
    stream.when_closed(lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)


def _run(test: Callable[[MediaPool], Awaitable[None]], workers: int = 2, idle: float = 0.0) -> None:
    """Run ``test`` on a pool; ``idle`` 0 (the default here): all workers up before it."""

    async def main() -> None:
        pool = MediaPool(
            asyncio.get_running_loop(), workers, log_level=3, rtcp_interval=0.5, idle=idle
        )
        await pool.started()
        try:
            await test(pool)
        finally:
            await pool.close()

    asyncio.run(main())


def _configure(stream: RemoteStream, peer: Peer) -> None:
    stream.configure(
        peer.address,
        get_codec("PCMU"),
        0,
        EVENT_PT,
        "sendrecv",
        telephone_event_rate=8000,
        receive_telephone_events={EVENT_PT: 8000, WIDE_EVENT_PT: 48000},
    )
    stream.configure_rtcp(mux=False)


def test_a_worker_plays_records_reports_dtmf_and_the_figures(tmp_path: Path) -> None:
    tone = _tone(tmp_path / "tone.wav", 1000, 0.6)
    record = tmp_path / "call.wav"

    async def test(pool: MediaPool) -> None:
        peer = Peer()
        stream = pool.open_stream(HOST, PORTS)
        assert PORTS[0] <= stream.local_port <= PORTS[1] and stream.local_port % 2 == 0
        stopped: list[str] = []
        digits: list[str] = []
        stream.on_stopped = stopped.append
        stream.on_dtmf = digits.append
        _configure(stream, peer)
        stream.start_recording(str(record))
        stream.start()
        stream.play(str(tone))
        assert stream.playing == [str(tone)]
        await peer.send_tone(stream.local_port, 440, 1.0)
        peer.send_digit(stream.local_port, 5)
        peer.send_digit(stream.local_port, 11, WIDE_EVENT_PT)  # the worker knows both types
        await _until(lambda: digits == ["5", "#"])
        await _until(lambda: stopped == [str(tone)])
        assert stream.playing == []
        await _closed(stream)
        peer.drain()
        peer.close()
        sent = np.concatenate([decode_ulaw(np.frombuffer(p, np.uint8)) for p in peer.payloads(0)])
        assert abs(_peak_hz(sent[: RATE // 2].astype(float)) - 1000) < 20
        stats = stream.stats  # the worker's final figures
        assert stats.packets_sent >= 50 and stats.packets_received >= 50
        assert stats.lost == 0

    _run(test)
    audio, rate = soundfile.read(record, dtype="int16")
    assert rate == RATE and len(audio) >= RATE  # complete: its header was finalised
    assert abs(_peak_hz(audio[RATE // 10 : RATE // 10 + RATE // 4].astype(float)) - 1000) < 30
    late = audio[int(0.7 * RATE) : int(0.95 * RATE)].astype(float)  # the file ended: 440 only
    assert abs(_peak_hz(late) - 440) < 20


def test_what_a_handler_must_hear_at_once_is_decided_without_the_worker(tmp_path: Path) -> None:
    long = _tone(tmp_path / "long.wav", 500, 5.0)

    async def test(pool: MediaPool) -> None:
        peer = Peer()
        stream = pool.open_stream(HOST, PORTS)
        _configure(stream, peer)
        stopped: list[str] = []
        stream.on_stopped = stopped.append
        with pytest.raises(MediaFileError, match=r"missing\.wav"):
            stream.play(str(tmp_path / "missing.wav"))
        with pytest.raises(RecordFileError, match="no-such-dir"):
            stream.start_recording(str(tmp_path / "no-such-dir" / "x.wav"))
        assert stream.recording is None
        stream.start()
        stream.play(str(long))
        stream.play(str(tmp_path / "long.wav"))
        assert stream.stop_last() == str(tmp_path / "long.wav")
        assert stopped == [str(tmp_path / "long.wav")]  # at once, not after a round trip
        assert stream.stop_recording() is None
        await _closed(stream)
        assert stopped == [str(tmp_path / "long.wav")]  # a stream that closes reports nothing
        peer.close()

    _run(test)


def test_a_killed_worker_ends_its_streams_media_and_a_new_one_takes_new_calls(
    tmp_path: Path,
) -> None:
    async def test(pool: MediaPool) -> None:
        peer = Peer()
        first = pool.open_stream(HOST, PORTS)
        _configure(first, peer)
        first.start()
        await _until(lambda: bool(peer.drain() or peer.received))
        victim = first._worker.process
        lost: list[bool] = []
        first.on_lost = lambda: lost.append(True)
        os.kill(victim.pid, signal.SIGKILL)
        await _until(lambda: first._worker not in pool._workers)
        assert lost == [True]  # the call hears it once (siproc then hangs it up)
        ended: list[bool] = []
        first.close()
        first.when_closed(lambda: ended.append(True))
        assert ended == [True]  # the worker is gone: nothing to wait for
        second = pool.open_stream(HOST, PORTS)
        assert second._worker.process.pid != victim.pid
        peer.received.clear()
        _configure(second, peer)
        second.start()
        await _until(lambda: bool(peer.drain() or peer.received))
        await _closed(second)
        assert second.stats.packets_sent > 0
        peer.close()

    _run(test, workers=1)


def test_closing_the_pool_finishes_the_recordings_of_open_streams(tmp_path: Path) -> None:
    record = tmp_path / "open.wav"

    async def test(pool: MediaPool) -> None:
        peer = Peer()
        stream = pool.open_stream(HOST, PORTS)
        _configure(stream, peer)
        stream.start_recording(str(record))
        stream.start()
        await peer.send_tone(stream.local_port, 700, 0.5)
        peer.close()
        workers = [w.process for w in pool._workers]
        await pool.close()  # no stream.close(): siproc quitting, or dying
        assert all(process.poll() is not None for process in workers)

    _run(test)
    audio, _ = soundfile.read(record, dtype="int16")
    assert len(audio) >= RATE * 0.4
    assert abs(_peak_hz(audio[: RATE // 4].astype(float)) - 700) < 20


def test_a_few_streams_share_a_worker_and_many_spread_over_all() -> None:
    async def test(pool: MediaPool) -> None:
        peer = Peer()
        streams = [pool.open_stream(HOST, PORTS) for _ in range(6)]
        assert [len(w.streams) for w in pool._workers] == [6, 0]  # one clock ticks, not two
        streams += [pool.open_stream(HOST, PORTS) for _ in range(2 * PACK_STREAMS)]
        assert [len(w.streams) for w in pool._workers] == [PACK_STREAMS + 3, PACK_STREAMS + 3]
        for stream in streams:
            _configure(stream, peer)
            stream.start()
        for stream in streams:
            await _closed(stream)
        assert all(len(w.streams) == 0 for w in pool._workers)
        peer.close()

    _run(test)


def test_a_stream_the_worker_cannot_take_ends_its_call_not_the_worker() -> None:
    """An open that arrives without its sockets (descriptors dropped at the worker's limit of
    open files) is refused: the call hears it at once (and is hung up by siproc), the worker
    goes on serving the next streams."""

    async def test(pool: MediaPool) -> None:
        worker = pool._workers[0]
        orphan = RemoteStream(worker, 10_000, HOST, 0)
        worker.streams[10_000] = orphan
        lost: list[bool] = []
        orphan.on_lost = lambda: lost.append(True)
        worker.channel.send(("open", 10_000, HOST, 0.5))  # no descriptors
        await _until(lambda: lost == [True])
        assert 10_000 not in worker.streams and orphan.closed
        peer = Peer()
        stream = pool.open_stream(HOST, PORTS)
        _configure(stream, peer)
        stream.start()
        await _until(lambda: bool(peer.drain() or peer.received))
        await _closed(stream)
        peer.close()

    _run(test, workers=1)


def test_workers_start_with_the_calls_that_need_them_and_stop_when_idle() -> None:
    """SIPROC_MEDIA_IDLE > 0: no worker until a stream needs one; the stream handed to a
    worker that is still starting plays once it is up; the next worker starts only when the
    running ones are full; an idle worker exits and a later stream starts a new one."""

    async def test(pool: MediaPool) -> None:
        await pool.started()  # returns at once: nothing to wait for
        assert pool._workers == []
        peer = Peer()
        first = pool.open_stream(HOST, PORTS)
        (worker,) = pool._workers
        assert not worker.ready.is_set()  # still importing: the stream waits in its channel
        _configure(first, peer)
        first.start()
        await _until(lambda: bool(peer.drain() or peer.received))
        assert worker.ready.is_set()
        more = [pool.open_stream(HOST, PORTS) for _ in range(PACK_STREAMS - 1)]
        assert len(pool._workers) == 1  # full now, not over
        extra = pool.open_stream(HOST, PORTS)
        assert len(pool._workers) == 2 and extra._worker is pool._workers[1]
        for stream in [first, *more, extra]:
            await _closed(stream)
        processes = [w.process for w in pool._workers]
        await _until(lambda: pool._workers == [], timeout=5)  # idle 0.3 s: both retired
        await _until(lambda: all(p.poll() is not None for p in processes), timeout=10)
        again = pool.open_stream(HOST, PORTS)
        assert again._worker.process.pid not in {p.pid for p in processes}
        peer.received.clear()
        _configure(again, peer)
        again.start()
        await _until(lambda: bool(peer.drain() or peer.received))
        await _closed(again)
        peer.close()

    _run(test, workers=2, idle=0.3)


def test_a_stream_opened_before_the_idle_time_is_up_keeps_its_worker() -> None:
    async def test(pool: MediaPool) -> None:
        first = pool.open_stream(HOST, PORTS)
        worker = first._worker
        await _closed(first)
        assert worker.idle_timer is not None  # counting down
        second = pool.open_stream(HOST, PORTS)  # before it ran out
        assert second._worker is worker and worker.idle_timer is None
        await asyncio.sleep(0.6)  # past the idle time: the worker carries a stream
        assert pool._workers == [worker] and worker.process.poll() is None
        await _closed(second)

    _run(test, workers=1, idle=0.3)


def test_a_few_calls_run_inline_and_a_worker_starts_only_when_more_may_come() -> None:
    """While no worker is ready the control process takes up to INLINE_STREAMS streams (a door
    phone's call needs no worker, and waits for none); half that many start one; once it is
    ready, or at the limit, streams go to workers."""

    async def test(pool: MediaPool) -> None:
        half = INLINE_STREAMS // 2
        for inline in range(half - 1):
            assert pool.takes_next(inline) is False
        assert pool._workers == []  # a few calls: no worker at all
        assert pool.takes_next(half - 1) is False  # still inline, but a worker starts
        (worker,) = pool._workers
        assert pool.takes_next(half) is False and len(pool._workers) == 1  # not a second one
        assert pool.takes_next(INLINE_STREAMS) is True  # at the limit: to the starting worker
        await _until(worker.ready.is_set)
        assert pool.takes_next(0) is True  # a worker is ready: new calls go to it

    _run(test, workers=2, idle=5.0)


def test_without_idle_time_every_stream_goes_to_a_worker() -> None:
    async def test(pool: MediaPool) -> None:
        assert pool.takes_next(0) is True

    _run(test, workers=1, idle=0.0)


def test_a_stream_that_cannot_bind_its_ports_leaves_no_worker_behind() -> None:
    """open_stream picks (or starts) its worker, and stops that worker's idle count, before it
    binds the ports: a bind that fails must not leave a worker that never retires."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind((HOST, 0))
    port = busy.getsockname()[1]
    full = (port - (port & 1), port - (port & 1) + 1)  # the one pair, half of it taken

    async def test(pool: MediaPool) -> None:
        with pytest.raises(OSError):
            pool.open_stream(HOST, full)  # the first stream: its worker starts for it
        await _until(lambda: pool._workers == [], timeout=5)
        first = pool.open_stream(HOST, PORTS)
        worker = first._worker
        await _closed(first)
        assert worker.idle_timer is not None
        with pytest.raises(OSError):
            pool.open_stream(HOST, full)  # an idle worker picked: its count had stopped
        await _until(lambda: pool._workers == [], timeout=5)

    try:
        _run(test, workers=1, idle=0.3)
    finally:
        busy.close()
