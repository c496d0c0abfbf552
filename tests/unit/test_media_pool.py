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


class FakePool:
    def __init__(self) -> None:
        self.idle_checks: list[object] = []

    def maybe_idle(self, worker: object) -> None:
        self.idle_checks.append(worker)


class FakeWorker:
    index = 0

    def __init__(self) -> None:
        self.channel = FakeChannel()
        self.streams: dict[int, RemoteStream] = {}
        self.pool = FakePool()


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


def test_srtp_keys_go_to_the_worker_over_its_channel_and_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import pickle

    from siproc.net.media_worker import MediaWorker, _Stream
    from siproc.sdp.crypto import CryptoSuite, MasterKey
    from siproc.sdp.sdes import SrtpParams

    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_32
    params = SrtpParams(suite, MasterKey.generate(suite), MasterKey.generate(suite), 2)
    stream = RemoteStream(FakeWorker(), 7, "127.0.0.1", 40000)  # type: ignore[arg-type]
    stream.configure_srtp(params)
    stream.configure_srtp(None)
    sent = stream._worker.channel.sent  # type: ignore[attr-defined]
    assert sent == [("configure_srtp", 7, params), ("configure_srtp", 7, None)]
    message = pickle.loads(pickle.dumps(sent[0]))  # what the worker gets

    class FakeRtp:
        def __init__(self) -> None:
            self.srtp: list[SrtpParams | None] = []

        def configure_srtp(self, value: SrtpParams | None) -> None:
            self.srtp.append(value)

    rtp = FakeRtp()
    worker = MediaWorker.__new__(MediaWorker)  # only _command: no loop, no channel
    with caplog.at_level(logging.DEBUG):
        worker._command(7, _Stream(rtp), message[0], list(message[2:]))  # type: ignore[arg-type]
        worker._command(7, _Stream(rtp), "configure_srtp", [None])  # type: ignore[arg-type]
        worker._command(7, _Stream(rtp), "configure_srtp", ["key?"])  # type: ignore[arg-type]
    assert rtp.srtp == [params, None]
    assert "malformed 'configure_srtp' for stream 7" in caplog.text
    for key in (params.local_key, params.remote_key):
        assert key.base64() not in caplog.text


def test_a_close_the_worker_never_confirms_frees_the_stream_and_lets_the_worker_idle() -> None:
    worker = FakeWorker()
    stream = RemoteStream(worker, 9, "127.0.0.1", 40004)  # type: ignore[arg-type]
    worker.streams[9] = stream
    closed: list[bool] = []
    stream._closed = True  # close() sent; its CLOSE_TIMEOUT timer fires:
    stream.when_closed(lambda: closed.append(True))
    stream._close_timed_out()
    assert closed == [True] and worker.streams == {} and worker.pool.idle_checks == [worker]
