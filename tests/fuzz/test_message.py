"""Fuzz sip/message.py (datagrams and the stream framer) and the typed header views on top.

Invariants: ``parse_message`` and ``StreamFramer.feed`` raise nothing but ``ParseError`` (the
framer returns its errors, it never raises); every typed view of a parsed message (headers.py,
uri.py, refer.py, auth.py) raises only its documented error; a parsed message survives
serialize -> parse with the same start line, headers and body; and a stream cut into pieces
frames exactly as the same bytes fed at once.
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from siproc.sip import refer
from siproc.sip.auth import AuthError, parse_challenge
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.framing import DEFAULT_MAX_MESSAGE_SIZE as MAX_MESSAGE_SIZE
from siproc.sip.framing import StreamFramer
from siproc.sip.headers import message_info, parse_cseq, parse_delta_seconds, parse_via
from siproc.sip.message import Message, Request, parse_message, serialize
from siproc.sip.uri import parse_name_addr, parse_name_addr_list, parse_uri
from tests.fuzz.mutations import inputs, sdp_bodies, sip_messages, sip_seeds
from tests.fuzz.profiles import count, fuzz_settings


def _ignore(error: type[Exception], parse: object, *args: object) -> None:
    """Call ``parse(*args)``; ``error`` is the one exception it may raise."""
    with contextlib.suppress(error):
        parse(*args)  # type: ignore[operator]


def check_views(message: Message) -> None:
    """Every typed view the layers above use, on every header it applies to."""
    headers = message.headers
    _ignore(ParseError, message_info, message)
    if isinstance(message, Request):
        _ignore(ParseError, parse_uri, message.uri)
    for name, value in headers:
        match name:
            case "Via":
                for item in _split(value):
                    _ignore(ParseError, parse_via, item)
            case "Contact" | "Route" | "Record-Route":
                _ignore(ParseError, parse_name_addr_list, value)
            case "From" | "To" | "Refer-To" | "Referred-By":
                _ignore(ParseError, parse_name_addr, value)
            case "CSeq":
                _ignore(ParseError, parse_cseq, value)
            case "Expires" | "Min-Expires" | "Retry-After":
                _ignore(ParseError, parse_delta_seconds, value, name)
            case "Event":
                _ignore(ParseError, refer.parse_event, value)
            case "Subscription-State":
                _ignore(ParseError, refer.parse_subscription_state, value)
            case "WWW-Authenticate" | "Proxy-Authenticate":
                _ignore(AuthError, parse_challenge, value)
    _ignore(RemoteProtocolError, refer.refer_target, headers)
    _ignore(ParseError, refer.parse_sipfrag, message.body)
    for name in ("Require", "Supported", "Accept", "Allow"):
        _ignore(ParseError, headers.get_all, name)


def _split(value: str) -> list[str]:
    from siproc.sip.uri import split_list

    try:
        return split_list(value)
    except ParseError:
        return []


def safe(text: str) -> bool:
    """No CR or LF, and NUL only as a quoted-pair (RFC 3261 section 25.1)."""
    if "\r" in text or "\n" in text:
        return False
    escaped = False
    for char in text:
        if char == "\x00" and not escaped:
            return False
        escaped = char == "\\" and not escaped
    return True


def check_datagram(data: bytes) -> None:
    count("sip.message")
    try:
        message = parse_message(data)
    except ParseError:
        return
    check_views(message)
    for text in (message.start_line(), *(value for _, value in message.headers)):
        assert safe(text), f"control character passed on in {text[:80]!r}"
    again = parse_message(serialize(message))
    assert again.start_line() == message.start_line()
    assert _without_length(again) == _without_length(message)
    assert again.body == message.body


def _without_length(message: Message) -> list[tuple[str, str]]:
    return [(n, v) for n, v in message.headers if n != "Content-Length"]


@fuzz_settings()
@given(inputs(sip_seeds()))
def test_parse_message_mutated(data: bytes) -> None:
    check_datagram(data)


@fuzz_settings(cost=9)
@given(sip_messages(body=st.one_of(sdp_bodies(), st.binary(max_size=64))))
def test_parse_message_structured(data: bytes) -> None:
    check_datagram(data)


def _frame(pieces: list[bytes]) -> list[str]:
    framer = StreamFramer()
    out: list[str] = []
    for piece in pieces:
        for item in framer.feed(piece, 0.0):
            if isinstance(item, ParseError):
                out.append(f"error: {item}")
            else:
                check_views(item)
                out.append(repr(serialize(item)))
    return out


@fuzz_settings(cost=1.5)
@given(inputs(sip_seeds()), st.lists(st.integers(1, 200), max_size=20))
def test_stream_framer(data: bytes, cuts: list[int]) -> None:
    """Two copies of the input on one connection, whole and cut at ``cuts``."""
    count("sip.framer")
    stream = data + b"\r\n\r\n" + data
    whole = _frame([stream])
    pieces, rest = [], stream
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    # A header section that only ends beyond the size limit is refused when it arrives in
    # pieces (the limit is checked while waiting), but not when it comes at once.
    if len(stream) < MAX_MESSAGE_SIZE:
        assert _frame(pieces) == whole
