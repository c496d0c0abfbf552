"""PLAY and STOP against a real baresip (issue 3 acceptance): "Two files played at once are both
audible in the far-end recording; STOP stops the second only; STOPPED events arrive for both."

siproc calls baresip directly on 127.0.0.1. On CONNECTED the handler PLAYs a 3 s 440 Hz file and
a 3 s 1000 Hz file, and 1 s later says STOP. baresip's recording of what it heard must hold both
tones in the first second and only the 440 Hz one after the STOP; the handler must get
``STOPPED`` for the second file first (stopped) and for the first file later (it ended).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.audio import make_silence, make_tone, read_mono
from tests.peers import Baresip
from tests.siproc_proc import Siproc, wait_file, write_handler

MakeBaresip = Callable[..., Baresip]

HANDLER = r"""
on_term() { while read -r -t 1 line; do echo "EVENT $line" >> play.log; done; exit 0; }
trap on_term TERM
while read -r line; do
  echo "EVENT $line" >> play.log
  case "$line" in
    CONNECTED) echo "PLAY low.wav"; echo "PLAY high.wav"; (sleep 1; echo STOP) & ;;
    "STOPPED low.wav") echo HANGUP ;;
  esac
done
"""


def tone_amplitude(samples: np.ndarray, rate: int, freq: float) -> float:  # type: ignore[type-arg]
    """The amplitude of a sine at `freq` in `samples` (Hann-windowed single-bin DFT)."""
    window = np.hanning(samples.size)
    phase = np.exp(-2j * np.pi * freq * np.arange(samples.size) / rate)
    return float(2 * abs(np.sum(samples * window * phase)) / np.sum(window))


def test_two_files_mix_and_stop_stops_the_second(tmp_path: Path, make_baresip: MakeBaresip) -> None:
    work = tmp_path / "siproc"
    work.mkdir()
    write_handler(work / "h.sh", HANDLER)
    make_tone(work / "low.wav", 440.0, 3.0, amplitude=0.35)
    make_tone(work / "high.wav", 1000.0, 3.0, amplitude=0.35)
    silence = make_silence(tmp_path / "silence.wav", 10.0)
    bob = make_baresip("bob", record=True, audio_source=silence)
    siproc = Siproc(work / "h.sh", cwd=work).wait_ready()
    try:
        siproc.call(bob.direct_uri)
        log = wait_file(work / "play.log", r"DISCONNECTED", timeout=15)
        bob.wait_event("CALL_CLOSED", timeout=10)
    finally:
        siproc.stop()
        print(siproc.stderr())
    events = [line[6:] for line in log.splitlines()]
    stopped = [e for e in events if e.startswith("STOPPED")]
    assert stopped == ["STOPPED high.wav", "STOPPED low.wav"], events

    [heard] = bob.recordings("dec")
    samples, rate = read_mono(heard)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert loud.size, "baresip heard nothing"
    onset = int(loud[0])

    def window(start: float, end: float) -> np.ndarray:  # type: ignore[type-arg]
        return samples[onset + int(start * rate) : onset + int(end * rate)]

    both = window(0.2, 0.8)
    after = window(1.5, 2.5)
    assert tone_amplitude(both, rate, 440.0) == pytest.approx(0.35, abs=0.08)
    assert tone_amplitude(both, rate, 1000.0) == pytest.approx(0.35, abs=0.08)
    assert tone_amplitude(after, rate, 440.0) == pytest.approx(0.35, abs=0.08)
    assert tone_amplitude(after, rate, 1000.0) < 0.02  # the STOP stopped the second file only
