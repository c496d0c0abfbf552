"""media/pcm_pipe.py: the audio of the handler's pipes as bytes (16 kHz, 16-bit little-endian),
framed and paced one tick at a time."""

from __future__ import annotations

import numpy as np
import pytest

from siproc.media.pcm_pipe import PIPE_RATE, FromHandler, ToHandler
from tests.ws_bot import goertzel_share


def tone(freq: float, samples: int, rate: int, start: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    n = np.arange(start, start + samples)
    return (8000 * np.sin(2 * np.pi * freq * n / rate)).astype(np.int16)


def test_a_16khz_frame_goes_out_as_little_endian_bytes_unchanged() -> None:
    frame = np.array([0, 1, -1, 32767, -32768, 258] * 53 + [7, 8], dtype=np.int16)
    data = ToHandler().encode(frame, 16000)
    assert len(data) == 640
    assert data[:12] == bytes.fromhex("0000 0100 ffff ff7f 0080 0201")
    assert np.array_equal(np.frombuffer(data, "<i2"), frame)


@pytest.mark.parametrize(("rate", "samples"), [(8000, 160), (48000, 960)])
def test_far_end_frames_become_20_ms_at_16khz_at_once_and_keep_their_tone(
    rate: int, samples: int
) -> None:
    out = ToHandler()
    chunks = [out.encode(tone(440, samples, rate, i * samples), rate) for i in range(50)]
    # the resampler holds back one frame at first, then every frame gives its 20 ms
    assert sum(len(c) for c in chunks[:2]) <= 2 * 640
    assert {len(c) for c in chunks[3:]} == {640}
    pcm = np.frombuffer(b"".join(chunks), "<i2")
    assert goertzel_share(pcm[1600:], 440, PIPE_RATE) > 0.95


def test_a_codec_change_starts_a_new_resampler() -> None:
    out = ToHandler()
    for i in range(5):
        out.encode(tone(440, 160, 8000, i * 160), 8000)
    assert len(out.encode(tone(440, 320, 16000), 16000)) == 640  # straight through
    after = [len(out.encode(tone(440, 960, 48000, i * 960), 48000)) for i in range(5)]
    assert after[-1] == 640


@pytest.mark.parametrize(
    ("rate", "samples", "quota"), [(8000, 160, 640), (16000, 320, 640), (48000, 960, 640)]
)
def test_the_quota_is_one_ticks_worth_at_16khz(rate: int, samples: int, quota: int) -> None:
    assert FromHandler().quota(samples, rate) == quota
    assert FromHandler().quota(samples * 3 // 2, rate) == quota * 3 // 2  # 30 ms ptime


def test_16khz_bytes_come_back_as_the_same_samples_one_frame_per_tick() -> None:
    pipe = FromHandler()
    frame = tone(300, 640, 16000)
    pipe.feed(frame.astype("<i2").tobytes(), 16000)  # two frames at once (not paced: a test)
    assert pipe.quota(320, 16000) == 0  # two frames wait: nothing more is read
    first, second = pipe.frame(320), pipe.frame(320)
    assert first is not None and second is not None
    assert np.array_equal(np.concatenate([first, second]), frame)
    assert pipe.frame(320) is None  # an underrun: nothing waits
    assert pipe.quota(320, 16000) == 640


def test_an_odd_byte_waits_for_its_partner() -> None:
    pipe = FromHandler()
    data = tone(300, 320, 16000).astype("<i2").tobytes()
    pipe.feed(data[:1], 16000)
    assert pipe.waiting == 0 and pipe.frame(320) is None
    assert pipe.quota(320, 16000) == 639  # the tick's 640 bytes, less the byte it holds
    pipe.feed(data[1:301], 16000)
    assert pipe.waiting == 150 and pipe.frame(320) is None  # a short frame waits too
    pipe.feed(data[301:], 16000)
    got = pipe.frame(320)
    assert got is not None and np.array_equal(got, tone(300, 320, 16000))


def test_8khz_calls_get_one_frame_per_tick_after_the_first_and_the_tone() -> None:
    pipe = FromHandler()
    source = tone(440, 16000 * 2, 16000).astype("<i2").tobytes()
    played: list[np.ndarray] = []  # type: ignore[type-arg]
    offset = 0
    for _ in range(100):  # a handler that keeps its pipe full: read exactly the quota
        want = pipe.quota(160, 8000)
        assert want in (0, 640)
        pipe.feed(source[offset : offset + want], 8000)
        offset += want
        frame = pipe.frame(160)
        if frame is not None:
            played.append(frame)
        assert pipe.waiting < 3 * 160  # bounded: never more than a few frames held
    assert offset == 100 * 640  # exactly real time: 2 s of 16 kHz in 100 ticks
    assert len(played) >= 98  # only the resampler's first frame or two are missing
    pcm = np.concatenate(played)
    assert goertzel_share(pcm[800:], 440, 8000) > 0.95
