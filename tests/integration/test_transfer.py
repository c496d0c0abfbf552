"""Blind transfer between three real siproc processes (RFC 3515 REFER, RFC 5589 section 6).

A calls B; B's handler says ``TRANSFER <C>``; A (the transferee) accepts the REFER, calls C with
a new handler that sees SIPROC_REFERRED_BY, and reports the outcome to B in NOTIFYs. On success
B hangs up (its handler gets ``DISCONNECTED 200 transferred`` and SIGTERM); on failure B's
handler gets ``ERROR TRANSFER <status> <reason>`` and the call A-B stays up.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.siproc_proc import Siproc, handler_dir, wait_file, write_handler

# h.sh ROLE MODE [TARGET]: appends "<call> START ...", "<call> EVENT <line>", "<call> EOF"
# and "<call> SIGTERM" to ROLE.log, where <call> is the start of SIPROC_CALL_ID (a transferee
# runs two handlers, one per call). MODE: answer | busy (HANGUP 486) | transfer (ANSWER, then
# TRANSFER TARGET twice on CONNECTED: the second one must be refused) | wait.
HANDLER = r"""
role=$1; mode=$2; target=$3
log="$role.log"
id="${SIPROC_CALL_ID:0:8}"
on_term() {
  while read -r -t 1 line; do echo "$id EVENT $line" >> "$log"; done
  echo "$id SIGTERM" >> "$log"; exit 0
}
trap on_term TERM
echo "$id START outgoing=$SIPROC_OUTGOING uri=$SIPROC_REMOTE_URI" \
     "referred_by=${SIPROC_REFERRED_BY-unset}" >> "$log"
case "$mode" in
  answer|transfer) echo ANSWER ;;
  busy) echo "HANGUP 486" ;;
esac
while read -r line; do
  echo "$id EVENT $line" >> "$log"
  case "$mode:$line" in
    transfer:CONNECTED) echo "TRANSFER $target"; echo "TRANSFER $target" ;;
  esac
done
echo "$id EOF" >> "$log"
sleep 10 & wait $!  # siproc's SIGTERM follows the end of stdin: show that it comes
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER)


def calls_in(text: str) -> dict[str, list[str]]:
    """The lines of a ROLE.log per call id, in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        call, _, rest = line.partition(" ")
        out.setdefault(call, []).append(rest)
    return out


def test_transfer_succeeds_and_the_transferor_hangs_up(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    carol = phones("c", "answer")
    bob = phones("b", "transfer", carol.uri("carol"), env={"SIPROC_CDR": str(workdir / "b.cdr")})
    alice = phones("a", "wait", env={"SIPROC_CDR": str(workdir / "a.cdr")})
    alice.call(bob.uri("bob"))

    bob_log = wait_file(workdir / "b.log", r"SIGTERM$", timeout=15)
    [bob_call] = calls_in(bob_log).values()
    assert "EVENT CONNECTED" in bob_call
    assert "EVENT ERROR TRANSFER a transfer is already in progress" in bob_call
    assert "EVENT DISCONNECTED 200 transferred" in bob_call, bob_call
    assert not any("ERROR TRANSFER 4" in line for line in bob_call), bob_call
    bob.wait_for(r"transfer to sip:carol@\S+ succeeded")

    # Alice: the old call ends with Bob's BYE; a new handler runs for the call to Carol.
    alice_log = wait_file(workdir / "a.log", r"referred_by=sip:bob@", timeout=10)
    wait_file(workdir / "a.log", r"DISCONNECTED 200 remote hangup", timeout=10)
    old, new = calls_in(alice_log).values()
    assert old[0] == f"START outgoing=y uri={bob.uri('bob')} referred_by=unset"
    assert new[0] == f"START outgoing=y uri={carol.uri('carol')} referred_by={bob.uri('bob')}"
    alice_log = wait_file(workdir / "a.log", r"DISCONNECTED 200 remote hangup")
    old, new = calls_in(alice_log).values()
    assert "EVENT DISCONNECTED 200 remote hangup" in old
    assert new[1] == "EVENT CONNECTED", new

    carol_log = wait_file(workdir / "c.log", r"EVENT CONNECTED")
    [carol_call] = calls_in(carol_log).values()
    assert carol_call[0].startswith("START outgoing=n uri=sip:siproc@127.0.0.1")
    assert carol_call[0].endswith("referred_by=unset")
    # The NOTIFYs reached Bob: 100 Trying first, then the final 200 OK.
    assert bob.count(r"transfer NOTIFY: 100 Trying") == 1, bob.stderr()
    assert bob.count(r"transfer NOTIFY: 200 OK \(terminated;reason=noresource\)") == 1
    alice.wait_for(r"transferred by sip:bob@\S+ to sip:carol@")

    # Alice and Carol stay connected until one of them hangs up.
    time.sleep(0.5)
    assert "DISCONNECTED" not in (workdir / "c.log").read_text()
    assert alice.quit() == 0
    wait_file(workdir / "c.log", r"DISCONNECTED 200 remote hangup")

    # The call detail records (SIPROC_CDR): the transferor's says transfer and where to
    [bob_record] = [json.loads(line) for line in (workdir / "b.cdr").read_text().splitlines()]
    assert bob_record["ended_by"] == "transfer" and bob_record["reason"] == "transferred"
    assert bob_record["transfer_target"] == carol.uri("carol")
    old_call, new_call = [json.loads(x) for x in (workdir / "a.cdr").read_text().splitlines()]
    assert old_call["ended_by"] == "remote" and old_call["transfer_target"] == carol.uri("carol")
    assert new_call["referred_by"] == bob.uri("bob") and new_call["ended_by"] == "shutdown"


def test_transfer_to_a_busy_target_keeps_the_call_up(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    carol = phones("c", "busy")
    bob = phones("b", "transfer", carol.uri("carol"))
    alice = phones("a", "wait")
    alice.call(bob.uri("bob"))

    bob_log = wait_file(workdir / "b.log", r"ERROR TRANSFER 486", timeout=15)
    [bob_call] = calls_in(bob_log).values()
    assert "EVENT ERROR TRANSFER 486 Busy Here" in bob_call, bob_call
    alice_log = wait_file(workdir / "a.log", r"DISCONNECTED 486")
    old, new = calls_in(alice_log).values()
    assert new[0].endswith(f"referred_by={bob.uri('bob')}")
    time.sleep(1.0)
    # The call A-B is still up on both sides.
    [bob_call] = calls_in((workdir / "b.log").read_text()).values()
    assert not any("DISCONNECTED" in line for line in bob_call), bob_call
    old, _ = calls_in((workdir / "a.log").read_text()).values()
    assert not any("DISCONNECTED" in line for line in old), old
    assert alice.quit() == 0
    bob_log = wait_file(workdir / "b.log", r"SIGTERM|EOF")
    assert "DISCONNECTED 200 remote hangup" in bob_log


def send_request(host: str, port: int, method: str, extra: str = "", timeout: float = 5.0) -> str:
    """Send one out-of-dialog request over UDP; return the final response's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        message = (
            f"{method} sip:bob@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{sock.getsockname()[1]};branch=z9hG4bK{time.time_ns()}"
            ";rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:mallory@{host}>;tag=m1\r\n"
            f"To: <sip:bob@{host}:{port}>\r\nCall-ID: ood{time.time_ns()}@test\r\n"
            f"CSeq: 1 {method}\r\nContact: <sip:mallory@{host}:9>\r\n{extra}"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(message.encode(), (host, port))
        while True:
            status = sock.recvfrom(65535)[0].decode("utf-8", "replace").split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                return status


def test_refer_and_notify_outside_a_call_are_refused(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    """A REFER outside a dialog would make us call anyone for anyone: 403. A NOTIFY outside a
    dialog matches no subscription: 481 (RFC 6665 section 4.1.3)."""
    bob = phones("b", "answer")
    status = send_request("127.0.0.1", bob.port, "REFER", "Refer-To: <sip:carol@127.0.0.1:9>\r\n")
    assert status.startswith("SIP/2.0 403 "), status
    status = send_request("127.0.0.1", bob.port, "NOTIFY", "Event: refer\r\n")
    assert status.startswith("SIP/2.0 481 "), status
    assert not (workdir / "b.log").exists(), "no handler runs"
    # The Allow list offers both in dialogs.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:bob@127.0.0.1:{bob.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKo{time.time_ns()};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=o\r\n"
                f"To: <sip:bob@127.0.0.1:{bob.port}>\r\nCall-ID: o{time.time_ns()}@t\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", bob.port),
        )
        text = sock.recvfrom(65535)[0].decode()
    allow = next(line for line in text.split("\r\n") if line.startswith("Allow:"))
    assert "REFER" in allow and "NOTIFY" in allow, allow


def test_transfer_refused_before_the_call_is_connected(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    """TRANSFER while the call still rings, and TRANSFER to something that is not a SIP URI."""
    handler = write_handler(
        workdir / "early.sh",
        'echo "TRANSFER sip:carol@127.0.0.1:9"; echo ANSWER\n'
        'while read -r line; do echo "EVENT $line" >> early.log\n'
        '  [ "$line" = CONNECTED ] && echo "TRANSFER tel:+15551234567"; done\n',
    )
    bob = Siproc(handler, cwd=workdir).wait_ready()
    try:
        alice = phones("a", "wait")
        alice.call(bob.uri("bob"))
        text = wait_file(workdir / "early.log", r"ERROR TRANSFER not a SIP URI")
        events = [line for line in text.splitlines() if line.startswith("EVENT ")]
        assert events[0] == "EVENT ERROR TRANSFER not possible while the call is incoming"
        assert events[1] == "EVENT CONNECTED"
        assert events[2].startswith("EVENT ERROR TRANSFER not a SIP URI: only sip: URIs")
        assert alice.count("REFER") == 0
    finally:
        bob.stop()
