"""media_pool's RemoteStream without a worker: what it decides alone, and how it reads the
worker's events (the integration test runs real workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from siproc.media.player import MediaFileError
from siproc.media.recorder import RecordFileError
from siproc.net.media_pool import RemoteStream


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, message: tuple[Any, ...], fds: Any = ()) -> None:
        self.sent.append(message)


class FakeWorker:
    index = 0

    def __init__(self) -> None:
        self.channel = FakeChannel()


@pytest.fixture
def tone(tmp_path: Path) -> str:
    path = tmp_path / "t.wav"
    soundfile.write(path, np.zeros(800, dtype=np.int16), 8000)
    return str(path)


def test_stopped_events_name_the_play_so_a_raced_stop_is_reported_once(tone: str) -> None:
    stream = RemoteStream(FakeWorker(), 7, "127.0.0.1", 40000)  # type: ignore[arg-type]
    stopped: list[str] = []
    stream.on_stopped = stopped.append
    stream.play(tone)  # play 1
    # Play 1 ends in the worker; its event is on its way when the handler says STOP:
    assert stream.stop_last() == tone  # STOPPED now, for play 1
    stream.play(tone)  # play 2
    stream.event("stopped", [1, tone])  # the late event of play 1: already reported
    assert stopped == [tone] and stream.playing == [tone]
    stream.event("stopped", [2, tone])
    assert stopped == [tone, tone] and stream.playing == []
    sent = [m[0] for m in stream._worker.channel.sent]  # type: ignore[attr-defined]
    assert sent == ["play", "stop", "play"]


def test_after_its_worker_died_a_stream_refuses_with_the_commands_own_errors(
    tone: str, tmp_path: Path
) -> None:
    stream = RemoteStream(FakeWorker(), 8, "127.0.0.1", 40002)  # type: ignore[arg-type]
    lost: list[bool] = []
    stream.on_lost = lambda: lost.append(True)
    stream.lost()
    assert lost == [True] and stream.closed
    with pytest.raises(MediaFileError, match="no media any more"):
        stream.play(tone)
    with pytest.raises(RecordFileError, match="no media any more"):
        stream.start_recording(str(tmp_path / "r.wav"))
    with pytest.raises(ValueError, match="no media any more"):
        stream.send_dtmf("1")
    stream.start()  # nothing to start: no error, nothing sent
    ended: list[bool] = []
    stream.when_closed(lambda: ended.append(True))
    assert ended == [True]
    assert stream._worker.channel.sent == []  # type: ignore[attr-defined]
