"""A Python handler written with siproc.handler runs an IVR menu against a real baresip (issue 11
acceptance).

baresip calls siproc directly on 127.0.0.1; siproc runs ``examples/ivr.py`` (the handler kit's
IVR: answer, PLAY menu.wav, ``gather`` one key with siproc's ``GATHER ... bargein``; 1 plays
one.wav and hangs up). baresip presses 1 (RFC 4733) while the menu plays: siproc's bargein
stops the menu and ``GATHERED 1 max`` carries the key. What baresip heard must be the menu
(440 Hz) and then one.wav (1000 Hz), the menu no more, and siproc must hang up (baresip's
CALL_CLOSED, siproc's "call ended: 200 hung up"). ``examples/ivr.sh``, the same IVR in bash,
must do the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.audio import make_silence, make_tone, read_mono
from tests.peers import Baresip
from tests.siproc_proc import Siproc

MakeBaresip = Callable[..., Baresip]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tone_amplitude(samples: np.ndarray, rate: int, freq: float) -> float:  # type: ignore[type-arg]
    """The amplitude of a sine at `freq` in `samples` (Hann-windowed single-bin DFT)."""
    window = np.hanning(samples.size)
    phase = np.exp(-2j * np.pi * freq * np.arange(samples.size) / rate)
    return float(2 * abs(np.sum(samples * window * phase)) / np.sum(window))


@pytest.mark.parametrize("ivr", ["ivr.py", "ivr.sh"])
def test_kit_ivr_menu_against_baresip(tmp_path: Path, make_baresip: MakeBaresip, ivr: str) -> None:
    work = tmp_path / "siproc"
    work.mkdir()
    make_tone(work / "menu.wav", 440.0, 4.0, amplitude=0.35)
    make_tone(work / "one.wav", 1000.0, 1.5, amplitude=0.35)
    silence = make_silence(tmp_path / "silence.wav", 20.0)
    bob = make_baresip("bob", record=True, audio_source=silence)
    siproc = Siproc(EXAMPLES / ivr, cwd=work).wait_ready()
    try:
        bob.dial(siproc.uri("ivr"))
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        time.sleep(1.0)  # a second of the menu
        bob.send_dtmf("1")
        bob.wait_event("CALL_CLOSED", timeout=15)  # one.wav played, then the IVR hung up
        siproc.wait_for(r"GATHER bargein: 1 prompt\(s\) stopped", timeout=10)
        siproc.wait_for(r"GATHERED 1 max", timeout=10)
        siproc.wait_for(r"call ended: 200 hung up", timeout=10)
        siproc.wait_for(r"handler exited with status 0", timeout=10)
    finally:
        siproc.stop()
        print(siproc.stderr())
    [heard] = bob.recordings("dec")
    samples, rate = read_mono(heard)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert loud.size, "baresip heard nothing"
    onset = int(loud[0])
    menu = samples[onset + int(0.2 * rate) : onset + int(0.8 * rate)]
    assert tone_amplitude(menu, rate, 440.0) > 0.2
    # the end of what baresip heard: one.wav, and the menu no more
    end = int(loud[-1])
    last = samples[end - int(0.8 * rate) : end - int(0.2 * rate)]
    assert tone_amplitude(last, rate, 1000.0) > 0.2
    assert tone_amplitude(last, rate, 440.0) < 0.05
