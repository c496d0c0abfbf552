"""Typed header views: Via, CSeq, the mandatory headers, and responses built from requests.

RFC 3261 sections 8.1.1 (mandatory headers), 8.2.6 (building responses), 20.16 (CSeq), 20.42
and 25.1 (Via grammar), RFC 3581 (rport).
"""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.errors import ParseError
from siproc.sip.headers import (
    MAX_CSEQ,
    CSeq,
    Via,
    content_type,
    has_tag,
    make_response,
    media_types,
    message_info,
    option_tags,
    parse_cseq,
    parse_delta_seconds,
    parse_via,
)
from siproc.sip.message import Headers, Request, Response, parse_message, serialize

# -- Via ----------------------------------------------------------------------------------------


def test_via_fields() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=192.0.2.4")
    assert via == Via(
        "UDP",
        "192.0.2.1",
        5060,
        (("branch", "z9hG4bK776asdhds"), ("received", "192.0.2.4")),
    )
    assert via.protocol == "SIP/2.0"
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.4"
    assert via.rport is None
    assert via.sent_by == ("192.0.2.1", 5060)
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=192.0.2.4"


@pytest.mark.parametrize(
    ("text", "transport", "host", "port"),
    [
        # RFC 3261 section 25.1: SLASH = SWS "/" SWS, and LWS before sent-by.
        ("SIP / 2.0 / UDP host.example.com", "UDP", "host.example.com", None),
        ("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw", "UDP", "192.0.2.2", None),  # wsinv
        ("  SIP/2.0/tcp\t host:5070 ", "TCP", "host", 5070),
        ("SIP/2.0/UDP\r\n host", "UDP", "host", None),
        ("SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf", "SCTP", "t2.example.com", None),
        ("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKa", "UNKNOWN", "t4.example.com", None),
        ("SIP/2.0/TLS-SCTP h;branch=z9hG4bKa", "TLS-SCTP", "h", None),
        ("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas", "UDP", "2001:db8::9:1", 5070),
        ("SIP/2.0/UDP [::1];branch=z9hG4bKas", "UDP", "::1", None),
    ],
)
def test_via_sent_protocol_and_sent_by(
    text: str, transport: str, host: str, port: int | None
) -> None:
    via = parse_via(text)
    assert (via.transport, via.host, via.port) == (transport, host, port)
    assert parse_via(str(via)) == via


def test_via_lws_around_parameters() -> None:
    via = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  ")
    assert via.host == "spindle.example.com"
    assert via.branch == "z9hG4bK9ikj8"


def test_via_token_characters_in_params() -> None:
    # RFC 4475 section 3.1.1.2: every token character in a branch.
    via = parse_via("SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~")
    assert via.branch == "z9hG4bK-.!%66*_+`'~"
    via = parse_via('SIP/2.0/UDP h;x-Ext=tok~en;flag;q="quoted; value"')
    assert via.params == (("x-ext", "tok~en"), ("flag", None), ("q", '"quoted; value"'))


def test_via_rport_flag_value_and_received() -> None:
    flag = parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport")
    assert flag.rport == ""  # requested, no value yet (RFC 3581 section 3)
    valued = parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport=5071;received=127.0.0.2")
    assert valued.rport == "5071"
    assert valued.received == "127.0.0.2"
    assert parse_via("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa").rport is None
    v6 = parse_via("SIP/2.0/UDP [2001:db8::1];received=2001:db8::9:255;rport=5060")
    assert v6.received == "2001:db8::9:255"  # IPv6address, no brackets (RFC 3261 20.42)
    stamped = flag.with_param("rport", "5070").with_param("received", "127.0.0.1")
    assert str(stamped).endswith(";branch=z9hG4bKa;rport=5070;received=127.0.0.1")
    assert str(parse_via("SIP/2.0/UDP [::1]:5060;rport")) == "SIP/2.0/UDP [::1]:5060;rport"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid Via sent-protocol"),
        ("SIP/2.0 host", "invalid Via sent-protocol"),
        ("SIP/2.0/UDP", "invalid Via sent-protocol"),
        ("SIP/2.0/UDP ", "invalid host ''"),
        ("SIP/2.0/UD@P host", "invalid Via sent-protocol"),
        ("SIP/2.0/\u00dcDP host", "invalid Via sent-protocol"),  # tokens are ASCII
        ("SIP/2.0/UDP bad_host", "invalid host 'bad_host'"),
        ("SIP/2.0/UDP host:99999", "out of range"),
        ("SIP/2.0/UDP host:\u00b2", "invalid port"),
        ("SIP/2.0/UDP 2001:db8::1", "invalid port"),
        ("SIP/2.0/UDP host;", "invalid header parameter"),
        ("SIP/2.0/UDP 192.0.2.15;;,;,,", "invalid header parameter"),  # RFC 4475 3.1.2.1
        ("SIP/2.0/UDP host;branch=", "invalid header parameter value"),
        ("SIP/2.0/UDP host;branch", "branch without a value"),
        ("SIP/2.0/UDP host;received", "received without a value"),
        ("SIP/2.0/UDP host;maddr", "maddr without a value"),
        ("SIP/2.0/UDP host;ttl", "ttl without a value"),
    ],
)
def test_invalid_via(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_via(text)


# -- CSeq and delta-seconds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number", "method"),
    [
        ("1 INVITE", 1, "INVITE"),
        ("0 OPTIONS", 0, "OPTIONS"),
        ("0009 INVITE", 9, "INVITE"),  # RFC 4475 section 3.1.1.1
        ("  314159\t INVITE ", 314159, "INVITE"),
        (f"{2**31 - 1} BYE", 2**31 - 1, "BYE"),
        ("139122385 !interesting-Method0123456789_*+`.%indeed'~", 139122385, None),
    ],
)
def test_cseq(text: str, number: int, method: str | None) -> None:
    cseq = parse_cseq(text)
    assert cseq.number == number
    if method is not None:
        assert cseq.method == method
        assert str(cseq) == f"{number} {method}"


def test_cseq_limit() -> None:
    # RFC 3261 section 8.1.1.5: "MUST be less than 2**31".
    assert MAX_CSEQ == 2**31 - 1
    assert parse_cseq(f"{MAX_CSEQ} INVITE") == CSeq(MAX_CSEQ, "INVITE")
    with pytest.raises(ParseError, match=r"CSeq number 2147483648 is not below 2\*\*31"):
        parse_cseq(f"{2**31} INVITE")
    with pytest.raises(ParseError, match="not below"):
        parse_cseq("36893488147419103232 REGISTER")  # RFC 4475 section 3.1.2.4
    with pytest.raises(ParseError, match="not below"):
        parse_cseq(f"{'0' * 20}1 INVITE")  # more than 10 digits, even if small


@pytest.mark.parametrize(
    "text",
    ["", "1", "INVITE", "1 INVITE extra", "-1 INVITE", "x INVITE", "1 INV@TE", "\u00b2 INVITE"],
)
def test_invalid_cseq(text: str) -> None:
    with pytest.raises(ParseError, match="CSeq"):
        parse_cseq(text)


def test_delta_seconds() -> None:
    assert parse_delta_seconds(" 0 ", "Expires") == 0
    assert parse_delta_seconds(str(2**32 - 1), "Expires") == 2**32 - 1
    for bad in (str(2**32), "-1", "1.5", "", "Thu, 01 Dec 2040 16:00:00 GMT", "\u0661"):
        with pytest.raises(ParseError, match="invalid Min-Expires value"):
            parse_delta_seconds(bad, "Min-Expires")


# -- message_info -------------------------------------------------------------------------------

GOOD = [
    ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport, SIP/2.0/UDP 127.0.0.2"),
    ("Via", "SIP/2.0/TCP 127.0.0.3;branch=z9hG4bKa0"),
    ("Max-Forwards", "70"),
    ("From", '"Alice" <sip:alice@127.0.0.1>;tag=1928301774'),
    ("To", "<sip:bob@127.0.0.1>"),
    ("Call-ID", "a84b4c76e66710@127.0.0.1"),
    ("CSeq", "314159 INVITE"),
    ("Contact", "<sip:alice@127.0.0.1:5070>"),
]


def invite(headers: list[tuple[str, str]] | None = None, method: str = "INVITE") -> Request:
    return Request(method, "sip:bob@127.0.0.1", Headers(GOOD if headers is None else headers))


def without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in GOOD if n != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in GOOD]


def test_message_info_fields() -> None:
    info = message_info(invite())
    assert info.call_id == "a84b4c76e66710@127.0.0.1"
    assert info.cseq == CSeq(314159, "INVITE")
    assert info.from_.display_name == "Alice"
    assert info.from_.tag == "1928301774"
    assert info.to.tag is None
    assert [v.host for v in info.vias] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert info.top_via.branch == "z9hG4bKa1"
    assert info.top_via.rport == ""
    assert info.max_forwards == 70


def test_message_info_optional_max_forwards_and_limits() -> None:
    assert message_info(invite(without("Max-Forwards"))).max_forwards is None
    assert message_info(invite(replaced("Max-Forwards", "0"))).max_forwards == 0
    assert message_info(invite(replaced("Max-Forwards", "255"))).max_forwards == 255
    assert message_info(invite(replaced("Max-Forwards", "0068"))).max_forwards == 68


def test_message_info_of_a_response_skips_the_method_check() -> None:
    response = Response(200, "OK", Headers(replaced("CSeq", "1 BYE")))
    assert message_info(response).cseq.method == "BYE"


def test_message_info_compact_forms() -> None:
    message = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKc\r\nf: <sip:x@y>;tag=1\r\n"
        b"t: sip:a@b\r\ni: cid\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    info = message_info(message)
    assert (info.call_id, info.from_.tag, str(info.to.uri)) == ("cid", "1", "sip:a@b")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([*GOOD, ("Call-ID", "other")], "more than one Call-ID header"),
        ([*GOOD, ("CSeq", "2 INVITE")], "more than one CSeq header"),
        ([*GOOD, ("From", "<sip:x@y>;tag=2")], "more than one From header"),
        ([*GOOD, ("t", "<sip:x@y>")], "more than one To header"),
        ([*GOOD, ("Max-Forwards", "70")], "more than one Max-Forwards header"),
        ([*GOOD, ("c", "a/b"), ("Content-Type", "c/d")], "more than one Content-Type header"),
        ([*GOOD, ("Expires", "1"), ("Expires", "2")], "more than one Expires header"),
        (without("Via"), r"missing mandatory header\(s\): Via$"),
        (without("CSeq"), r"missing mandatory header\(s\): CSeq$"),
        (without("From"), r"missing mandatory header\(s\): From$"),
        (without("To"), r"missing mandatory header\(s\): To$"),
        (without("Call-ID"), r"missing mandatory header\(s\): Call-ID$"),
        (GOOD[:2], r"missing mandatory header\(s\): CSeq, From, To, Call-ID"),
        (replaced("Call-ID", ""), "invalid Call-ID ''"),
        (replaced("Call-ID", "has space"), "invalid Call-ID 'has space'"),
        (replaced("CSeq", "x INVITE"), "invalid CSeq"),
        (replaced("CSeq", f"{2**31} INVITE"), "CSeq number"),
        (replaced("CSeq", "1 OPTIONS"), "CSeq method OPTIONS does not match request method"),
        (replaced("Via", "SIP/2.0/UDP bad_host"), "invalid Via header: invalid host"),
        (replaced("Via", "SIP/2.0 h"), "invalid Via header: invalid Via sent-protocol"),
        (replaced("Via", "SIP/2.0/UDP h;;"), "invalid Via header: invalid header parameter"),
        (replaced("Via", 'SIP/2.0/UDP h;x="'), "invalid Via header: unterminated quoted"),
        ([("Via", ""), *without("Via")], "invalid Via header|empty Via header"),
        (replaced("From", "Bell, Alexander <sip:a@b>"), "invalid From header: unquoted display"),
        (replaced("To", '"Mr. J. User <sip:j@b>'), "invalid To header: unterminated quoted"),
        (replaced("To", "<sip:a@b>;tag="), "invalid To header"),
        (replaced("Max-Forwards", "256"), "invalid Max-Forwards '256'"),
        (replaced("Max-Forwards", "-1"), "invalid Max-Forwards"),
        (replaced("Max-Forwards", "300000000000000000000"), "invalid Max-Forwards"),
        (replaced("Max-Forwards", "\u00b2"), "invalid Max-Forwards"),
        ([*GOOD, ("Expires", "soon")], "invalid Expires value 'soon'"),
        ([*GOOD, ("Expires", str(2**32))], "invalid Expires value"),
    ],
)
def test_message_info_errors_name_the_header(headers: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ParseError, match=message):
        message_info(invite(headers))


# -- make_response (RFC 3261 section 8.2.6) -----------------------------------------------------


def test_make_response_copies_the_dialog_headers_and_adds_a_to_tag() -> None:
    request = invite([*GOOD, ("Subject", "s"), ("Timestamp", "54")])
    response = make_response(request, 486, "Busy Here", to_tag="a6c85cf")
    assert (response.status, response.reason) == (486, "Busy Here")
    assert list(response.headers) == [
        ("Via", GOOD[0][1]),  # every Via, raw and in order
        ("Via", GOOD[1][1]),
        ("From", GOOD[3][1]),
        ("To", "<sip:bob@127.0.0.1>;tag=a6c85cf"),
        ("Call-ID", GOOD[5][1]),
        ("CSeq", GOOD[6][1]),
    ]  # no Max-Forwards, Contact, Subject; Timestamp only on 100
    assert response.body == b""
    again = parse_message(serialize(response))
    assert isinstance(again, Response)
    assert message_info(again).to.tag == "a6c85cf"


@pytest.mark.parametrize(
    "to",
    [
        "<sip:bob@127.0.0.1>;tag=existing",
        "sip:bob@127.0.0.1;tag=existing",  # addr-spec: the tag is the header's
        "sip:vivekg@chair-dnrc.example.com ;   tag    = existing",  # RFC 4475 3.1.1.1
        "<sip:bob@127.0.0.1>;TAG=existing",
    ],
)
def test_make_response_keeps_an_existing_to_tag(to: str) -> None:
    response = make_response(invite(replaced("To", to)), 200, "OK", to_tag="new")
    assert response.headers.get("To") == to


@pytest.mark.parametrize(
    "to",
    [
        "<sip:bob@127.0.0.1;tag=in-the-uri>",  # a URI parameter named tag is no To tag
        '"x;tag=y" <sip:bob@127.0.0.1>',  # nor is text in the display name
    ],
)
def test_make_response_tag_inside_the_uri_is_no_tag(to: str) -> None:
    response = make_response(invite(replaced("To", to)), 200, "OK", to_tag="new")
    assert response.headers.get("To") == f"{to};tag=new"


def test_make_response_without_to_tag_adds_none() -> None:
    response = make_response(invite(), 180, "Ringing")
    assert response.headers.get("To") == "<sip:bob@127.0.0.1>"


def test_100_trying_gets_no_tag_and_copies_timestamp() -> None:
    # RFC 3261 section 8.2.6.1: a 100 copies Timestamp; a 100 creates no dialog, so no tag.
    request = invite([*GOOD, ("Timestamp", "54.2 0.1")])
    trying = make_response(request, 100, "Trying")
    assert trying.headers.get("To") == "<sip:bob@127.0.0.1>"
    assert trying.headers.get("Timestamp") == "54.2 0.1"
    assert "Timestamp" not in make_response(invite(), 100, "Trying").headers
    assert "Timestamp" not in make_response(request, 180, "Ringing", to_tag="t").headers
    assert "Timestamp" not in make_response(request, 200, "OK", to_tag="t").headers


def test_make_response_extra_headers_and_body() -> None:
    response = make_response(
        invite(),
        200,
        "OK",
        to_tag="t",
        headers=[("Contact", "<sip:bob@127.0.0.1:5060>"), ("Allow", "INVITE, ACK")],
        body=b"v=0\r\n",
    )
    assert response.headers.get("Contact") == "<sip:bob@127.0.0.1:5060>"
    assert response.headers.get("Content-Type") == "application/sdp"
    assert response.body == b"v=0\r\n"
    assert b"Content-Length: 5\r\n" in serialize(response)
    other = make_response(invite(), 200, "OK", body=b"x", content_type="text/plain")
    assert other.headers.get("Content-Type") == "text/plain"
    assert "Content-Type" not in make_response(invite(), 200, "OK").headers


def test_make_response_from_raw_headers_of_a_broken_request() -> None:
    # Works from raw text: a request whose From does not parse can still get its 400.
    broken = invite(replaced("From", "Bell, Alexander <sip:a@b>;tag=43"))
    response = make_response(broken, 400, "Bad Request", to_tag="t")
    assert response.headers.get("From") == "Bell, Alexander <sip:a@b>;tag=43"
    sparse = Request("INVITE", "sip:a@b", Headers([("Via", "SIP/2.0/UDP h"), ("CSeq", "1 INVITE")]))
    response = make_response(sparse, 400, "Bad Request", to_tag="t")
    assert list(response.headers) == [("Via", "SIP/2.0/UDP h"), ("CSeq", "1 INVITE")]


def test_make_response_copies_compact_headers_in_long_form() -> None:
    message = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKc\r\nf: <sip:x@y>;tag=1\r\n"
        b"t: sip:a@b\r\ni: cid\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert isinstance(message, Request)
    response = make_response(message, 200, "OK", to_tag="z")
    assert [n for n, _ in response.headers] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert response.headers.get("To") == "sip:a@b;tag=z"


# -- small helpers ------------------------------------------------------------------------------


def test_has_tag() -> None:
    assert has_tag("<sip:a@b>;tag=1")
    assert has_tag("<sip:a@b> ; Tag = 1")
    assert not has_tag("<sip:a@b>")
    assert not has_tag("<sip:a@b;tag=1>")
    assert has_tag("Bell, Alexander <sip:a@b>;tag=43")  # unparseable: plain search


def test_option_tags_media_types_content_type() -> None:
    headers = Headers(
        [
            ("Require", "Replaces, 100rel"),
            ("k", "timer"),
            ("Supported", "PATH"),
            ("Accept", "application/SDP;level=1, text/plain"),
            ("c", "Application/SDP ; charset=x"),
        ]
    )
    assert option_tags(headers, "Require") == ["replaces", "100rel"]
    assert option_tags(headers, "Supported") == ["timer", "path"]
    assert option_tags(headers, "Proxy-Require") == []
    assert media_types(headers) == ["application/sdp", "text/plain"]
    assert media_types(Headers()) == []
    assert media_types(headers, "Content-Type") == ["application/sdp"]
    assert content_type(headers) == "application/sdp"
    assert content_type(Headers()) is None


# -- property tests -----------------------------------------------------------------------------

_TOKEN = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1)


@settings(max_examples=200)
@given(
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z]{2,5})?", fullmatch=True),
    ),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.lists(st.tuples(_TOKEN.map(str.lower), _TOKEN), max_size=4),
    st.sampled_from([None, "", "5060"]),
)
def test_property_via_round_trip(
    transport: str,
    host: str,
    port: int | None,
    params: list[tuple[str, str]],
    rport: str | None,
) -> None:
    via = Via(transport, host, port, tuple(params))
    if rport is not None:
        via = via.with_param("rport", rport or None)
    assert parse_via(str(via)) == via


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_property_header_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (parse_via, parse_cseq, lambda t: parse_delta_seconds(t, "Expires")):
        with contextlib.suppress(ParseError):
            parse(text)


@settings(max_examples=300)
@given(st.sampled_from([n for n, _ in GOOD] + ["Expires", "Content-Type"]), st.text(max_size=40))
def test_property_message_info_and_make_response_on_any_header_value(name: str, value: str) -> None:
    request = invite([*without(name), (name, value)])
    with contextlib.suppress(ParseError):
        message_info(request)
    response = make_response(request, 400, "Bad Request", to_tag="t")
    assert response.headers.get("CSeq") == request.headers.get("CSeq")


# -- From/To kept parsed by their text (name_addr) -------------------------------------------------


def test_name_addr_keeps_a_parsed_value_by_its_text() -> None:
    from siproc.sip import headers
    from siproc.sip.uri import parse_name_addr

    text = '"Kept" <sip:kept@example.com>;tag=k1'
    first = headers.name_addr(text)
    assert first == parse_name_addr(text)
    assert headers.name_addr(text) is first  # not parsed again
    assert (
        headers.name_addr(text + ";x=1") is not first
        and headers.name_addr(text + ";x=1").param("x") == "1"
    )


def test_name_addr_keeps_no_error_and_stays_bounded() -> None:
    from siproc.sip import headers

    for _ in range(2):  # refused every time: nothing kept
        with pytest.raises(ParseError):
            headers.name_addr("<sip:broken@example.com")
    assert "<sip:broken@example.com" not in headers._name_addrs
    for n in range(headers.NAME_ADDR_CACHE * 2 + 5):
        headers.name_addr(f"<sip:u{n}@example.com>;tag={n}")
        assert len(headers._name_addrs) <= headers.NAME_ADDR_CACHE


def test_the_ack_reuses_the_invites_from_and_the_answer_to_our_request_its_values() -> None:
    from siproc.sip import headers

    def parse(text: str) -> Request:
        message = parse_message(text.encode())
        assert isinstance(message, Request)
        return message

    common = "Call-ID: nc-1\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnc1\r\n"
    invite = parse(
        "INVITE sip:b@example.com SIP/2.0\r\n" + common + "From: <sip:a@example.com>;tag=nc"
        "\r\nTo: <sip:b@example.com>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    ack = parse(
        "ACK sip:b@example.com SIP/2.0\r\n" + common + "From: <sip:a@example.com>;tag=nc"
        "\r\nTo: <sip:b@example.com>;tag=b1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    assert message_info(ack).from_ is message_info(invite).from_
    # What we write with remember_name_addr comes back as that very value.
    ours = message_info(ack).to.with_params(tag="b2")
    text = headers.remember_name_addr(ours)
    assert text == str(ours)
    answer = parse_message(
        f"SIP/2.0 200 OK\r\n{common}From: {text}\r\nTo: <sip:a@example.com>;tag=nc\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert message_info(answer).from_ is ours
