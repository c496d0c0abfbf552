"""ALSA test rig without a sound card: an ALSA configuration of ``file`` plugin PCMs.

``write_alsa_config`` writes a configuration file that includes the system's ``alsa.conf`` and
adds three PCMs; point ``ALSA_CONFIG_PATH`` at it (alsa-lib reads it instead of the system
file). All sit on the ``null`` slave, wrapped in ``plug`` for format and channel conversion:

* ``captone`` (capture): reads ``capture_raw`` (raw S16_LE mono at ``rate``) through the file
  plugin's ``infile``: a "microphone" that hears a known tone.
* ``playfile`` (playback): writes what is played into ``playback_raw`` (raw S16_LE mono at
  ``rate``): a "loudspeaker" whose sound we can analyse.
* ``phone``: one duplex device as a real card has, ``asym``: capture from ``captone``,
  playback to ``playfile`` (``ASTOP phone`` stops both directions).

The ``null`` slave is not paced by a clock (its reads and writes return at once); siproc's
bridges keep to real time themselves (see siproc.net.alsa). The raw files' rate should be the
rate the PCM is opened at (the call's codec rate): ALSA's own rate converter behind a ``file``
plugin with an ``infile`` shifts the pitch by a few percent, which siproc never sees on real
devices but which would spoil a frequency check here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
CAPTURE = "captone"
PLAYBACK = "playfile"
DUPLEX = "phone"


def system_alsa_conf() -> Path:
    """The system's top-level ALSA configuration (needs libasound2-data), or a loud failure."""
    path = Path(os.environ.get("SIPROC_TEST_ALSA_CONF", str(SYSTEM_ALSA_CONF)))
    if not path.is_file():
        raise AssertionError(
            f"{path} is missing: install libasound2 (scripts/install-deps.sh does it)"
        )
    return path


def write_tone_raw(path: Path, freq_hz: float, seconds: float, rate: int, amp: float = 0.5) -> Path:
    """A sine of ``freq_hz`` as raw S16_LE mono samples at ``rate``."""
    t = np.arange(round(seconds * rate)) / rate
    samples = np.round(amp * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")
    path.write_bytes(samples.tobytes())
    return path


def write_alsa_config(
    directory: Path, capture_raw: Path, playback_raw: Path, rate: int = 8000
) -> Path:
    """Write ``asound.conf`` into ``directory`` (see the module doc); return its path."""

    def quoted(path: Path) -> str:
        text = str(path.resolve())
        if '"' in text or "\\" in text:
            raise ValueError(f"path not usable in an ALSA config: {text}")
        return f'"{text}"'

    config = f"""\
<{system_alsa_conf()}>

pcm.{CAPTURE} {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile {quoted(capture_raw)}
            format "raw"
        }}
        format S16_LE
        rate {rate}
        channels 1
    }}
    hint {{ show on; description "siproc test: capture reads a tone file" }}
}}

pcm.{PLAYBACK} {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file {quoted(playback_raw)}
            format "raw"
        }}
        format S16_LE
        rate {rate}
        channels 1
    }}
    hint {{ show on; description "siproc test: playback writes a raw file" }}
}}

pcm.{DUPLEX} {{
    type asym
    capture.pcm "{CAPTURE}"
    playback.pcm "{PLAYBACK}"
    hint {{ show on; description "siproc test: duplex device" }}
}}
"""
    path = directory / "asound.conf"
    path.write_text(config)
    return path


def aplay_names(config: Path, capture: bool = False) -> list[str]:
    """The PCM names ``aplay -L`` (``arecord -L``) prints with ``config`` (needs alsa-utils)."""
    tool = "arecord" if capture else "aplay"
    out = subprocess.run(
        [tool, "-L"],
        env={**os.environ, "ALSA_CONFIG_PATH": str(config)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [line for line in out.splitlines() if line and not re.match(r"\s", line)]


def read_raw(path: Path, skip_seconds: float = 0.0, rate: int = 8000) -> np.ndarray:  # type: ignore[type-arg]
    """The samples of a raw S16_LE mono file as floats in [-1, 1]."""
    data = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float64) / 32768
    return data[round(skip_seconds * rate) :]


def dominant(samples: np.ndarray, rate: int) -> float:  # type: ignore[type-arg]
    """The frequency with the most energy (Hann window, parabolic peak interpolation)."""
    if samples.size < 256:
        raise AssertionError(f"only {samples.size} samples to analyse")
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * np.hanning(samples.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        if denominator:
            offset = 0.5 * (left - right) / denominator
    return float((peak + offset) * rate / samples.size)


def level(samples: np.ndarray) -> float:  # type: ignore[type-arg]
    """RMS relative to full scale."""
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
