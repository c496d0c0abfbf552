"""The four RFC 3261 section 17 transaction machines, in virtual time (DESIGN.md section 4).

Unit tests drive each machine directly with `now`; the lossy-link tests run a client and a
server transaction driver over `tests/sipsim.py` with seeded random loss.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from siproc.sip.errors import LocalProtocolError, ParseError
from siproc.sip.headers import make_response, message_info
from siproc.sip.message import Request, Response, parse_message, serialize
from siproc.sip.transaction import (
    DEFAULT_TIMERS,
    AckReceived,
    AckToTU,
    ClientTransaction,
    Destination,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Output,
    ResponseReceived,
    Send,
    ServerTransaction,
    Timers,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    client_key,
    create_client_transaction,
    create_server_transaction,
    make_ack_for_non_2xx,
    server_key,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared harness
from sipsim import LossyLink, Simulation

DATA = Path(__file__).resolve().parents[1] / "data"
UAC = Destination("udp", "127.0.0.1", 5070)
UAS = Destination("udp", "127.0.0.1", 5060)
UAS_TCP = Destination("tcp", "127.0.0.1", 5060)
T = Timers()
S = TransactionState


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bKclient1",
    *,
    cseq: int = 1,
    cseq_method: str | None = None,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    to_tag: str | None = None,
    call_id: str = "call-1@127.0.0.1",
    uri: str = "sip:bob@127.0.0.1:5060",
    extra: str = "",
) -> Request:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "From: <sip:alice@127.0.0.1>;tag=alice1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def reply(req: Request, status: int, reason: str = "", to_tag: str | None = "bob1") -> Response:
    return make_response(
        req, status, reason or str(status), to_tag=None if status == 100 else to_tag
    )


def sends(outputs: list[Output]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def kinds(outputs: list[Output]) -> list[type]:
    return [type(o) for o in outputs]


def run_timers(
    tx: ClientTransaction | ServerTransaction, until: float
) -> list[tuple[float, Output]]:
    """Fire `tx`'s timers one deadline at a time up to `until`; (time, output) pairs."""
    out: list[tuple[float, Output]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        out += [(deadline, o) for o in tx.handle_timer(deadline)]
    return out


def send_times(fired: list[tuple[float, Output]]) -> list[float]:
    return [t for t, o in fired if isinstance(o, Send)]


def started(req: Request, destination: Destination = UAS, now: float = 0.0) -> ClientTransaction:
    tx = create_client_transaction(req, destination)
    outputs = tx.start(now)
    assert outputs == [Send(serialize(req), destination)]
    return tx


# -- API basics -------------------------------------------------------------------------------


def test_value_types_validate() -> None:
    assert not UAC.reliable
    assert UAS_TCP.reliable and Destination("tls", "::1", 5061).reliable
    assert T.timeout == 32.0
    with pytest.raises(LocalProtocolError):
        Destination("UDP", "127.0.0.1", 5060)
    with pytest.raises(LocalProtocolError):
        Destination("udp", "127.0.0.1", 0)
    with pytest.raises(LocalProtocolError):
        Timers(t1=5.0, t2=4.0)
    with pytest.raises(LocalProtocolError):
        Send(b"", UAS)


def test_create_client_transaction_checks_the_request() -> None:
    invite = create_client_transaction(request(), UAS)
    assert isinstance(invite, InviteClientTransaction)
    assert invite.key == ("z9hG4bKclient1", "INVITE") and invite.state is S.CALLING
    options = create_client_transaction(request("OPTIONS"), UAS)
    assert isinstance(options, NonInviteClientTransaction) and options.state is S.TRYING
    with pytest.raises(LocalProtocolError, match="ACK"):
        create_client_transaction(request("ACK"), UAS)
    with pytest.raises(LocalProtocolError, match="magic cookie"):
        create_client_transaction(request(branch="abc123"), UAS)
    with pytest.raises(LocalProtocolError, match="magic cookie"):
        create_client_transaction(request(branch="z9hG4bK"), UAS)  # bare cookie: RFC 4475 3.2.1
    with pytest.raises(LocalProtocolError, match="broken request"):
        create_client_transaction(Request("OPTIONS", "sip:x@127.0.0.1"), UAS)
    assert repr(invite) == "<InviteClientTransaction INVITE z9hG4bKclient1 Calling>"
    server, _ = create_server_transaction(request("OPTIONS"), UAC, 0.0)
    assert repr(server) == "<NonInviteServerTransaction OPTIONS z9hG4bKclient1 Trying>"


def test_client_misuse_raises() -> None:
    req = request()
    tx = create_client_transaction(req, UAS)
    with pytest.raises(LocalProtocolError, match="before start"):
        tx.on_response(reply(req, 180), 0.0)
    tx.start(0.0)
    with pytest.raises(LocalProtocolError, match="twice"):
        tx.start(1.0)
    other = reply(request(branch="z9hG4bKother"), 180)
    with pytest.raises(LocalProtocolError, match="routed"):
        tx.on_response(other, 0.1)


# -- INVITE client (RFC 3261 section 17.1.1, RFC 6026 section 7.2) -----------------------------


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    req = request()
    tx = started(req)
    fired = run_timers(tx, 100.0)
    # Timer A: T1, 2*T1, 4*T1 ...: retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, so seven
    # transmissions in all; the next one (63.5) is beyond Timer B = 64*T1 = 32 s.
    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(o.data == serialize(req) for _, o in fired if isinstance(o, Send))
    assert [(t, type(o)) for t, o in fired if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout),
        (32.0, TransactionTerminated),
    ]
    assert all(o.transaction is tx for _, o in fired if not isinstance(o, Send))
    assert tx.terminated and tx.state is S.TERMINATED and tx.next_deadline() is None
    assert tx.handle_timer(1000.0) == []


def test_invite_client_retransmissions_reuse_the_same_bytes() -> None:
    tx = started(request())
    first = sends(tx.handle_timer(0.5))[0]
    second = sends(tx.handle_timer(1.5))[0]
    assert first.data is second.data


def test_retransmit_timer_rearms_from_schedule_not_from_now() -> None:
    tx = started(request())
    assert tx.next_deadline() == 0.5
    assert len(sends(tx.handle_timer(0.6))) == 1  # the edge woke 0.1 s late
    assert tx.next_deadline() == 1.5  # no drift: 0.5 + 1.0, not 0.6 + 1.0
    assert len(sends(tx.handle_timer(10.0))) == 1  # far behind: one retransmission, no burst
    assert tx.next_deadline() == 12.0  # re-armed from now with the doubled interval (2 s)


def test_handle_timer_before_deadline_does_nothing() -> None:
    tx = started(request())
    assert tx.handle_timer(0.49) == []
    assert tx.next_deadline() == 0.5


def test_invite_client_reliable_transport_never_retransmits() -> None:
    tx = started(request(via="SIP/2.0/TCP 127.0.0.1:5070"), UAS_TCP)
    assert tx.next_deadline() == 32.0  # only Timer B
    assert tx.handle_timer(31.999) == []
    assert kinds(tx.handle_timer(32.0)) == [TransactionTimeout, TransactionTerminated]


def test_invite_client_provisional_stops_timers_a_and_b() -> None:
    req = request()
    tx = started(req)
    trying = reply(req, 100, "Trying")
    assert tx.on_response(trying, 0.2) == [ResponseReceived(tx, trying)]
    assert tx.state is S.PROCEEDING and tx.next_deadline() is None
    ringing = reply(req, 180, "Ringing")
    assert tx.on_response(ringing, 0.3) == [ResponseReceived(tx, ringing)]
    assert tx.on_response(ringing, 0.4) == [ResponseReceived(tx, ringing)]  # each 1xx goes up
    assert tx.handle_timer(100.0) == [] and tx.state is S.PROCEEDING


@pytest.mark.parametrize("provisional_first", [False, True])
def test_invite_client_non_2xx_final_is_acked_once_passed_up_once(provisional_first: bool) -> None:
    req = request()
    tx = started(req)
    if provisional_first:
        tx.on_response(reply(req, 180), 0.2)
    busy = reply(req, 486, "Busy Here")
    outputs = tx.on_response(busy, 1.0)
    ack = make_ack_for_non_2xx(req, busy)
    assert outputs == [Send(serialize(ack), UAS), ResponseReceived(tx, busy)]
    assert tx.state is S.COMPLETED
    assert tx.next_deadline() == 33.0  # Timer D = 32 s; Timers A and B are gone
    # A retransmitted final: the ACK again, nothing for the TU.
    again = tx.on_response(busy, 2.0)
    assert again == [Send(serialize(ack), UAS)]
    assert again[0].data is outputs[0].data  # type: ignore[union-attr]
    assert tx.on_response(reply(req, 180), 2.5) == []  # a late provisional is absorbed
    assert tx.handle_timer(32.9) == []
    assert tx.handle_timer(33.0) == [TransactionTerminated(tx)]
    assert tx.on_response(busy, 40.0) == []  # late and terminated: absorbed


def test_invite_client_reliable_timer_d_is_zero() -> None:
    req = request(via="SIP/2.0/TCP 127.0.0.1:5070")
    tx = started(req, UAS_TCP)
    outputs = tx.on_response(reply(req, 603, "Decline"), 5.0)
    assert kinds(outputs) == [Send, ResponseReceived]
    assert tx.next_deadline() == 5.0  # due at once
    assert tx.handle_timer(5.0) == [TransactionTerminated(tx)]


def test_invite_client_2xx_goes_to_accepted_and_retransmissions_are_passed_up() -> None:
    req = request()
    tx = started(req)
    tx.on_response(reply(req, 180), 0.1)
    ok = reply(req, 200, "OK")
    assert tx.on_response(ok, 1.0) == [ResponseReceived(tx, ok)]  # no ACK: the dialog sends it
    assert tx.state is S.ACCEPTED
    assert tx.next_deadline() == 33.0  # Timer M = 64*T1
    assert tx.on_response(ok, 1.5) == [ResponseReceived(tx, ok)]  # the dialog re-ACKs
    forked = reply(req, 200, "OK", to_tag="bob2")
    assert tx.on_response(forked, 1.6) == [ResponseReceived(tx, forked)]
    assert tx.on_response(reply(req, 486), 1.7) == []
    assert tx.on_response(reply(req, 180), 1.8) == []
    assert tx.handle_timer(33.0) == [TransactionTerminated(tx)]


def test_invite_client_2xx_in_calling_stops_retransmissions() -> None:
    req = request()
    tx = started(req)
    tx.on_response(reply(req, 200), 0.2)
    assert tx.state is S.ACCEPTED
    assert send_times(run_timers(tx, 100.0)) == []


def test_make_ack_for_non_2xx_has_exactly_the_rfc_headers() -> None:
    invite = parse_message(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtop;rport, "
        b"SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKlower\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKlowest\r\n"
        b"Max-Forwards: 69\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Route: <sip:p2.example.com;lr>\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: ack-test@127.0.0.1\r\n"
        b"CSeq: 4711 INVITE\r\n"
        b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        b"Authorization: Digest username=alice\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: 4\r\n\r\nv=0\n"
    )
    assert isinstance(invite, Request)
    busy = make_response(invite, 486, "Busy Here", to_tag="b9", headers=[("Server", "x")])
    ack = make_ack_for_non_2xx(invite, busy)
    assert serialize(ack) == (
        b"ACK sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtop;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Route: <sip:p2.example.com;lr>\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
        b"To: <sip:bob@example.com>;tag=b9\r\n"
        b"Call-ID: ack-test@127.0.0.1\r\n"
        b"CSeq: 4711 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    info = message_info(ack)
    assert info.cseq.method == "ACK" and info.to.tag == "b9"
    assert server_key(ack) == server_key(invite)  # the ACK matches the INVITE transaction
    with pytest.raises(LocalProtocolError):
        make_ack_for_non_2xx(invite, make_response(invite, 200, "OK", to_tag="b9"))
    with pytest.raises(LocalProtocolError):
        make_ack_for_non_2xx(request("OPTIONS"), busy)


# -- non-INVITE client (RFC 3261 section 17.1.2) -------------------------------------------------


def test_non_invite_client_timer_e_caps_at_t2_until_timer_f() -> None:
    req = request("REGISTER", uri="sip:127.0.0.1")
    tx = started(req)
    fired = run_timers(tx, 100.0)
    times = send_times(fired)
    # Intervals 0.5, 1, 2, 4, 4, 4 ...
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [b - a for a, b in zip([0.0, *times], times, strict=False)] == [
        0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0,
    ]  # fmt: skip
    assert [(t, type(o)) for t, o in fired if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout),
        (32.0, TransactionTerminated),
    ]


def test_non_invite_client_timer_e_every_t2_in_proceeding() -> None:
    req = request("OPTIONS")
    tx = started(req)
    assert len(sends(tx.handle_timer(0.5))) == 1  # next E at 1.5 (interval 1 s)
    trying = reply(req, 100, "Trying")
    assert tx.on_response(trying, 0.7) == [ResponseReceived(tx, trying)]
    assert tx.state is S.PROCEEDING
    assert tx.on_response(trying, 0.8) == [ResponseReceived(tx, trying)]
    fired = run_timers(tx, 100.0)
    assert send_times(fired) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert kinds([o for _, o in fired if not isinstance(o, Send)]) == [
        TransactionTimeout,
        TransactionTerminated,
    ]


def test_non_invite_client_final_then_timer_k() -> None:
    req = request("REGISTER", uri="sip:127.0.0.1")
    tx = started(req)
    ok = reply(req, 200, "OK")
    assert tx.on_response(ok, 2.0) == [ResponseReceived(tx, ok)]
    assert tx.state is S.COMPLETED and tx.next_deadline() == 7.0  # Timer K = T4
    assert tx.on_response(ok, 3.0) == []  # retransmissions absorbed, passed up once only
    assert tx.on_response(reply(req, 100), 3.1) == []
    assert tx.handle_timer(6.9) == []
    assert tx.handle_timer(7.0) == [TransactionTerminated(tx)]


def test_non_invite_client_reliable() -> None:
    req = request("BYE", via="SIP/2.0/TLS 127.0.0.1:5071")
    tx = started(req, Destination("tls", "127.0.0.1", 5061))
    assert tx.next_deadline() == 32.0  # Timer F only: no Timer E
    tx.on_response(reply(req, 481), 1.0)
    assert tx.next_deadline() == 1.0  # Timer K = 0
    assert tx.handle_timer(1.0) == [TransactionTerminated(tx)]


def test_non_invite_client_error_final_goes_up_once() -> None:
    req = request("OPTIONS")
    tx = started(req)
    out = tx.on_response(reply(req, 404), 0.1)
    assert out == [ResponseReceived(tx, out[0].response)]  # type: ignore[union-attr]
    assert tx.on_response(reply(req, 404), 0.2) == []


# -- INVITE server (RFC 3261 section 17.2.1, RFC 6026 section 7.1) ------------------------------


def invite_server(
    reply_to: Destination = UAC, **kwargs: str
) -> tuple[InviteServerTransaction, Request]:
    req = request(**kwargs)  # type: ignore[arg-type]
    tx, outputs = create_server_transaction(req, reply_to, 0.0)
    assert outputs == [] and isinstance(tx, InviteServerTransaction)
    assert tx.state is S.PROCEEDING and tx.next_deadline() is None  # no 100 Trying of its own
    return tx, req


def test_invite_server_provisionals_and_retransmitted_invites() -> None:
    tx, req = invite_server()
    assert tx.on_request(req, 0.1) == []  # nothing sent yet: nothing to repeat
    trying = reply(req, 100, "Trying")
    assert tx.respond(trying, 0.1) == [Send(serialize(trying), UAC)]
    assert tx.on_request(req, 0.2) == [Send(serialize(trying), UAC)]
    ringing = reply(req, 180, "Ringing")
    assert tx.respond(ringing, 0.3) == [Send(serialize(ringing), UAC)]
    assert tx.last_response is ringing and tx.state is S.PROCEEDING
    assert tx.on_request(req, 0.4) == [Send(serialize(ringing), UAC)]
    assert tx.on_request(request(cseq_method="INVITE", method="ACK"), 0.5) == []  # stray ACK


def test_invite_server_non_2xx_timer_g_until_timer_h() -> None:
    tx, req = invite_server()
    busy = reply(req, 486, "Busy Here")
    assert tx.respond(busy, 0.0) == [Send(serialize(busy), UAC)]
    assert tx.state is S.COMPLETED
    fired = run_timers(tx, 100.0)
    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(o.data == serialize(busy) for _, o in fired if isinstance(o, Send))
    assert [(t, type(o)) for t, o in fired if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout),  # Timer H: no ACK came
        (32.0, TransactionTerminated),
    ]


def test_invite_server_retransmitted_invite_in_completed_gets_the_final_again() -> None:
    tx, req = invite_server()
    tx.respond(reply(req, 100), 0.0)
    busy = reply(req, 486, "Busy Here")
    tx.respond(busy, 1.0)
    assert tx.on_request(req, 1.2) == [Send(serialize(busy), UAC)]
    with pytest.raises(LocalProtocolError, match="cannot send 500"):
        tx.respond(reply(req, 500), 1.3)
    with pytest.raises(LocalProtocolError):
        tx.respond(reply(req, 180), 1.3)


def test_invite_server_ack_confirms_then_timer_i() -> None:
    tx, req = invite_server()
    busy = reply(req, 486, "Busy Here")
    tx.respond(busy, 0.0)
    ack = make_ack_for_non_2xx(req, busy)
    assert server_key(ack) == tx.key
    assert tx.on_request(ack, 2.0) == [AckReceived(tx)]
    assert tx.state is S.CONFIRMED
    assert tx.next_deadline() == 7.0  # Timer I = T4; G and H cancelled
    assert tx.on_request(ack, 2.5) == []  # ACK retransmissions absorbed
    assert tx.on_request(req, 2.6) == []  # and INVITE retransmissions
    assert tx.handle_timer(7.0) == [TransactionTerminated(tx)]
    assert tx.on_request(ack, 8.0) == []
    with pytest.raises(LocalProtocolError, match="terminated"):
        tx.respond(busy, 8.0)


def test_invite_server_reliable_no_timer_g_and_zero_timer_i() -> None:
    tx, req = invite_server(UAS_TCP, via="SIP/2.0/TCP 127.0.0.1:5070")
    busy = reply(req, 486)
    tx.respond(busy, 0.0)
    assert tx.next_deadline() == 32.0  # Timer H only
    tx.on_request(make_ack_for_non_2xx(req, busy), 1.0)
    assert tx.next_deadline() == 1.0
    assert tx.handle_timer(1.0) == [TransactionTerminated(tx)]


def test_invite_server_reliable_timer_h() -> None:
    tx, req = invite_server(UAS_TCP, via="SIP/2.0/TCP 127.0.0.1:5070")
    tx.respond(reply(req, 486), 0.0)
    fired = run_timers(tx, 100.0)
    assert [(t, type(o)) for t, o in fired] == [
        (32.0, TransactionTimeout),
        (32.0, TransactionTerminated),
    ]


def test_invite_server_2xx_accepted_absorbs_invites_until_timer_l() -> None:
    tx, req = invite_server()
    tx.respond(reply(req, 100), 0.0)
    ok = reply(req, 200, "OK")
    assert tx.respond(ok, 1.0) == [Send(serialize(ok), UAC)]
    assert tx.state is S.ACCEPTED and tx.next_deadline() == 33.0  # Timer L = 64*T1
    assert tx.on_request(req, 1.2) == []  # absorbed: the transaction does not resend the 2xx
    assert tx.respond(ok, 1.5) == [Send(serialize(ok), UAC)]  # the TU's own retransmission
    with pytest.raises(LocalProtocolError):
        tx.respond(reply(req, 486), 1.6)
    with pytest.raises(LocalProtocolError):
        tx.respond(reply(req, 180), 1.6)
    # An ACK that reuses the INVITE's branch is the dialog's (RFC 6026 figure 7).
    ack = request("ACK", to_tag="bob1")
    assert tx.on_request(ack, 1.7) == [AckToTU(tx, ack)]
    assert tx.state is S.ACCEPTED
    assert send_times(run_timers(tx, 32.9)) == []
    assert tx.handle_timer(33.0) == [TransactionTerminated(tx)]


def test_server_transaction_misuse_raises() -> None:
    tx, _ = invite_server()
    with pytest.raises(LocalProtocolError, match="routed"):
        tx.on_request(request("CANCEL", cseq_method="CANCEL"), 0.1)
    with pytest.raises(LocalProtocolError, match="out of range"):
        tx.respond(Response(700, "Nope"), 0.1)
    with pytest.raises(LocalProtocolError, match="ACK"):
        create_server_transaction(request("ACK"), UAC, 0.0)
    with pytest.raises(ParseError):
        create_server_transaction(Request("OPTIONS", "sip:x@127.0.0.1"), UAC, 0.0)


# -- non-INVITE server (RFC 3261 section 17.2.2) -----------------------------------------------


def test_non_invite_server_machine() -> None:
    req = request("REGISTER", uri="sip:127.0.0.1")
    tx, outputs = create_server_transaction(req, UAC, 0.0)
    assert outputs == [] and isinstance(tx, NonInviteServerTransaction)
    assert tx.state is S.TRYING
    assert tx.on_request(req, 0.1) == []  # Trying discards retransmissions
    trying = reply(req, 100, "Trying")
    assert tx.respond(trying, 0.2) == [Send(serialize(trying), UAC)]
    assert tx.state is S.PROCEEDING
    assert tx.on_request(req, 0.3) == [Send(serialize(trying), UAC)]
    ok = reply(req, 200, "OK")
    assert tx.respond(ok, 1.0) == [Send(serialize(ok), UAC)]
    assert tx.state is S.COMPLETED and tx.next_deadline() == 33.0  # Timer J = 64*T1
    assert tx.on_request(req, 2.0) == [Send(serialize(ok), UAC)]
    assert sends(tx.on_request(req, 3.0))[0].data is sends(tx.on_request(req, 3.1))[0].data
    with pytest.raises(LocalProtocolError):
        tx.respond(ok, 2.0)
    with pytest.raises(LocalProtocolError):
        tx.respond(trying, 2.0)
    assert tx.handle_timer(32.9) == []
    assert tx.handle_timer(33.0) == [TransactionTerminated(tx)]
    assert tx.on_request(req, 34.0) == []


def test_non_invite_server_final_from_trying_and_reliable_timer_j() -> None:
    req = request("OPTIONS", via="SIP/2.0/TCP 127.0.0.1:5070")
    tx, _ = create_server_transaction(req, UAS_TCP, 0.0)
    tx.respond(reply(req, 200), 4.0)
    assert tx.state is S.COMPLETED and tx.next_deadline() == 4.0  # Timer J = 0
    assert tx.handle_timer(4.0) == [TransactionTerminated(tx)]


def test_set_state_rejects_illegal_transitions() -> None:
    tx, _ = invite_server()
    with pytest.raises(LocalProtocolError, match="illegal Proceeding -> Trying"):
        tx._set_state(S.TRYING)


# -- keys (RFC 3261 sections 17.1.3 and 17.2.3) ------------------------------------------------


def test_server_key_rfc3261() -> None:
    invite = request(via="SIP/2.0/UDP Host.Example.COM:5070")
    assert server_key(invite) == ("z9hG4bKclient1", "host.example.com", "5070", "INVITE")
    ack = request("ACK", to_tag="bob1", via="SIP/2.0/UDP host.example.com:5070")
    assert server_key(ack) == server_key(invite)  # the ACK matches the INVITE transaction
    cancel = request("CANCEL", via="SIP/2.0/UDP host.example.com:5070")
    assert server_key(cancel) == ("z9hG4bKclient1", "host.example.com", "5070", "CANCEL")
    assert server_key(cancel) != server_key(invite)
    assert server_key(request(via="SIP/2.0/UDP host.example.com"))[2] == ""
    assert server_key(request(via="SIP/2.0/UDP host.example.com:5071")) != server_key(invite)
    assert server_key(request(branch="z9hG4bKclient2")) != server_key(invite)


def test_server_key_raises_parse_error() -> None:
    broken = parse_message(
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n"
    )
    assert isinstance(broken, Request)
    with pytest.raises(ParseError, match="missing mandatory"):
        server_key(broken)


def test_server_key_rfc2543_fallback_badbranch() -> None:
    data = (DATA / "rfc4475" / "badbranch.dat").read_bytes()
    req = parse_message(data)
    assert isinstance(req, Request)
    key = server_key(req)
    assert key == (
        "sip:user@example.com",
        "",
        "33242",
        "badbranch.sadonfo23i420jv0as0derf3j3n",
        "8",
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK",
        "OPTIONS",
    )
    assert server_key(parse_message(data)) == key  # type: ignore[arg-type]  # a retransmission
    tx, _ = create_server_transaction(req, UAC, 0.0)
    assert tx.key == key and tx.branch == ""
    ok = reply(req, 200)
    tx.respond(ok, 0.1)
    assert tx.on_request(req, 0.2) == [Send(serialize(ok), UAC)]


def test_server_key_rfc2543_invite_and_ack() -> None:
    via = "SIP/2.0/UDP 127.0.0.1:5070"
    invite = request(branch="1234", via=via)
    ack = request("ACK", branch="1234", via=via, to_tag="bob1")
    assert len(server_key(invite)) == 7
    assert server_key(ack) == server_key(invite)  # ACK for the non-2xx finds the INVITE
    assert server_key(request(branch="1234", via=via, cseq=2)) != server_key(invite)
    other_call = request(branch="1234", via=via, call_id="call-2@127.0.0.1")
    assert server_key(other_call) != server_key(invite)
    # Non-INVITE keys keep the To tag.
    bye1 = request("BYE", branch="9", via=via, to_tag="x")
    bye2 = request("BYE", branch="9", via=via, to_tag="y")
    assert server_key(bye1) != server_key(bye2)


def test_client_key() -> None:
    req = request("INVITE", branch="z9hG4bKabc")
    assert client_key(reply(req, 180)) == ("z9hG4bKabc", "INVITE")
    cancel = request("CANCEL", branch="z9hG4bKabc")
    assert client_key(reply(cancel, 200)) == ("z9hG4bKabc", "CANCEL")
    no_branch = reply(request(branch="z9hG4bKabc"), 200)
    no_branch.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070")
    with pytest.raises(ParseError, match="branch"):
        client_key(no_branch)


# -- over a lossy link (tests/sipsim.py) -------------------------------------------------------


class UacDriver:
    """A tiny UAC: client transactions, plus the dialog's ACK for each 2xx (section 13.2.2.4)."""

    def __init__(self, link: LossyLink, address: Destination, timers: Timers = T) -> None:
        self.link = link
        self.address = address
        self.timers = timers
        self.transactions: dict[tuple[str, str], ClientTransaction] = {}
        self.responses: list[tuple[float, str, int]] = []
        self.timeouts: list[tuple[float, str]] = []
        self.ack_count = 0

    def send_request(self, req: Request, destination: Destination, now: float) -> None:
        tx = create_client_transaction(req, destination, self.timers)
        self.transactions[tx.key] = tx
        self._handle(tx.start(now), now)

    def receive(self, data: bytes, source: Destination, now: float) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        tx = self.transactions.get(client_key(message))
        if tx is not None:  # a response matching no transaction is dropped (RFC 6026 sec. 7.2)
            self._handle(tx.on_response(message, now), now)

    def next_deadline(self) -> float | None:
        deadlines = [
            d for tx in self.transactions.values() if (d := tx.next_deadline()) is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for tx in list(self.transactions.values()):
            deadline = tx.next_deadline()
            if deadline is not None and deadline <= now:
                self._handle(tx.handle_timer(now), now)

    def _handle(self, outputs: list[Output], now: float) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self.link.send(out, self.address, now)
            elif isinstance(out, ResponseReceived):
                tx, response = out.transaction, out.response
                self.responses.append((now, tx.method, response.status))
                if tx.method == "INVITE" and 200 <= response.status < 300:
                    self._ack_2xx(tx, response, now)
            elif isinstance(out, TransactionTimeout):
                self.timeouts.append((now, out.transaction.method))
            elif isinstance(out, TransactionTerminated):
                del self.transactions[out.transaction.key]  # type: ignore[arg-type]

    def _ack_2xx(self, tx: ClientTransaction, response: Response, now: float) -> None:
        self.ack_count += 1
        info = message_info(tx.request)
        ack = request(
            "ACK",
            branch=f"z9hG4bKack{self.ack_count}",
            cseq=info.cseq.number,
            to_tag=message_info(response).to.tag,
            call_id=info.call_id,
        )
        self.link.send(Send(serialize(ack), tx.destination), self.address, now)

    def finals(self, method: str) -> list[tuple[float, int]]:
        return [(t, status) for t, m, status in self.responses if m == method and status >= 200]


class UasDriver:
    """A tiny UAS: server transactions and a scripted TU.

    INVITE: 100 at once (as the endpoint does), 180 at once, `final` after `answer_after`
    seconds; a 2xx is retransmitted by the TU (RFC 3261 section 13.3.1.4) until its ACK.
    Anything else: 200 at once.
    """

    def __init__(
        self,
        link: LossyLink,
        address: Destination,
        *,
        final: int = 200,
        answer_after: float = 1.0,
        timers: Timers = T,
    ) -> None:
        self.link = link
        self.address = address
        self.final = final
        self.answer_after = answer_after
        self.timers = timers
        self.transactions: dict[tuple[str, ...], ServerTransaction] = {}
        self.tu_timers: list[tuple[float, ServerTransaction]] = []  # answer / 2xx retransmit
        self.retransmit_2xx: dict[int, tuple[Response, float, float]] = {}  # id -> (2xx, ivl, end)
        self.acks_for_2xx: list[float] = []
        self.acks_for_non_2xx: list[float] = []
        self.timeouts: list[float] = []
        self.requests: list[str] = []

    def receive(self, data: bytes, source: Destination, now: float) -> None:
        req = parse_message(data)
        assert isinstance(req, Request)
        key = server_key(req)
        tx = self.transactions.get(key)
        if tx is not None:
            self._handle(tx.on_request(req, now), now)
            return
        if req.method == "ACK":  # the ACK of a 2xx: the dialog's, it ends 2xx retransmissions
            self.acks_for_2xx.append(now)
            self.retransmit_2xx.clear()
            return
        self.requests.append(req.method)
        tx, outputs = create_server_transaction(req, source, now, self.timers)
        self.transactions[tx.key] = tx
        self._handle(outputs, now)
        if req.method == "INVITE":
            self._handle(tx.respond(reply(req, 100, "Trying"), now), now)
            self._handle(tx.respond(reply(req, 180, "Ringing"), now), now)
            self.tu_timers.append((now + self.answer_after, tx))
        else:
            self._handle(tx.respond(reply(req, 200, "OK"), now), now)

    def next_deadline(self) -> float | None:
        deadlines = [
            d for tx in self.transactions.values() if (d := tx.next_deadline()) is not None
        ]
        deadlines += [t for t, _ in self.tu_timers]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        due = [(t, tx) for t, tx in self.tu_timers if t <= now]
        self.tu_timers = [(t, tx) for t, tx in self.tu_timers if t > now]
        for _, tx in due:
            self._tu_timer(tx, now)
        for tx in list(self.transactions.values()):
            deadline = tx.next_deadline()
            if deadline is not None and deadline <= now:
                self._handle(tx.handle_timer(now), now)

    def _tu_timer(self, tx: ServerTransaction, now: float) -> None:
        if tx.terminated:
            return
        pending = self.retransmit_2xx.get(id(tx))
        if pending is None and tx.state is S.PROCEEDING:  # time to answer
            final = reply(tx.request, self.final)
            self._handle(tx.respond(final, now), now)
            if 200 <= self.final < 300:
                self.retransmit_2xx[id(tx)] = (final, self.timers.t1, now + self.timers.timeout)
                self.tu_timers.append((now + self.timers.t1, tx))
        elif pending is not None:  # retransmit the 2xx: T1 doubling up to T2, for 64*T1
            final, interval, end = pending
            if now < end:
                self._handle(tx.respond(final, now), now)
                interval = min(2 * interval, self.timers.t2)
                self.retransmit_2xx[id(tx)] = (final, interval, end)
                self.tu_timers.append((now + interval, tx))

    def _handle(self, outputs: list[Output], now: float) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self.link.send(out, self.address, now)
            elif isinstance(out, AckReceived):
                self.acks_for_non_2xx.append(now)
            elif isinstance(out, AckToTU):
                self.acks_for_2xx.append(now)
                self.retransmit_2xx.clear()
            elif isinstance(out, TransactionTimeout):
                self.timeouts.append(now)
            elif isinstance(out, TransactionTerminated):
                self.retransmit_2xx.pop(id(out.transaction), None)
                del self.transactions[out.transaction.key]


def setup(loss: float, seed: int, **uas_options: float) -> tuple[Simulation, UacDriver, UasDriver]:
    link = LossyLink(loss, random.Random(seed), delay=0.01)
    sim = Simulation(link)
    uac = UacDriver(link, UAC)
    uas = UasDriver(link, UAS, **uas_options)  # type: ignore[arg-type]
    sim.add(UAC, uac)
    sim.add(UAS, uas)
    return sim, uac, uas


SEEDS = range(20)


def test_sim_lossless_invite_flow() -> None:
    sim, uac, uas = setup(0.0, 0)
    uac.send_request(request(), UAS, sim.now)
    assert sim.run_until(lambda: bool(uac.finals("INVITE")), max_time=60.0)
    # The INVITE arrives at 0.01, the TU answers 1 s later, the 200 takes 10 ms back.
    assert uac.finals("INVITE") == [(pytest.approx(1.02), 200)]
    assert [status for _, m, status in uac.responses] == [100, 180, 200]
    assert sim.run_until(lambda: not uac.transactions and not uas.transactions, max_time=100.0)
    assert uas.acks_for_2xx == [pytest.approx(1.03)] and uas.requests == ["INVITE"]
    assert sim.now == pytest.approx(1.02 + 32)  # Timer L at the server, then M at the client
    assert sim.link.dropped == 0 and sim.link.sent == 5  # INVITE, 100, 180, 200, ACK


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_invite_completes_with_30_percent_loss(seed: int) -> None:
    sim, uac, uas = setup(0.3, seed)
    uac.send_request(request(), UAS, sim.now)
    assert sim.run_until(lambda: bool(uac.finals("INVITE")), max_time=64.0), sim.link.records
    assert uac.finals("INVITE")[0][1] == 200 and not uac.timeouts
    assert sim.run_until(lambda: not uac.transactions and not uas.transactions, max_time=200.0)
    assert uas.requests == ["INVITE"]  # retransmissions never made a second transaction


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_rejected_invite_with_30_percent_loss(seed: int) -> None:
    sim, uac, uas = setup(0.3, seed, final=486)
    uac.send_request(request(), UAS, sim.now)
    assert sim.run_until(lambda: bool(uac.finals("INVITE")), max_time=64.0), sim.link.records
    assert {status for _, status in uac.finals("INVITE")} == {486}
    assert len(uac.finals("INVITE")) == 1  # passed up once, however often it arrived
    assert sim.run_until(lambda: not uac.transactions and not uas.transactions, max_time=200.0)
    # The server either saw the ACK or gave up on it with Timer H.
    assert len(uas.acks_for_non_2xx) + len(uas.timeouts) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_register_completes_with_30_percent_loss(seed: int) -> None:
    sim, uac, uas = setup(0.3, seed)
    uac.send_request(request("REGISTER", uri="sip:127.0.0.1"), UAS, sim.now)
    assert sim.run_until(lambda: bool(uac.finals("REGISTER")), max_time=64.0), sim.link.records
    assert uac.finals("REGISTER") and uac.finals("REGISTER")[0][1] == 200
    assert len(uac.finals("REGISTER")) == 1 and not uac.timeouts
    assert sim.run_until(lambda: not uac.transactions and not uas.transactions, max_time=200.0)
    assert uas.requests == ["REGISTER"]


@pytest.mark.parametrize(("method", "transmissions"), [("INVITE", 7), ("REGISTER", 11)])
def test_sim_total_loss_times_out_at_64_t1(method: str, transmissions: int) -> None:
    sim, uac, uas = setup(1.0, 0)
    uac.send_request(request(method, uri="sip:127.0.0.1"), UAS, sim.now)
    assert sim.run_until(lambda: bool(uac.timeouts), max_time=100.0)
    assert uac.timeouts == [(32.0, method)]  # Timer B / Timer F, exactly 64*T1
    assert sim.now == 32.0
    assert sim.link.sent == transmissions and sim.link.dropped == transmissions
    assert not uac.transactions and not uas.requests
    assert uac.responses == []


def test_sim_lost_200_and_ack_are_recovered_by_the_tu() -> None:
    dropped: list[str] = []

    def drop_first_200_and_first_ack(data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0].decode()
        kind = "200" if line.startswith("SIP/2.0 200") else line.split(" ", 1)[0]
        if kind in ("200", "ACK") and kind not in dropped:
            dropped.append(kind)
            return True
        return False

    sim, uac, uas = setup(0.0, 0)
    sim.link.drop = drop_first_200_and_first_ack
    uac.send_request(request(), UAS, sim.now)
    assert sim.run_until(lambda: bool(uas.acks_for_2xx), max_time=64.0)
    # 200 sent at 1.01 (lost), the TU resends it at 1.51: the client passes it up and ACKs it
    # (lost); the next 2xx at 2.51 is passed up again (Accepted) and ACKed again.
    assert [round(t, 2) for t, _ in uac.finals("INVITE")] == [1.52, 2.52]
    assert uas.acks_for_2xx == [pytest.approx(2.53)]
    assert dropped == ["200", "ACK"]


def test_simulation_stops_at_max_time_without_events() -> None:
    sim, _, _ = setup(0.0, 0)
    assert sim.run_until(lambda: False, max_time=5.0) is False
    assert sim.now == 5.0 and sim.next_event() is None
    sim.run_for(2.5)
    assert sim.now == 7.5


def test_invite_client_ends_64_t1_after_our_cancel_without_a_final() -> None:
    """RFC 3261 section 9.1: a callee that sent 180 and then nothing does not hold our INVITE
    transaction for ever once we CANCELled it."""
    timeout = 64 * DEFAULT_TIMERS.t1
    tx = started(request())
    tx.on_response(reply(request(), 180), 0.1)
    assert tx.state is TransactionState.PROCEEDING and tx.next_deadline() is None
    assert isinstance(tx, InviteClientTransaction)
    tx.cancel_sent(1.0)
    assert tx.next_deadline() == 1.0 + timeout
    assert kinds(tx.handle_timer(1.0 + timeout)) == [TransactionTimeout, TransactionTerminated]
    assert tx.state is TransactionState.TERMINATED
    # A 487 in time stops the wait instead.
    tx = started(request())
    assert isinstance(tx, InviteClientTransaction)
    tx.cancel_sent(0.5)
    tx.on_response(reply(request(), 487), 0.6)
    assert tx.state is TransactionState.COMPLETED
    assert tx.next_deadline() == 0.6 + DEFAULT_TIMERS.d
