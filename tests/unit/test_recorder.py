"""CallRecorder (the file side of RECORD) and CallRecording (jitter buffer -> decode -> file)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from siproc.media.codecs import get_codec
from siproc.media.codecs.g711 import encode_ulaw
from siproc.media.recorder import (
    CHUNK_SECONDS,
    CallRecorder,
    CallRecording,
    RecordFileError,
    recording_format,
)
from siproc.media.rtp import RtpSender
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream
from tests.audio import wav_data_frames

RATE = 8000
N = 160  # samples per 20 ms frame
CHUNK = round(CHUNK_SECONDS * RATE)


def tone(freq: float, frames: int, amplitude: float = 0.3, start: int = 0) -> list[np.ndarray]:  # type: ignore[type-arg]
    t = np.arange(start * N, (start + frames) * N) / RATE
    pcm = np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return [pcm[i * N : (i + 1) * N] for i in range(frames)]


def const(value: int) -> npt.NDArray[np.int16]:
    return np.full(N, value, dtype=np.int16)


def dominant(samples: np.ndarray, rate: int = RATE) -> float:  # type: ignore[type-arg]
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


# -- CallRecorder ---------------------------------------------------------------------------------


def test_mono_mixes_both_directions_with_clipping(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    rec = CallRecorder.open(str(path), RATE)
    rec.write(const(1000), const(234))
    rec.write(const(30000), const(10000))  # clips high
    rec.write(const(-30000), const(-10000))  # clips low
    rec.write(None, const(7))
    rec.write(const(-7), None)
    rec.write(None, None)
    rec.close()
    data, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE and data.ndim == 1 and len(data) == 6 * N
    expected = [1234, 32767, -32768, 7, -7, 0]
    assert [int(v) for v in data[::N]] == expected
    for i, value in enumerate(expected):
        assert (data[i * N : (i + 1) * N] == value).all()


def test_stereo_left_is_received_right_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    rec = CallRecorder.open(str(path), RATE, stereo=True)
    for rx, tx in zip(tone(440, 50), tone(880, 50), strict=True):
        rec.write(rx, tx)
    rec.write(None, const(5))
    rec.write(const(-5), None)
    rec.close()
    data, _ = soundfile.read(str(path), dtype="int16", always_2d=True)
    assert data.shape == (52 * N, 2)
    assert dominant(data[: 50 * N, 0]) == pytest.approx(440, abs=3)
    assert dominant(data[: 50 * N, 1]) == pytest.approx(880, abs=3)
    assert (data[50 * N : 51 * N] == [0, 5]).all()
    assert (data[51 * N :] == [-5, 0]).all()


def test_frames_of_another_length_are_cut_or_padded(tmp_path: Path) -> None:
    path = tmp_path / "fit.wav"
    rec = CallRecorder.open(str(path), RATE)
    rec.write(np.full(240, 100, dtype=np.int16), None)  # a 30 ms frame: cut
    rec.write(np.full(80, 50, dtype=np.int16), const(1))  # a 10 ms frame: padded
    rec.close()
    data, _ = soundfile.read(str(path), dtype="int16")
    assert len(data) == 2 * N
    assert (data[:N] == 100).all()
    assert (data[N : N + 80] == 51).all() and (data[N + 80 :] == 1).all()


def test_writes_are_chunked_and_the_header_follows(tmp_path: Path) -> None:
    path = tmp_path / "chunks.wav"
    rec = CallRecorder.open(str(path), RATE)
    frames_per_chunk = CHUNK // N
    for _ in range(frames_per_chunk - 1):
        rec.write(const(1), None)
    assert soundfile.info(str(path)).frames == 0  # nothing written yet: one block pending
    assert rec.frames == (frames_per_chunk - 1) * N
    rec.write(const(1), None)
    # One block written; the header was updated with it (SFC_SET_UPDATE_HEADER_AUTO).
    assert soundfile.info(str(path)).frames == CHUNK
    assert wav_data_frames(path) == (CHUNK, CHUNK)
    rec.write(const(2), None)
    assert soundfile.info(str(path)).frames == CHUNK
    rec.close()
    assert soundfile.info(str(path)).frames == CHUNK + N
    assert wav_data_frames(path) == (CHUNK + N, CHUNK + N)
    rec.close()  # idempotent
    assert rec.closed
    with pytest.raises(RecordFileError, match="closed"):
        rec.write(const(0), None)


def test_a_killed_process_leaves_a_valid_wav(tmp_path: Path) -> None:
    """Even if siproc itself died (SIGKILL, no close), the blocks written are a valid file."""
    path = tmp_path / "killed.wav"
    script = f"""
import os, numpy as np
from siproc.media.recorder import CallRecorder
rec = CallRecorder.open({str(path)!r}, 8000)
for _ in range({2 * CHUNK // 160 + 10}):
    rec.write(np.full(160, 3, dtype=np.int16), None)
os.kill(os.getpid(), 9)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert result.returncode == -9, result.stderr
    frames = 2 * CHUNK  # 2 full blocks written, 10 frames still in memory
    assert wav_data_frames(path) == (frames, frames)
    data, _ = soundfile.read(str(path), dtype="int16")
    assert len(data) == frames and (data == 3).all()


@pytest.mark.parametrize(
    ("name", "major", "subtype"),
    [
        ("a.wav", "WAV", "PCM_16"),
        ("a.WAV", "WAV", "PCM_16"),
        ("a.flac", "FLAC", "PCM_16"),
        ("a.ogg", "OGG", "VORBIS"),
        ("a.opus", "OGG", "OPUS"),
        ("a.aiff", "AIFF", "PCM_16"),
        ("a.mp3", "MP3", "MPEG_LAYER_III"),
        ("a", "WAV", "PCM_16"),
        ("a.txt", "WAV", "PCM_16"),
        ("dir.d/a", "WAV", "PCM_16"),
    ],
)
def test_format_follows_the_extension(name: str, major: str, subtype: str) -> None:
    assert recording_format(name) == (major, subtype)


@pytest.mark.parametrize(("name", "major"), [("r.flac", "FLAC"), ("r.ogg", "OGG"), ("r", "WAV")])
@pytest.mark.parametrize("stereo", [False, True])
def test_each_format_records_readable_audio(
    tmp_path: Path, name: str, major: str, stereo: bool
) -> None:
    path = tmp_path / name
    rec = CallRecorder.open(str(path), RATE, stereo=stereo)
    for rx, tx in zip(tone(440, 75), tone(880, 75), strict=True):
        rec.write(rx, tx)
    rec.close()
    info = soundfile.info(str(path))
    assert info.format == major
    assert info.channels == (2 if stereo else 1)
    assert info.frames == 75 * N
    data, _ = soundfile.read(str(path), dtype="float64", always_2d=True)
    if stereo:
        assert dominant(data[:, 0]) == pytest.approx(440, abs=5)
        assert dominant(data[:, 1]) == pytest.approx(880, abs=5)


@pytest.mark.parametrize("name", ["r.wav", "r.flac", "r.ogg"])
def test_close_finalises_the_file_without_an_fsync(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """soundfile's close() would sf_write_sync (an fsync) first: in a media worker closing many
    calls at once that stalled the clock. The file is whole all the same."""
    synced: list[object] = []
    monkeypatch.setattr(soundfile.SoundFile, "flush", lambda self: synced.append(self))
    path = tmp_path / name
    rec = CallRecorder.open(str(path), RATE)
    for rx, tx in zip(tone(440, 40), tone(880, 40), strict=True):
        rec.write(rx, tx)
    rec.close()
    rec.close()  # idempotent
    assert synced == []
    assert soundfile.info(str(path)).frames == 40 * N


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "again.wav"
    path.write_bytes(b"old content" * 1000)
    rec = CallRecorder.open(str(path), RATE)
    rec.write(const(9), None)
    rec.close()
    assert soundfile.info(str(path)).frames == N


def test_open_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing" / "x.wav"): "no such directory",
        str(tmp_path): "is a directory",
        "": "empty file name",
    }
    for path, reason in cases.items():
        with pytest.raises(RecordFileError) as info:
            CallRecorder.open(path, RATE)
        assert str(info.value) == f"cannot record {path!r}: {reason}"
        assert "\n" not in str(info.value)


def test_open_error_from_the_os_is_precise(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(RecordFileError, match=r"not a directory$"):
        CallRecorder.open(str(tmp_path / "plain" / "x.wav"), RATE)
    with pytest.raises(RecordFileError, match=r"no such directory$"):
        CallRecorder.open("/proc/no-such-file.wav", RATE)  # even for root


def test_a_rate_the_format_cannot_take_is_a_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match=r"cannot record .*: cannot write OGG \("):
        CallRecorder.open(str(tmp_path / "x.opus"), 44100)
    assert not (tmp_path / "x.opus").exists()  # the file we created is removed again


def test_write_failure_closes_and_raises(tmp_path: Path) -> None:
    path = tmp_path / "full.wav"
    rec = CallRecorder.open(str(path), RATE, chunk_seconds=0.02)
    rec.write(const(1), None)
    sound = rec._sound
    assert sound is not None
    sound.close()  # a file that can no longer be written
    with pytest.raises(RecordFileError, match="write failed"):
        rec.write(const(1), None)
    assert rec.closed


# -- CallRecording: the receive path --------------------------------------------------------------


def test_recording_pipeline_puts_received_audio_on_the_timeline(tmp_path: Path) -> None:
    """Packets of a 440 Hz tone, some reordered and one lost, against our 880 Hz."""
    path = tmp_path / "call.wav"
    codec = get_codec("PCMU")
    recording = CallRecording.open(str(path), RATE, True, frame_ts=N)
    rx_frames = tone(440, 100)
    tx_frames = tone(880, 100)
    order = list(range(100))
    order[10], order[11] = order[11], order[10]
    lost = 50
    for tick in range(100):
        n = order[tick]
        if n != lost:
            recording.push(7 + n, 1000 + n * N, 42, encode_ulaw(rx_frames[n]))
        recording.tick(tx_frames[tick], codec, N)
    recording.close()
    data, _ = soundfile.read(str(path), dtype="int16", always_2d=True)
    assert data.shape == (100 * N, 2)
    left, right = data[:, 0], data[:, 1]
    delay = recording.jitter.target_frames * N  # the received side plays 60 ms later
    assert (left[:delay] == 0).all()
    received = np.concatenate(rx_frames)
    heard = left[delay:]
    # G.711 round trip: within a quantisation step of the original, except around the loss
    diff = np.abs(heard.astype(np.int32) - received[: len(heard)])
    ok = np.ones(len(heard), dtype=bool)
    ok[lost * N : (lost + 1) * N] = False
    assert diff[ok].max() < 600
    # the lost frame is the previous one at half amplitude (PLC)
    concealed = heard[lost * N : (lost + 1) * N].astype(np.int32)
    previous = heard[(lost - 1) * N : lost * N].astype(np.int32)
    assert np.array_equal(concealed, previous >> 1)
    assert np.array_equal(right, np.concatenate(tx_frames))
    assert recording.jitter.stats.missing == 1


def test_recording_reopens_at_the_codec_rate_before_the_first_tick(tmp_path: Path) -> None:
    path = tmp_path / "g722.wav"
    recording = CallRecording.open(str(path), RATE, False, frame_ts=N)
    codec = get_codec("PCMU")

    class Wideband:  # only what the recording path uses of a 16 kHz codec
        sample_rate = 16000
        stateful = False

        def decode(self, data: bytes) -> npt.NDArray[np.int16]:
            return codec.decode(data).repeat(2)

    recording.tick(np.zeros(320, dtype=np.int16), Wideband(), N)  # type: ignore[arg-type]
    recording.tick(None, Wideband(), N)  # type: ignore[arg-type]
    recording.close()
    info = soundfile.info(str(path))
    assert info.samplerate == 16000 and info.frames == 2 * 320


def test_a_stateful_codec_conceals_with_its_own_plc(tmp_path: Path) -> None:
    calls: list[int] = []
    codec = get_codec("PCMU")

    class Stateful:
        sample_rate = RATE
        stateful = True

        def decode(self, data: bytes) -> npt.NDArray[np.int16]:
            return codec.decode(data)

        def conceal(self, samples: int) -> npt.NDArray[np.int16]:
            calls.append(samples)
            return np.full(samples, 77, dtype=np.int16)

    path = tmp_path / "plc.wav"
    recording = CallRecording.open(str(path), RATE, False, frame_ts=N)
    recording.jitter.target_frames = 0
    recording.push(1, 0, 5, encode_ulaw(const(1000)))
    for _ in range(4):
        recording.tick(None, Stateful(), N)  # type: ignore[arg-type]
    recording.close()
    data, _ = soundfile.read(str(path), dtype="int16")
    assert calls == [N]  # one frame of codec PLC, then silence
    assert data[N] == 77 and (data[2 * N :] == 0).all()


# -- RtpStream: RECORD on a real stream (loopback sockets, ticks driven by the test) --------------


HOST = "127.0.0.1"
PORTS = (40000, 49999)


def open_stream(loop: asyncio.AbstractEventLoop, peer: socket.socket) -> RtpStream:
    stream = RtpStream.open(loop, MediaClock(loop), HOST, PORTS, random.Random(5))
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
    return stream


def test_stream_records_received_and_played_audio_in_stereo(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    """The far end's 440 Hz arrives as RTP (one packet late, one reordered, one comfort noise
    packet); we play 880 Hz. Left: 440 Hz, right: 880 Hz; one frame per tick."""
    played = tmp_path / "880.wav"
    soundfile.write(str(played), np.concatenate(tone(880, 100)), RATE, subtype="PCM_16")
    path = tmp_path / "rec.wav"
    stream = open_stream(loop, peer)
    source = peer.getsockname()
    sender = RtpSender(0, random.Random(3))
    packets = [sender.packet(encode_ulaw(frame), N) for frame in tone(440, 100)]
    packets[20], packets[21] = packets[21], packets[20]
    try:
        stream.play(str(played))
        stream.start_recording(str(path), stereo=True)
        assert stream.recording == str(path)
        for tick in range(100):
            stream.datagram_received(memoryview(packets[tick]), source)
            if tick == 50:
                cn = RtpSender(13, random.Random(3)).packet(b"\x40", N)  # RFC 3389
                stream.datagram_received(memoryview(cn), source)
            stream.tick(tick * 0.02)
    finally:
        stream.close()
    assert stream.recording is None
    data, _ = soundfile.read(str(path), dtype="int16", always_2d=True)
    assert data.shape == (100 * N, 2)
    assert dominant(data[5 * N :, 0]) == pytest.approx(440, abs=3)
    assert dominant(data[: 99 * N, 1]) == pytest.approx(880, abs=3)
    assert wav_data_frames(path) == (100 * N, 100 * N)


def test_stream_record_replace_stop_and_errors(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = open_stream(loop, peer)
    first, second = tmp_path / "1.wav", tmp_path / "2.flac"
    try:
        assert stream.stop_recording() is None
        stream.start_recording(str(first))
        for tick in range(3):
            stream.tick(tick * 0.02)
        stream.start_recording(str(second))  # replaces: the first file is finished now
        assert soundfile.info(str(first)).frames == 3 * N
        stream.tick(0.06)
        assert stream.stop_recording() == str(second)
        assert soundfile.info(str(second)).frames == N
        with pytest.raises(RecordFileError, match="no such directory"):
            stream.start_recording(str(tmp_path / "nope" / "x.wav"))
        assert stream.recording is None
        stream.start_recording(str(first))  # the same file again: replaced
        stream._clock.skipped_ticks += 4  # the loop was late: the timeline gets silence
        stream.tick(0.2)
    finally:
        stream.close()
    assert soundfile.info(str(first)).frames == 5 * N
    with pytest.raises(RuntimeError):
        stream.start_recording(str(first))


def test_stream_write_error_stops_only_the_recording(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = open_stream(loop, peer)
    try:
        stream.start_recording(str(tmp_path / "x.wav"))
        recording = stream._recording
        assert recording is not None
        sound = recording.recorder._sound
        assert sound is not None
        sound.close()  # the file becomes unwritable
        ticks = CHUNK // 160 + 5
        for tick in range(ticks):  # the first full block fails to write
            stream.tick(tick * 0.02)
        assert stream.recording is None
        assert stream.stats.packets_sent == ticks  # the call goes on
    finally:
        stream.close()


def test_no_file_descriptor_leaks(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        CallRecorder.open(str(tmp_path / "a.wav"), RATE).close()
        with pytest.raises(RecordFileError):
            CallRecorder.open(str(tmp_path / "a.opus"), 44100)
    assert len(os.listdir("/proc/self/fd")) == before
