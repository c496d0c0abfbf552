"""Audio helpers for tests: write test tones, and measure what a peer heard.

Files are mono 16-bit PCM WAV (what baresip's ``aufile`` source and ``sndfile`` recorder use).
Measurements read any format soundfile understands and mix multi-channel files down to mono.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

FloatArray = npt.NDArray[np.float64]


def make_tone(
    path: Path, freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> Path:
    """Write a sine tone of ``freq_hz`` lasting ``seconds`` as a mono 16-bit WAV; return ``path``.

    ``amplitude`` is relative to full scale (0.5 is -6 dBFS: loud, and far from clipping after
    G.711 companding).
    """
    if not 0 < freq_hz < rate / 2:
        raise ValueError(f"frequency {freq_hz} Hz is not below the Nyquist limit of {rate} Hz")
    if seconds <= 0:
        raise ValueError(f"tone length must be positive, got {seconds} s")
    if not 0 < amplitude <= 1:
        raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    samples = amplitude * np.sin(2 * np.pi * freq_hz * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
    return path


def make_silence(path: Path, seconds: float, rate: int = 8000) -> Path:
    """Write ``seconds`` of digital silence as a mono 16-bit WAV; return ``path``."""
    if seconds <= 0:
        raise ValueError(f"silence length must be positive, got {seconds} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(round(seconds * rate), dtype=np.int16), rate, subtype="PCM_16")
    return path


def read_mono(path: Path, skip_seconds: float = 0.0) -> tuple[FloatArray, int]:
    """Return the samples of ``path`` as floats in [-1, 1] (channels averaged) and the rate.

    The first ``skip_seconds`` are dropped (call setup, jitter buffer fill).
    """
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    samples: FloatArray = np.asarray(data, dtype=np.float64).mean(axis=1)
    return samples[round(skip_seconds * rate) :], int(rate)


def dominant_frequency(path: Path, skip_seconds: float = 0.0) -> float:
    """Return the frequency in Hz with the most energy in ``path`` (after ``skip_seconds``).

    Hann-windowed FFT over the whole remaining file, refined between bins by parabolic
    interpolation of the log magnitude, so a few seconds at 8 kHz resolve well under 1 Hz.
    Raises ValueError when too little audio is left or it is silent.
    """
    samples, rate = read_mono(path, skip_seconds)
    if samples.size < 256:
        raise ValueError(f"{path}: only {samples.size} samples after skipping {skip_seconds} s")
    windowed = (samples - samples.mean()) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0.0  # no DC
    peak = int(np.argmax(spectrum))
    if spectrum[peak] == 0.0:
        raise ValueError(f"{path}: the audio is silent")
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        if denominator != 0.0:
            offset = 0.5 * (left - right) / denominator
    return float((peak + offset) * rate / samples.size)


def rms(path: Path, skip_seconds: float = 0.0) -> float:
    """Return the root-mean-square level of ``path`` relative to full scale (0.0 = silence).

    A full-scale sine has an RMS of about 0.707. Returns 0.0 for an empty file.
    """
    samples, _ = read_mono(path, skip_seconds)
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples * samples)))


def duration(path: Path) -> float:
    """Return the length of ``path`` in seconds."""
    info = sf.info(str(path))
    return float(info.frames) / float(info.samplerate)


def wav_data_frames(path: Path) -> tuple[int, int]:
    """(frames the WAV header's ``data`` chunk claims, frames the file really holds after it).

    Equal numbers mean the header was finalised for exactly the data written. Also checks that
    the RIFF size covers the whole file. Raises AssertionError for a file that is not RIFF/WAVE.
    """
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", f"{path} is not a RIFF/WAVE file"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8, f"{path}: RIFF size not final"
    pos, block_align = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            block_align = int.from_bytes(data[pos + 20 : pos + 22], "little")
        elif chunk == b"data":
            assert block_align, f"{path}: data chunk before fmt chunk"
            return size // block_align, (len(data) - pos - 8) // block_align
        pos += 8 + size + (size & 1)
    raise AssertionError(f"{path} has no data chunk")


def best_match(recording: np.ndarray, speech: np.ndarray) -> tuple[float, int]:  # type: ignore[type-arg]
    """(normalised cross-correlation, offset in samples) of ``speech`` where it best fits in
    ``recording``."""
    size = 1 << int(np.ceil(np.log2(len(recording) + len(speech))))
    spectrum = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(speech, size))
    correlation = np.fft.irfft(spectrum, size)[: len(recording) - len(speech) + 1]
    energy = np.convolve(recording**2, np.ones(len(speech)), "valid")
    normalised = correlation / (np.sqrt(energy * np.sum(speech**2)) + 1e-12)
    offset = int(np.argmax(normalised))
    return float(normalised[offset]), offset
