"""SIPROC_INBOUND and SIPROC_ACCEPT_REFER against a real Kamailio with a real user database
(issue: safe on the open internet, item 3).

siproc registered at Kamailio takes a call that comes through Kamailio, but INVITEs sent
straight to its port, to its own user or to guessed ones, are refused with 403 and start no
handler. A REFER from the far end of a call is followed or refused as SIPROC_ACCEPT_REFER says.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from tests.interop import test_transfer_interop as transfer
from tests.interop.test_transfer_interop import PASSWORDS, calls_in, siproc_account
from tests.peers import Baresip, Kamailio
from tests.siproc_proc import Siproc, wait_file

MakeBaresip = Callable[..., Baresip]
# The transfer tests' fixtures: siproc's working directory with their handler, the siproc
# factory, and Kamailio with the users alice, bob and carol.
workdir, kam = transfer.workdir, transfer.kam


def direct_invite(port: int, user: str) -> str:
    """An INVITE from a stranger on 127.0.0.1, straight to siproc's port; its final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        own = sock.getsockname()[1]
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {own + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        message = (
            f"INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:mallory@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:mallory@127.0.0.1:{own}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        sock.sendto(message.encode(), ("127.0.0.1", port))
        while True:
            reply = sock.recv(65535).decode()
            if not reply.startswith("SIP/2.0 1"):
                return reply.split("\r\n", 1)[0]


def test_only_calls_through_the_registrar_reach_the_handler(
    workdir: Path, kam: Kamailio, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    alice = siproc_account(make_siproc, kam, "alice", "answer")
    for user in ("alice", "100", "siproc"):
        assert direct_invite(alice.port, user) == "SIP/2.0 403 Forbidden"
    assert not (workdir / "alice.log").exists(), "a stranger's INVITE started a handler"
    alice.wait_for(r"refused INVITE from 127\.0\.0\.1:\d+ \(SIPROC_INBOUND\): .*not the registrar")

    bob = make_baresip("bob", kam, password=PASSWORDS["bob"])
    bob.wait_registered()
    bob.dial(kam.aor("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    [call] = calls_in(wait_file(workdir / "alice.log", r"EVENT CONNECTED"))
    assert call[0].startswith(f"START outgoing=n uri={kam.aor('bob')}")
    bob.hangup()
    wait_file(workdir / "alice.log", r"DISCONNECTED 200")


def transfer_by_baresip(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
    accept_refer: str,
) -> Siproc:
    """alice (baresip) calls bob (siproc, SIPROC_ACCEPT_REFER=accept_refer) and transfers him
    to carol (siproc); returns bob."""
    bob = make_siproc(
        "bob",
        "answer",
        env={
            "SIPROC_REGISTRAR_URI": kam.uri,
            "SIPROC_ID_URI": kam.aor("bob"),
            "SIPROC_USERNAME": "bob",
            "SIPROC_PASSWORD": PASSWORDS["bob"],
            "SIPROC_ACCEPT_REFER": accept_refer,
        },
    )
    bob.wait_for(r"registered as sip:bob@", timeout=10)
    siproc_account(make_siproc, kam, "carol", "answer")
    alice = make_baresip("alice", kam, password=PASSWORDS["alice"])
    alice.wait_registered()
    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    response = alice.command("transfer", kam.aor("carol"))
    assert response.get("ok"), response
    return bob


def test_a_refer_to_an_allowed_target_is_followed(
    workdir: Path, kam: Kamailio, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    transfer_by_baresip(workdir, kam, make_baresip, make_siproc, "sip:carol@*, sip:1??@*")
    wait_file(workdir / "carol.log", r"EVENT CONNECTED", timeout=15)
    text = wait_file(workdir / "bob.log", r"referred_by=sip:alice@", timeout=15)
    assert len(calls_in(text)) == 2


def test_a_refer_is_refused_as_configured(
    workdir: Path, kam: Kamailio, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    bob = transfer_by_baresip(workdir, kam, make_baresip, make_siproc, "sip:*@other.example")
    bob.wait_for(r"REFER refused: 403 Forbidden \(transfer target not allowed\)", timeout=10)
    assert len(calls_in((workdir / "bob.log").read_text())) == 1  # no new call
    assert not (workdir / "carol.log").exists()
    bob2_log = (workdir / "bob.log").read_text()
    assert "DISCONNECTED" not in bob2_log  # the call stays up
