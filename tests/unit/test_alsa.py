"""The ALSA bridges (siproc.net.alsa): worker threads, bounded queues, rates, counters.

Two kinds of test: with the real alsa-lib on ``file`` plugin PCMs of a configuration the test
writes (tests/alsa_conf.py; no sound card needed), and with a scripted stand-in for the
``alsaaudio`` module for what a file PCM cannot do on demand (overruns, underruns, a stereo or
24-bit device, a device that fails mid-call).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from siproc.media.codecs import get_codec
from siproc.media.codecs.g711 import encode_ulaw
from siproc.media.rtp import RtpSender, parse_rtp
from siproc.net import alsa
from siproc.net.alsa import (
    ALSA_MISSING,
    PREFILL_PERIODS,
    PRIME_FRAMES,
    QUEUE_FRAMES,
    CaptureBridge,
    PlaybackBridge,
    SoundCardError,
    SoundCards,
    load_alsaaudio,
    sound_devices,
)
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream
from tests.alsa_conf import (
    CAPTURE,
    DUPLEX,
    PLAYBACK,
    aplay_names,
    dominant,
    level,
    read_raw,
    write_alsa_config,
    write_tone_raw,
)

RATE = 8000
N = 160  # samples per 20 ms at 8 kHz
CAPTURE_HZ = 660.0


class Rig:
    def __init__(self, directory: Path) -> None:
        self.capture_raw = write_tone_raw(directory / "tone.raw", CAPTURE_HZ, 20.0, RATE)
        self.playback_raw = directory / "out.raw"
        self.config = write_alsa_config(directory, self.capture_raw, self.playback_raw, RATE)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    assert load_alsaaudio() is not None, "pyalsaaudio missing: run scripts/install-deps.sh"
    rig = Rig(tmp_path)
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(rig.config))
    return rig


class Reports:
    """Stands in for the event loop a bridge reports its failure to (called in its thread)."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.event = threading.Event()

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        callback(*args)

    def on_failed(self, bridge: Any, reason: str) -> None:
        self.failures.append(reason)
        self.event.set()


def paced_reads(bridge: CaptureBridge, samples: int, ticks: int) -> list[np.ndarray]:  # type: ignore[type-arg]
    """Read like the media clock: one frame per 20 ms, paced from an absolute start."""
    frames = []
    start = time.monotonic()
    for tick in range(ticks):
        time.sleep(max(0.0, start + (tick + 1) * 0.02 - time.monotonic()))
        frame = bridge.read_frame(samples)
        if frame is not None:
            frames.append(frame.copy())
    return frames


def tone(freq: float, samples: int, rate: int, start: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    t = np.arange(start, start + samples) / rate
    return np.round(0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# -- real ALSA: file plugin PCMs ---------------------------------------------------------------


def test_sound_devices_are_named_as_aplay_names_them(rig: Rig) -> None:
    devices = sound_devices()
    assert devices is not None
    assert devices["playback"] == aplay_names(rig.config)
    assert devices["capture"] == aplay_names(rig.config, capture=True)
    assert {CAPTURE, PLAYBACK, DUPLEX} <= set(devices["capture"])


def test_capture_delivers_the_tone_one_frame_per_tick(rig: Rig) -> None:
    reports = Reports()
    bridge = CaptureBridge(load_alsaaudio(), CAPTURE, RATE, reports, on_failed=reports.on_failed)
    bridge.start()
    try:
        assert bridge.wait_open(5)
        assert (bridge.device_rate, bridge.device_channels) == (RATE, 1)
        frames = paced_reads(bridge, N, 75)
    finally:
        bridge.close()
    assert bridge.join(2)
    assert reports.failures == []
    assert len(frames) >= 75 - PRIME_FRAMES - 2  # priming, and a little slack for a slow CI
    audio = np.concatenate(frames).astype(np.float64) / 32768
    assert dominant(audio, RATE) == pytest.approx(CAPTURE_HZ, abs=2)
    assert level(audio) > 0.3
    # Two unsynchronised clocks, but both keep to real time: at most a hiccup on a busy CI.
    assert bridge.stats.overruns <= 1
    assert bridge.stats.underruns <= 2


def test_capture_resamples_to_the_rate_the_stream_asks_for(rig: Rig) -> None:
    """The device runs at 8 kHz; the stream asks for 16 kHz frames (G.722): soxr converts."""
    bridge = CaptureBridge(load_alsaaudio(), CAPTURE, RATE, Reports())
    bridge.start()
    try:
        frames = paced_reads(bridge, 2 * N, 75)
    finally:
        bridge.close()
        bridge.join(2)
    assert all(len(frame) == 2 * N for frame in frames)
    assert len(frames) >= 60  # the resampler's first block comes after a few chunks
    audio = np.concatenate(frames).astype(np.float64) / 32768
    assert dominant(audio, 2 * RATE) == pytest.approx(CAPTURE_HZ, abs=2)
    assert bridge.stats.overruns <= 1


def test_capture_keeps_to_real_time_on_an_unpaced_pcm(rig: Rig) -> None:
    """The null slave returns at once; the worker must not race through the file."""
    bridge = CaptureBridge(load_alsaaudio(), CAPTURE, RATE, Reports())
    bridge.start()
    try:
        assert bridge.wait_open(5)
        started = time.monotonic()
        time.sleep(0.5)
        read = bridge.stats.frames
        elapsed = time.monotonic() - started
    finally:
        bridge.close()
        bridge.join(2)
    assert read <= RATE * (elapsed + 0.1)  # one period ahead at most, plus the open
    assert read >= RATE * 0.3


def test_playback_writes_the_frames_resampled_to_the_device(rig: Rig) -> None:
    """Frames at 16 kHz (a G.722 call) into an 8 kHz device: the file holds the tone."""
    bridge = PlaybackBridge(load_alsaaudio(), PLAYBACK, RATE, Reports())
    bridge.start()
    assert bridge.wait_open(5)
    for tick in range(50):
        bridge.write_frame(tone(1000, 2 * N, 2 * RATE, tick * 2 * N), 2 * RATE)
        time.sleep(0.02)
    bridge.close()
    assert bridge.join(2)
    data = read_raw(rig.playback_raw)
    prefill = PREFILL_PERIODS * N
    assert (data[:prefill] == 0).all()
    # soxr keeps up to one block (about 60 ms) back
    assert prefill + 50 * N - 4 * N <= len(data) <= prefill + 50 * N
    assert dominant(data[prefill:], RATE) == pytest.approx(1000, abs=2)
    assert level(data[prefill + N :]) > 0.25
    assert bridge.stats.overruns == bridge.stats.underruns == 0


def test_a_stopped_playback_writes_no_more(rig: Rig) -> None:
    bridge = PlaybackBridge(load_alsaaudio(), PLAYBACK, RATE, Reports())
    bridge.start()
    assert bridge.wait_open(5)
    for tick in range(10):
        bridge.write_frame(tone(500, N, RATE, tick * N), RATE)
    bridge.close()
    assert bridge.join(1)
    size = rig.playback_raw.stat().st_size
    bridge.write_frame(tone(500, N, RATE), RATE)  # after close: ignored
    time.sleep(0.1)
    assert rig.playback_raw.stat().st_size == size


def test_opening_an_unknown_device_is_reported_with_alsas_reason(rig: Rig) -> None:
    reports = Reports()
    bridge = CaptureBridge(load_alsaaudio(), "nosuch", RATE, reports, on_failed=reports.on_failed)
    bridge.start()
    assert reports.event.wait(5)
    assert bridge.join(2)
    assert reports.failures == [
        "cannot open ALSA capture device 'nosuch': no such file or directory"
    ]
    assert not bridge.wait_open(0)
    assert bridge.read_frame(N) is None


# -- a scripted alsaaudio stand-in ---------------------------------------------------------------


class FakeAlsaError(Exception):
    pass


class FakeAlsa:
    """The part of the alsaaudio module the bridges use; each PCM follows ``script``."""

    ALSAAudioError = FakeAlsaError
    PCM_CAPTURE, PCM_PLAYBACK = 1, 0
    PCM_NORMAL, PCM_NONBLOCK = 0, 1
    PCM_FORMAT_S16_LE = 2

    def __init__(self, *, rate: int = RATE, channels: int = 1, format_name: str = "S16_LE") -> None:
        self.rate, self.channels, self.format_name = rate, channels, format_name
        self.reads: list[Callable[[FakePcm], tuple[int, bytes]]] = []  # scripted, then tone
        self.writes: list[int] = []  # scripted results, then success
        self.pcms: list[FakePcm] = []

    def PCM(self, **params: Any) -> FakePcm:
        pcm = FakePcm(self, params)
        if params["mode"] == self.PCM_NORMAL:
            self.pcms.append(pcm)
        return pcm


class FakePcm:
    def __init__(self, alsa: FakeAlsa, params: dict[str, Any]) -> None:
        self.alsa = alsa
        self.params = params
        self.period = alsa.rate * 20 // 1000
        self.written: list[bytes] = []
        self.closed = False
        self.position = 0

    def info(self) -> dict[str, Any]:
        a = self.alsa
        return {"rate": a.rate, "channels": a.channels, "format_name": a.format_name}

    def read(self) -> tuple[int, bytes]:
        time.sleep(0.02)  # paced like a device
        if self.alsa.reads:
            return self.alsa.reads.pop(0)(self)
        frame = tone(440, self.period, self.alsa.rate, self.position)
        self.position += self.period
        return self.period, np.repeat(frame, self.alsa.channels).astype("<i2").tobytes()

    def write(self, data: bytes) -> int:
        if self.alsa.writes:
            result = self.alsa.writes.pop(0)
            if result < 0:
                return result
        self.written.append(bytes(data))
        return len(data) // (2 * self.alsa.channels)

    def close(self) -> None:
        self.closed = True


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_device_is_probed_non_blocking_then_opened_blocking() -> None:
    fake = FakeAlsa()
    seen: list[dict[str, Any]] = []
    original = fake.PCM

    def record(**params: Any) -> FakePcm:
        seen.append(params)
        return original(**params)

    fake.PCM = record  # type: ignore[method-assign]
    bridge = CaptureBridge(fake, "hw:0", 16000, Reports())
    bridge.start()
    assert bridge.wait_open(2)
    bridge.close()
    assert bridge.join(2)
    assert [p["mode"] for p in seen] == [fake.PCM_NONBLOCK, fake.PCM_NORMAL]
    assert seen[1] | {"mode": None} == {
        "mode": None,
        "type": fake.PCM_CAPTURE,
        "device": "hw:0",
        "rate": 16000,
        "channels": 1,
        "format": fake.PCM_FORMAT_S16_LE,
        "periodsize": 320,
        "periods": alsa.PERIODS,
    }
    assert fake.pcms[0].closed  # the worker closes what it opened


def test_capture_overruns_are_counted_and_recovered() -> None:
    fake = FakeAlsa()
    fake.reads = [lambda pcm: (-errno.EPIPE, b"")] * 2
    bridge = CaptureBridge(fake, "hw:0", RATE, Reports())
    bridge.start()
    try:
        frames = paced_reads(bridge, N, 20)
    finally:
        bridge.close()
        bridge.join(2)
    assert bridge.stats.overruns == 2
    assert len(frames) >= 10  # and audio flows after them


def test_a_stereo_capture_device_is_mixed_down() -> None:
    fake = FakeAlsa(channels=2)
    bridge = CaptureBridge(fake, "hw:0", RATE, Reports())
    bridge.start()
    try:
        frames = paced_reads(bridge, N, 12)
    finally:
        bridge.close()
        bridge.join(2)
    assert bridge.device_channels == 2
    assert frames
    audio = np.concatenate(frames)
    assert np.abs(audio.astype(np.int32) - tone(440, len(audio), RATE)).max() <= 1


def test_a_device_without_16_bit_samples_is_refused() -> None:
    reports = Reports()
    fake = FakeAlsa(format_name="S32_LE")
    bridge = PlaybackBridge(fake, "hw:0", RATE, reports, on_failed=reports.on_failed)
    bridge.start()
    assert reports.event.wait(2)
    assert reports.failures == [
        "ALSA playback device 'hw:0' does not take 16-bit samples (S32_LE); "
        "use a plughw: or plug device"
    ]
    assert fake.pcms[0].closed


def test_a_device_that_fails_mid_call_ends_its_bridge_with_a_report() -> None:
    reports = Reports()
    fake = FakeAlsa()

    def unplugged(pcm: FakePcm) -> tuple[int, bytes]:
        raise FakeAlsaError("No such device [hw:0]")

    fake.reads = [unplugged]
    bridge = CaptureBridge(fake, "hw:0", RATE, reports, on_failed=reports.on_failed)
    bridge.start()
    assert reports.event.wait(2)
    assert bridge.join(2)
    assert reports.failures == ["ALSA capture device 'hw:0' failed: no such device"]
    assert fake.pcms[0].closed


def test_playback_underruns_are_counted_and_the_cushion_refilled() -> None:
    fake = FakeAlsa()
    fake.writes = [0, -errno.EPIPE]  # the prefill goes in, the first frame finds the device dry
    bridge = PlaybackBridge(fake, "hw:0", RATE, Reports())
    bridge.start()
    assert bridge.wait_open(2)
    for tick in range(3):
        bridge.write_frame(tone(440, N, RATE, tick * N), RATE)
    wait_until(lambda: len(fake.pcms[0].written) >= 5)
    bridge.close()
    assert bridge.join(2)
    written = fake.pcms[0].written
    silence = bytes(2 * N * PREFILL_PERIODS)
    first = tone(440, N, RATE).astype("<i2").tobytes()
    assert written[:3] == [silence, silence, first]  # prefill; after the underrun: again
    assert bridge.stats.underruns == 1
    assert bridge.stats.overruns == 0


def test_a_stereo_playback_device_gets_the_frame_on_both_channels() -> None:
    fake = FakeAlsa(channels=2)
    bridge = PlaybackBridge(fake, "hw:0", RATE, Reports())
    bridge.start()
    assert bridge.wait_open(2)
    frame = tone(440, N, RATE)
    bridge.write_frame(frame, RATE)
    wait_until(lambda: len(fake.pcms[0].written) >= 2)
    bridge.close()
    bridge.join(2)
    stereo = np.frombuffer(fake.pcms[0].written[1], dtype="<i2").reshape(-1, 2)
    assert np.array_equal(stereo[:, 0], frame)
    assert np.array_equal(stereo[:, 1], frame)


def test_full_queues_drop_and_count() -> None:
    """Nothing drains the queues (no worker): playback drops new frames, capture the oldest."""
    playback = PlaybackBridge(FakeAlsa(), "hw:0", RATE, Reports())
    for _ in range(QUEUE_FRAMES + 3):
        playback.write_frame(tone(440, N, RATE), RATE)
    assert playback.stats.overruns == 3

    capture = CaptureBridge(FakeAlsa(), "hw:0", RATE, Reports())
    for n in range(QUEUE_FRAMES + 2):
        capture._push((RATE, np.full(N, n, dtype=np.int16)))
    assert capture.stats.overruns == 2
    frames = [capture.read_frame(N) for _ in range(QUEUE_FRAMES)]
    assert [int(f[0]) for f in frames if f is not None] == list(range(2, QUEUE_FRAMES + 2))


def test_capture_primes_then_counts_an_underrun_and_primes_again() -> None:
    capture = CaptureBridge(FakeAlsa(), "hw:0", RATE, Reports())
    capture._push((RATE, np.full(N, 1, dtype=np.int16)))
    assert capture.read_frame(N) is None  # one frame is not enough to start
    capture._push((RATE, np.full(N, 2, dtype=np.int16)))
    assert capture.read_frame(N) is not None
    assert capture.read_frame(N) is not None
    assert capture.read_frame(N) is None  # dry
    assert capture.stats.underruns == 1
    capture._push((RATE, np.full(N, 3, dtype=np.int16)))
    assert capture.read_frame(N) is None  # priming again
    assert capture.stats.underruns == 1


def test_the_pending_audio_of_a_fast_device_is_bounded() -> None:
    capture = CaptureBridge(FakeAlsa(), "hw:0", RATE, Reports())
    for _ in range(QUEUE_FRAMES):
        capture._push((RATE, np.zeros(N, dtype=np.int16)))
    assert capture.read_frame(N) is not None
    for _ in range(2):  # the device keeps giving two frames per tick
        for _ in range(QUEUE_FRAMES):
            capture._push((RATE, np.zeros(N, dtype=np.int16)))
        capture.read_frame(N)
    assert capture.stats.overruns >= 1
    assert len(capture._pending) <= (PRIME_FRAMES + QUEUE_FRAMES) * N


# -- SoundCards on a real RTP stream -------------------------------------------------------------


@pytest.fixture
def peer(peer: socket.socket) -> socket.socket:
    """The shared far end (tests/unit/conftest.py), read without waiting."""
    peer.setblocking(False)
    return peer


def open_stream(loop: asyncio.AbstractEventLoop, peer: socket.socket) -> RtpStream:
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(7))
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
    return stream


def test_without_pyalsaaudio_the_commands_say_so(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alsa, "_alsaaudio", None)
    monkeypatch.setattr(alsa, "_alsaaudio_loaded", True)
    assert load_alsaaudio() is None
    assert sound_devices() is None
    stream = open_stream(loop, peer)
    cards = SoundCards(stream, loop, lambda verb, reason: None)
    try:
        for command in (cards.aplay, cards.arecord, cards.astop):
            with pytest.raises(SoundCardError, match=f"^{ALSA_MISSING}$"):
                command("default")
    finally:
        stream.close()


def test_sound_cards_bridge_a_stream_both_ways(
    rig: Rig, loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    """APLAY: the capture tone goes out in RTP; ARECORD: received RTP lands in the file;
    ASTOP: both stop; errors for a second APLAY, an idle ASTOP, an unknown device."""
    errors: list[tuple[str, str]] = []
    stream = open_stream(loop, peer)
    cards = SoundCards(stream, loop, lambda verb, reason: errors.append((verb, reason)))
    sender = RtpSender(0, random.Random(3))
    sent: list[bytes] = []

    async def run() -> None:
        stream.start()
        cards.aplay(DUPLEX)
        cards.arecord(DUPLEX)
        with pytest.raises(SoundCardError, match="already capturing from 'phone'"):
            cards.aplay(DUPLEX)
        with pytest.raises(SoundCardError, match="already playing into 'phone'"):
            cards.arecord(DUPLEX)
        with pytest.raises(SoundCardError, match="nothing is playing or recording on 'x'"):
            cards.astop("x")
        cards.aplay("nosuch")
        source = ("127.0.0.1", stream.local_port)
        for tick in range(75):  # 1.5 s: the far end sends 440 Hz
            frame = tone(440, N, RATE, tick * N)
            peer.sendto(sender.packet(encode_ulaw(frame), N), source)
            await asyncio.sleep(0.02)
            while True:
                try:
                    sent.append(peer.recv(2048))
                except BlockingIOError:
                    break
        cards.astop(DUPLEX)
        assert cards.capture == cards.playback == {}

    try:
        loop.run_until_complete(run())
    finally:
        stream.close()
    assert errors == [
        ("APLAY", "cannot open ALSA capture device 'nosuch': no such file or directory")
    ]
    codec = get_codec("PCMU")
    payloads = [parse_rtp(packet)[1] for packet in sent]
    heard = np.concatenate([codec.decode(bytes(p)) for p in payloads]).astype(np.float64) / 32768
    assert dominant(heard[RATE // 4 :], RATE) == pytest.approx(CAPTURE_HZ, abs=3)
    assert level(heard[RATE // 4 :]) > 0.25
    played = read_raw(rig.playback_raw, 0.25)
    assert dominant(played, RATE) == pytest.approx(440, abs=3)
    assert level(played) > 0.2


def test_the_stream_closes_its_bridges_when_the_call_ends(
    rig: Rig, loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = open_stream(loop, peer)
    cards = SoundCards(stream, loop, lambda verb, reason: None)
    cards.aplay(CAPTURE)
    cards.arecord(PLAYBACK)
    bridges = [*cards.capture.values(), *cards.playback.values()]
    assert all(b.wait_open(5) for b in bridges)
    stream.close()
    assert all(b.join(2) for b in bridges)
    with pytest.raises(SoundCardError, match="ended"):
        cards.aplay(CAPTURE)


# -- the stream's taps, without ALSA ---------------------------------------------------------------


class CountingCodec:
    """PCMU that counts its decodes."""

    def __init__(self) -> None:
        self.inner = get_codec("PCMU")
        self.decodes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decode(self, payload: bytes) -> np.ndarray:  # type: ignore[type-arg]
        self.decodes += 1
        return self.inner.decode(payload)


class ListSink:
    def __init__(self) -> None:
        self.frames: list[tuple[np.ndarray, int]] = []  # type: ignore[type-arg]
        self.closed = False

    def write_frame(self, frame: np.ndarray, rate: int) -> None:  # type: ignore[type-arg]
        self.frames.append((frame.copy(), rate))

    def close(self) -> None:
        self.closed = True


class ConstantSource:
    def __init__(self, value: int) -> None:
        self.value = value
        self.closed = False

    def read_frame(self, samples: int) -> np.ndarray:  # type: ignore[type-arg]
        return np.full(samples, self.value, dtype=np.int16)

    def close(self) -> None:
        self.closed = True


def test_recording_and_sinks_share_one_decode_per_packet(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    codec = CountingCodec()
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(7))
    # with telephone-event: no in-band DTMF detector decoding the packets on its own
    stream.configure(peer.getsockname(), codec, 0, 101, "sendrecv")  # type: ignore[arg-type]
    first, second = ListSink(), ListSink()
    sender = RtpSender(0, random.Random(3))
    source = peer.getsockname()
    try:
        stream.add_sink(first)
        stream.add_sink(second)
        stream.start_recording(str(tmp_path / "rec.wav"))
        for tick in range(20):
            packet = sender.packet(encode_ulaw(tone(440, N, RATE, tick * N)), N)
            stream.datagram_received(memoryview(packet), source)
            stream.tick(tick * 0.02)
        assert stream.remove_sink(second)
        assert not stream.remove_sink(second)
        stream.tick(0.4)
    finally:
        stream.close()
    assert codec.decodes == 20 - 3 + 1  # the jitter buffer holds 3; one per tick, not per tap
    assert len(first.frames) == 21 and len(second.frames) == 20
    assert all(rate == RATE and len(frame) == N for frame, rate in first.frames)
    assert np.array_equal(first.frames[10][0], second.frames[10][0])
    assert first.closed and not second.closed  # the stream closes what is still attached


def test_a_live_source_is_mixed_and_not_a_file(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = open_stream(loop, peer)
    live = ConstantSource(1000)
    try:
        stream.add_source(live)
        assert stream.playing == []
        assert stream.stop_last() is None  # STOP stops files only
        stream.tick(0.0)
        stream.tick(0.02)
        assert stream.remove_source(live)
        stream.tick(0.04)
    finally:
        stream.close()
    codec = get_codec("PCMU")
    packets = []
    while True:
        try:
            packets.append(peer.recv(2048))
        except BlockingIOError:
            break
    levels = [int(codec.decode(bytes(parse_rtp(p)[1]))[0]) for p in packets[:3]]
    assert abs(levels[0] - 1000) < 40 and abs(levels[1] - 1000) < 40
    assert levels[2] == 0
    assert not live.closed  # removed before the end: its owner closes it
