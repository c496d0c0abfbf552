"""Dialogs (RFC 3261 section 12): creation on both sides, in-dialog requests, the CSeq rule."""

from __future__ import annotations

import pytest

from siproc.sip.dialog import Dialog, DialogState
from siproc.sip.errors import LocalProtocolError, RemoteProtocolError
from siproc.sip.headers import make_response, message_info
from siproc.sip.message import Request, Response, parse_message, serialize
from siproc.sip.uri import SipUri, parse_name_addr, parse_sip_uri

# Alice (UAC) -> p1 -> p2 -> Bob (UAS). Each proxy puts its Record-Route on top, so Bob sees
# p2 first; Bob's responses carry the Record-Route values in that same order.
RECORD_ROUTE = "<sip:p2.example.com;lr>, <sip:p1.example.com;lr;transport=tcp>"
ALICE_CONTACT = "sip:alice@192.0.2.1:5060"
BOB_CONTACT = "sip:bob@192.0.2.2:5062"


def invite(
    *,
    record_route: str | None = RECORD_ROUTE,
    cseq: int = 101,
    contact: str | None = f"<{ALICE_CONTACT}>",
) -> Request:
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1;rport",
        "Max-Forwards: 68",
        'From: "Alice" <sip:alice@example.com>;tag=atag',
        "To: <sip:bob@example.com>",
        "Call-ID: dlg-1@192.0.2.1",
        f"CSeq: {cseq} INVITE",
    ]
    if record_route is not None:
        lines.append(f"Record-Route: {record_route}")
    if contact is not None:
        lines.append(f"Contact: {contact}")
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def response(
    request: Request,
    status: int = 200,
    *,
    to_tag: str | None = "btag",
    contact: str | None = f"<{BOB_CONTACT}>",
    record_route: str | None = RECORD_ROUTE,
) -> Response:
    headers: list[tuple[str, str]] = []
    if record_route is not None:
        headers.append(("Record-Route", record_route))
    if contact is not None:
        headers.append(("Contact", contact))
    return make_response(
        request, status, "OK" if status == 200 else "x", to_tag=to_tag, headers=headers
    )


def in_dialog(
    method: str, cseq: int, *, contact: str | None = None, from_alice: bool = True
) -> Request:
    """A request inside the dialog as the peer would send it."""
    if from_alice:
        from_, to = "<sip:alice@example.com>;tag=atag", "<sip:bob@example.com>;tag=btag"
    else:
        from_, to = "<sip:bob@example.com>;tag=btag", "<sip:alice@example.com>;tag=atag"
    text = (
        f"{method} sip:x@192.0.2.9 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK{method}{cseq}\r\n"
        f"From: {from_}\r\nTo: {to}\r\nCall-ID: dlg-1@192.0.2.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def uac_dialog(**kwargs: str | None) -> Dialog:
    req = invite()
    return Dialog.from_uac(req, response(req, **kwargs))  # type: ignore[arg-type]


def uas_dialog() -> Dialog:
    return Dialog.from_uas(invite(), "btag")


def routes(request: Request) -> list[str]:
    return request.headers.get_all("Route")


def reparsed(request: Request) -> Request:
    """`request` with a Via, serialized and parsed again: it is well formed."""
    request.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnew;rport")
    message = parse_message(serialize(request))
    assert isinstance(message, Request)
    message_info(message)
    return message


# -- creation ------------------------------------------------------------------------------------


def test_uac_dialog_from_invite_and_200() -> None:
    dialog = uac_dialog()
    assert dialog.id == ("dlg-1@192.0.2.1", "atag", "btag")
    assert dialog.local == parse_name_addr('"Alice" <sip:alice@example.com>')
    assert dialog.remote == parse_name_addr("<sip:bob@example.com>")
    assert dialog.remote_target == parse_sip_uri(BOB_CONTACT)
    # Section 12.1.2: the Record-Route of the response, in reverse order.
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.com;lr;transport=tcp>",
        "<sip:p2.example.com;lr>",
    ]
    assert dialog.local_cseq == 101 and dialog.remote_cseq is None
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.next_hop() == parse_sip_uri("sip:p1.example.com;lr;transport=tcp")


def test_record_route_in_several_header_lines_is_one_route_set() -> None:
    req = invite(record_route=None)
    resp = response(req, record_route=None)
    resp.headers.add("Record-Route", "<sip:p2.example.com;lr>")
    resp.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    dialog = Dialog.from_uac(req, resp)
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]


def test_uac_early_dialog_from_a_provisional_with_to_tag() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, response(req, 180))
    assert dialog.state is DialogState.EARLY and dialog.remote_tag == "btag"
    dialog.set_state(DialogState.CONFIRMED)
    assert dialog.state is DialogState.CONFIRMED


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"to_tag": None}, 400),  # no To tag: no dialog
        ({"contact": None}, 400),  # no remote target
        ({"contact": "<tel:+15551234>"}, 416),
    ],
)
def test_uac_dialog_needs_a_to_tag_and_a_sip_contact(
    kwargs: dict[str, str | None], status: int
) -> None:
    req = invite()
    with pytest.raises(RemoteProtocolError) as info:
        Dialog.from_uac(req, response(req, **kwargs))  # type: ignore[arg-type]
    assert info.value.status == status


def test_uas_dialog_from_invite() -> None:
    dialog = uas_dialog()
    assert dialog.id == ("dlg-1@192.0.2.1", "btag", "atag")
    assert dialog.local == parse_name_addr("<sip:bob@example.com>")
    assert dialog.remote == parse_name_addr('"Alice" <sip:alice@example.com>')
    assert dialog.remote_target == parse_sip_uri(ALICE_CONTACT)
    # Section 12.1.1: the Record-Route of the request, in order.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr;transport=tcp",
    ]
    assert dialog.remote_cseq == 101 and dialog.local_cseq == 0
    assert dialog.state is DialogState.EARLY


def test_uas_dialog_needs_a_contact() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Dialog.from_uas(invite(contact=None), "btag")
    assert info.value.status == 400


# -- in-dialog requests (section 12.2.1.1) -------------------------------------------------------


def test_uac_bye_loose_routing() -> None:
    dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE"
    assert bye.uri == BOB_CONTACT  # loose routing: the Request-URI is the remote target
    assert routes(bye) == ["<sip:p1.example.com;lr;transport=tcp>", "<sip:p2.example.com;lr>"]
    assert bye.headers.get("From") == '"Alice" <sip:alice@example.com>;tag=atag'
    assert bye.headers.get("To") == "<sip:bob@example.com>;tag=btag"
    assert bye.headers.get("Call-ID") == "dlg-1@192.0.2.1"
    assert bye.headers.get("CSeq") == "102 BYE"  # the INVITE's CSeq plus one
    assert bye.headers.get("Max-Forwards") == "70"
    assert "Via" not in bye.headers
    info = message_info(reparsed(bye))
    assert info.from_.tag == "atag" and info.to.tag == "btag"


def test_uas_bye_uses_the_route_set_in_order() -> None:
    dialog = uas_dialog()
    bye = dialog.create_request("BYE")
    assert bye.uri == ALICE_CONTACT
    assert routes(bye) == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr;transport=tcp>"]
    assert bye.headers.get("From") == "<sip:bob@example.com>;tag=btag"
    assert bye.headers.get("To") == '"Alice" <sip:alice@example.com>;tag=atag'
    assert bye.headers.get("CSeq") == "1 BYE"  # our own, independent CSeq space
    assert dialog.next_hop() == parse_sip_uri("sip:p2.example.com;lr")


def test_ack_and_cancel_reuse_the_invite_cseq() -> None:
    dialog = uac_dialog()
    ack = dialog.create_request("ACK", cseq=dialog.local_cseq)
    assert ack.headers.get("CSeq") == "101 ACK" and dialog.local_cseq == 101
    assert routes(ack) == routes(dialog.create_request("INFO"))
    assert dialog.create_request("BYE").headers.get("CSeq") == "103 BYE"


def test_no_route_set_means_no_route_header_and_the_target_as_next_hop() -> None:
    dialog = uac_dialog(record_route=None)
    bye = dialog.create_request("BYE")
    assert "Route" not in bye.headers and bye.uri == BOB_CONTACT
    assert dialog.next_hop() == parse_sip_uri(BOB_CONTACT)


def test_strict_router_goes_into_the_request_uri() -> None:
    # Section 12.2.1.1: the first route without lr goes into the Request-URI (only parameters
    # a Request-URI may not carry are stripped: method, and URI headers); the rest of the route
    # set follows in Route, and the remote target comes last.
    dialog = uac_dialog(
        record_route="<sip:p2.example.com;lr>, <sip:strict.example.com;transport=tcp;method=INVITE>"
    )
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:strict.example.com;transport=tcp"
    assert routes(bye) == ["<sip:p2.example.com;lr>", f"<{BOB_CONTACT}>"]
    assert dialog.next_hop() == parse_sip_uri("sip:strict.example.com;transport=tcp;method=INVITE")
    reparsed(bye)


def test_dialog_without_remote_tag_has_no_to_tag() -> None:
    req = invite()
    req.headers.set("From", "<sip:alice@example.com>")  # an RFC 2543 peer: no From tag
    dialog = Dialog.from_uas(req, "btag")
    assert dialog.remote_tag == ""
    assert dialog.create_request("BYE").headers.get("To") == "<sip:alice@example.com>"


# -- the remote CSeq (section 12.2.2) and target refresh -----------------------------------------


def test_remote_cseq_must_increase() -> None:
    dialog = uas_dialog()  # remote CSeq 101 from the INVITE
    dialog.check_request(in_dialog("INFO", 102))
    assert dialog.remote_cseq == 102
    for number in (100, 102):  # lower, and equal for a new request, are out of order
        with pytest.raises(RemoteProtocolError) as info:
            dialog.check_request(in_dialog("BYE", number))
        assert info.value.status == 500
    assert dialog.remote_cseq == 102
    dialog.check_request(in_dialog("BYE", 200))  # gaps are fine
    assert dialog.remote_cseq == 200


def test_ack_and_cancel_are_exempt_from_the_cseq_rule() -> None:
    dialog = uas_dialog()
    dialog.check_request(in_dialog("INFO", 105))
    dialog.check_request(in_dialog("ACK", 101))
    dialog.check_request(in_dialog("CANCEL", 101))
    assert dialog.remote_cseq == 105


def test_first_remote_request_sets_the_remote_cseq() -> None:
    dialog = uac_dialog()
    assert dialog.remote_cseq is None
    dialog.check_request(in_dialog("BYE", 7, from_alice=False))  # any number is in order
    assert dialog.remote_cseq == 7


def test_reinvite_refreshes_the_remote_target() -> None:
    dialog = uas_dialog()
    dialog.check_request(in_dialog("INVITE", 102, contact="<sip:alice@198.51.100.7:5070>"))
    assert dialog.remote_target == parse_sip_uri("sip:alice@198.51.100.7:5070")
    assert dialog.create_request("BYE").uri == "sip:alice@198.51.100.7:5070"
    dialog.check_request(in_dialog("UPDATE", 103, contact="<sip:alice@198.51.100.8>"))
    assert dialog.remote_target == parse_sip_uri("sip:alice@198.51.100.8")
    # Not a target refresh request: the Contact of an INFO changes nothing.
    dialog.check_request(in_dialog("INFO", 104, contact="<sip:alice@203.0.113.1>"))
    assert dialog.remote_target == parse_sip_uri("sip:alice@198.51.100.8")
    # A re-INVITE without Contact, or with one we cannot parse, keeps the target.
    dialog.check_request(in_dialog("INVITE", 105))
    dialog.check_request(in_dialog("INVITE", 106, contact="<sip:alice@bad host>"))
    assert dialog.remote_target == parse_sip_uri("sip:alice@198.51.100.8")


def test_out_of_order_reinvite_does_not_refresh() -> None:
    dialog = uas_dialog()
    with pytest.raises(RemoteProtocolError):
        dialog.check_request(in_dialog("INVITE", 50, contact="<sip:alice@203.0.113.1>"))
    assert dialog.remote_target == parse_sip_uri(ALICE_CONTACT)


def test_2xx_to_our_reinvite_refreshes_the_remote_target() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKre")
    ok = make_response(reinvite, 200, "OK", headers=[("Contact", "<sip:bob@198.51.100.2>")])
    dialog.update_from_response(ok)
    assert dialog.remote_target == SipUri("sip", "198.51.100.2", "bob")
    for contact in (None, "<tel:+1555>", "<sip:bob@bad host>"):
        ok = make_response(reinvite, 200, "OK", headers=[("Contact", contact)] if contact else [])
        dialog.update_from_response(ok)
        assert dialog.remote_target == SipUri("sip", "198.51.100.2", "bob")


def test_dialog_states() -> None:
    dialog = uac_dialog()
    with pytest.raises(LocalProtocolError, match="confirmed -> early"):
        dialog.set_state(DialogState.EARLY)
    dialog.set_state(DialogState.CONFIRMED)  # no change is fine
    dialog.set_state(DialogState.TERMINATED)
    with pytest.raises(LocalProtocolError):
        dialog.set_state(DialogState.CONFIRMED)
    early = uas_dialog()
    early.set_state(DialogState.TERMINATED)  # e.g. the INVITE was rejected
