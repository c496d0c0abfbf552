"""mix() and PlaybackMixer: summing, clipping, ordering, finished reporting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from siproc.media.mixer import PlaybackMixer, mix
from siproc.media.player import FilePlayer


def frame(value: int, n: int = 4) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_mix_single_frame_is_returned_as_is() -> None:
    f = frame(5)
    assert mix([f]) is f


def test_mix_sums() -> None:
    out = mix([frame(100), frame(-30), frame(7)])
    assert out.dtype == np.int16
    assert out.tolist() == [77] * 4


def test_mix_clips_instead_of_wrapping() -> None:
    assert mix([frame(30000), frame(30000)]).tolist() == [32767] * 4
    assert mix([frame(-30000), frame(-30000)]).tolist() == [-32768] * 4
    assert mix([frame(32767), frame(32767), frame(-32768)]).tolist() == [32766] * 4


def test_mix_does_not_modify_inputs() -> None:
    a, b = frame(1), frame(2)
    mix([a, b])
    assert a.tolist() == [1] * 4
    assert b.tolist() == [2] * 4


def test_mix_empty() -> None:
    with pytest.raises(ValueError):
        mix([])


def wav(tmp_path: Path, name: str, samples: int, value: int) -> str:
    path = str(tmp_path / name)
    soundfile.write(path, np.full(samples, value, dtype=np.int16), 8000, subtype="PCM_16")
    return path


def test_playback_mixer(tmp_path: Path) -> None:
    mixer = PlaybackMixer()
    assert mixer.next_frame(160) == (None, [])
    short = FilePlayer.open(wav(tmp_path, "short.wav", 200, 1000), 8000)
    long = FilePlayer.open(wav(tmp_path, "long.wav", 480, 10), 8000)
    mixer.add(short)
    mixer.add(long)
    assert mixer.names == [short.name, long.name]

    out, done = mixer.next_frame(160)
    assert out is not None and out.tolist() == [1010] * 160
    assert done == []

    out, done = mixer.next_frame(160)  # short's last frame: 40 samples then padding
    assert out is not None
    assert out[:40].tolist() == [1010] * 40
    assert out[40:].tolist() == [10] * 120
    assert done == [short]
    assert len(mixer) == 1

    out, done = mixer.next_frame(160)
    assert out is not None and out.tolist() == [10] * 160
    assert done == [long]
    assert mixer.next_frame(160) == (None, [])


def test_finished_reported_in_added_order(tmp_path: Path) -> None:
    mixer = PlaybackMixer()
    players = [FilePlayer.open(wav(tmp_path, f"{i}.wav", 100, i), 8000) for i in range(3)]
    for player in players:
        mixer.add(player)
    out, done = mixer.next_frame(160)
    assert out is not None and out[:100].tolist() == [3] * 100
    assert done == players
    assert len(mixer) == 0


def test_stop_last(tmp_path: Path) -> None:
    mixer = PlaybackMixer()
    assert mixer.stop_last() is None
    a = FilePlayer.open(wav(tmp_path, "a.wav", 8000, 1), 8000)
    b = FilePlayer.open(wav(tmp_path, "b.wav", 8000, 2), 8000)
    mixer.add(a)
    mixer.add(b)
    assert mixer.stop_last() is b
    out, done = mixer.next_frame(160)
    assert out is not None and out.tolist() == [1] * 160
    assert done == []
    assert mixer.stop_last() is a
    assert mixer.next_frame(160) == (None, [])


def test_empty_file_finishes_without_audio(tmp_path: Path) -> None:
    mixer = PlaybackMixer()
    empty = FilePlayer.open(wav(tmp_path, "empty.wav", 0, 0), 8000)
    mixer.add(empty)
    assert mixer.next_frame(160) == (None, [empty])


def test_close_reports_nothing(tmp_path: Path) -> None:
    mixer = PlaybackMixer()
    mixer.add(FilePlayer.open(wav(tmp_path, "a.wav", 8000, 1), 8000))
    mixer.close()
    assert len(mixer) == 0
    assert mixer.next_frame(160) == (None, [])
