"""MESSAGE between two real siproc processes on loopback (DESIGN.md 4.4).

bob's handler sends a text with a newline, a carriage return, a backslash and non-ASCII letters
in the escaped form of the line protocol; alice's handler gets exactly that line back as the
event (the SIP MESSAGE carried the unescaped text), and answers with a MESSAGE of its own. A
MESSAGE before the call is up is refused with ERROR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siproc.calls.protocol import parse_event
from tests.siproc_proc import MakePhone, handler_dir, wait_file

ENDED = r"^(SIGTERM|EOF)$"
# As bob's handler writes it (escaped): line1 LF line2 CR SP \ SP x, "héllo wörld"
ESCAPED = r"line1\nline2\r \\ x, héllo wörld"

# HANDLER ROLE MODE: logs "EVENT <line>" for every event to ROLE.log, then EOF or SIGTERM.
#   sender    "MESSAGE too early" (refused), ANSWER; on CONNECTED: MESSAGE ESCAPED
#   replier   (caller) on a MESSAGE event: MESSAGE "got: <the escaped text>"; on the second
#             event after that HANGUP
HANDLER = r"""
role=$1; mode=$2; text=$3
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = sender ] && { echo "MESSAGE too early"; echo ANSWER; }
while IFS= read -r line; do
  printf 'EVENT %s\n' "$line" >> "$log"
  case "$mode:$line" in
    sender:CONNECTED) printf 'MESSAGE %s\n' "$text" ;;
    sender:MESSAGE*) echo HANGUP ;;
    replier:MESSAGE*) printf 'MESSAGE got: %s\n' "${line#MESSAGE }" ;;
  esac
done
echo EOF >> "$log"
"""


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER)


def test_message_round_trip_with_escapes(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "sender", ESCAPED, log_level=6)
    alice = phones("alice", "replier", log_level=6)
    alice.call(bob.uri("bob"))

    alice_events = events(wait_file(workdir / "alice.log", ENDED, timeout=15))
    assert alice_events[:2] == ["CONNECTED", f"MESSAGE {ESCAPED}"], alice_events
    received = parse_event(alice_events[1])
    assert received == parse_event("MESSAGE line1\\nline2\\r \\\\ x, héllo wörld")
    assert getattr(received, "text", None) == "line1\nline2\r \\ x, héllo wörld"
    assert alice_events[-1].startswith("DISCONNECTED 200"), alice_events

    bob_events = events(wait_file(workdir / "bob.log", ENDED))
    assert bob_events == [
        "ERROR MESSAGE not possible while the call is incoming",
        "CONNECTED",
        f"MESSAGE got: {ESCAPED}",
        "DISCONNECTED 200 hung up",
    ], bob_events

    # On the wire: an in-dialog MESSAGE, text/plain in UTF-8, the text unescaped.
    trace = "\n".join(bob.lines)
    assert "Content-Type: text/plain;charset=UTF-8" in trace
    assert re.search(r"line1\n\s*line2", trace)  # SIP trace lines are indented
    bob.wait_for(r"MESSAGE sent \(\d+ bytes\)")
