"""Two real siproc processes on loopback, real handler scripts, real pipes (DESIGN.md 4.4)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.siproc_proc import MakePhone, Siproc, handler_dir, wait_file, write_handler

# A handler in the style of the manual page's example, logging what it sees to <role>.log.
LOGGING_HANDLER = r"""
role=$1; mode=$2
log="$role.log"
# On SIGTERM, read what is left on stdin (the DISCONNECTED line) before leaving.
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
echo "START outgoing=$SIPROC_OUTGOING uri=$SIPROC_REMOTE_URI id=$SIPROC_REMOTE_ID" \
     "contact=$SIPROC_REMOTE_CONTACT ruri=$SIPROC_REQUEST_URI pw=${SIPROC_PASSWORD-unset}" >> "$log"
case "$mode" in
  answer) echo RINGING; echo ANSWER ;;
  answerplay) echo ANSWER ;;
  ring) echo RINGING ;;
  exit) exit 0 ;;
  hangup486) echo "HANGUP 486" ;;
esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) case "$mode" in play|answerplay) echo "PLAY tone.wav" ;; esac ;;
    STOPPED*) case "$mode" in play|answerplay) echo HANGUP ;; esac ;;
  esac
done
echo "EOF" >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, LOGGING_HANDLER, {"tone.wav": (440.0, 1.0)})


def test_manual_page_example_between_two_phones(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer")
    alice = phones("alice", "play")
    alice.call(bob.uri("bob"))
    alice_log = wait_file(workdir / "alice.log", r"^(SIGTERM|EOF)$")
    assert "START outgoing=y" in alice_log
    assert f"uri={bob.uri('bob')}" in alice_log
    assert "pw=unset" in alice_log
    lines = alice_log.splitlines()
    events = [line for line in lines if line.startswith("EVENT")]
    # bob's RINGING (180) reaches alice's handler as the event RINGING
    assert events[:3] == ["EVENT RINGING", "EVENT CONNECTED", "EVENT STOPPED tone.wav"]
    bob_log = wait_file(workdir / "bob.log", r"^(SIGTERM|EOF)$")
    assert "START outgoing=n" in bob_log
    assert f"ruri={bob.uri('bob')}" in bob_log
    assert "EVENT CONNECTED" in bob_log
    assert "EVENT DISCONNECTED 200" in bob_log
    alice.wait_for(r"call ended: 200")
    bob.wait_for(r"call ended: 200 remote hangup")


def test_handler_exit_before_answer_gives_480(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "exit")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    text = wait_file(workdir / "alice.log", r"DISCONNECTED 480")
    assert "EVENT CONNECTED" not in text
    wait_file(workdir / "alice.log", r"^(SIGTERM|EOF)$")


def test_hangup_with_status_before_answer(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "hangup486")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "alice.log", r"DISCONNECTED 486")


def test_caller_cancels_before_answer(workdir: Path, phones: MakePhone) -> None:
    cancel_handler = write_handler(
        workdir / "cancel.sh",
        "trap 'while read -r -t 1 l; do echo \"EVENT $l\" >> caller.log; done; exit 0' TERM\n"
        "sleep 1; echo HANGUP\n"
        'while read -r line; do echo "EVENT $line" >> caller.log; done\n',
    )
    bob = phones("bob", "ring")
    caller = Siproc(cancel_handler, cwd=workdir).wait_ready()
    try:
        caller.call(bob.uri("bob"))
        bob_log = wait_file(workdir / "bob.log", r"^(SIGTERM|EOF)$")
        assert "EVENT DISCONNECTED 487" in bob_log
        assert "EVENT CONNECTED" not in bob_log
        caller_log = wait_file(workdir / "caller.log", r"DISCONNECTED 487")
        assert "CONNECTED\n" not in caller_log
        bob.wait_for(r"call ended: 487 cancelled by the caller")
    finally:
        caller.stop()
        print(f"--- caller ---\n{caller.stderr()}")


def test_remote_failure_of_unreachable_callee_ends_call(workdir: Path, phones: MakePhone) -> None:
    alice = phones("alice", "wait")
    bob = phones("bob", "answer")
    bob_uri = bob.uri("bob")
    bob.quit()
    alice.call(bob_uri)
    # Nothing answers on that port any more: ICMP makes UDP sends fail, Timer B gives up at 32 s
    # at the latest; the handler must hear of it either way.
    wait_file(workdir / "alice.log", r"DISCONNECTED (408|503)", timeout=40)


def test_quit_hangs_up_every_call_and_exits_zero(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    wait_file(workdir / "alice.log", r"EVENT CONNECTED")
    assert alice.quit() == 0
    wait_file(workdir / "alice.log", r"^(SIGTERM|EOF)$")
    bob_log = wait_file(workdir / "bob.log", r"^(SIGTERM|EOF)$")
    assert "DISCONNECTED 200" in bob_log


def test_sigterm_is_a_graceful_shutdown(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    bob.signal(signal.SIGTERM)
    assert bob.proc.wait(15) == 0
    wait_file(workdir / "alice.log", r"DISCONNECTED 200")


def test_bad_stdin_line_is_reported_and_ignored(workdir: Path, phones: MakePhone) -> None:
    alice = phones("alice", "wait")
    alice.send("DIAL sip:x@127.0.0.1")
    alice.wait_for(
        r"ignoring input line: expected 'CALL <sip-uri>', 'DRAIN' or 'QUIT', not 'DIAL sip:x@"
    )
    alice.send("CALL not-a-uri")
    alice.wait_for(r"CALL 'not-a-uri': not a SIP URI")
    alice.send("CALL sip:bob@127.0.0.1 Via: x")
    alice.wait_for(r"ignoring input line: CALL: siproc writes the Via header itself")
    assert alice.proc.poll() is None
    assert alice.quit() == 0


def test_end_of_stdin_is_not_quit(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer")
    assert bob.proc.stdin is not None
    bob.proc.stdin.close()
    bob.wait_for(r"end of standard input: still serving")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")


def test_options_is_answered(phones: MakePhone) -> None:
    bob = phones("bob", "answer")
    response = options_ping("127.0.0.1", bob.port)
    assert response.startswith("SIP/2.0 200 OK\r\n")
    assert "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in response
    assert "\r\nAccept: application/sdp\r\n" in response
    assert "\r\nSupported:" in response


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PC\x01MU/8000",  # a control character
        "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 a=1\rb=2",  # a CR
        "m=audio " + "9" * 5000 + " RTP/AVP 0",  # a number int() refuses
    ],
    ids=["control-character", "cr-in-fmtp", "5000-digit-port"],
)
def test_an_invite_with_a_malformed_offer_gets_488_and_no_handler(
    workdir: Path,
    phones: MakePhone,
    media: str,
) -> None:
    """RFC 3261 section 21.4.26: the session description is not acceptable; no call is left
    behind (the handler, which logs every event, never starts)."""
    bob = phones("bob", "answer")
    sdp = f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        local_port = sock.getsockname()[1]
        invite = (
            f"INVITE sip:bob@127.0.0.1:{bob.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{time.time_ns()};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag=t1\r\n"
            f"To: <sip:bob@127.0.0.1:{bob.port}>\r\nCall-ID: bad-sdp-{time.time_ns()}@test\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:tester@127.0.0.1:{local_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp.encode())}\r\n\r\n{sdp}"
        )
        sock.sendto(invite.encode(), ("127.0.0.1", bob.port))
        statuses = []
        while not statuses or statuses[-1] < 200:
            data, _ = sock.recvfrom(65535)
            statuses.append(int(data.split(b" ", 2)[1]))
    assert statuses[-1] == 488
    bob.wait_for(r"refusing call from .*: .*control character|refusing call from .*bad m= port")
    assert not (workdir / "bob.log").exists() or "EVENT" not in (workdir / "bob.log").read_text()


def test_public_address_is_advertised(workdir: Path, phones: MakePhone) -> None:
    """SIPROC_PUBLIC_ADDRESS replaces the local address in Via, Contact and SDP."""
    bob = phones("bob", "answer")
    alice = phones("alice", "wait", env={"SIPROC_PUBLIC_ADDRESS": "127.0.0.2"}, log_level=6)
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    assert "contact=sip:siproc@127.0.0.2:" in bob_log
    assert alice.count(r"^\s*Via: SIP/2.0/UDP 127\.0\.0\.2:") >= 1
    assert alice.count(r"^\s*c=IN IP4 127\.0\.0\.2") >= 1
    assert alice.count(r"^\s*Contact: <sip:siproc@127\.0\.0\.2:") >= 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SIPROC_TRANSPORT_PORT", "70000", "SIPROC_TRANSPORT_PORT: must be a whole number"),
        ("SIPROC_LOG_LEVEL", "9", "SIPROC_LOG_LEVEL: must be a whole number from 0 to 6"),
        ("SIPROC_REGISTRAR_URI", "http://x", "SIPROC_REGISTRAR_URI: not a SIP URI"),
        ("SIPROC_CODEC_PRIORITIES", "FOO:10", "SIPROC_CODEC_PRIORITIES:"),
        ("SIPROC_RTP_PORTS", "20000", "SIPROC_RTP_PORTS: must be a range"),
        ("SIPROC_BIND_ADDRESS", "localhost", "SIPROC_BIND_ADDRESS: must be an IP address"),
    ],
)
def test_bad_environment_exits_1_naming_the_variable(
    workdir: Path, variable: str, value: str, message: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "siproc", str(workdir / "h.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_missing_handler_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "siproc", str(tmp_path / "nope.sh")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "is not an executable file" in result.stderr


def options_ping(host: str, port: int, timeout: float = 5.0) -> str:
    """Send one OPTIONS over UDP from a fresh loopback socket and return the response text."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        local_port = sock.getsockname()[1]
        h = f"[{host}]" if ":" in host else host
        message = (
            f"OPTIONS sip:siproc@{h}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {h}:{local_port};branch=z9hG4bK{time.time_ns()};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:tester@{h}>;tag=t1\r\n"
            f"To: <sip:siproc@{h}:{port}>\r\n"
            f"Call-ID: ping{time.time_ns()}@test\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(message.encode(), (host, port))
        data, _ = sock.recvfrom(65535)
        return data.decode("utf-8", "replace")


def test_call_over_tcp(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer", log_level=6)
    alice = phones("alice", "play")
    alice.call(bob.uri("bob") + ";transport=tcp")
    alice_log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200")
    assert "EVENT CONNECTED" in alice_log and "EVENT STOPPED tone.wav" in alice_log
    wait_file(workdir / "bob.log", r"EVENT DISCONNECTED 200")
    assert bob.count(r"^\s*Via: SIP/2.0/TCP ") >= 3  # INVITE, ACK, BYE (and their responses)
    assert bob.count(r"^\s*Via: SIP/2.0/UDP ") == 0
    ended = alice.wait_for(r"call ended: 200 hung up \(RTP: (\d+) packets sent, (\d+) received\)")
    assert int(ended.group(1)) >= 45 and int(ended.group(2)) >= 45


def test_call_over_ipv6(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer", bind="::1")
    alice = phones("alice", "play", bind="::1")
    alice.call(bob.uri("bob"))
    alice_log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200")
    assert "EVENT STOPPED tone.wav" in alice_log
    bob_log = wait_file(workdir / "bob.log", r"EVENT DISCONNECTED 200")
    assert "contact=sip:siproc@[::1]:" in bob_log
    ended = alice.wait_for(r"call ended: 200 hung up \(RTP: (\d+) packets sent, (\d+) received\)")
    assert int(ended.group(2)) >= 45


def test_a_call_to_a_host_name_is_resolved_without_blocking(
    workdir: Path, phones: MakePhone
) -> None:
    """CALL sip:bob@localhost:PORT: the name is resolved off the event loop, then called."""
    bob = phones("bob", "answer")
    alice = phones("alice", "play")
    alice.call(bob.uri("bob").replace("127.0.0.1", "localhost"))
    alice_log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200")
    assert "EVENT STOPPED tone.wav" in alice_log
    assert "resolving" not in alice.stderr()  # nothing was resolved on the loop
    started = time.monotonic()
    alice.call("sip:bob@nowhere.invalid:5060")
    alice.wait_for(r"siproc: CALL sip:bob@nowhere\.invalid:5060: cannot resolve .nowhere\.invalid.")
    # Its handler ran and was told at once that the call is over, why, and was ended.
    log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 503 .*nowhere\.invalid", 15)
    assert time.monotonic() - started < 15
    assert "START outgoing=y uri=sip:bob@nowhere.invalid:5060" in log
    alice.wait_for(r"call ended: 503 Service Unavailable \(cannot resolve")
    assert alice.proc.poll() is None
    deadline = time.monotonic() + 10
    while alice.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alice.children() == []  # no handler left over


def test_a_refused_tcp_connection_ends_the_call_with_503_at_once(
    workdir: Path, phones: MakePhone
) -> None:
    """RFC 3261 8.1.3.1: a transport error is a 503, now, not a 408 after 32 s of Timer B."""
    with socket.socket() as probe:  # a TCP port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alice = phones("alice", "play")
    started = time.monotonic()
    alice.call(f"sip:nobody@127.0.0.1:{port};transport=tcp")
    log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 503", timeout=10)
    assert time.monotonic() - started < 5
    assert "Connection refused" in log
    assert alice.proc.poll() is None


def test_a_dialog_hop_with_a_host_name_is_located_before_our_bye(
    workdir: Path, phones: MakePhone
) -> None:
    """A caller whose Contact names a host (localhost:PORT): siproc locates it off the loop
    when the INVITE arrives, so its BYE goes out without resolving on the event loop."""
    bob = phones("bob", "answerplay")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        head = (
            f"sip:bob@127.0.0.1:{bob.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{{branch}};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:caller@localhost>;tag=c1\r\n"
            f"To: <sip:bob@127.0.0.1:{bob.port}>{{to_tag}}\r\nCall-ID: hop@test\r\n"
            f"Contact: <sip:caller@localhost:{port}>\r\n"
        )
        invite = (
            "INVITE "
            + head.format(branch="inv", to_tag="")
            + (
                f"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
            )
        )
        sock.sendto(invite.encode(), ("127.0.0.1", bob.port))
        while True:
            text = sock.recvfrom(65535)[0].decode()
            if text.startswith("SIP/2.0 200"):
                break
        to_tag = re.search(r"^To: .*(;tag=[^;\r\n]+)", text, re.M)
        assert to_tag, text
        ack = "ACK " + head.format(branch="ack", to_tag=to_tag.group(1))
        sock.sendto((ack + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode(),
                    ("127.0.0.1", bob.port))  # fmt: skip
        while True:  # bob plays the 1 s tone, then hangs up: its BYE comes to localhost:port
            data, source = sock.recvfrom(65535)
            if data.startswith(b"BYE "):
                break
        bye = data.decode()
        reply = "SIP/2.0 200 OK\r\n" + "".join(
            line + "\r\n"
            for line in bye.split("\r\n")
            if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
        )
        sock.sendto((reply + "Content-Length: 0\r\n\r\n").encode(), source)
    wait_file(workdir / "bob.log", r"EVENT DISCONNECTED 200")
    assert "on the event loop" not in bob.stderr(), bob.stderr()


def test_max_calls_refuses_with_486(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer", env={"SIPROC_MAX_CALLS": "1"})
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 486")
    bob.wait_for(r"refusing call from .*: 486 Busy Here")


def test_call_headers_reach_the_callee_handler_environment(
    workdir: Path, phones: MakePhone
) -> None:
    """CALL <uri> Header: value ... puts headers in the INVITE; the callee's handler sees every
    X- header as SIPROC_HEADER_X_..., and the caller's display name and user."""
    write_handler(
        workdir / "env.sh", "env | grep '^SIPROC_' | sort > env.log\necho ANSWER\ncat >/dev/null\n"
    )
    bob = Siproc(
        workdir / "env.sh", cwd=workdir, env={"SIPROC_ID_URI": '"Alice A." <sip:al%69ce@127.0.0.1>'}
    )
    caller = Siproc(
        workdir / "h.sh",
        "alice",
        "wait",
        cwd=workdir,
        env={"SIPROC_ID_URI": '"Alice A." <sip:al%69ce@127.0.0.1>'},
    )
    try:
        bob.wait_ready()
        caller.wait_ready()
        caller.send(f"CALL {bob.uri('bob')} X-Alert: disk full on /var X-Ticket.Id: 42 Subject: hi")
        text = wait_file(workdir / "env.log", r"SIPROC_REQUEST_URI")
        env = dict(line.split("=", 1) for line in text.splitlines())
        assert env["SIPROC_HEADER_X_ALERT"] == "disk full on /var"
        assert env["SIPROC_HEADER_X_TICKET_ID"] == "42"
        assert "SIPROC_HEADER_SUBJECT" not in env  # only X- headers
        assert env["SIPROC_REMOTE_DISPLAY_NAME"] == "Alice A."
        assert env["SIPROC_REMOTE_USER"] == "alice"
        assert env["SIPROC_OUTGOING"] == "n"
        assert "SIPROC_PASSWORD" not in env
    finally:
        caller.stop()
        bob.stop()


def send_message(host: str, port: int, from_uri: str, text: str, timeout: float = 5.0) -> str:
    """Send an out-of-dialog MESSAGE over UDP and return the response's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        body = text.encode()
        branch = f"z9hG4bK{time.time_ns()}"
        message = (
            f"MESSAGE sip:bob@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{sock.getsockname()[1]};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <{from_uri}>;tag=m1\r\nTo: <sip:bob@{host}:{port}>\r\n"
            f"Call-ID: msg{time.time_ns()}@test\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain;charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sock.sendto(message, (host, port))
        data, _ = sock.recvfrom(65535)
        return data.decode("utf-8", "replace").split("\r\n", 1)[0]


def test_out_of_dialog_message_from_the_caller_reaches_the_handler(
    workdir: Path,
    phones: MakePhone,
) -> None:
    bob = phones("bob", "answer")
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    caller = f"sip:siproc@127.0.0.1:{alice.port}"
    assert send_message("127.0.0.1", bob.port, caller, "héllo\nworld \\ x") == "SIP/2.0 200 OK"
    wait_file(workdir / "bob.log", r"EVENT MESSAGE héllo\\nworld \\\\ x$")
    # A MESSAGE from a stranger is answered and logged, and starts nothing.
    assert send_message("127.0.0.1", bob.port, "sip:eve@127.0.0.1", "hi") == "SIP/2.0 200 OK"
    bob.wait_for(r"MESSAGE from sip:eve@127.0.0.1 outside any call: 'hi'")
    assert "EVENT MESSAGE hi" not in (workdir / "bob.log").read_text()
