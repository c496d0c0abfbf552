"""MediaClock (virtual time), the symmetric RTP latch, and RtpStream on 127.0.0.1 sockets."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from siproc.media.codecs import get_codec
from siproc.media.codecs.g711 import decode_ulaw
from siproc.media.player import MediaFileError
from siproc.media.rtp import RtpHeader, RtpSender, parse_rtp
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream, SymmetricRtpLatch
from tests.rtp_peer import drain_rtp, udp_peer

HOST = "127.0.0.1"
PORTS = (40000, 49999)

# -- a virtual-time loop for the clock -------------------------------------------------------------


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop for MediaClock: time() and call_at(), in virtual time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, FakeHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._timers, (when, next(self._seq), handle, callback))
        return handle

    def call_soon(self, callback: Callable[[], None]) -> FakeHandle:
        return self.call_at(self.now, callback)

    def block(self, seconds: float) -> None:
        """The loop is busy: time passes, no timer runs."""
        self.now += seconds

    def run_until(self, until: float) -> None:
        while self._timers and self._timers[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)  # a late timer fires at the current time
            callback()
        self.now = max(self.now, until)

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t[2].cancelled)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.times: list[float] = []
        self.fail = fail

    def tick(self, now: float) -> None:
        self.times.append(now)
        if self.fail:
            raise RuntimeError("boom")


def make_clock(loop: FakeLoop, **kwargs: Any) -> MediaClock:
    return MediaClock(loop, **kwargs)  # type: ignore[arg-type]


def test_clock_paced_from_absolute_start() -> None:
    loop = FakeLoop(1000.0)
    clock = make_clock(loop)
    stream = Recorder()
    clock.add(stream)
    assert clock.running
    loop.run_until(1000.0 + 1.0 + 1e-9)
    assert len(stream.times) == 51
    # tick n runs at exactly start + n * 20 ms: no drift after 50 ticks
    assert stream.times == pytest.approx([1000.0 + n * 0.020 for n in range(51)], abs=1e-9)
    assert clock.skipped_ticks == 0


def test_clock_small_lateness_catches_up_without_skipping() -> None:
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    stream = Recorder()
    clock.add(stream)
    loop.run_until(0.0)  # tick 0
    loop.block(0.065)  # 3 ticks overdue
    loop.run_until(0.065)
    assert len(stream.times) == 4  # ticks 1, 2, 3 back to back
    assert clock.skipped_ticks == 0
    loop.run_until(0.100 + 1e-9)
    assert stream.times[-2:] == pytest.approx([0.080, 0.100])


def test_clock_skips_when_far_behind(caplog: pytest.LogCaptureFixture) -> None:
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    stream = Recorder()
    clock.add(stream)
    loop.run_until(0.0)
    loop.block(0.511)  # 25 ticks overdue
    with caplog.at_level(logging.WARNING, logger="siproc.net.clock"):
        loop.run_until(0.511)
    assert len(stream.times) == 2  # one tick now, no burst of 25
    assert clock.skipped_ticks == 24
    assert "skipped 24 ticks" in caplog.text
    loop.run_until(0.560 + 1e-9)
    assert stream.times[2:] == pytest.approx([0.520, 0.540, 0.560])  # back on the grid


def test_clock_isolates_failing_streams(caplog: pytest.LogCaptureFixture) -> None:
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    bad, good = Recorder(fail=True), Recorder()
    clock.add(bad)
    clock.add(good)
    with caplog.at_level(logging.ERROR, logger="siproc.net.clock"):
        loop.run_until(0.2 + 1e-9)
    assert len(good.times) == len(bad.times) == 11
    assert len(caplog.records) == 3  # the first three, then rate limited
    assert all(r.exc_info is not None for r in caplog.records)


def test_clock_sends_for_every_stream_then_receives_then_runs_deferred_work() -> None:
    """The three phases of a tick: every stream's tick (send), the receive phase, then what
    the streams deferred, in order; outside a tick, defer() refuses (the caller runs it)."""
    loop = FakeLoop(1000.0)
    clock = make_clock(loop)
    order: list[str] = []
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)

    def read_one() -> None:
        order.append(f"receive {a.recv(100).decode()}")

    class Stream:
        def __init__(self, name: str) -> None:
            self.name = name

        def tick(self, now: float) -> None:
            order.append(f"send {self.name}")
            assert clock.defer(lambda now: order.append(f"late {self.name}"))

    clock.add_reader(a.fileno(), read_one)
    clock.add(Stream("x"))
    clock.add(Stream("y"))
    b.send(b"p")
    loop.run_until(1000.0 + 1e-9)
    assert order == ["send x", "send y", "receive p", "late x", "late y"]
    assert not clock.defer(lambda now: None)
    clock.close()
    a.close()
    b.close()


def test_clock_starts_and_stops_with_streams() -> None:
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    assert not clock.running
    a, b = Recorder(), Recorder()
    clock.add(a)
    clock.add(b)
    loop.run_until(0.04 + 1e-9)
    clock.remove(a)
    assert clock.running
    clock.remove(b)
    clock.remove(b)  # no error
    assert not clock.running
    assert loop.pending == 0
    loop.run_until(1.0)
    assert len(a.times) == len(b.times) == 3
    clock.add(a)  # restarts from a new origin
    loop.run_until(1.0 + 0.02 + 1e-9)
    assert a.times[3:] == pytest.approx([1.0, 1.02])


def test_clock_after_next_tick_runs_once_after_the_tick_and_at_once_when_stopped() -> None:
    """What a media worker's commands wait for (net/media_channel.py pacing)."""
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    seen: list[str] = []
    clock.after_next_tick(lambda: seen.append("stopped"))  # no tick to wait for
    assert clock.next_due is None
    loop.run_until(0.0)
    assert seen == ["stopped"]

    class Stream:
        def tick(self, now: float) -> None:
            seen.append(f"tick {now:.2f}")
            if not clock.defer(lambda now: seen.append("deferred")):
                raise AssertionError("a tick defers")

    stream = Stream()
    clock.add(stream)
    assert clock.next_due == pytest.approx(0.0)
    clock.after_next_tick(lambda: seen.append("after"))
    loop.run_until(0.02 + 1e-9)
    assert seen[1:] == ["tick 0.00", "deferred", "after", "tick 0.02", "deferred"]
    assert clock.next_due == pytest.approx(0.04)
    clock.after_next_tick(lambda: seen.append("after stop"))
    clock.remove(stream)  # stopped before its next tick: the work is not lost
    loop.run_until(0.1)
    assert seen[-1] == "after stop"


def test_clock_remove_from_inside_tick() -> None:
    loop = FakeLoop(0.0)
    clock = make_clock(loop)
    later = Recorder()

    class Quitter:
        def tick(self, now: float) -> None:
            clock.remove(self)
            clock.remove(later)

    clock.add(Quitter())
    clock.add(later)
    loop.run_until(0.1)
    assert later.times == []
    assert not clock.running


# -- the latch -------------------------------------------------------------------------------------


def test_latch() -> None:
    latch = SymmetricRtpLatch(relatch_packets=3)
    a, b, c = ("10.0.0.1", 4000), ("10.0.0.1", 4002), ("10.0.0.9", 5000)
    assert latch.offer(a) and latch.address == a
    assert not latch.offer(b)
    assert not latch.offer(b)
    assert latch.offer(a)  # a interrupts b: b's count restarts
    assert not latch.offer(b)
    assert not latch.offer(c)  # a different candidate restarts the count too
    assert not latch.offer(b)
    assert not latch.offer(b)
    assert latch.offer(b) and latch.address == b
    assert latch.relatches == 1
    assert not latch.offer(a)
    latch.reset()
    assert latch.address is None
    assert latch.offer(c) and latch.address == c


def test_trusted_latch_takes_only_the_sdp_or_signalling_address() -> None:
    latch = SymmetricRtpLatch(relatch_packets=2)
    latch.trusted = frozenset({"192.0.2.1"})  # the signalling peer
    latch.sdp_host = "198.51.100.7"
    victim = ("203.0.113.66", 9)
    assert not latch.offer(victim) and latch.address is None  # a forged source never latches
    assert latch.offer(("198.51.100.7", 4000))  # the SDP's host, any port (NAT)
    assert not latch.offer(victim) and not latch.offer(victim) and not latch.offer(victim)
    assert latch.address == ("198.51.100.7", 4000)
    assert not latch.offer(("192.0.2.1", 7000))
    assert latch.offer(("192.0.2.1", 7000)) and latch.address == ("192.0.2.1", 7000)


# -- RtpStream, ticked by hand ---------------------------------------------------------------------


def write_tone(path: Path, freq: float, seconds: float, rate: int = 8000) -> str:
    t = np.arange(round(seconds * rate)) / rate
    soundfile.write(str(path), 0.5 * np.sin(2 * np.pi * freq * t), rate, subtype="PCM_16")
    return str(path)


def peak_frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def open_stream(loop: asyncio.AbstractEventLoop, seed: int = 7) -> RtpStream:
    return RtpStream.open(loop, MediaClock(loop), HOST, PORTS, random.Random(seed))


def test_open_binds_even_pair(loop: asyncio.AbstractEventLoop) -> None:
    stream = open_stream(loop)
    try:
        assert stream.local_port % 2 == 0
        assert PORTS[0] <= stream.local_port < PORTS[1]
        for port in (stream.local_port, stream.local_port + 1):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(OSError):
                probe.bind((HOST, port))
            probe.close()
    finally:
        stream.close()


def test_open_errors(loop: asyncio.AbstractEventLoop) -> None:
    first = open_stream(loop)
    try:
        port = first.local_port
        with pytest.raises(OSError, match="no free RTP/RTCP port pair"):
            RtpStream.open(loop, MediaClock(loop), HOST, (port, port + 1), random.Random(1))
        with pytest.raises(ValueError, match="no even/odd port pair"):
            RtpStream.open(loop, MediaClock(loop), HOST, (port + 1, port + 1))
        with pytest.raises(ValueError, match="IP address"):
            RtpStream.open(loop, MediaClock(loop), "localhost", PORTS)
        with pytest.raises(ValueError, match="port range"):
            RtpStream.open(loop, MediaClock(loop), HOST, (5000, 4000))
    finally:
        first.close()


def test_open_ipv6(loop: asyncio.AbstractEventLoop) -> None:
    try:
        stream = RtpStream.open(loop, MediaClock(loop), "::1", PORTS, random.Random(3))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert stream.local_port % 2 == 0
        with pytest.raises(ValueError, match="address family"):
            stream.configure((HOST, 4000), get_codec("PCMU"), 0, None, "sendrecv")
        stream.configure(("::1", 4000), get_codec("PCMU"), 0, None, "sendrecv")
    finally:
        stream.close()


def test_play_sends_paced_packets(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = open_stream(loop)
    stopped: list[str] = []
    stream.on_stopped = stopped.append
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, 101, "sendrecv")
    path = write_tone(tmp_path / "a440.wav", 440, 0.3)
    stream.play(path)
    assert stream.playing == [path]
    for n in range(15):
        assert stopped == []
        stream.tick(n * 0.02)
    assert stopped == [path]  # reported with the last frame
    stream.tick(0.30)
    stream.tick(0.32)
    packets = drain_rtp(peer, 17)
    headers = [h for h, _ in packets]
    assert {h.ssrc for h in headers} == {stream.ssrc}
    assert {h.payload_type for h in headers} == {0}
    assert [h.marker for h in headers] == [True] + [False] * 16
    first = headers[0]
    assert [h.sequence for h in headers] == [(first.sequence + i) % 65536 for i in range(17)]
    assert [h.timestamp for h in headers] == [
        (first.timestamp + 160 * i) % (1 << 32) for i in range(17)
    ]
    audio = decode_ulaw(b"".join(p for _, p in packets[:15]))
    assert len(audio) == 2400
    assert abs(peak_frequency(audio) - 440) <= 4
    assert all(p == b"\xff" * 160 for _, p in packets[15:])  # silence afterwards
    assert stopped == [path]
    assert stream.stats.packets_sent == 17
    assert stream.stats.bytes_sent == 17 * 172
    stream.close()
    assert stopped == [path]


def test_silence_then_talkspurt_marker(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = open_stream(loop)
    stream.configure(peer.getsockname(), get_codec("PCMA"), 8, None, "sendrecv")
    for n in range(3):
        stream.tick(n * 0.02)
    stream.play(write_tone(tmp_path / "t.wav", 1000, 0.04))
    for n in range(3, 6):
        stream.tick(n * 0.02)
    packets = drain_rtp(peer, 6)
    assert [h.marker for h, _ in packets] == [True, False, False, True, False, False]
    silence = b"\xd5" * 160  # A-law zero
    assert [p == silence for _, p in packets] == [True, True, True, False, False, True]
    assert {h.payload_type for h, _ in packets} == {8}
    stream.close()


def test_no_sending_on_hold_but_clock_runs(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = open_stream(loop)
    stopped: list[str] = []
    stream.on_stopped = stopped.append
    codec = get_codec("PCMU")
    stream.configure(peer.getsockname(), codec, 0, None, "sendrecv")
    stream.tick(0.0)
    stream.configure(peer.getsockname(), codec, 0, None, "recvonly")
    path = write_tone(tmp_path / "t.wav", 440, 0.04)
    stream.play(path)
    stream.tick(0.02)
    stream.tick(0.04)
    assert stopped == [path]  # the file played out while on hold
    stream.configure(peer.getsockname(), codec, 0, None, "sendrecv")
    stream.tick(0.06)
    stream.configure(("0.0.0.0", 9), codec, 0, None, "sendrecv")  # RFC 2543 hold
    stream.tick(0.08)
    stream.configure((peer.getsockname()[0], 0), codec, 0, None, "sendrecv")  # stream disabled
    stream.tick(0.10)
    stream.configure(peer.getsockname(), codec, 0, None, "sendrecv")
    stream.tick(0.12)
    (h0, _), (h1, _), (h2, _) = drain_rtp(peer, 3)
    assert h1.timestamp == (h0.timestamp + 3 * 160) % (1 << 32)
    assert h2.timestamp == (h0.timestamp + 6 * 160) % (1 << 32)
    assert h1.sequence == (h0.sequence + 1) % 65536
    assert (h0.marker, h1.marker, h2.marker) == (True, True, True)  # each resume is marked
    stream.close()


def test_unproven_far_end_gets_a_limited_number_of_packets(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = open_stream(loop)
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
    stream.guard_unproven(3)
    for i in range(6):
        stream.tick(i * 0.02)
    assert len(drain_rtp(peer, 3)) == 3
    peer.settimeout(0.1)
    with pytest.raises(TimeoutError):
        peer.recv(2048)
    stream.prove()  # the ACK came
    stream.tick(0.2)
    assert len(drain_rtp(peer, 1)) == 1
    stream.close()


def test_stop_last_and_close(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    stream = open_stream(loop)
    stopped: list[str] = []
    stream.on_stopped = stopped.append
    a = write_tone(tmp_path / "a.wav", 440, 1.0)
    b = write_tone(tmp_path / "b.wav", 880, 1.0)
    assert stream.stop_last() is None
    stream.play(a)
    stream.play(b)
    assert stream.stop_last() == b
    assert stopped == [b]
    with pytest.raises(MediaFileError, match="no such file"):
        stream.play(str(tmp_path / "missing.wav"))
    stream.close()
    stream.close()
    assert stopped == [b]  # close reports nothing
    assert stream.closed
    with pytest.raises(RuntimeError):
        stream.play(a)
    with pytest.raises(RuntimeError):
        stream.start()


def test_configure_validates(loop: asyncio.AbstractEventLoop) -> None:
    stream = open_stream(loop)
    codec = get_codec("PCMU")
    with pytest.raises(ValueError, match="direction"):
        stream.configure((HOST, 4000), codec, 0, None, "both")
    with pytest.raises(ValueError, match="IP address"):
        stream.configure(("example.com", 4000), codec, 0, None, "sendrecv")
    with pytest.raises(ValueError, match="payload type"):
        stream.configure((HOST, 4000), codec, 128, None, "sendrecv")
    stream.close()


def rtp(pt: int = 0, seq: int = 1, payload: bytes = b"\xff" * 160, marker: bool = False) -> bytes:
    return (
        RtpHeader(payload_type=pt, sequence=seq, timestamp=seq * 160, ssrc=99, marker=marker).pack()
        + payload
    )


def test_receive_path(loop: asyncio.AbstractEventLoop) -> None:
    stream = open_stream(loop)
    seen: list[tuple[int, int, bytes]] = []
    stream.on_rtp = lambda h, p: seen.append((h.payload_type, h.sequence, bytes(p)))
    stream.configure((HOST, 4000), get_codec("PCMU"), 0, 101, "sendrecv")
    src = (HOST, 5000)
    stream.datagram_received(memoryview(b"garbage"), src)
    stream.datagram_received(memoryview(rtp(pt=8)), src)  # not negotiated
    stream.datagram_received(memoryview(b"\x80\xc8\x00\x06" + b"\x00" * 24), src)  # RTCP
    assert stream.latched_address is None
    stream.datagram_received(memoryview(rtp(seq=1)), src)
    stream.datagram_received(memoryview(rtp(pt=101, seq=2, payload=b"\x01\x0a\x00\xa0")), src)
    stream.datagram_received(memoryview(rtp(seq=3)), (HOST, 6000))  # stray source
    assert stream.latched_address == src
    assert stream.remote_address == src
    assert seen == [(0, 1, b"\xff" * 160), (101, 2, b"\x01\x0a\x00\xa0")]
    stats = stream.stats
    assert (stats.packets_invalid, stats.packets_ignored, stats.rtcp_received) == (1, 2, 1)
    assert (stats.packets_received, stats.bytes_received) == (2, 172 + 16)
    stream.configure((HOST, 4000), get_codec("PCMU"), 0, 101, "sendonly")
    stream.datagram_received(memoryview(rtp(seq=4)), src)
    assert len(seen) == 2  # counted, not delivered: we do not receive in sendonly
    assert stream.stats.packets_received == 3
    stream.configure((HOST, 4002), get_codec("PCMU"), 0, 101, "sendrecv")  # re-INVITE moved it
    assert stream.latched_address is None
    assert stream.remote_address == (HOST, 4002)
    stream.close()


def test_hook_errors_do_not_escape(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    stream = open_stream(loop)

    def broken(header: RtpHeader, payload: memoryview) -> None:
        raise RuntimeError("hook broke")

    stream.on_rtp = broken
    stream.datagram_received(memoryview(rtp()), (HOST, 5000))
    assert "hook broke" in caplog.text
    stream.close()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_latching_over_sockets() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sdp_peer, real_peer = udp_peer(), udp_peer()
        stream = RtpStream.open(loop, MediaClock(loop), HOST, PORTS, random.Random(11))
        try:
            stream.configure(sdp_peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
            stream.tick(0.0)
            assert len(drain_rtp(sdp_peer, 1)) == 1  # before latching: to the SDP address
            sender = RtpSender(0, random.Random(1))
            real_peer.sendto(sender.packet(b"\xff" * 160, 160), (HOST, stream.local_port))
            await until(lambda: stream.stats.packets_received == 1)
            assert stream.latched_address == real_peer.getsockname()
            stream.tick(0.02)
            stream.tick(0.04)
            assert len(drain_rtp(real_peer, 2)) == 2
            sdp_peer.setblocking(False)
            with pytest.raises(BlockingIOError):
                sdp_peer.recv(2048)
        finally:
            stream.close()
            sdp_peer.close()
            real_peer.close()

    asyncio.run(main())


def test_two_streams_with_the_media_clock(tmp_path: Path) -> None:
    """End to end on loopback: A plays a 0.3 s 440 Hz file (16 kHz stereo) to B."""
    t = np.arange(4800) / 16000
    path = str(tmp_path / "a440.wav")
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(path, np.stack([tone, tone], axis=1), 16000, subtype="PCM_16")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        a = RtpStream.open(loop, clock, HOST, PORTS, random.Random(1))
        b = RtpStream.open(loop, clock, HOST, PORTS, random.Random(2))
        received: list[tuple[RtpHeader, bytes, float]] = []
        b.on_rtp = lambda h, p: received.append((h, bytes(p), loop.time()))
        stopped: list[str] = []
        done = asyncio.Event()

        def on_stopped(name: str) -> None:
            stopped.append(name)
            done.set()

        a.on_stopped = on_stopped
        try:
            a.configure((HOST, b.local_port), get_codec("PCMU"), 0, None, "sendrecv")
            b.configure((HOST, a.local_port), get_codec("PCMU"), 0, None, "recvonly")
            a.play(path)
            a.start()
            b.start()
            started = loop.time()
            await asyncio.wait_for(done.wait(), 2.0)
            elapsed = loop.time() - started
            await until(lambda: len(received) >= 16)
        finally:
            a.close()
            b.close()
        assert clock.running is False
        assert stopped == [path]
        assert 0.2 < elapsed < 1.0  # 15 ticks of 20 ms, generously
        headers = [h for h, _, _ in received]
        assert {h.ssrc for h in headers} == {a.ssrc}
        assert {h.payload_type for h in headers} == {0}
        assert headers[0].marker and not any(h.marker for h in headers[1:])
        for prev, cur in itertools.pairwise(headers):
            assert cur.sequence == (prev.sequence + 1) % 65536
            assert cur.timestamp == (prev.timestamp + 160) % (1 << 32)
        audio = decode_ulaw(b"".join(p for _, p, _ in received[:15]))
        assert abs(peak_frequency(audio) - 440) <= 4
        assert a.stats.packets_received == 0  # B is recvonly: it sends nothing
        assert b.stats.packets_sent == 0
        assert a.stats.packets_sent >= 16

    asyncio.run(main())


def test_srtp_fast_receive_path_over_sockets() -> None:
    """SRTP packets read from the socket are unprotected in the hot path (not the general
    ``_datagram``): a good one is accepted and latched to; forged, replayed, plain and runt
    datagrams are counted in packets_invalid and latch nothing; a verified packet whose clear
    header has a CSRC list is still parsed (its payload after the list)."""
    from siproc.media.srtp import SrtpContext
    from siproc.sdp.crypto import CryptoSuite, MasterKey
    from siproc.sdp.sdes import SrtpParams

    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    ours, theirs = MasterKey.generate(suite), MasterKey.generate(suite)
    peer_ctx = SrtpContext(suite, theirs, ours)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peer, forger = udp_peer(), udp_peer()
        stream = RtpStream.open(loop, MediaClock(loop), HOST, PORTS, random.Random(6))
        seen: list[tuple[int, int, bytes]] = []
        stream.on_rtp = lambda h, p: seen.append((h.sequence, h.ssrc, bytes(p)))
        general: list[int] = []
        general_path = stream._datagram

        def spy(data: memoryview, source: tuple[str, int], arrival: float) -> None:
            general.append(len(data))
            general_path(data, source, arrival)

        stream._datagram = spy  # type: ignore[method-assign]
        target = (HOST, stream.local_port)
        try:
            stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
            stream.configure_srtp(SrtpParams(suite, ours, theirs, 1))
            good = peer_ctx.protect(rtp(seq=1, payload=b"\x11" * 160))
            forged = bytearray(peer_ctx.protect(rtp(seq=2)))
            forged[20] ^= 1
            for datagram in (bytes(forged), rtp(seq=3), b"\x80"):
                forger.sendto(datagram, target)
            await until(lambda: stream.stats.packets_invalid == 3)
            assert stream.latched_address is None and seen == []
            peer.sendto(good, target)
            await until(lambda: stream.stats.packets_received == 1)
            forger.sendto(good, target)  # a replay
            await until(lambda: stream.stats.packets_invalid == 4)
            assert seen == [(1, 99, b"\x11" * 160)]
            assert stream.latched_address == peer.getsockname()
            # One CSRC (CC=1): the clear header is not the 12-octet form.
            with_csrc = bytearray(rtp(seq=4, payload=(7).to_bytes(4, "big") + b"\x22" * 160))
            with_csrc[0] = 0x81
            peer.sendto(peer_ctx.protect(bytes(with_csrc)), target)
            peer.sendto(peer_ctx.protect(rtp(seq=5, payload=b"\x33" * 160)), target)
            await until(lambda: stream.stats.packets_received == 3)
            assert seen[1:] == [(4, 99, b"\x22" * 160), (5, 99, b"\x33" * 160)]
            assert stream.latched_address == peer.getsockname()
            assert stream.stats.packets_invalid == 4
            assert general == []  # every SRTP packet took the hot path
        finally:
            stream.close()
            peer.close()
            forger.close()

    asyncio.run(main())


def test_srtp_stream_over_sockets(caplog: pytest.LogCaptureFixture) -> None:
    """configure_srtp: what leaves is SRTP/SRTCP under our key, what arrives must verify under
    theirs (RFC 3711); plain, forged and replayed packets are dropped, and no key is logged."""
    from siproc.media.rtcp import SenderReport
    from siproc.media.srtp import SrtpContext
    from siproc.sdp.crypto import CryptoSuite, MasterKey
    from siproc.sdp.sdes import SrtpParams

    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    ours, theirs = MasterKey.generate(suite), MasterKey.generate(suite)
    peer_ctx = SrtpContext(suite, theirs, ours)
    report = SenderReport(99, 1 << 40, 1000, 1, 160).pack()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peer = udp_peer()
        stream = RtpStream.open(loop, MediaClock(loop), HOST, PORTS, random.Random(5))
        seen: list[tuple[int, bytes]] = []
        stream.on_rtp = lambda h, p: seen.append((h.sequence, bytes(p)))
        try:
            with caplog.at_level(logging.DEBUG):
                stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
                stream.configure_rtcp(mux=True)
                stream.configure_srtp(SrtpParams(suite, ours, theirs, 1))
                stream.tick(0.0)
                data = peer.recv(2048)
                assert len(data) == 172 + 10
                header, payload = parse_rtp(peer_ctx.unprotect(data) or b"")
                assert header.ssrc == stream.ssrc and len(payload) == 160
                assert bytes(payload) not in data  # encrypted on the wire
                # The hot receive path (a real socket) decrypts and latches.
                protected = peer_ctx.protect(rtp(seq=1, payload=b"\x11" * 160))
                peer.sendto(protected, (HOST, stream.local_port))
                await until(lambda: stream.stats.packets_received == 1)
                assert seen == [(1, b"\x11" * 160)]
                assert stream.latched_address == peer.getsockname()
                src = (HOST, 5000)
                stream.datagram_received(memoryview(protected), src)  # replayed
                stream.datagram_received(memoryview(rtp(seq=2)), src)  # plain RTP
                forged = bytearray(peer_ctx.protect(rtp(seq=3)))
                forged[20] ^= 1
                stream.datagram_received(memoryview(bytes(forged)), src)
                assert stream.stats.packets_invalid == 3 and len(seen) == 1
                assert stream.latched_address == peer.getsockname()  # no latching to forgers
                # SRTCP multiplexed on the RTP port (RFC 5761): verified, plain refused.
                stream.datagram_received(memoryview(peer_ctx.protect_rtcp(report)), src)
                stream.datagram_received(memoryview(report), src)
                assert (stream.stats.rtcp_received, stream.stats.rtcp_invalid) == (2, 1)
                # A re-INVITE that keeps the keys keeps the context: the replay is still seen.
                stream.configure_srtp(SrtpParams(suite, ours, theirs, 1))
                stream.datagram_received(memoryview(protected), src)
                assert stream.stats.packets_invalid == 4
                stream.configure_srtp(None)  # plain RTP again
                stream.datagram_received(memoryview(rtp(seq=4)), peer.getsockname())
                assert [s for s, _ in seen] == [1, 4]
                stream.configure_srtp(SrtpParams(suite, ours, theirs, 1))
                stream.close()  # the RTCP BYE goes out as SRTCP
            bye = peer.recv(2048)
            while not 192 <= bye[1] <= 223:
                bye = peer.recv(2048)
            assert peer_ctx.unprotect_rtcp(bye) is not None
        finally:
            stream.close()
            peer.close()
        for key in (ours, theirs):
            assert key.base64() not in caplog.text
        assert "SRTP on (AES_CM_128_HMAC_SHA1_80)" in caplog.text

    asyncio.run(main())
