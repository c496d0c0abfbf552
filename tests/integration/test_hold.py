"""HOLD and RESUME between two real siproc processes on loopback (DESIGN.md 4.4).

alice calls bob; both play a tone. alice's handler says HOLD (a re-INVITE offering sendonly),
then RESUME (sendrecv). bob's handler hears HOLD and RESUME; bob sends no RTP while held (its
packet counter, as logged at the hold and at the resume, does not move) and alice's stereo
recording has bob's side silent in the hold window and his tone before and after. HOLD and
RESUME where they make no sense are refused with ERROR.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.siproc_proc import MakePhone, handler_dir, wait_file

ENDED = r"^(SIGTERM|EOF)$"
HOLD_AT = 1.0  # seconds after CONNECTED
HOLD_FOR = 1.5

# HANDLER ROLE MODE: logs "EVENT <line>" for every event to ROLE.log, then EOF or SIGTERM.
#   holder  (caller) HOLD before the call is up (refused). On CONNECTED: RECORD rec.wav stereo,
#           PLAY a440.wav, RESUME (refused: not on hold); after HOLD_AT: HOLD twice (the second
#           is refused: in progress), 0.5 s later HOLD again (refused: already on hold); after
#           HOLD_FOR: RESUME; 1 s later HANGUP
#   held    ANSWER after 0.5 s (the holder's first HOLD must find its call still calling: an
#           answer within milliseconds raced it); PLAY b880.wav on CONNECTED
HANDLER = rf"""
role=$1; mode=$2
log="$role.log"
on_term() {{
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
case "$mode" in
  holder) echo HOLD ;;
  held) sleep 0.5; echo ANSWER ;;  # alice's first HOLD is read while her call is not up
esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    holder:CONNECTED)
      echo "RECORD rec.wav stereo"; echo "PLAY a440.wav"; echo RESUME
      (sleep {HOLD_AT}; echo HOLD; echo HOLD; sleep 0.5; echo HOLD
       sleep {HOLD_FOR - 0.5}; echo RESUME; sleep 1; echo HANGUP) & ;;
    held:CONNECTED) echo "PLAY b880.wav" ;;
  esac
done
echo EOF >> "$log"
"""


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER, {"a440.wav": (440.0, 10.0), "b880.wav": (880.0, 10.0)})


def level(samples: np.ndarray, rate: int, start: float, end: float) -> float:  # type: ignore[type-arg]
    part = samples[round(start * rate) : round(end * rate)]
    return float(np.sqrt(np.mean(part * part)))


def test_hold_and_resume_between_two_phones(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "held")
    alice = phones("alice", "holder")
    alice.call(bob.uri("bob"))

    alice_events = events(wait_file(workdir / "alice.log", ENDED, timeout=15))
    assert alice_events == [
        "ERROR HOLD not possible while the call is calling",
        "CONNECTED",
        "ERROR RESUME the call is not on hold",
        "ERROR HOLD HOLD is still in progress",
        "ERROR HOLD the call is already on hold",
        "DISCONNECTED 200 hung up",
    ], alice_events
    bob_events = events(wait_file(workdir / "bob.log", ENDED))
    assert bob_events == ["CONNECTED", "HOLD", "RESUME", "DISCONNECTED 200 remote hangup"]

    # bob sent nothing while held: his RTP packet count did not move from HOLD to RESUME.
    # (logged by bob's media worker, in the call's name)
    held = bob.wait_for(r"\[call [^]]+\] RTP sending paused \((\d+) packets sent")
    resumed = bob.wait_for(r"RTP sending resumed \((\d+) packets sent")
    assert int(held.group(1)) > 0.8 * HOLD_AT / 0.02
    assert int(resumed.group(1)) - int(held.group(1)) <= 1
    alice.wait_for(r"re-INVITE to hold the call \(sendonly\)")
    alice.wait_for(r"re-INVITE to resume the call \(sendrecv\)")
    alice.wait_for(r"call put on hold by us")
    alice.wait_for(r"call taken off hold by us")

    # alice's recording: left is bob (880 Hz), silent while held; right is alice, never held.
    alice.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    data, rate = soundfile.read(str(workdir / "rec.wav"), always_2d=True)
    bob_side, alice_side = data[:, 0], data[:, 1]
    assert level(bob_side, rate, 0.3, HOLD_AT - 0.1) > 0.1
    assert level(bob_side, rate, HOLD_AT + 0.2, HOLD_AT + HOLD_FOR - 0.2) < 0.01
    assert level(bob_side, rate, HOLD_AT + HOLD_FOR + 0.3, HOLD_AT + HOLD_FOR + 0.8) > 0.1
    assert level(alice_side, rate, HOLD_AT + 0.2, HOLD_AT + HOLD_FOR - 0.2) > 0.1
    text = wait_file(workdir / "bob.log", ENDED)
    assert not re.search(r"^EVENT ERROR", text, re.M), text
