"""DTMF between two real siproc processes on loopback (DESIGN.md 4.4): RFC 4733 events, SIP
INFO when telephone-event is disabled, in-band tones played from a file, and the handler's
errors (invalid keys, not connected)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.siproc_proc import MakePhone, wait_file, write_handler

ENDED = r"^(SIGTERM|EOF)$"
NO_TELEPHONE_EVENT = {"SIPROC_CODEC_PRIORITIES": "telephone-event:0"}

# HANDLER LOG MODE [ARG]: logs "EVENT <line>" for every event, then EOF or SIGTERM.
#   answer  "DTMF 1" before answering (refused: not connected), RINGING, ANSWER; on CONNECTED
#           "DTMF 12x" (refused: invalid key)
#   send    on CONNECTED "DTMF ARG" (words of ARG as separate commands), HANGUP 4 s later
#   play    on CONNECTED "PLAY ARG", HANGUP on STOPPED
HANDLER = r"""
log=$1; mode=$2; arg=$3
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = answer ] && { echo "DTMF 1"; echo RINGING; echo ANSWER; }
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    answer:CONNECTED) echo "DTMF 12x" ;;
    send:CONNECTED) for keys in $arg; do echo "DTMF $keys"; done; sleep 4; echo HANGUP ;;
    play:CONNECTED) echo "PLAY $arg" ;;
    play:STOPPED*) echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""

KEYPAD = {
    key: (row_hz, column_hz)
    for row_hz, keys in zip((697, 770, 852, 941), ("123A", "456B", "789C", "*#0D"), strict=True)
    for column_hz, key in zip((1209, 1336, 1477, 1633), keys, strict=True)
}


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def dtmf(text: str) -> str:
    return "".join(e[5:] for e in events(text) if e.startswith("DTMF "))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", HANDLER)
    return tmp_path


def check_answerer(text: str) -> None:
    """The answering handler's refused commands: DTMF before the call is up, invalid keys."""
    seen = events(text)
    assert seen[0] == "ERROR DTMF not possible while the call is incoming", seen
    assert "ERROR DTMF invalid DTMF character 'X'" in seen, seen


def test_rfc4733_every_key_once_in_order(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob.log", "answer")
    alice = phones("alice.log", "send", "0123456789 *#ABCD")  # two commands: queued
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "0123456789*#ABCD"
    check_answerer(bob_log)
    alice_log = wait_file(workdir / "alice.log", ENDED)
    assert not any(e.startswith("ERROR") for e in events(alice_log)), alice_log


def test_sip_info_when_telephone_event_is_disabled(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob.log", "answer")
    alice = phones("alice.log", "send", "*1a#", env=NO_TELEPHONE_EVENT)
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "*1A#"
    check_answerer(bob_log)
    assert alice.count(r"ERROR") == 0, alice.stderr()


def test_in_band_quick_tones_from_a_played_file(workdir: Path, phones: MakePhone) -> None:
    """40 ms tones with 40 ms gaps, played by alice, detected by bob (no telephone-event)."""
    rate = 8000
    t = np.arange(rate * 40 // 1000) / rate
    parts = [np.zeros(rate // 5)]
    for key in "123#":
        low, high = KEYPAD[key]
        parts += [0.25 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))]
        parts += [np.zeros(rate * 40 // 1000)]
    parts += [np.zeros(rate // 5)]
    sf.write(str(workdir / "keys.wav"), np.concatenate(parts), rate, subtype="PCM_16")
    bob = phones("bob.log", "answer", env=NO_TELEPHONE_EVENT)
    alice = phones("alice.log", "play", "keys.wav")
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "123#"
