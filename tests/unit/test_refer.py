"""REFER headers and NOTIFY bodies (RFC 3515, RFC 3892, RFC 3420, RFC 6665): siproc.sip.refer."""

from __future__ import annotations

import pytest

from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.message import Headers, Request, parse_message
from siproc.sip.refer import (
    REFER_EVENT,
    EventHeader,
    Sipfrag,
    SubscriptionState,
    active,
    format_refer_to,
    parse_event,
    parse_refer_to,
    parse_referred_by,
    parse_sipfrag,
    parse_subscription_state,
    refer_event,
    refer_target,
    terminated,
)
from siproc.sip.uri import NameAddr, SipUri, parse_sip_uri

# RFC 3515 section 4.1 (the example REFER), with its Refer-To and Contact.
RFC3515_REFER = (
    b"REFER sip:b@atlanta.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP agenta.atlanta.example.com;branch=z9hG4bK2293940223\r\n"
    b"To: <sip:b@atlanta.example.com>\r\n"
    b"From: <sip:a@atlanta.example.com>;tag=193402342\r\n"
    b"Call-ID: 898234234@agenta.atlanta.example.com\r\n"
    b"CSeq: 93809823 REFER\r\n"
    b"Max-Forwards: 70\r\n"
    b"Refer-To: (whatever URI)\r\n"
    b"Contact: sip:a@atlanta.example.com\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def refer_headers(*refer_to: str, compact: bool = False) -> Headers:
    headers = Headers()
    for value in refer_to:
        headers.add("r" if compact else "Refer-To", value)
    return headers


# -- Refer-To ------------------------------------------------------------------------------------


def test_refer_to_is_always_in_angle_brackets() -> None:
    uri = parse_sip_uri("sip:carol@192.0.2.3:5070;transport=tcp")
    assert format_refer_to(uri) == "<sip:carol@192.0.2.3:5070;transport=tcp>"
    assert (
        format_refer_to(NameAddr(uri, "Carol"))
        == '"Carol" <sip:carol@192.0.2.3:5070;transport=tcp>'
    )


def test_refer_to_round_trips() -> None:
    uri = parse_sip_uri("sip:carol@example.com;user=phone")
    parsed = parse_refer_to(format_refer_to(uri))
    assert parsed.uri == uri
    assert parsed.params == ()


def test_refer_to_addr_spec_params_belong_to_the_header() -> None:
    # Without brackets, ;params are header params (RFC 3261 section 20): the reason RFC 3515
    # section 2.1 wants brackets around a URI with parameters.
    parsed = parse_refer_to("sip:carol@example.com;transport=tcp")
    assert isinstance(parsed.uri, SipUri)
    assert parsed.uri.param("transport") is None
    assert parsed.param("transport") == "tcp"


@pytest.mark.parametrize(
    "value",
    [
        "<sip:carol@example.com>",
        "Carol <sip:carol@example.com>",
        '"Carol \\"C\\"" <sip:carol@example.com>;x=1',
        "sip:carol@example.com",
    ],
)
def test_refer_target_takes_the_sip_uri(value: str) -> None:
    assert refer_target(refer_headers(value)) == parse_sip_uri("sip:carol@example.com")


def test_refer_target_in_compact_form() -> None:
    assert refer_target(refer_headers("<sip:c@example.com>", compact=True)).user == "c"


def test_refer_target_drops_uri_headers_and_method_invite() -> None:
    target = refer_target(
        refer_headers("<sip:carol@example.com;method=INVITE?Replaces=abc%40host%3Bto-tag%3D1>")
    )
    assert str(target) == "sip:carol@example.com"


def test_refer_target_from_a_whole_request() -> None:
    data = RFC3515_REFER.replace(b"(whatever URI)", b"<sip:c@atlanta.example.com>")
    request = parse_message(data)
    assert isinstance(request, Request)
    assert refer_target(request.headers) == parse_sip_uri("sip:c@atlanta.example.com")


@pytest.mark.parametrize(
    ("values", "status"),
    [
        ((), 400),  # missing
        (("<sip:a@example.com>", "<sip:b@example.com>"), 400),  # exactly one (RFC 3515 2.4.1)
        (("<sip:a@example.com",), 400),  # unterminated
        (("not a uri",), 400),
        (("<tel:+15551234567>",), 416),
        (("<mailto:carol@example.com>",), 416),
        (("<http://example.com/>",), 416),
        (("<sip:carol@example.com;method=BYE>",), 501),
        (("<sip:carol@example.com;method=SUBSCRIBE>",), 501),
    ],
)
def test_refer_target_errors_carry_the_status(values: tuple[str, ...], status: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        refer_target(refer_headers(*values))
    assert info.value.status == status


def test_referred_by() -> None:
    value = '"Bob" <sip:bob@example.com>;cid="20398823.2UWQFN309shb3@referrer.example"'
    parsed = parse_referred_by(value)
    assert parsed.uri == parse_sip_uri("sip:bob@example.com")
    assert parsed.display_name == "Bob"
    assert parsed.param("cid") == '"20398823.2UWQFN309shb3@referrer.example"'
    with pytest.raises(ParseError):
        parse_referred_by("<sip:bob@example.com")


# -- message/sipfrag -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"SIP/2.0 100 Trying\r\n", 100, "Trying"),
        (b"SIP/2.0 200 OK", 200, "OK"),
        (b"SIP/2.0 200 OK\r\nContact: <sip:c@example.com>\r\n\r\n", 200, "OK"),
        (b"\r\nSIP/2.0 486 Busy Here\r\n", 486, "Busy Here"),
        (b"SIP/2.0 503 Service Unavailable\n", 503, "Service Unavailable"),
        (b"sip/2.0 180 Ringing\r\n", 180, "Ringing"),
        (b"SIP/2.0 603\r\n", 603, ""),
        ("SIP/2.0 480 Temporär\r\n".encode(), 480, "Temporär"),
    ],
)
def test_parse_sipfrag(body: bytes, status: int, reason: str) -> None:
    frag = parse_sipfrag(body)
    assert (frag.status, frag.reason) == (status, reason)
    assert frag.final is (status >= 200)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"INVITE sip:c@example.com SIP/2.0\r\n",  # a request fragment: no status to follow
        b"SIP/2.0 OK\r\n",
        b"SIP/2.0 2000 OK\r\n",
        b"SIP/2.0 099 Low\r\n",
        b"SIP/2.0 700 High\r\n",
        b"HTTP/1.1 200 OK\r\n",
    ],
)
def test_parse_sipfrag_rejects(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_sipfrag(body)


def test_sipfrag_serializes_a_status_line() -> None:
    assert Sipfrag(100, "Trying").serialize() == b"SIP/2.0 100 Trying\r\n"
    assert Sipfrag(486, "Busy Here").serialize() == b"SIP/2.0 486 Busy Here\r\n"
    # Some peers (baresip) need a reason phrase.
    assert Sipfrag(500).serialize() == b"SIP/2.0 500 Unknown\r\n"
    for frag in (Sipfrag(200, "OK"), Sipfrag(487, "Request Terminated")):
        assert parse_sipfrag(frag.serialize()) == frag


@pytest.mark.parametrize(("status", "reason"), [(99, "x"), (700, "x"), (200, "a\r\nb")])
def test_sipfrag_validates(status: int, reason: str) -> None:
    with pytest.raises(ValueError):
        Sipfrag(status, reason)


# -- Event and Subscription-State ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "package", "event_id"),
    [
        ("refer", "refer", None),
        ("Refer", "refer", None),
        ("refer;id=93809824", "refer", "93809824"),
        ("refer ; id=7", "refer", "7"),
        ("refer;ID=7;other=x", "refer", "7"),
        ("presence", "presence", None),
    ],
)
def test_parse_event(value: str, package: str, event_id: str | None) -> None:
    assert parse_event(value) == EventHeader(package, event_id)


@pytest.mark.parametrize("value", ["", ";id=1", "re fer", "refer;id=a b", "refer;id=<x>"])
def test_parse_event_rejects(value: str) -> None:
    with pytest.raises(ParseError):
        parse_event(value)


def test_refer_event_carries_the_refer_cseq() -> None:
    assert str(refer_event(93809824)) == "refer;id=93809824"
    assert str(refer_event()) == REFER_EVENT
    assert parse_event(str(refer_event(5))).id == "5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("active;expires=60", SubscriptionState("active", 60)),
        ("Active ; Expires=60", SubscriptionState("active", 60)),
        ("pending", SubscriptionState("pending")),
        ("terminated;reason=noresource", SubscriptionState("terminated", None, "noresource")),
        (
            "terminated;reason=Timeout;retry-after=5",
            SubscriptionState("terminated", None, "timeout"),
        ),
        ("future-state;expires=1", SubscriptionState("future-state", 1)),
    ],
)
def test_parse_subscription_state(value: str, expected: SubscriptionState) -> None:
    assert parse_subscription_state(value) == expected


@pytest.mark.parametrize(
    "value", ["", ";expires=1", "active;expires=-1", "active;expires=soon", "terminated;reason=<x>"]
)
def test_parse_subscription_state_rejects(value: str) -> None:
    with pytest.raises(ParseError):
        parse_subscription_state(value)


def test_subscription_states_we_send() -> None:
    assert str(active()) == "active;expires=60"
    assert str(active(30)) == "active;expires=30"
    assert str(terminated()) == "terminated;reason=noresource"
    assert terminated().terminated and not active().terminated
    assert parse_subscription_state(str(terminated())) == terminated()
    assert parse_subscription_state(str(active())) == active()
