"""The STREAM edge's audio path from the bot when the bot's rate is not the call's (l16/16000 on
an 8 kHz call): soxr holds back the last ~60 ms of what it is given until more comes, so the
end of the bot's audio must be flushed out when its queue runs dry (else it plays only with the
bot's next words, and its mark is echoed before it was heard), and a ``clear`` must drop what
the resampler holds too. No socket, no clock: the taps are called as the media tick would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest

from siproc.media.media_stream_protocol import StreamFormat
from siproc.net.media_stream_edge import BotStream, StreamSpec
from tests.ws_bot import goertzel_share


class FakeRtp:
    sample_rate = 8000
    closed = False


@pytest.fixture
def stream() -> Iterator[BotStream]:
    loop = asyncio.new_event_loop()
    spec = StreamSpec(
        url="ws://127.0.0.1:9/",
        format=StreamFormat.L16_16000,
        parameters=(),
        stream_sid="MZ" + "0" * 32,
        call_sid="call@host",
    )
    yield BotStream(loop, FakeRtp(), spec, lambda kind, text: None)  # type: ignore[arg-type]
    loop.close()


def l16(freq: float, seconds: float) -> bytes:
    t = np.arange(round(16000 * seconds)) / 16000
    return (0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def play_out(stream: BotStream, ticks: int) -> list[np.ndarray | None]:  # type: ignore[type-arg]
    return [stream.read_frame(160) for _ in range(ticks)]


def test_the_end_of_resampled_bot_audio_plays_when_the_bot_stops_sending(
    stream: BotStream,
) -> None:
    for i in range(0, 32000, 3200):  # 1 s of 2000 Hz in 100 ms messages
        stream._on_message(l16(2000, 1.0)[i : i + 3200])
    frames = play_out(stream, 70)
    played = [f for f in frames if f is not None]
    assert all(len(f) == 160 for f in played)
    audio = np.concatenate(played)
    loud = np.flatnonzero(np.abs(audio) > 1000)
    assert (loud[-1] - loud[0]) / 8000 == pytest.approx(1.0, abs=0.005)  # all of it
    assert frames[-1] is None  # and then nothing


def test_clear_drops_what_the_resampler_holds(stream: BotStream) -> None:
    stream._on_message(l16(2000, 1.0))
    play_out(stream, 10)
    stream._on_message('{"event":"clear"}')
    stream._on_message(l16(500, 0.5))
    after = np.concatenate([f for f in play_out(stream, 30) if f is not None])
    assert goertzel_share(after[:160], 2000) < 0.01  # no 2000 Hz left over from before
    assert goertzel_share(after[160:-160], 500) > 0.9


def marks_sent(stream: BotStream) -> list[str]:
    """The mark messages waiting for the bot, by name."""
    queue = stream._send_queue
    names = []
    while (message := queue.get()) is not None:
        if isinstance(message, str) and '"event":"mark"' in message:
            names.append(json.loads(message)["mark"]["name"])
    return names


def test_a_mark_comes_back_when_the_resampled_audio_before_it_has_played(
    stream: BotStream,
) -> None:
    """The resampler holds audio back, and pulls run ahead of the output: the mark is due when
    the samples before it have left, not when its place in the queue was reached."""
    stream._on_message(l16(2000, 0.5))
    stream._on_message('{"event":"mark","mark":{"name":"half"}}')
    stream._on_message(l16(2000, 0.5))
    echoed_at = []
    for tick in range(60):
        stream.read_frame(160)
        if marks_sent(stream):
            echoed_at.append(tick)
    assert echoed_at == [24]  # the 25th frame of 20 ms ends the first 0.5 s


def test_a_mark_after_the_last_resampled_audio_comes_back_with_its_end(
    stream: BotStream,
) -> None:
    stream._on_message(l16(2000, 0.3))
    stream._on_message('{"event":"mark","mark":{"name":"end"}}')
    played = []
    for tick in range(30):
        frame = stream.read_frame(160)
        if frame is not None:
            played.append(tick)
        if marks_sent(stream):
            assert tick == played[-1], (tick, played)  # with the frame that ends the audio
            break
    else:
        pytest.fail("the mark never came back")
    assert len(played) == 15
