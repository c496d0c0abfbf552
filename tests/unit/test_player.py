"""FilePlayer: chunked reading, down-mixing, resampling, padding, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from siproc.media.player import BLOCK_SECONDS, FilePlayer, MediaFileError


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    soundfile.write(str(path), data, rate, subtype=subtype)
    return str(path)


def read_all(player: FilePlayer, samples: int = 160, limit: int = 10_000) -> list[np.ndarray]:
    frames = []
    for _ in range(limit):
        frame = player.read_frame(samples)
        if frame is None:
            break
        assert frame.dtype == np.int16
        assert frame.shape == (samples,)
        frames.append(frame)
    else:
        pytest.fail("player never finished")
    return frames


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal.astype(np.float64) * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [
        (8000, 1, "PCM_16"),
        (16000, 1, "PCM_16"),
        (44100, 2, "PCM_16"),
        (48000, 1, "FLOAT"),
        (22050, 2, "PCM_24"),
        (11025, 1, "PCM_U8"),
    ],
)
def test_tone_resampled_to_8k(tmp_path: Path, rate: int, channels: int, subtype: str) -> None:
    path = write(tmp_path / "tone.wav", tone(1000, 1.0, rate, channels), rate, subtype)
    player = FilePlayer.open(path, 8000)
    assert (player.file_rate, player.channels, player.name) == (rate, channels, path)
    frames = read_all(player)
    assert len(frames) == 50  # 1 s at 8 kHz in 20 ms frames
    assert player.exhausted
    audio = np.concatenate(frames)
    assert abs(dominant_frequency(audio, 8000) - 1000) <= 2
    middle = audio[800:-800].astype(np.float64)
    assert 0.4 < np.sqrt(2 * np.mean(middle**2)) / 32768 < 0.6  # amplitude kept
    assert player.read_frame(160) is None


def test_16bit_at_codec_rate_is_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32768, size=8000 + 37, dtype=np.int16)
    path = write(tmp_path / "noise.wav", pcm, 8000)
    frames = read_all(FilePlayer.open(path, 8000))
    audio = np.concatenate(frames)
    assert len(frames) == 51
    assert np.array_equal(audio[: len(pcm)], pcm)
    assert not audio[len(pcm) :].any()  # last frame zero padded


def test_frames_read_only(tmp_path: Path) -> None:
    path = write(tmp_path / "t.wav", tone(440, 0.1, 8000), 8000)
    frame = FilePlayer.open(path, 8000).read_frame(160)
    assert frame is not None
    with pytest.raises(ValueError):
        frame[0] = 1


def test_stereo_mixed_down_by_mean(tmp_path: Path) -> None:
    left = np.full(800, 0.5)
    right = np.full(800, -0.25)
    path = write(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000)
    frame = FilePlayer.open(path, 8000).read_frame(160)
    assert frame is not None
    assert set(frame.tolist()) == {round(0.125 * 32768)}


def test_float_clipped(tmp_path: Path) -> None:
    path = write(tmp_path / "loud.wav", np.array([2.0, -2.0, 0.5]), 8000, "FLOAT")
    frame = FilePlayer.open(path, 8000).read_frame(4)
    assert frame is not None
    assert frame.tolist() == [32767, -32768, 16384, 0]


def test_exhausted_with_exact_last_frame(tmp_path: Path) -> None:
    path = write(tmp_path / "exact.wav", np.zeros(320, dtype=np.int16), 8000)
    player = FilePlayer.open(path, 8000)
    assert player.read_frame(160) is not None
    assert not player.exhausted
    assert player.read_frame(160) is not None
    assert player.exhausted  # known with the last frame, not one frame later
    assert player.read_frame(160) is None


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.int16), 8000)
    player = FilePlayer.open(path, 8000)
    assert player.read_frame(160) is None
    assert player.exhausted


def test_long_file_read_in_blocks(tmp_path: Path) -> None:
    """A 30 s file: the player never buffers more than about one block plus a frame."""
    path = write(tmp_path / "long.wav", tone(300, 30.0, 44100), 44100)
    player = FilePlayer.open(path, 8000)
    peak = 0
    count = 0
    while player.read_frame(160) is not None:
        peak = max(peak, len(player._buf))
        count += 1
    assert count == 1500
    block = round(8000 * BLOCK_SECONDS)  # a block at 8 kHz, after resampling
    assert peak <= 2 * block + 160  # a block or two, never the 240000-sample file


def test_flac_and_other_rates(tmp_path: Path) -> None:
    path = str(tmp_path / "t.flac")
    soundfile.write(path, tone(500, 0.5, 32000), 32000, subtype="PCM_16")
    frames = read_all(FilePlayer.open(path, 16000), samples=320)
    assert len(frames) == 25
    assert abs(dominant_frequency(np.concatenate(frames), 16000) - 500) <= 2


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [("t.ogg", "OGG", "VORBIS"), ("t.mp3", "MP3", "MPEG_LAYER_III")],
)
def test_compressed_formats(tmp_path: Path, name: str, fmt: str, subtype: str) -> None:
    """OGG/Vorbis and MP3 play like any other file (issue 3 item 3), resampled from 44.1 kHz."""
    path = str(tmp_path / name)
    soundfile.write(path, tone(700, 1.0, 44100), 44100, format=fmt, subtype=subtype)
    frames = read_all(FilePlayer.open(path, 8000))
    assert 48 <= len(frames) <= 53  # 1 s (MP3 adds encoder delay and padding)
    assert abs(dominant_frequency(np.concatenate(frames), 8000) - 700) <= 3


def test_close_is_idempotent(tmp_path: Path) -> None:
    path = write(tmp_path / "t.wav", tone(440, 0.5, 8000), 8000)
    player = FilePlayer.open(path, 8000)
    player.read_frame(160)
    player.close()
    player.close()


# -- errors ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError) as info:
        FilePlayer.open(str(tmp_path / "nope.wav"), 8000)
    assert str(info.value) == f"cannot play {str(tmp_path / 'nope.wav')!r}: no such file"
    assert info.value.reason == "no such file"
    assert isinstance(info.value, ValueError)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError, match="is a directory"):
        FilePlayer.open(str(tmp_path), 8000)


def test_empty_name() -> None:
    with pytest.raises(MediaFileError, match="empty file name"):
        FilePlayer.open("", 8000)


def test_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "text.wav"
    path.write_text("this is not a wave file\n" * 10)
    with pytest.raises(MediaFileError, match="unreadable audio file") as info:
        FilePlayer.open(str(path), 8000)
    assert "\n" not in str(info.value)


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(MediaFileError, match="broken symbolic link"):
        FilePlayer.open(str(link), 8000)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.wav", tone(440, 0.1, 8000), 8000)
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root may read anything: let the OS say no as it would to a user
        monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(MediaFileError, match="permission denied"):
        FilePlayer.open(path, 8000)


def test_bad_rate(tmp_path: Path) -> None:
    path = write(tmp_path / "t.wav", tone(440, 0.1, 8000), 8000)
    with pytest.raises(ValueError):
        FilePlayer.open(path, 0)


def test_truncated_file_plays_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write(path, tone(440, 1.0, 8000), 8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header claims more than the file holds
    frames = read_all(FilePlayer.open(str(path), 8000))
    assert 20 <= len(frames) <= 26
