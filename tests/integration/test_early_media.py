"""Early media between two real siproc processes on loopback (DESIGN.md 4.4).

The callee's handler says PROGRESS (183 Session Progress with its SDP answer), plays a tone and
sends a DTMF key before it says ANSWER; the caller hears of it as the event PROGRESS, records
from then on, and gets the key and the tone before CONNECTED. RINGING before PROGRESS gives the
caller both events, in order. PROGRESS where it makes no sense is refused with ERROR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile

from tests.audio import dominant_frequency, duration, read_mono, rms
from tests.siproc_proc import MakePhone, handler_dir, wait_file

ENDED = r"^(SIGTERM|EOF)$"
TONE_HZ = 440.0
EARLY_SECONDS = 2.0  # from PROGRESS to ANSWER
TALK_SECONDS = 1.0  # from CONNECTED to the caller's HANGUP

# HANDLER ROLE MODE: logs "EVENT <line>" for every event to ROLE.log, then EOF or SIGTERM.
#   early    PROGRESS, PLAY tone.wav, DTMF 5, then ANSWER after EARLY_SECONDS
#   ringing  RINGING; PROGRESS 0.5 s later; ANSWER 0.5 s after that
#   refused  ANSWER at once, and PROGRESS once connected (refused: the call is connected)
#   caller   RECORD rec.wav on PROGRESS; HANGUP TALK_SECONDS after CONNECTED; a PROGRESS of its
#            own first (refused: the call is outgoing)
HANDLER = rf"""
role=$1; mode=$2
log="$role.log"
on_term() {{
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
case "$mode" in
  early) echo PROGRESS; echo "PLAY tone.wav"; echo "DTMF 5"
         (sleep {EARLY_SECONDS}; echo ANSWER) & ;;
  ringing) (echo RINGING; sleep 0.5; echo PROGRESS; sleep 0.5; echo ANSWER) & ;;
  refused) echo ANSWER ;;
  caller) echo PROGRESS ;;
esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    caller:PROGRESS) echo "RECORD rec.wav" ;;
    caller:CONNECTED) (sleep {TALK_SECONDS}; echo HANGUP) & ;;
    refused:CONNECTED) echo PROGRESS; sleep 0.5; echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""


def events(text: str, *, errors: bool = True) -> list[str]:
    found = [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]
    return found if errors else [e for e in found if not e.startswith("ERROR ")]


def sdp_origins_sent(trace: str) -> dict[str, str]:
    """{status: SDP o= line} of the responses to the INVITE in a siproc SIP trace (level 6)."""
    origins: dict[str, str] = {}
    for block in re.split(r"\n(?=siproc\[)", trace):
        lines = [line.strip() for line in block.splitlines()]  # the trace lines are indented
        if len(lines) < 2 or " send to " not in lines[0]:
            continue
        status = re.fullmatch(r"SIP/2\.0 (\d{3}) .*", lines[1])
        origin = [line for line in lines if line.startswith("o=")]
        if status and origin and "CSeq: 1 INVITE" in lines:
            origins[status.group(1)] = origin[0]
    return origins


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER, {"tone.wav": (TONE_HZ, 1.5)})


def test_progress_and_play_reach_the_caller_before_answer(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "early", log_level=6)  # SIP trace: compare the 183's SDP and the 200's
    alice = phones("alice", "caller")
    alice.call(bob.uri("bob"))

    alice_log = wait_file(workdir / "alice.log", ENDED, timeout=15)
    alice_events = events(alice_log, errors=False)
    # PROGRESS (183), the key sent during early media, then CONNECTED after bob's ANSWER
    assert alice_events[:3] == ["PROGRESS", "DTMF 5", "CONNECTED"], alice_log
    assert "RINGING" not in alice_events
    assert alice_events[-1].startswith("DISCONNECTED 200"), alice_log
    bob_events = events(wait_file(workdir / "bob.log", ENDED))
    # the tone (1.5 s) played out during early media, before the answer
    assert bob_events[:2] == ["STOPPED tone.wav", "CONNECTED"], bob_events
    assert not any(e.startswith("ERROR") for e in bob_events), bob_events

    # alice refused her own PROGRESS (outgoing call): ERROR, before anything else
    assert "ERROR PROGRESS not possible while the call is calling" in alice_log

    # The recording (from PROGRESS on) holds bob's tone before the answer came.
    alice.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    rec = workdir / "rec.wav"
    assert duration(rec) == pytest.approx(EARLY_SECONDS + TALK_SECONDS, abs=0.4)
    early, rate = read_mono(rec)
    early = early[: round(1.4 * rate)]
    assert len(early) > 0.5 * rate
    path = workdir / "early.wav"
    soundfile.write(str(path), early, rate, subtype="PCM_16")
    assert dominant_frequency(path, skip_seconds=0.2) == pytest.approx(TONE_HZ, abs=5)
    assert rms(path, skip_seconds=0.2) > 0.1

    # bob's 200 OK repeats the SDP of its 183 exactly (same o= version, RFC 3264 section 8).
    bob.wait_for(r"call ended: 200")
    origins = sdp_origins_sent("\n".join(bob.lines))
    assert set(origins) == {"183", "200"}, origins
    assert origins["183"] == origins["200"], origins


def test_ringing_then_progress_gives_both_events(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "ringing")
    alice = phones("alice", "caller")
    alice.call(bob.uri("bob"))
    alice_events = events(wait_file(workdir / "alice.log", ENDED, timeout=15), errors=False)
    assert alice_events[:3] == ["RINGING", "PROGRESS", "CONNECTED"], alice_events
    assert events(wait_file(workdir / "bob.log", ENDED))[0] == "CONNECTED"
    alice.wait_for(r"early media from 127\.0\.0\.1 port \d+ \(183\)")


def test_progress_after_answer_is_refused(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "refused")
    alice = phones("alice", "caller")
    alice.call(bob.uri("bob"))
    bob_events = events(wait_file(workdir / "bob.log", ENDED, timeout=15))
    assert bob_events[:2] == [
        "CONNECTED",
        "ERROR PROGRESS not possible while the call is connected",
    ], bob_events
    alice_events = events(wait_file(workdir / "alice.log", ENDED), errors=False)
    assert alice_events[0] == "CONNECTED", alice_events  # no PROGRESS: a plain 200
