"""Mid-call session changes against SIPp scenarios (issue 4: hold and resume).

SIPp plays the far ends that baresip cannot be made to play on demand:

- ``uac_update_hold.xml`` holds siproc with UPDATE (RFC 3311) ``a=sendonly``, then with the
  RFC 2543 ``c=0.0.0.0``, and resumes with a re-INVITE that moves its media to another port and
  its Contact to ``sip:moved@``: siproc's handler hears HOLD once and RESUME once, siproc sends
  no RTP while held, then sends to the new port, and its BYE goes to the new Contact;
- ``uas_hold_491_auth.xml`` answers siproc's HOLD re-INVITE with 491 (siproc owns the Call-ID and
  tries again after 2.1-4 s, RFC 3261 section 14.1), then with a 401 digest challenge (qop=auth),
  and challenges the MESSAGE that follows with 401 (no qop): both are sent again with
  credentials that SIPp verifies.
"""

from __future__ import annotations

import csv
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers import LOOPBACK, Sipp, free_port
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeSipp = Callable[..., Sipp]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ENDED = r"^(SIGTERM|EOF)$"

# HANDLER LOG MODE: logs "EVENT <line>" for every event, then EOF or SIGTERM.
#   update  ANSWER; PLAY tone.wav on CONNECTED; HANGUP 1 s after RESUME
#   push    (outgoing) HOLD on CONNECTED; 6 s later "MESSAGE hello", HANGUP 1 s after that
HANDLER = r"""
log=$1; mode=$2
on_term() {
  while IFS= read -r -t 1 line; do printf 'EVENT %s\n' "$line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = update ] && echo ANSWER
while IFS= read -r line; do
  printf 'EVENT %s\n' "$line" >> "$log"
  case "$mode:$line" in
    update:CONNECTED) echo "PLAY tone.wav" ;;
    update:RESUME) (sleep 1; echo HANGUP) & ;;
    push:CONNECTED) echo HOLD; (sleep 6; echo "MESSAGE hello"; sleep 1; echo HANGUP) & ;;
  esac
done
echo EOF >> "$log"
"""


def handler_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def successful_calls(sipp: Sipp) -> int:
    """The SuccessfulCall(C) counter of the last line of sipp's -trace_stat CSV."""
    [stats] = [p for p in sipp.workdir.glob("*.csv") if "rtt" not in p.name]
    rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";"))
    return int(rows[-1][rows[0].index("SuccessfulCall(C)")])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER, {"tone.wav": (440.0, 20.0)})


def test_update_hold_and_reinvite_resume_with_new_target_and_media(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "update")
    rtp_port = free_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media:
        media.bind((LOOPBACK, rtp_port))  # where the resuming re-INVITE moves SIPp's media
        media.setblocking(False)
        uac = make_sipp(
            SIPP_DIR / "uac_update_hold.xml",
            f"127.0.0.1:{alice.port}",
            timeout=15,
            extra_args=["-s", "alice", "-key", "rtp_port", str(rtp_port)],
        )
        result = uac.wait(timeout=25)
        assert result.returncode == 0, result.stdout[-3000:]
        assert successful_calls(uac) == 1
        packets = 0
        while True:
            try:
                data = media.recv(4096)
            except BlockingIOError:
                break
            packets += data[:1] == b"\x80"  # RTP version 2
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events == ["CONNECTED", "HOLD", "RESUME", "DISCONNECTED 200 hung up"], events
    held = alice.wait_for(r"RTP sending paused \((\d+) packets sent")
    resumed = alice.wait_for(r"RTP sending resumed \((\d+) packets sent")
    assert int(resumed.group(1)) - int(held.group(1)) <= 1, "no RTP while held"
    assert packets >= 20, f"only {packets} RTP packets reached the new media port"


def test_hold_reinvite_after_491_and_challenges(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    uas = make_sipp(SIPP_DIR / "uas_hold_491_auth.xml", timeout=20)
    uas.wait_listening()
    alice = make_siproc(
        "alice.log", "push", env={"SIPROC_USERNAME": "alice", "SIPROC_PASSWORD": "secret"}
    )
    alice.call(uas.uri)
    result = uas.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]
    assert successful_calls(uas) == 1

    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events == ["CONNECTED", "DISCONNECTED 200 hung up"], events  # no ERROR
    retry = alice.wait_for(r"re-INVITE crossed the far end's \(491\): again in (\d+\.\d+) s")
    assert 2.1 <= float(retry.group(1)) <= 4.0
    alice.wait_for(r"call put on hold by us")
    assert alice.count(r"re-INVITE to hold the call") == 2  # the first try and the retry
    assert "secret" not in alice.stderr()
