"""The sans-I/O endpoint: UAS request checks, transaction matching and one timer heap.

Part one feeds bytes to a single `Endpoint` and reads what it answers (RFC 3261 section 8.2
and 17). Part two joins two endpoints through `tests/sipsim.py` in virtual time with random
loss (DESIGN.md section 4, style 3): INVITE and REGISTER complete through retransmissions, and
give up at exactly 64*T1 when nothing gets through. Part three loads the timer heap.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from siproc.sip.auth import Challenge, DigestSession, compute_response
from siproc.sip.dialog import Dialog
from siproc.sip.endpoint import (
    AckFor2xx,
    Endpoint,
    Output,
    RequestReceived,
    StrayResponse,
    reply_destination,
)
from siproc.sip.headers import make_response, message_info, parse_via
from siproc.sip.message import Headers, Request, Response, parse_message
from siproc.sip.registration import (
    Failed,
    Registered,
    Registration,
    RegistrationResult,
    SendAgain,
)
from siproc.sip.transaction import (
    AckReceived,
    ClientTransaction,
    Destination,
    InviteServerTransaction,
    ResponseReceived,
    Send,
    ServerTransaction,
    Timers,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
)
from siproc.sip.uri import parse_name_addr, parse_sip_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared harness
from sipsim import EndpointNode, LossyLink, Simulation

UAC = Destination("udp", "127.0.0.1", 5070)
UAS = Destination("udp", "127.0.0.1", 5060)
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE", "INFO")
T = Timers()
SEEDS = range(20)


def endpoint(seed: int = 0) -> Endpoint:
    return Endpoint(allow=ALLOW, rng=random.Random(seed), user_agent="siproc-test")


def raw(
    method: str = "OPTIONS",
    *,
    uri: str = "sip:bob@127.0.0.1:5060",
    version: str = "SIP/2.0",
    branch: str = "z9hG4bKb1",
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    cseq: int = 1,
    cseq_method: str | None = None,
    call_id: str | None = "call-1@127.0.0.1",
    to_tag: str | None = None,
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} {version}\r\n"
        f"Via: {via};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=alice1\r\n"
        f"To: {to}\r\n"
        + (f"Call-ID: {call_id}\r\n" if call_id else "")
        + f"CSeq: {cseq} {cseq_method or method}\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return text.encode() + body


def feed(ep: Endpoint, data: bytes, now: float = 0.0, source: Destination = UAC) -> list[Output]:
    return ep.receive(data, source, "127.0.0.1", now)


def sent(outputs: list[Output]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def responses(outputs: list[Output]) -> list[Response]:
    out = []
    for send in sent(outputs):
        message = parse_message(send.data)
        assert isinstance(message, Response)
        out.append(message)
    return out


def events(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if not isinstance(o, Send)]


def only_response(outputs: list[Output], status: int) -> Response:
    """The one output is a response with `status`; no event went up."""
    assert events(outputs) == [], outputs
    [response] = responses(outputs)
    assert response.status == status, response.start_line()
    return response


def request_received(outputs: list[Output]) -> RequestReceived:
    [event] = [o for o in outputs if isinstance(o, RequestReceived)]
    return event


# -- UAS checks of RFC 3261 section 8.2 --------------------------------------------------------


def test_a_good_options_goes_up_with_its_server_transaction() -> None:
    ep = endpoint()
    outputs = feed(ep, raw("OPTIONS"))
    event = request_received(outputs)
    assert sent(outputs) == []  # the TU answers
    assert event.request.method == "OPTIONS" and event.source == UAC
    assert event.local_host == "127.0.0.1" and event.cancelled is None
    assert event.transaction.method == "OPTIONS" and ep.transaction_count == 1
    reply = make_response(event.request, 200, "OK", to_tag="b1")
    [send] = sent(ep.respond(event.transaction, reply, 0.1))
    assert send.destination == UAC
    assert b"\r\nServer: siproc-test\r\n" in send.data


def test_505_for_an_unknown_sip_version() -> None:
    response = only_response(feed(ep := endpoint(), raw("INVITE", version="SIP/3.0")), 505)
    assert response.version == "SIP/2.0"
    assert message_info(response).to.tag  # a final response gets a To tag (8.2.6.2)
    assert ep.transaction_count == 0  # answered statelessly


def test_405_with_allow_for_an_unknown_method() -> None:
    response = only_response(feed(endpoint(), raw("FOO")), 405)
    assert response.headers.get("Allow") == ", ".join(ALLOW)  # section 8.2.1: MUST


def test_416_for_a_tel_request_uri() -> None:
    only_response(feed(endpoint(), raw("INVITE", uri="tel:+15551234567")), 416)


def test_420_with_unsupported_for_an_unknown_require() -> None:
    supporting = Endpoint(allow=ALLOW, supported=["replaces"])
    response = only_response(feed(supporting, raw(extra="Require: foo, replaces\r\n")), 420)
    assert response.headers.get("Unsupported") == "foo"  # section 8.2.2.3: only the unknown


def test_require_is_ignored_in_cancel() -> None:
    ep = endpoint()
    request_received(feed(ep, raw("INVITE")))
    outputs = feed(ep, raw("CANCEL", extra="Require: foo\r\n"))
    assert request_received(outputs).cancelled is not None


def test_415_with_accept_for_an_invite_with_a_text_body() -> None:
    data = raw("INVITE", extra="Content-Type: text/plain\r\n", body=b"hello")
    response = only_response(feed(endpoint(), data), 415)
    assert response.headers.get("Accept") == "application/sdp"  # section 8.2.3


def test_406_for_an_invite_that_accepts_no_sdp() -> None:
    response = only_response(feed(endpoint(), raw("INVITE", extra="Accept: text/html\r\n")), 406)
    assert response.headers.get("Accept") == "application/sdp"
    ok = raw("INVITE", branch="z9hG4bKok", extra="Accept: text/html, application/*\r\n")
    request_received(feed(endpoint(), ok))


def test_checks_come_in_the_order_of_section_8_2() -> None:
    # Unknown method beats unknown URI scheme and Require (8.2.1 before 8.2.2).
    only_response(feed(endpoint(), raw("FOO", uri="tel:+1555", extra="Require: x\r\n")), 405)
    only_response(feed(endpoint(), raw("INVITE", uri="tel:+1555", extra="Require: x\r\n")), 416)


def test_482_for_a_merged_request_from_a_forking_loop() -> None:
    """Section 8.2.2.2: the same request (From tag, Call-ID, CSeq) on a second branch while the
    first one's transaction is going is a merged request: 482, and no second call goes up."""
    ep = endpoint()
    first = request_received(feed(ep, raw("INVITE", branch="z9hG4bKpath1")))
    looped = feed(ep, raw("INVITE", branch="z9hG4bKpath2", via="SIP/2.0/UDP 127.0.0.1:5071"))
    response = only_response(looped, 482)
    assert response.reason == "Loop Detected" and message_info(response).to.tag
    assert ep.transaction_count == 1
    # The first copy's retransmission still reaches its transaction; its CANCEL works.
    assert events(feed(ep, raw("INVITE", branch="z9hG4bKpath1"), 0.5)) == []
    cancel = feed(ep, raw("CANCEL", branch="z9hG4bKpath1"))
    assert request_received(cancel).cancelled is first.transaction


def test_no_482_for_other_cseqs_dialogs_or_once_the_first_transaction_is_over() -> None:
    ep = endpoint()
    event = request_received(feed(ep, raw("OPTIONS", branch="z9hG4bKo1")))
    request_received(feed(ep, raw("OPTIONS", branch="z9hG4bKo2", cseq=2)))  # a new request
    request_received(feed(ep, raw("BYE", branch="z9hG4bKo3", to_tag="b1")))  # in a dialog
    request_received(feed(ep, raw("BYE", branch="z9hG4bKo4", to_tag="b1")))  # (not merged)
    only_response(feed(ep, raw("OPTIONS", branch="z9hG4bKo5"), 0.05), 482)  # not answered yet
    ep.respond(event.transaction, make_response(event.request, 200, "OK", to_tag="b"), 0.1)
    # Answered: a copy now is a peer's retry or keepalive on a new branch, not a loop.
    request_received(feed(ep, raw("OPTIONS", branch="z9hG4bKo6"), 0.2))


def test_400_for_a_missing_call_id() -> None:
    ep = endpoint()
    response = only_response(feed(ep, raw(call_id=None)), 400)
    assert "Call-ID" in response.reason
    assert response.headers.get("CSeq") == "1 OPTIONS"
    assert ep.transaction_count == 0


def test_400_for_the_rfc4475_insuf_message() -> None:
    # RFC 4475 section 3.3.1: no Call-ID, From, To, Max-Forwards; "ideally ... 400".
    data = (
        b"INVITE sip:user@example.com SIP/2.0\r\n"
        b"CSeq: 193942 INVITE\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\n"
        b"Content-Type: application/sdp\r\n"
        b"l: 152\r\n\r\n"
        b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.95\r\ns=-\r\n"
        b"c=IN IP4 192.0.2.95\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n"
        b"m=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
    )
    outputs = endpoint().receive(data, Destination("udp", "127.0.0.1", 5060), "127.0.0.1", 0.0)
    response = only_response(outputs, 400)
    assert response.headers.get("CSeq") == "193942 INVITE"
    assert sent(outputs)[0].destination == Destination("udp", "127.0.0.1", 5060)


@pytest.mark.parametrize("value", ["\x00", "a\rInjected: 1", "a\nInjected: 1"])
def test_400_for_a_bare_cr_lf_or_nul_in_a_header(value: str) -> None:
    """No request with such a header value goes up to the call layer (a handler would get it
    in its environment); it is answered 400 naming the header."""
    ep = endpoint()
    data = raw("INVITE", extra=f"X-Evil: {value}\r\n")
    response = only_response(feed(ep, data), 400)
    assert "X-Evil" in response.reason
    assert ep.transaction_count == 0


def test_400_for_a_nul_in_the_from_tag() -> None:
    data = raw("INVITE").replace(b"tag=alice1", b"tag=alice\x00")
    response = only_response(feed(endpoint(), data), 400)
    assert "NUL" in response.reason


def test_escaped_nul_in_the_from_user_goes_up_as_received() -> None:
    """%00 in a user part is legal syntax (RFC 4475 section 3.1.1.4): the request is processed;
    making the value safe for a handler is the call layer's job."""
    data = raw("INVITE").replace(b"sip:alice@", b"sip:%00@")
    event = request_received(feed(endpoint(), data))
    assert str(event.info.from_.uri) == "sip:%00@127.0.0.1"


def test_unanswerable_garbage_is_dropped_and_counted() -> None:
    ep = endpoint()
    assert feed(ep, b"\x00\x01 not sip at all") == []
    assert feed(ep, raw("ACK", call_id=None)) == []  # never answer an ACK
    no_via = raw().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb1;rport\r\n", b"")
    assert feed(ep, no_via) == []  # nowhere to send a 400
    assert feed(ep, b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n") == []
    assert ep.dropped == 4


def test_response_goes_to_the_source_and_via_is_stamped() -> None:
    # RFC 3261 section 18.2.1 and RFC 3581 section 4: received (the sent-by differs from the
    # packet's source) and rport (asked for) are added to the top Via; with rport the
    # response goes to the source port, without it to the sent-by port (18.2.2).
    ep = endpoint()
    nat = Destination("udp", "127.0.0.2", 40000)
    data = raw(via="SIP/2.0/UDP 10.0.0.5:5070", extra="Require: foo\r\n")
    [send] = sent(feed(ep, data, source=nat))
    assert send.destination == nat
    response = parse_message(send.data)
    via = message_info(response).top_via
    assert (via.host, via.port, via.received, via.rport) == ("10.0.0.5", 5070, "127.0.0.2", "40000")
    assert via.branch == "z9hG4bKb1"
    # No rport asked for: the sent-by port.
    no_rport = raw(via="SIP/2.0/UDP 10.0.0.5:5099", extra="Require: foo\r\n").replace(
        b";rport", b""
    )
    [send] = sent(feed(ep, no_rport, source=nat))
    assert send.destination == Destination("udp", "127.0.0.2", 5099)
    via = message_info(parse_message(send.data)).top_via
    assert via.received == "127.0.0.2" and via.rport is None


def test_via_stamping_keeps_the_other_via_values() -> None:
    ep = endpoint()
    via = "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP 10.0.0.5:5070"
    outputs = feed(ep, raw(via=via), source=Destination("udp", "127.0.0.3", 5060))
    event = request_received(outputs)
    vias = event.request.headers.get_all("Via")
    assert vias[0] == "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1;received=127.0.0.3"
    assert vias[1] == "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKb1;rport"
    reply = make_response(event.request, 200, "OK", to_tag="x")
    assert responses(ep.respond(event.transaction, reply, 0.0))[0].headers.get_all("Via") == vias


def test_a_stamped_request_keeps_its_parsed_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stamp changes the headers; the parsed view is carried over (the stamped Via in place
    # of the old one), not parsed again by the transaction layer: one parse per request, and
    # what is kept equals a fresh parse.
    from siproc.sip import headers

    parse = headers._message_info
    parsed: list[object] = []
    monkeypatch.setattr(headers, "_message_info", lambda m: parsed.append(m) or parse(m))
    ep = endpoint()
    via = "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKp1;rport, SIP/2.0/UDP 10.0.0.6:5070"
    source = Destination("udp", "127.0.0.3", 40000)
    event = request_received(feed(ep, raw("INVITE", via=via), source=source))
    request = event.request
    kept = message_info(request)
    assert parsed == [request]
    assert kept.top_via.received == "127.0.0.3" and kept.top_via.rport == "40000"
    assert kept == parse(request)
    assert event.info.top_via.received is None  # the event has what the request said


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("method", ["BYE", "INFO", "ACK"])
def test_our_in_dialog_request_is_not_parsed_back(
    monkeypatch: pytest.MonkeyPatch, method: str, strict: bool
) -> None:
    # Dialog.create_request keeps the values it wrote as the request's parsed view; our Via and
    # the User-Agent carry it on, so our BYE's client transaction parses nothing, and what it
    # reads equals a parse of the bytes sent. Without its Via the request is still refused.
    from siproc.sip import headers

    parse = headers._message_info
    parsed: list[object] = []
    monkeypatch.setattr(headers, "_message_info", lambda m: parsed.append(m) or parse(m))
    route = "<sip:p1.example.com>" if strict else "<sip:p1.example.com;lr>"
    invite = Request("INVITE", "sip:bob@example.com")
    for name, value in (
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKinv1"),
        ("Record-Route", route),
        ("From", '"A \\"x\\" b" <sip:alice@example.com;transport=tcp>;tag=atag;x=Y'),
        ("To", "Bob <sip:bob@example.com>"),
        ("Call-ID", "dlg-9@192.0.2.1"),
        ("CSeq", "7 INVITE"),
        ("Contact", "<sip:alice@192.0.2.1:5062>"),
    ):
        invite.headers.add(name, value)
    dialog = Dialog.from_uas(invite, "btag")
    parsed.clear()  # (the INVITE's)
    request = dialog.create_request(method, cseq=7 if method == "ACK" else None)
    with pytest.raises(headers.ParseError, match="Via"):
        message_info(request)
    ep = endpoint()
    branch = ep.add_via(request, UAC, "127.0.0.1", 5060)
    if method == "ACK":
        data = ep.send_stateless(request, UAC).data
    else:
        tx, outputs = ep.send_request(request, UAC, 0.0)
        assert tx.key[0] == branch
        data = sent(outputs)[0].data
    kept = message_info(request)
    assert parsed == [request]  # only the refused parse above
    fresh = parse_message(data)
    assert kept == message_info(fresh) and kept.top_via.branch == branch
    # (From and To as written parse to the values kept, not only through name_addr's memory)
    assert kept.from_ == parse_name_addr(fresh.headers.get("From") or "")
    assert kept.to == parse_name_addr(fresh.headers.get("To") or "")
    assert kept.cseq.method == method


def test_reply_destination_reliable_transport_uses_the_connection() -> None:
    tcp = Destination("tcp", "127.0.0.9", 50123)
    assert reply_destination(parse_via("SIP/2.0/TCP 10.0.0.1:5060"), tcp) == tcp


# -- transactions: retransmissions, CANCEL, ACK, stray responses (section 17) ------------------


def test_retransmitted_invite_is_absorbed_and_gets_the_last_response() -> None:
    ep = endpoint()
    invite = raw("INVITE")
    first = feed(ep, invite)
    event = request_received(first)
    assert [r.status for r in responses(first)] == [100]  # 100 Trying at once (17.2.1)
    again = feed(ep, invite, 0.5)
    assert events(again) == [] and [r.status for r in responses(again)] == [100]
    ringing = make_response(event.request, 180, "Ringing", to_tag="b1")
    ep.respond(event.transaction, ringing, 0.6)
    again = feed(ep, invite, 1.5)
    assert events(again) == []
    assert [r.status for r in responses(again)] == [180]
    assert ep.transaction_count == 1


def test_retransmitted_non_invite_gets_the_final_response_again() -> None:
    ep = endpoint()
    event = request_received(feed(ep, raw("BYE")))
    assert feed(ep, raw("BYE"), 0.2) == []  # Trying: absorbed silently (17.2.2)
    ep.respond(event.transaction, make_response(event.request, 200, "OK", to_tag="b"), 0.3)
    assert [r.status for r in responses(feed(ep, raw("BYE"), 0.6))] == [200]


def test_cancel_matching_an_invite_goes_up_with_cancelled() -> None:
    ep = endpoint()
    invite = request_received(feed(ep, raw("INVITE")))
    outputs = feed(ep, raw("CANCEL"), 1.0)
    cancel = request_received(outputs)
    assert sent(outputs) == []  # the TU answers 200 to the CANCEL and 487 to the INVITE
    assert cancel.request.method == "CANCEL"
    assert cancel.cancelled is invite.transaction
    assert cancel.transaction is not invite.transaction
    ep.respond(cancel.transaction, make_response(cancel.request, 200, "OK", to_tag="b1"), 1.0)
    terminated = make_response(invite.request, 487, "Request Terminated", to_tag="b1")
    assert [r.status for r in responses(ep.respond(invite.transaction, terminated, 1.0))] == [487]
    # The ACK for the 487 belongs to the INVITE transaction (17.2.1).
    ack = raw("ACK", to_tag="b1")
    outputs = feed(ep, ack, 1.1)
    assert outputs == [AckReceived(invite.transaction)]  # type: ignore[arg-type]


def test_cancel_for_nothing_gets_481() -> None:
    ep = endpoint()
    response = only_response(feed(ep, raw("CANCEL")), 481)
    assert response.headers.get("CSeq") == "1 CANCEL"
    # Not for a non-INVITE either (section 9.2: CANCEL is for INVITE).
    request_received(feed(ep, raw("OPTIONS", branch="z9hG4bKopt")))
    only_response(feed(ep, raw("CANCEL", branch="z9hG4bKopt")), 481)


def test_ack_for_a_2xx_goes_to_the_dialog() -> None:
    ep = endpoint()
    invite = request_received(feed(ep, raw("INVITE")))
    ok = make_response(invite.request, 200, "OK", to_tag="b1")
    ep.respond(invite.transaction, ok, 1.0)
    assert invite.transaction.state is TransactionState.ACCEPTED
    # The ACK of a 2xx is a transaction of its own, with a new branch (section 17.1.1.3).
    outputs = feed(ep, raw("ACK", branch="z9hG4bKack", to_tag="b1"), 1.1)
    assert len(outputs) == 1 and isinstance(outputs[0], AckFor2xx)
    assert outputs[0].request.method == "ACK" and outputs[0].source == UAC
    # A peer that reuses the INVITE's branch reaches the transaction (RFC 6026 figure 7):
    # still the dialog's.
    outputs = feed(ep, raw("ACK", to_tag="b1"), 1.2)
    assert len(outputs) == 1 and isinstance(outputs[0], AckFor2xx)


def test_stray_2xx_to_invite_is_reported_and_other_strays_dropped() -> None:
    ep = endpoint()
    request = parse_message(raw("INVITE", branch="z9hG4bKgone"))
    assert isinstance(request, Request)
    ok = make_response(request, 200, "OK", to_tag="b1")
    outputs = ep.receive_message(ok, UAS, "127.0.0.1", 0.0)
    assert len(outputs) == 1 and isinstance(outputs[0], StrayResponse)
    assert outputs[0].response is ok and outputs[0].info.cseq.method == "INVITE"
    assert ep.receive_message(make_response(request, 180, "x", to_tag="b"), UAS, "h", 0) == []
    options = parse_message(raw("OPTIONS", branch="z9hG4bKnobody"))
    assert isinstance(options, Request)
    assert ep.receive_message(make_response(options, 200, "OK", to_tag="b"), UAS, "h", 0) == []
    assert ep.dropped == 2


def test_responses_match_client_transactions_by_branch_and_method() -> None:
    ep = endpoint()
    request = options_request(1)
    ep.add_via(request, UAS, "127.0.0.1", 5070)
    tx, outputs = ep.send_request(request, UAS, 0.0)
    [send] = sent(outputs)
    assert send.destination == UAS and b"User-Agent: siproc-test" in send.data
    via = message_info(request).top_via
    assert via.host == "127.0.0.1" and via.port == 5070 and via.rport == ""
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    ok = make_response(request, 200, "OK", to_tag="b")
    outputs = ep.receive_message(ok, UAS, "127.0.0.1", 0.1)
    assert outputs == [ResponseReceived(tx, ok)]
    assert ep.receive_message(ok, UAS, "127.0.0.1", 0.2) == []  # absorbed in Completed


def test_a_transport_error_ends_waiting_transactions_with_a_503_at_once() -> None:
    """RFC 3261 sections 8.1.3.1 and 17.1.4: a refused TCP connection is a 503 for the TU now,
    not a 408 after Timer B; datagrams and answered transactions are left alone."""
    ep = endpoint()
    tcp = Destination("tcp", "127.0.0.1", 5099)
    invite = invite_request()
    ep.add_via(invite, tcp, "127.0.0.1", 5070)
    invite_tx, _ = ep.send_request(invite, tcp, 0.0)
    options = options_request(2)
    ep.add_via(options, tcp, "127.0.0.1", 5070)
    options_tx, _ = ep.send_request(options, tcp, 0.0)
    other = options_request(3)
    ep.add_via(other, UAS, "127.0.0.1", 5070)
    ep.send_request(other, UAS, 0.0)
    assert ep.transport_error(UAS, "Network is unreachable") == []  # UDP: retransmissions
    outputs = ep.transport_error(tcp, "[Errno 111] Connection refused")
    failed = [o for o in outputs if isinstance(o, ResponseReceived)]
    assert [(r.transaction, r.response.status) for r in failed] == [
        (invite_tx, 503),
        (options_tx, 503),
    ]
    assert failed[0].response.reason == "Service Unavailable ([Errno 111] Connection refused)"
    assert not sent(outputs)  # no ACK: there is no way to that server
    assert invite_tx.terminated and options_tx.terminated and ep.transaction_count == 1
    assert ep.transport_error(tcp, "again") == []


def test_new_tokens_are_hex_of_the_asked_length() -> None:
    ep = endpoint()
    assert re.fullmatch(r"[0-9a-f]{16}", ep.new_token())
    assert re.fullmatch(r"[0-9a-f]{4}", ep.new_token(2))
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{20}", ep.new_branch())


# -- two endpoints over a lossy link, in virtual time (tests/sipsim.py) -------------------------


def options_request(number: int, method: str = "OPTIONS") -> Request:
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@127.0.0.1>;tag=a1")
    headers.add("To", "<sip:bob@127.0.0.1>")
    headers.add("Call-ID", f"call-{number}@127.0.0.1")
    headers.add("CSeq", f"{number} {method}")
    return Request(method, "sip:bob@127.0.0.1:5060", headers)


def invite_request() -> Request:
    request = options_request(1, "INVITE")
    request.headers.add("Contact", "<sip:alice@127.0.0.1:5070>")
    return request


@dataclass
class InviteUas:
    """Bob's scripted TU: 180 at once, 200 after a second, the 2xx retransmitted by the TU
    (T1 doubling to T2, section 13.3.1.4) until its ACK arrives or 64*T1 pass."""

    invites: int = 0
    acks: list[float] = field(default_factory=list)

    def __call__(self, node: EndpointNode, event: Output, now: float) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            self.invites += 1
            tx, request = event.transaction, event.request
            node.respond(tx, make_response(request, 180, "Ringing", to_tag="bob1"), now)
            node.call_at(now + 1.0, lambda t: self._answer(node, tx, t))
        elif isinstance(event, AckFor2xx):
            self.acks.append(now)

    def _answer(self, node: EndpointNode, tx: ServerTransaction, now: float) -> None:
        contact = [("Contact", "<sip:bob@127.0.0.1:5060>")]
        ok = make_response(tx.request, 200, "OK", to_tag="bob1", headers=contact)
        node.respond(tx, ok, now)
        self._retransmit(node, tx, ok, now + T.t1, T.t1, now + T.timeout)

    def _retransmit(
        self,
        node: EndpointNode,
        tx: ServerTransaction,
        ok: Response,
        at: float,
        interval: float,
        end: float,
    ) -> None:
        def fire(now: float) -> None:
            if self.acks or tx.terminated or now >= end:
                return
            node.respond(tx, ok, now)
            nxt = min(2 * interval, T.t2)
            self._retransmit(node, tx, ok, now + nxt, nxt, end)

        node.call_at(at, fire)


@dataclass
class InviteUac:
    """Alice's scripted TU: the dialog ACKs every 2xx, also one that comes after Timer M."""

    request: Request
    statuses: list[tuple[float, int]] = field(default_factory=list)
    timeouts: list[tuple[float, str]] = field(default_factory=list)
    acks: int = 0

    def __call__(self, node: EndpointNode, event: Output, now: float) -> None:
        if isinstance(event, ResponseReceived):
            self.statuses.append((now, event.response.status))
            if 200 <= event.response.status < 300:
                self._ack(node, event.response, now)
        elif isinstance(event, StrayResponse):
            self._ack(node, event.response, now)
        elif isinstance(event, TransactionTimeout):
            self.timeouts.append((now, event.transaction.method))

    def _ack(self, node: EndpointNode, response: Response, now: float) -> None:
        dialog = Dialog.from_uac(self.request, response)
        ack = dialog.create_request("ACK", cseq=dialog.local_cseq)
        node.send_ack(ack, UAS, now)
        self.acks += 1

    def finals(self) -> list[tuple[float, int]]:
        return [(t, s) for t, s in self.statuses if s >= 200]


def simulation(loss: float, seed: int) -> tuple[Simulation, EndpointNode, EndpointNode]:
    link = LossyLink(loss, random.Random(seed), delay=0.01)
    sim = Simulation(link)
    uac = EndpointNode(link, UAC, endpoint(seed))
    uas = EndpointNode(link, UAS, endpoint(seed + 1000))
    sim.add(UAC, uac)
    sim.add(UAS, uas)
    return sim, uac, uas


def start_invite(
    loss: float, seed: int
) -> tuple[Simulation, EndpointNode, EndpointNode, InviteUac, InviteUas]:
    sim, uac, uas = simulation(loss, seed)
    request = invite_request()
    alice, bob = InviteUac(request), InviteUas()
    uac.on_event, uas.on_event = alice, bob
    uac.send_request(request, UAS, sim.now)
    return sim, uac, uas, alice, bob


def idle(*nodes: EndpointNode) -> bool:
    return all(n.endpoint.transaction_count == 0 and n.next_deadline() is None for n in nodes)


def test_sim_invite_100_180_200_ack_without_loss() -> None:
    sim, uac, uas, alice, bob = start_invite(0.0, 0)
    assert sim.run_until(lambda: bool(bob.acks), max_time=10.0)
    assert alice.statuses == [
        (pytest.approx(0.02), 100),
        (pytest.approx(0.02), 180),
        (pytest.approx(1.02), 200),
    ]
    assert bob.acks == [pytest.approx(1.03)] and bob.invites == 1
    assert [line for _, line in sim.link.sent_lines()] == [
        "INVITE sip:bob@127.0.0.1:5060 SIP/2.0",
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:bob@127.0.0.1:5060 SIP/2.0",  # to the Contact of the 200 (section 12.2.1.1)
    ]
    assert sim.run_until(lambda: idle(uac, uas), max_time=100.0)
    assert sim.now == pytest.approx(1.02 + 32)  # Timer L at Bob, then Timer M at Alice


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_invite_completes_under_30_percent_loss(seed: int) -> None:
    sim, uac, uas, alice, bob = start_invite(0.3, seed)
    assert sim.run_until(lambda: bool(alice.finals()), max_time=64 * T.t1), sim.link.records
    assert alice.finals()[0][1] == 200 and alice.timeouts == []
    assert sim.run_until(lambda: bool(bob.acks), max_time=64.0), sim.link.records
    assert sim.run_until(lambda: idle(uac, uas), max_time=200.0)
    assert bob.invites == 1  # retransmitted INVITEs never reached the TU again
    assert len(uas.of_type(RequestReceived)) == 1


@dataclass
class Registrar:
    """A scripted registrar TU: 401 with a digest challenge, 200 for a correct answer."""

    password: str = "secret"
    nonce: str = "5f2a8c"
    requests: int = 0
    authorized: int = 0

    def __call__(self, node: EndpointNode, event: Output, now: float) -> None:
        if not isinstance(event, RequestReceived):
            return
        assert event.request.method == "REGISTER"
        self.requests += 1
        request = event.request
        if self._valid(request):
            self.authorized += 1
            contact = request.headers.get("Contact") or ""
            reply = make_response(request, 200, "OK", to_tag="reg1", headers=[("Contact", contact)])
        else:
            challenge = f'Digest realm="test", nonce="{self.nonce}", qop="auth", algorithm=MD5'
            reply = make_response(
                request,
                401,
                "Unauthorized",
                to_tag="reg1",
                headers=[("WWW-Authenticate", challenge)],
            )
        node.respond(event.transaction, reply, now)

    def _valid(self, request: Request) -> bool:
        value = request.headers.get("Authorization")
        if value is None:
            return False
        params = {
            m[1]: m[2] if m[2] is not None else m[3]
            for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)
        }
        expected = compute_response(
            Challenge("Digest", "test", self.nonce, "MD5", ("auth",)),
            method="REGISTER",
            uri=params["uri"],
            username=params["username"],
            password=self.password,
            cnonce=params["cnonce"],
            nc=int(params["nc"], 16),
        )
        return params["nonce"] == self.nonce and params["response"] == expected


@dataclass
class RegisterClient:
    """Alice's phone as far as registering goes: `Registration` fed by the endpoint's events."""

    registration: Registration
    via_host: str | None = None  # what our Via says, if not the address we send from
    results: list[tuple[float, RegistrationResult]] = field(default_factory=list)
    transactions: list[ClientTransaction] = field(default_factory=list)

    def send(self, node: EndpointNode, now: float) -> None:
        request = self.registration.build_request()
        if self.via_host is None:
            self.transactions.append(node.send_request(request, UAS, now))
            return
        node.endpoint.add_via(request, UAS, self.via_host, node.address.port)
        tx, outputs = node.endpoint.send_request(request, UAS, now)
        self.transactions.append(tx)
        node.process(outputs, now)

    def __call__(self, node: EndpointNode, event: Output, now: float) -> None:
        result: RegistrationResult | None = None
        if isinstance(event, ResponseReceived) and event.response.status >= 200:
            result = self.registration.on_response(event.response, now)
        elif isinstance(event, TransactionTimeout):
            result = self.registration.on_timeout(now)
        if result is None:
            return
        self.results.append((now, result))
        if isinstance(result, SendAgain):
            self.send(node, now)

    def kinds(self) -> list[type]:
        return [type(r) for _, r in self.results]


def registration(contact: str = "sip:alice@127.0.0.1:5070") -> Registration:
    reg = Registration(
        registrar=parse_sip_uri("sip:127.0.0.1:5060"),
        aor=parse_name_addr("<sip:alice@127.0.0.1>"),
        contact=parse_sip_uri(contact),
        expires=600,
        call_id="reg@127.0.0.1",
        from_tag="rt1",
        auth=DigestSession("alice", "secret"),
    )
    reg.start()
    return reg


def start_register(
    loss: float, seed: int, **kwargs: str
) -> tuple[Simulation, EndpointNode, EndpointNode, RegisterClient, Registrar]:
    sim, uac, uas = simulation(loss, seed)
    client, registrar = RegisterClient(registration(**kwargs)), Registrar()
    uac.on_event, uas.on_event = client, registrar
    return sim, uac, uas, client, registrar


def test_sim_register_401_then_200_without_loss() -> None:
    sim, uac, uas, client, registrar = start_register(0.0, 0)
    client.send(uac, sim.now)
    assert sim.run_until(lambda: Registered in client.kinds(), max_time=10.0)
    assert client.kinds() == [SendAgain, Registered]
    assert client.results[-1] == (pytest.approx(0.04), Registered(600, pytest.approx(540.04)))
    assert registrar.requests == 2 and registrar.authorized == 1
    lines = [line for _, line in sim.link.sent_lines()]
    assert lines == [
        "REGISTER sip:127.0.0.1:5060 SIP/2.0",
        "SIP/2.0 401 Unauthorized",
        "REGISTER sip:127.0.0.1:5060 SIP/2.0",
        "SIP/2.0 200 OK",
    ]
    assert sim.run_until(lambda: idle(uac, uas), max_time=100.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_register_with_auth_completes_under_30_percent_loss(seed: int) -> None:
    sim, uac, uas, client, registrar = start_register(0.3, seed)
    client.send(uac, sim.now)
    assert sim.run_until(lambda: Registered in client.kinds(), max_time=128.0), sim.link.records
    assert client.kinds() == [SendAgain, Registered]  # no timeout, no failure
    # Each REGISTER reached the registrar's TU once, however often it was retransmitted.
    assert registrar.requests == 2 and registrar.authorized == 1
    assert sim.run_until(lambda: idle(uac, uas), max_time=300.0)


def test_sim_registrar_behind_nat_makes_the_contact_follow() -> None:
    # Alice's Via says 10.0.0.5 (her private address) but her packets come from 127.0.0.1:5070:
    # the registrar's endpoint stamps received/rport, Registration rewrites the Contact.
    sim, uac, _, client, registrar = start_register(0.0, 0, contact="sip:alice@10.0.0.5:5070")
    client.via_host = "10.0.0.5"
    client.send(uac, sim.now)
    assert sim.run_until(lambda: Registered in client.kinds(), max_time=10.0)
    assert client.kinds() == [SendAgain, SendAgain, Registered]
    assert client.results[1][1] == SendAgain("registrar sees us at 127.0.0.1:5070")
    assert str(client.registration.contact) == "sip:alice@127.0.0.1:5070"
    assert registrar.requests == 3


@pytest.mark.parametrize(("method", "transmissions"), [("INVITE", 7), ("REGISTER", 11)])
def test_sim_total_loss_times_out_at_exactly_64_t1(method: str, transmissions: int) -> None:
    sim, uac, uas = simulation(1.0, 0)
    if method == "INVITE":
        request = invite_request()
        alice = InviteUac(request)
        uac.on_event = alice
        uac.send_request(request, UAS, sim.now)
        assert sim.run_until(lambda: bool(alice.timeouts), max_time=100.0)
        assert alice.timeouts == [(32.0, "INVITE")]  # Timer B
    else:
        client = RegisterClient(registration())
        uac.on_event = client
        client.send(uac, sim.now)
        assert sim.run_until(lambda: bool(client.results), max_time=100.0)
        [(when, result)] = client.results  # Timer F
        assert when == 32.0 and isinstance(result, Failed) and "timeout" in result.reason
    assert sim.now == 32.0 == 64 * T.t1
    assert [type(e) for _, e in uac.events] == [TransactionTimeout, TransactionTerminated]
    assert sim.link.sent == sim.link.dropped == transmissions
    assert uac.endpoint.transaction_count == 0 and uas.events == []


# -- the timer heap under load ------------------------------------------------------------------


def start_many(ep: Endpoint, count: int, now: float = 0.0) -> list[ClientTransaction]:
    transactions = []
    for number in range(count):
        request = options_request(number + 1)
        ep.add_via(request, UAS, "127.0.0.1", 5070)
        tx, outputs = ep.send_request(request, UAS, now)
        assert len(sent(outputs)) == 1
        transactions.append(tx)
    return transactions


def drive(ep: Endpoint, until: float) -> tuple[list[tuple[float, Output]], int]:
    """Fire the endpoint's timers deadline by deadline, as the edge does; (outputs, max heap)."""
    fired: list[tuple[float, Output]] = []
    largest = len(ep._heap)
    while (deadline := ep.next_deadline()) is not None and deadline <= until:
        fired += [(deadline, o) for o in ep.handle_timer(deadline)]
        largest = max(largest, len(ep._heap))
    return fired, largest


def test_1000_concurrent_transactions_all_time_out_at_32_s() -> None:
    ep = endpoint()
    transactions = start_many(ep, 1000)
    assert ep.next_deadline() == 0.5 and ep.transaction_count == 1000
    assert ep.handle_timer(0.49) == []
    fired, largest = drive(ep, 100.0)
    timeouts = [(t, o.transaction) for t, o in fired if isinstance(o, TransactionTimeout)]
    assert len(timeouts) == 1000 and {t for t, _ in timeouts} == {32.0}
    assert {id(tx) for _, tx in timeouts} == {id(tx) for tx in transactions}
    # Timer E: 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5: ten retransmissions each.
    sends = [t for t, o in fired if isinstance(o, Send)]
    assert len(sends) == 10_000
    assert sorted(set(sends)) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert largest <= 1000  # one live entry per transaction
    assert ep.transaction_count == 0 and ep.next_deadline() is None and ep._heap == []


def test_stale_heap_entries_are_dropped_not_kept() -> None:
    ep = endpoint()
    transactions = start_many(ep, 1000)
    # Half of them are answered at once: Timer K (T4 = 5 s) replaces Timers E and F, and the
    # heap entry for Timer E goes stale.
    for tx in transactions[::2]:
        ok = make_response(tx.request, 200, "OK", to_tag="b")
        assert len(ep.receive_message(ok, UAS, "127.0.0.1", 0.1)) == 1
    assert len(ep._heap) == 1500
    assert ep.next_deadline() == 0.5  # the stale Timer E entries lie below live ones
    fired, largest = drive(ep, 100.0)
    assert largest <= 1500
    ended = [(t, o.transaction) for t, o in fired if isinstance(o, TransactionTerminated)]
    assert sorted({t for t, _ in ended}) == [5.1, 32.0]
    assert len([o for _, o in fired if isinstance(o, TransactionTimeout)]) == 500
    assert ep._heap == [] and ep.transaction_count == 0


def test_heap_stays_bounded_over_a_long_run() -> None:
    """Ten minutes of one OPTIONS per second, each answered, with a retransmitted request each
    time: the heap holds about one entry per live transaction, not one per event ever."""
    client, server = endpoint(1), endpoint(2)
    now = 0.0
    sizes = []
    for number in range(600):
        now = float(number)
        request = options_request(number + 1)
        client.add_via(request, UAS, "127.0.0.1", 5070)
        _, outputs = client.send_request(request, UAS, now)
        [send] = sent(outputs)
        event = request_received(server.receive(send.data, UAC, "127.0.0.1", now + 0.01))
        assert server.receive(send.data, UAC, "127.0.0.1", now + 0.02) == []  # retransmission
        ok = make_response(event.request, 200, "OK", to_tag="b")
        [reply] = sent(server.respond(event.transaction, ok, now + 0.03))
        assert server.receive(send.data, UAC, "127.0.0.1", now + 0.04) != []  # 200 again
        client.receive(reply.data, UAS, "127.0.0.1", now + 0.05)
        for ep in (client, server):
            ep.handle_timer(now + 0.5)
        sizes.append((len(client._heap), client.transaction_count))
        sizes.append((len(server._heap), server.transaction_count))
    assert max(count for _, count in sizes) <= 40  # Timer J keeps ~32 server transactions
    assert all(size <= 2 * count + 4 for size, count in sizes)
    for ep in (client, server):
        drive(ep, now + 100.0)
        assert ep._heap == [] and ep.transaction_count == 0


def test_handle_timer_fires_in_deadline_order_across_transactions() -> None:
    ep = endpoint()
    invite = invite_request()
    ep.add_via(invite, UAS, "127.0.0.1", 5070)
    ep.send_request(invite, UAS, 0.0)  # Timer A at 0.5, Timer B at 32
    options = options_request(7)
    ep.add_via(options, UAS, "127.0.0.1", 5070)
    ep.send_request(options, UAS, 0.2)  # Timer E at 0.7
    fired = ep.handle_timer(10.0)  # the edge woke very late
    lines = [s.data.split(b" ", 1)[0] for s in sent(fired)]
    assert lines == [b"INVITE", b"OPTIONS"]  # one retransmission each, no burst
    assert ep.next_deadline() == 11.0  # both re-armed from now with their doubled interval


def test_server_invite_timers_are_tracked_too() -> None:
    ep = endpoint()
    event = request_received(feed(ep, raw("INVITE")))
    assert isinstance(event.transaction, InviteServerTransaction)
    busy = make_response(event.request, 486, "Busy Here", to_tag="b")
    ep.respond(event.transaction, busy, 0.0)
    fired, _ = drive(ep, 100.0)
    # Timer G retransmits the 486 (0.5, 1.5, 3.5, 7.5, then every T2) until Timer H at 32 s.
    assert [t for t, o in fired if isinstance(o, Send)][:4] == [0.5, 1.5, 3.5, 7.5]
    assert [(t, type(o)) for t, o in fired if not isinstance(o, Send)] == [
        (32.0, TransactionTimeout),
        (32.0, TransactionTerminated),
    ]
    assert ep.transaction_count == 0 and ep._heap == []


def test_sip_trace_masks_credentials_and_srtp_keys() -> None:
    """SIPROC_LOG_LEVEL 6 logs whole messages: never a password digest nor an SDES key."""
    from siproc.sip.endpoint import _trace

    key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    ).encode()
    request = parse_message(
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b'Authorization: Digest username="a", response="0123456789abcdef"\r\n'
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    text = _trace(request)
    assert key not in text and "0123456789abcdef" not in text
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 <masked>" in text
    assert "m=audio 4000 RTP/SAVP 0" in text
