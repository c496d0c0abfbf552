"""SIP message parsing and serializing (RFC 3261 sections 7, 20.14); stream framing is in
test_framing.py.

Byte fixtures go through a round trip (DESIGN.md section 4.1): parse, check the fields,
serialize, parse again and compare start line, headers and body. The fuzz invariant: no bytes
make `parse_message` raise anything but `ParseError`, and `StreamFramer.feed` never raises.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.errors import ParseError
from siproc.sip.framing import StreamFramer, StreamLimits
from siproc.sip.message import (
    COMPACT_FORMS,
    Headers,
    Message,
    Request,
    Response,
    canonical_name,
    parse_message,
    serialize,
)

RFC4475 = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
)
INVITE = (
    b"INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@127.0.0.1>\r\n'
    b"From: Alice <sip:alice@127.0.0.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport=5070;received=127.0.0.1\r\n"
    b'To: "Bob" <sip:bob@127.0.0.1>;tag=a6c85cf\r\n'
    b"From: Alice <sip:alice@127.0.0.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
COMPACT = (
    b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc1\r\n"
    b"f: <sip:alice@127.0.0.1>;tag=1\r\n"
    b"t: <sip:bob@127.0.0.1>\r\n"
    b"i: compact@127.0.0.1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"m: <sip:alice@127.0.0.1:5070>\r\n"
    b"k: replaces, 100rel\r\n"
    b"s: hello\r\n"
    b"c: text/plain\r\n"
    b"e: identity\r\n"
    b"o: presence\r\n"
    b"u: refer\r\n"
    b"x: 1800\r\n"
    b"r: <sip:carol@127.0.0.1>\r\n"
    b"b: <sip:alice@127.0.0.1>\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"hello"
)
FOLDED = (
    b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf1,\r\n"
    b"     SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKf0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKf-1\r\n"
    b"To:\r\n <sip:bob@127.0.0.1>\r\n"
    b"From: <sip:alice@127.0.0.1>\r\n"
    b"\t;tag=77\r\n"
    b"Call-ID: folded@127.0.0.1\r\n"
    b"CSeq: 2\r\n"
    b"  OPTIONS\r\n"
    b"Subject: I know\r\n you're\r\n\tthere  \r\n"
    b"Supported: replaces\r\n"
    b"Supported: timer, 100rel\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def comparable(message: Message) -> list[tuple[str, str]]:
    """Headers without Content-Length, which serialize() always rewrites as the last header."""
    return [(n, v) for n, v in message.headers if n != "Content-Length"]


def round_trip(data: bytes) -> Message:
    first = parse_message(data)
    wire = serialize(first)
    second = parse_message(wire)
    assert second.start_line() == first.start_line()
    assert comparable(second) == comparable(first)
    assert second.body == first.body
    assert list(second.headers)[-1] == ("Content-Length", str(len(first.body)))
    assert serialize(second) == wire  # a fixed point
    return first


# -- fixtures with a round trip ------------------------------------------------------------------


def test_invite_fields() -> None:
    message = round_trip(INVITE)
    assert isinstance(message, Request)
    assert (message.method, message.uri, message.version) == (
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        "SIP/2.0",
    )
    assert message.start_line() == "INVITE sip:bob@127.0.0.1:5060 SIP/2.0"
    assert message.headers.get("call-id") == "a84b4c76e66710@127.0.0.1"
    assert message.headers.get("CSEQ") == "314159 INVITE"
    assert message.headers.get("max-forwards") == "70"
    assert message.body == SDP
    assert serialize(message) == INVITE  # already canonical: byte for byte


def test_response_fields() -> None:
    message = round_trip(RESPONSE)
    assert isinstance(message, Response)
    assert (message.status, message.reason, message.version) == (180, "Ringing", "SIP/2.0")
    assert message.start_line() == "SIP/2.0 180 Ringing"
    assert message.body == b""
    assert serialize(message) == RESPONSE


def test_compact_forms_are_expanded() -> None:
    message = round_trip(COMPACT)
    names = [n for n, _ in message.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Subject",
        "Content-Type",
        "Content-Encoding",
        "Event",
        "Allow-Events",
        "Session-Expires",
        "Refer-To",
        "Referred-By",
        "Content-Length",
    ]
    assert message.headers.get("f") == message.headers.get("From") == "<sip:alice@127.0.0.1>;tag=1"
    assert message.body == b"hello"
    wire = serialize(message)
    assert b"\r\nCall-ID: compact@127.0.0.1\r\n" in wire
    assert b"\r\ni:" not in wire


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT_FORMS.items()))
def test_canonical_name_of_every_compact_form(short: str, long: str) -> None:
    assert canonical_name(short) == long
    assert canonical_name(short.upper()) == long


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("mime-version", "MIME-Version"),
        ("X-Custom-Thing", "X-Custom-Thing"),  # unknown names are kept as written
        ("q", "q"),  # a single letter that is no compact form
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_folded_lines_are_joined_and_list_headers_split() -> None:
    message = round_trip(FOLDED)
    headers = message.headers
    assert headers.get("To") == "<sip:bob@127.0.0.1>"  # fold right after the colon: no SP
    assert headers.get("From") == "<sip:alice@127.0.0.1> ;tag=77"
    assert headers.get("CSeq") == "2 OPTIONS"
    assert headers.get("Subject") == "I know you're there"
    assert headers.get_raw("Via") == [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf1, SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKf0",
        "SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKf-1",
    ]
    assert headers.get_all("Via") == [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf1",
        "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKf0",
        "SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKf-1",
    ]
    assert headers.get_all("Supported") == ["replaces", "timer", "100rel"]
    assert headers.get("Supported") == "replaces"  # the first line


def test_fold_of_nothing_adds_no_whitespace() -> None:
    message = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nSubject:\r\n \r\n\t\r\nX-A: 1\r\n  \r\nX-B: \r\n two\r\n\r\n"
    )
    assert message.headers.get("Subject") == ""
    assert message.headers.get("X-A") == "1"
    assert message.headers.get("X-B") == "two"


def test_lf_only_line_endings() -> None:
    head, body = INVITE.split(b"\r\n\r\n", 1)
    message = round_trip(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert message.body == SDP
    assert isinstance(message, Request)
    assert message.headers.get("CSeq") == "314159 INVITE"


def test_leading_crlf_before_the_start_line_is_ignored() -> None:
    # RFC 3261 section 7.5: CRLFs before the start line are ignored.
    assert parse_message(b"\r\n" + RESPONSE).start_line() == "SIP/2.0 180 Ringing"


def test_space_before_colon_and_odd_spacing() -> None:
    message = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nTO :  <sip:a@b> \r\nx-Odd\t:v\r\n\r\n")
    assert message.headers.get("To") == "<sip:a@b>"
    assert message.headers.get("x-odd") == "v"
    assert list(message.headers)[1] == ("x-Odd", "v")  # unknown names keep their spelling


def test_reason_phrase_variants() -> None:
    assert parse_message(b"SIP/2.0 100 \r\n\r\n").reason == ""  # type: ignore[union-attr]
    assert parse_message(b"SIP/2.0 100\r\n\r\n").reason == ""  # type: ignore[union-attr]
    utf8 = "SIP/2.0 200 \u043e\u043a \u2713\r\n\r\n".encode()
    assert parse_message(utf8).reason == "\u043e\u043a \u2713"  # type: ignore[union-attr]
    latin1 = b"SIP/2.0 486 Occup\xe9\r\n\r\n"  # not UTF-8: read as Latin-1, not rejected
    assert parse_message(latin1).reason == "Occup\u00e9"  # type: ignore[union-attr]


def test_sip_version_is_case_insensitive_and_sent_upper_case() -> None:
    # RFC 3261 section 7.1: "case-insensitive, but implementations MUST send upper-case".
    response = parse_message(b"sip/2.0 200 OK\r\n\r\n")
    assert isinstance(response, Response)
    assert response.version == "SIP/2.0"
    request = parse_message(b"OPTIONS sip:a@b Sip/2.0\r\n\r\n")
    assert isinstance(request, Request)
    assert serialize(request).startswith(b"OPTIONS sip:a@b SIP/2.0\r\n")


def test_other_versions_parse_for_the_endpoint_to_answer_505() -> None:
    message = parse_message(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n")
    assert isinstance(message, Request)
    assert message.version == "SIP/7.0"


def test_binary_body_kept() -> None:
    body = bytes(range(256))
    data = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 256\r\n\r\n" + body
    assert round_trip(data).body == body


@pytest.mark.parametrize("path", sorted(RFC4475.glob("*.dat")), ids=lambda p: p.name)
def test_rfc4475_round_trip(path: Path) -> None:
    """Every torture message either parses and survives a round trip, or raises ParseError."""
    data = path.read_bytes()
    try:
        parse_message(data)
    except ParseError as exc:
        assert path.name in UNPARSEABLE, f"{path.name}: {exc}"
        assert str(exc)
        return
    assert path.name not in UNPARSEABLE
    round_trip(data)


# RFC 4475 messages whose framing or start line is broken (sections 3.1.2.2, 3.1.2.3, 3.1.2.7
# to 3.1.2.10, 3.1.2.19, 3.3.9) plus php-sip's test.dat (no SIP version, a header without colon).
UNPARSEABLE = {
    "bigcode.dat": "malformed status line",
    "clerr.dat": "Content-Length 9999 is larger than the 154 body octets",
    "ltgtruri.dat": "invalid Request-URI",
    "lwsruri.dat": "request line must be",
    "lwsstart.dat": "request line must be",
    "mcl01.dat": "more than one Content-Length",
    "ncl.dat": "invalid Content-Length '-999'",
    "test.dat": "malformed header line",
    "trws.dat": "request line must be",
}


@pytest.mark.parametrize(("name", "message"), sorted(UNPARSEABLE.items()))
def test_rfc4475_parse_errors(name: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_message((RFC4475 / name).read_bytes())
    if name == "bigcode.dat":
        assert info.value.headers is None  # a response: nothing to answer
    else:
        assert info.value.headers is not None  # a request: salvaged for the 400
        assert "Via" in info.value.headers or name == "test.dat"


def test_rfc4475_wsinv_fields() -> None:
    message = parse_message((RFC4475 / "wsinv.dat").read_bytes())
    headers = message.headers
    assert headers.get("To") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert headers.get("Max-Forwards") == "0068"
    assert headers.get("CSeq") == "0009 INVITE"
    assert headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert len(headers.get_all("Via")) == 3
    assert len(message.body) == 150


def test_rfc4475_intmeth_keeps_unusual_bytes() -> None:
    message = round_trip((RFC4475 / "intmeth.dat").read_bytes())
    assert isinstance(message, Request)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    to = message.headers.get("To") or ""
    assert "\x07" in to and "\x00" in to and "\x7f" in to  # quoted-pairs of BEL, NUL, DEL


# -- datagram framing by Content-Length (RFC 3261 section 18.3) ----------------------------------

HEAD = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nCall-ID: x1\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n"


def test_octets_beyond_content_length_are_ignored() -> None:
    # RFC 4475 section 3.1.1.8 (dblreq.dat) and RFC 3261 section 18.3.
    message = parse_message(HEAD + b"Content-Length: 3\r\n\r\nabcdef garbage")
    assert message.body == b"abc"
    dblreq = parse_message((RFC4475 / "dblreq.dat").read_bytes())
    assert isinstance(dblreq, Request)
    assert dblreq.method == "REGISTER"
    assert dblreq.body == b""


def test_content_length_zero_with_trailing_data() -> None:
    assert parse_message(HEAD + b"l: 0\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n").body == b""


def test_without_content_length_the_body_runs_to_the_end() -> None:
    assert parse_message(HEAD + b"\r\nhello\r\n").body == b"hello\r\n"


def test_content_length_with_whitespace() -> None:
    assert parse_message(HEAD + b"Content-Length:   2  \r\n\r\nhi").body == b"hi"


def test_content_length_larger_than_the_data_salvages_the_headers() -> None:
    # RFC 4475 section 3.1.2.2: reject with 400, which needs the headers.
    with pytest.raises(ParseError, match="Content-Length 10 is larger than the 3 body") as info:
        parse_message(HEAD + b"Content-Length: 10\r\n\r\nabc")
    headers = info.value.headers
    assert headers is not None
    assert headers.get("Call-ID") == "x1"
    assert headers.get("Via") == "SIP/2.0/UDP 127.0.0.1"


def test_response_errors_carry_no_headers() -> None:
    # A response is never answered, so nothing is salvaged (the endpoint just drops it).
    with pytest.raises(ParseError, match="larger than") as info:
        parse_message(RESPONSE.replace(b"Content-Length: 0", b"Content-Length: 5"))
    assert info.value.headers is None
    with pytest.raises(ParseError, match="malformed header line") as info:
        parse_message(b"SIP/2.0 200 OK\r\nCall-ID: x\r\nno colon\r\n\r\n")
    assert info.value.headers is None
    with pytest.raises(ParseError, match="Content-Length") as info:
        parse_message(b"sip/2.0 200 OK\r\nl: x\r\n\r\n")
    assert info.value.headers is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"-5", "invalid Content-Length '-5'"),
        (b"abc", "invalid Content-Length 'abc'"),
        (b"1e3", "invalid Content-Length"),
        (b"", "invalid Content-Length ''"),
        (b"1234567890", "invalid Content-Length"),  # more than 9 digits
        ("\u00b2".encode(), "invalid Content-Length"),  # superscript two: no DIGIT
        ("\u0661".encode(), "invalid Content-Length"),  # Arabic-Indic one: no DIGIT
    ],
)
def test_invalid_content_length(value: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_message(HEAD + b"Content-Length: " + value + b"\r\n\r\n")
    assert info.value.headers is not None


def test_more_than_one_content_length() -> None:
    with pytest.raises(ParseError, match="more than one Content-Length"):
        parse_message(HEAD + b"Content-Length: 0\r\nl: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no empty line after the headers"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n", "no empty line"),
        (b"\r\n\r\n", "empty message"),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "request line must be 'METHOD SP URI SP SIP/2.0'"),
        (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", "request line must be"),
        (b"INVITE sip:a@b\r\n\r\n", "request line must be"),
        (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", "invalid Request-URI '<sip:a@b>'"),
        (b"INVITE bob SIP/2.0\r\n\r\n", "invalid Request-URI 'bob'"),
        (b"INV@TE sip:a@b SIP/2.0\r\n\r\n", "invalid method 'INV@TE'"),
        (b"INVITE sip:a@b SIP/2\r\n\r\n", "invalid SIP version 'SIP/2'"),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "invalid SIP version"),
        ("INVITE sip:a@b SIP/\u0662.0\r\n\r\n".encode(), "invalid SIP version"),
        (b"SIP/2.0 20 OK\r\n\r\n", "malformed status line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "malformed status line"),
        (b"SIP/2.0 OK\r\n\r\n", "malformed status line"),
        (b"SIP/2 200 OK\r\n\r\n", "malformed status line"),
        ("SIP/2.0 \u00b200 OK\r\n\r\n".encode("latin-1"), "malformed status line"),
        ("SIP/2.0 \u0662\u0660\u0660 OK\r\n\r\n".encode(), "malformed status line"),
        (b"SIP/2.0 099 Early\r\n\r\n", "status code 99 out of range"),
        (b"SIP/2.0 700 Late\r\n\r\n", "status code 700 out of range"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n folded first\r\n\r\n", "continuation line before"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n", "malformed header line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "malformed header line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n: no name\r\n\r\n", "malformed header line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nN\xc3\xa4me: x\r\n\r\n", "malformed header line"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_message(data)


def test_malformed_header_line_salvages_the_headers_before_it() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(HEAD + b"Broken line\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert info.value.headers is not None
    assert info.value.headers.get("Call-ID") == "x1"
    assert "CSeq" not in info.value.headers


# -- control characters in the header section (RFC 3261 section 25.1) ----------------------------


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (b"X-Name: evil\rInjected: 1", "a bare CR"),
        (b"X-Name: evil\nInjected: 1", "a bare LF"),
        (b"X-Name: ev\x00il", "a NUL octet"),
        (b"From: <sip:a@b>;tag=\x00", "a NUL octet"),
        (b'To: "a\\\\\x00" <sip:a@b>', "a NUL octet"),  # escaped backslash, then a raw NUL
        (b"X-Name: folded\r\n  on\x00", "a NUL octet"),
    ],
)
def test_control_characters_in_a_header_are_refused(line: bytes, what: str) -> None:
    """Bare CR, LF and NUL are refused with a ParseError naming the header; the other headers
    are salvaged, so the endpoint can still answer 400 (Via and CSeq are intact)."""
    data = HEAD + line + b"\r\nCSeq: 1 OPTIONS\r\n\r\n"
    with pytest.raises(ParseError, match=what) as info:
        parse_message(data)
    headers = info.value.headers
    assert headers is not None
    assert headers.get("CSeq") == "1 OPTIONS"
    assert headers.get("Via") == "SIP/2.0/UDP 127.0.0.1"
    assert all("\x00" not in v and "\r" not in v and "\n" not in v for _, v in headers)


def test_lf_mode_message_with_a_bare_cr_is_refused() -> None:
    data = HEAD.replace(b"\r\n", b"\n") + b"X-Name: a\rb\n\n"
    with pytest.raises(ParseError, match="a bare CR"):
        parse_message(data)


def test_control_characters_in_the_start_line_are_refused() -> None:
    with pytest.raises(ParseError, match="start line") as info:
        parse_message(b"OPTIONS sip:a\x00@127.0.0.1 SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert info.value.headers is not None  # a request: still answerable
    with pytest.raises(ParseError, match="start line") as info:
        parse_message(b"SIP/2.0 200 O\x00K\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert info.value.headers is None  # a response: dropped


def test_quoted_pair_nul_and_percent_escaped_nul_parse() -> None:
    """RFC 3261 section 25.1 quoted-pair allows an escaped NUL (RFC 4475 section 3.1.1.2) and
    %00 is a legal escape in a user part (section 3.1.1.4): both parse, kept as received."""
    message = parse_message(
        HEAD + b'To: "NUL:\\\x00" <sip:null-%00-null@example.com>\r\nCSeq: 1 OPTIONS\r\n\r\n'
    )
    assert message.headers.get("To") == '"NUL:\\\x00" <sip:null-%00-null@example.com>'


def test_stream_framer_refuses_a_header_with_a_nul() -> None:
    framer = StreamFramer()
    [error] = framer.feed(HEAD + b"X-A: \x00\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", 0.0)
    assert isinstance(error, ParseError)
    assert "NUL" in str(error)


# -- serialize and Headers -----------------------------------------------------------------------


def test_serialize_writes_content_length_last_and_recomputes_it() -> None:
    request = Request("MESSAGE", "sip:a@b")
    request.headers.add("Content-Length", "999")
    request.headers.add("l", "7")
    request.headers.add("Call-ID", "c")
    request.body = b"hi"
    assert serialize(request) == (
        b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: c\r\nContent-Length: 2\r\n\r\nhi"
    )
    response = Response(200, "OK")
    assert serialize(response) == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_serialize_encodes_utf8() -> None:
    response = Response(200, "\u00e7a va", Headers([("Subject", "\u5927")]))
    wire = serialize(response)
    assert wire.startswith("SIP/2.0 200 \u00e7a va\r\nSubject: \u5927\r\n".encode())
    assert round_trip(wire).reason == "\u00e7a va"  # type: ignore[union-attr]


def test_headers_api() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("X-Foo", "1"), ("Via", "SIP/2.0/UDP b")])
    assert len(headers) == 3
    assert "via" in headers and "VIA" in headers and "x-foo" in headers
    assert "Route" not in headers and 5 not in headers
    headers.prepend("via", "SIP/2.0/UDP top")
    assert headers.get_raw("Via") == ["SIP/2.0/UDP top", "SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    headers.set("Via", "SIP/2.0/UDP only")  # replaces all, at the first one's place
    assert list(headers) == [("Via", "SIP/2.0/UDP only"), ("X-Foo", "1")]
    headers.set("Subject", "new")  # appended when absent
    assert list(headers)[-1] == ("Subject", "new")
    copy = headers.copy()
    copy.remove("x-foo")
    assert "X-Foo" in headers and "X-Foo" not in copy
    assert headers.get("Route") is None
    assert headers.get_raw("Route") == []
    assert headers.get_all("Route") == []
    assert "Headers([" in repr(headers)


def test_get_all_splits_only_list_headers() -> None:
    headers = Headers(
        [
            ("Contact", '"Doe, J" <sip:a@b>;q=0.5, <sip:c@d>'),
            ("Authorization", 'Digest username="a", realm="b"'),
            ("Subject", "one, two"),
            ("Allow", "INVITE, ACK,BYE"),
        ]
    )
    assert headers.get_all("m") == ['"Doe, J" <sip:a@b>;q=0.5', "<sip:c@d>"]
    assert headers.get_all("Authorization") == ['Digest username="a", realm="b"']
    assert headers.get_all("Subject") == ["one, two"]
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]


# -- fuzz invariant ------------------------------------------------------------------------------

_FRAGMENTS = [
    b"INVITE sip:a@b SIP/2.0",
    b"SIP/2.0 200 OK",
    b"SIP/2.0 \xb200 OK",
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b"Content-Length: ",
    b"l:",
    b"Via: SIP/2.0/UDP h",
    b"0",
    b"9",
    b"-1",
    "\u00b2".encode("latin-1"),
    "\u0662".encode(),
    b"\xff\xfe",
    b'"',
    b"<",
]
_SIPISH = st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map(b"".join)
_VALUE = st.lists(st.sampled_from(_FRAGMENTS[6:]), max_size=4).map(b"".join)


@st.composite
def _sip_shaped(draw: st.DrawFn) -> bytes:
    """Start line, header lines and a body: mutations that reach deep into the parser."""
    start = draw(st.one_of(st.sampled_from(_FRAGMENTS[:3]), _SIPISH))
    names = st.sampled_from([b"Content-Length", b"l", b"Via", b"CSeq", b"X", b" ", b""])
    lines = draw(st.lists(st.tuples(names, _VALUE), max_size=4))
    head = b"\r\n".join([start, *(n + b": " + v for n, v in lines)])
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n"])) + draw(_VALUE)


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=300), _SIPISH, _sip_shaped()))
def test_property_parse_message_raises_only_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError:
        return
    parse_message(serialize(message))  # what parsed serializes to something that parses


@settings(max_examples=300)
@given(st.lists(st.one_of(st.binary(max_size=60), _SIPISH, _sip_shaped()), max_size=8))
def test_property_stream_feed_never_raises(chunks: list[bytes]) -> None:
    framer = StreamFramer(StreamLimits(max_message_size=500))
    for chunk in chunks:
        for item in framer.feed(chunk, 0.0):
            assert isinstance(item, Request | Response | ParseError)
    assert framer.keepalives >= 0


def test_first_values_gives_each_header_once_with_its_count() -> None:
    headers = Headers([("Via", "a"), ("f", "<sip:x@y>"), ("Via", "b"), ("To", "<sip:z@y>")])
    first, counts = headers.first_values()
    assert first == {"via": "a", "from": "<sip:x@y>", "to": "<sip:z@y>"}  # compact f is From
    assert counts == {"via": 2, "from": 1, "to": 1}
