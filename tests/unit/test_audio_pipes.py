"""net/audio_pipes.py: the handler's audio pipes as a tap of a stream, on real (non-blocking)
pipes: a handler that does not read loses whole frames, counted; one that writes too much is
read one tick's worth at a time (its pipe fills and its write would block); a handler that
closes its ends takes the tap off the stream; every descriptor is closed at the end."""

from __future__ import annotations

import fcntl
import os
import termios
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from siproc.net.audio_pipes import HandlerAudio

FRAME = np.arange(160, dtype=np.int16)  # 20 ms at 8 kHz


class FakeStream:
    def __init__(self, rate: int = 16000) -> None:
        self.sample_rate = rate
        self.closed = False
        self.sinks: list[Any] = []
        self.sources: list[Any] = []

    def add_sink(self, sink: Any) -> None:
        self.sinks.append(sink)

    def add_source(self, source: Any) -> None:
        self.sources.append(source)

    def remove_sink(self, sink: Any) -> bool:
        self.sinks.remove(sink)
        return True

    def remove_source(self, source: Any) -> bool:
        self.sources.remove(source)
        return True


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def run_soon(self) -> None:
        calls, self.soon = self.soon, []
        for callback in calls:
            callback()


class Pipes:
    """The two pipes with the handler's ends (``fd3``: it reads, ``fd4``: it writes)."""

    def __init__(self, rate: int = 16000) -> None:
        self.fd3, to_handler = os.pipe()
        from_handler, self.fd4 = os.pipe()
        self.ours = (to_handler, from_handler)
        self.loop = FakeLoop()
        self.stream = FakeStream(rate)
        self.tap = HandlerAudio(self.loop, self.stream, to_handler, from_handler)  # type: ignore[arg-type]

    def close(self) -> None:
        self.tap.close()
        for fd in (self.fd3, self.fd4):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    p.close()


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def waiting(fd: int) -> int:
    """Bytes in the pipe behind ``fd`` (FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def test_attach_makes_it_a_sink_and_a_source(pipes: Pipes) -> None:
    pipes.tap.attach()
    assert pipes.stream.sinks == [pipes.tap] and pipes.stream.sources == [pipes.tap]


def test_a_closed_stream_gets_nothing_and_the_descriptors_close() -> None:
    p = Pipes()
    p.stream.closed = True
    p.tap.attach()
    assert not p.stream.sinks and not any(is_open(fd) for fd in p.ours)
    p.close()


def test_a_handler_that_does_not_read_loses_whole_frames_counted(pipes: Pipes) -> None:
    frame = np.arange(320, dtype=np.int16)  # 20 ms at 16 kHz: 640 bytes
    fcntl.fcntl(pipes.ours[0], fcntl.F_SETPIPE_SZ, 4096)
    for _ in range(20):
        pipes.tap.write_frame(frame, 16000)  # never blocks
    assert pipes.tap.frames_written == 6 and pipes.tap.frames_dropped == 14  # 6 x 640 <= 4096
    data = os.read(pipes.fd3, 65536)
    assert len(data) == 6 * 640  # never a part of a frame
    assert np.array_equal(np.frombuffer(data[-640:], "<i2"), frame)
    pipes.tap.write_frame(frame, 16000)  # read again: frames flow again
    assert pipes.tap.frames_written == 7


def test_far_end_audio_at_8khz_reaches_fd3_at_16khz(pipes: Pipes) -> None:
    for _ in range(10):
        pipes.tap.write_frame(FRAME, 8000)
    data = os.read(pipes.fd3, 65536)
    assert len(data) % 2 == 0 and 8 * 640 <= len(data) <= 10 * 640


def test_a_handler_writing_ahead_is_read_one_tick_at_a_time(pipes: Pipes) -> None:
    second = np.arange(16000, dtype=np.int16).astype("<i2").tobytes()  # 1 s at 16 kHz
    os.write(pipes.fd4, second)
    frames = [pipes.tap.read_frame(320) for _ in range(10)]
    assert waiting(pipes.fd4) == len(second) - 10 * 640  # the rest stays in its pipe
    assert all(f is not None for f in frames)
    got = np.concatenate([f for f in frames if f is not None])
    assert np.array_equal(got, np.arange(3200, dtype=np.int16))
    assert pipes.tap.frames_played == 10 and pipes.tap.underruns == 0


def test_nothing_written_is_an_underrun_not_a_block(pipes: Pipes) -> None:
    assert pipes.tap.read_frame(320) is None
    assert pipes.tap.underruns == 1 and is_open(pipes.ours[1])


def test_the_handler_closing_fd4_takes_the_source_off(pipes: Pipes) -> None:
    pipes.tap.attach()
    os.write(pipes.fd4, bytes(640))
    os.close(pipes.fd4)
    pipes.fd4 = -1
    assert pipes.tap.read_frame(320) is not None  # what it wrote before still plays
    assert pipes.tap.read_frame(320) is None  # end of file
    assert not is_open(pipes.ours[1])
    pipes.loop.run_soon()
    assert pipes.stream.sources == [] and pipes.stream.sinks == [pipes.tap]
    assert not pipes.tap.closed


def test_the_handler_closing_both_takes_the_tap_off_and_closes_it(pipes: Pipes) -> None:
    pipes.tap.attach()
    for fd in (pipes.fd3, pipes.fd4):
        os.close(fd)
    pipes.fd3 = pipes.fd4 = -1
    pipes.tap.write_frame(FRAME, 16000)  # EPIPE (Python ignores SIGPIPE)
    assert pipes.tap.read_frame(320) is None
    pipes.loop.run_soon()
    assert pipes.stream.sources == [] and pipes.stream.sinks == []
    assert pipes.tap.closed and not any(is_open(fd) for fd in pipes.ours)


def test_close_closes_both_once(pipes: Pipes) -> None:
    pipes.tap.close()
    pipes.tap.close()
    assert not any(is_open(fd) for fd in pipes.ours)
    assert os.read(pipes.fd3, 10) == b""  # the handler reads end of file
    with pytest.raises(BrokenPipeError):
        os.write(pipes.fd4, b"xx")
    pipes.tap.write_frame(FRAME, 16000)  # after the end: nothing, no error
    assert pipes.tap.read_frame(320) is None
