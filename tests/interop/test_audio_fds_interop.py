"""SIPROC_AUDIO_FDS against a real baresip (issue 10 acceptance): "a Python handler reads fd 3
and writes it back to fd 4 (an echo); the caller's recording holds its own tone, delayed."

baresip calls siproc directly on 127.0.0.1 and sends a probe (silence, a 550 Hz burst,
silence; it hangs up when the file ends); its sndfile module records what it sent and what it
heard. siproc's handler answers and echoes fd 3 to fd 4 in Python. What baresip heard holds
the burst, starting later than it was sent by the round trip, at about the level it was sent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.peers import Baresip
from tests.siproc_proc import MakePhone, handler_dir, wait_file
from tests.ws_bot import goertzel_share

MakeBaresip = Callable[..., Baresip]

RATE = 8000
TONE_HZ = 550.0
LEAD, BURST, TAIL = 1.0, 1.0, 2.0  # seconds of the probe

ECHO = r"""
import os, sys, threading

def echo():
    while True:
        data = os.read(3, 4096)
        if not data:
            return
        try:
            os.write(4, data)
        except BrokenPipeError:
            return

threading.Thread(target=echo, daemon=True).start()
print("ANSWER", flush=True)
with open("handler.log", "a", buffering=1) as log:
    for line in sys.stdin:
        log.write("EVENT " + line)
    log.write("EOF\n")
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = handler_dir(tmp_path / "siproc", f"exec {sys.executable} echo.py\n")
    (work / "echo.py").write_text(ECHO)
    return work


def onset(samples: np.ndarray, rate: int) -> float:  # type: ignore[type-arg]
    """When ``samples`` first get loud (10 ms blocks), in seconds."""
    block = rate // 100
    for i in range(0, len(samples) - block, block):
        if np.sqrt(np.mean(samples[i : i + block] ** 2)) > 0.1:
            return i / rate
    raise AssertionError("the recording stays silent")


def test_echo_handler_sends_the_caller_its_own_tone_delayed(
    workdir: Path, tmp_path: Path, make_baresip: MakeBaresip, make_siproc: MakePhone
) -> None:
    t = np.arange(int(BURST * RATE)) / RATE
    burst = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    probe = np.concatenate([np.zeros(int(LEAD * RATE)), burst, np.zeros(int(TAIL * RATE))])
    source = tmp_path / "probe.wav"
    soundfile.write(str(source), probe, RATE, subtype="PCM_16")

    # (SIPROC_MEDIA_IDLE=0: the worker is ready before the call, even on a loaded machine)
    siproc = make_siproc(env={"SIPROC_AUDIO_FDS": "yes", "SIPROC_MEDIA_IDLE": "0"})
    bob = make_baresip("bob", record=True, audio_source=source)
    bob.dial(siproc.uri("echo"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_event("CALL_CLOSED", timeout=LEAD + BURST + TAIL + 10)  # the probe ended
    wait_file(workdir / "handler.log", r"^EOF$", timeout=10)
    siproc.wait_for(r"audio fds closed: (\d+) frames to the handler, 0 dropped", timeout=5)

    [sent_path], [heard_path] = bob.recordings("enc"), bob.recordings("dec")
    sent, rate = soundfile.read(str(sent_path))
    heard, heard_rate = soundfile.read(str(heard_path))
    assert rate == heard_rate == RATE
    # The dump of what it heard starts with the first packet, a little after the one of what
    # it sent; both end at the hangup. So the onsets' difference is at most the delay, and
    # with the files aligned at their ends it is about the delay.
    at_least = onset(heard, rate) - onset(sent, rate)
    about = at_least + (len(sent) - len(heard)) / rate
    print(f"baresip heard its tone {about * 1000:.0f} ms after it sent it")
    assert at_least > 0.02, at_least  # delayed: the round trip, jitter buffers, the pipes
    assert about < 1.0, about  # baresip's jitter buffer (100-200 ms here) and siproc's
    start = int((onset(heard, rate) + 0.05) * rate)
    echoed = heard[start : start + int((BURST - 0.2) * rate)]
    assert goertzel_share(echoed, TONE_HZ, rate) > 0.8  # its own tone
    level = np.sqrt(np.mean(echoed**2)) / np.sqrt(np.mean(burst**2))
    assert 0.6 < level < 1.4, level  # G.711 both ways, 8 <-> 16 kHz twice
    before = heard[: max(0, start - int(0.1 * rate))]
    assert not before.size or np.sqrt(np.mean(before**2)) < 0.02  # nothing before the echo
