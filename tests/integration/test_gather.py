"""GATHER between two real siproc processes (issue 10): keys in SIP INFO (no telephone-event
negotiated) are gathered like RFC 4733 ones, and ``bargein`` stops a SAY prompt at the first key.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.siproc_proc import Siproc, wait_file, write_handler

ENDED = r"^(SIGTERM|EOF)$"
NO_TELEPHONE_EVENT = {"SIPROC_CODEC_PRIORITIES": "telephone-event:0"}

# ROLE MODE: logs every event to ROLE.log.
#   menu   ANSWER; on CONNECTED: a long SAY, then GATHER max=3 finish=# bargein, and a STOP
#          of nothing (ERROR STOP); HANGUP on GATHERED
#   keys   on CONNECTED: wait 1.5 s (the prompt plays), then DTMF 12#
HANDLER = r"""
role=$1; mode=$2
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = menu ] && echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    menu:CONNECTED)
      echo "SAY Welcome to the test menu. This prompt is long enough to be interrupted by a key."
      echo "GATHER max=3 finish=# bargein" ;;
    menu:GATHERED*) echo HANGUP ;;
    keys:CONNECTED) sleep 1.5; echo "DTMF 12#" ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (scripts/install-deps.sh installs it)")
    write_handler(tmp_path / "h.sh", HANDLER)
    return tmp_path


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def test_gather_info_keys_with_bargein_over_a_say_prompt(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    env = {**NO_TELEPHONE_EVENT, "SIPROC_TTS_CACHE_DIR": str(workdir / "cache")}
    bob = phones("bob", "menu", env=env)
    alice = phones("alice", "keys", env=env)
    alice.call(bob.uri("bob"))
    bob_events = events(wait_file(workdir / "bob.log", ENDED, timeout=20))
    assert bob_events == [
        "CONNECTED",
        "DTMF 1",
        "STOPPED say:1",  # bargein: the prompt stops at the first key
        "DTMF 2",
        "DTMF #",
        "GATHERED 12 finish",
        "DISCONNECTED 200 hung up",
    ], bob_events
    bob.wait_for(r"GATHER bargein: 1 prompt\(s\) stopped")
    alice.wait_for(r"call ended: 200 remote hangup")
    assert bob.count(r"NonInviteServerTransaction INFO .*created") == 3  # the keys: SIP INFO
