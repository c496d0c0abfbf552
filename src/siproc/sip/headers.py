"""Typed views of the headers every SIP message carries (RFC 3261 sections 8.1.1 and 20).

`message_info()` parses Via, CSeq, From, To, Call-ID and Max-Forwards at once and raises
`ParseError` naming the header that is wrong; the endpoint turns that into a 400 for requests and
drops responses (RFC 3261 section 18.1.2 and 18.2.1). `make_response()` builds a response from the
raw headers of a request (section 8.2.6), so it works even for requests too broken to parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from siproc.sip.errors import ParseError
from siproc.sip.message import Headers, Message, Request, Response
from siproc.sip.uri import (
    TOKEN_CHARS,
    NameAddr,
    Params,
    format_host,
    format_params,
    get_param,
    parse_header_params,
    parse_host_port,
    parse_name_addr,
    set_param,
    split_list,
)

BRANCH_MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 section 8.1.1.7
MAX_CSEQ = 2**31 - 1  # RFC 3261 section 8.1.1.5: "MUST be less than 2**31"
MAX_EXPIRES = 2**32 - 1  # RFC 3261 section 20.19
# Headers that may appear only once (RFC 3261 section 7.3.1: not list headers).
SINGLE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type", "Expires")
# sent-protocol with the LWS RFC 3261 section 25.1 allows around each SLASH; re.ASCII keeps \w
# to the ASCII alphanumerics and "_" of token.
_VIA_RE = re.compile(
    r"\s*([\w\-.!%*+`'~]+)\s*/\s*([\w\-.!%*+`'~]+)\s*/\s*([\w\-.!%*+`'~]+)\s+(.*)$",
    re.S | re.ASCII,
)
_TAG_RE = re.compile(r";\s*tag\s*=", re.IGNORECASE)
_SPACE_RE = re.compile(r"\s")  # str.isspace(), without a Python loop per character


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry (RFC 3261 section 20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """The rport value: '' when requested without a value (RFC 3581 section 3)."""
        return get_param(self.params, "rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=set_param(self.params, name, value))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        sent_by = f"{format_host(self.host)}{port}"
        return f"{self.protocol}/{self.transport} {sent_by}{format_params(self.params)}"


def _is_digits(text: str) -> bool:
    """1*DIGIT with ASCII digits only (RFC 5234 appendix B.1); str.isdigit() also takes "²"."""
    return text.isascii() and text.isdigit()


def parse_via(value: str) -> Via:
    """Parse one Via entry: `SIP/2.0/UDP host:port;branch=...`."""
    match = _VIA_RE.match(value)
    if not match:
        raise ParseError(f"invalid Via sent-protocol in {value[:80]!r}")
    name, version, transport, rest = match.groups()
    sent_by, semi, params_text = rest.partition(";")
    host, port = parse_host_port(sent_by.strip())
    params = parse_header_params(params_text) if semi else ()
    for param in ("ttl", "maddr", "received", "branch"):
        if get_param(params, param) == "":
            raise ParseError(f"Via parameter {param} without a value in {value!r}")
    return Via(transport.upper(), host, port, params, f"{name}/{version}")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not _is_digits(parts[0]):
        raise ParseError(f"invalid CSeq {value[:60]!r}")
    if len(parts[0]) > 10 or int(parts[0]) > MAX_CSEQ:
        raise ParseError(f"CSeq number {parts[0][:20]} is not below 2**31")
    if not all(c in TOKEN_CHARS for c in parts[1]):
        raise ParseError(f"invalid CSeq method {parts[1][:40]!r}")
    return CSeq(int(parts[0]), parts[1])


def parse_delta_seconds(value: str, header: str) -> int:
    """A non-negative integer of at most 2**32-1 (RFC 3261 section 25.1 delta-seconds)."""
    text = value.strip()
    if not _is_digits(text) or len(text) > 10 or int(text) > MAX_EXPIRES:
        raise ParseError(f"invalid {header} value {text[:20]!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """The mandatory headers of a request or response, parsed (RFC 3261 section 8.1.1)."""

    call_id: str
    cseq: CSeq
    from_: NameAddr
    to: NameAddr
    vias: tuple[Via, ...]
    max_forwards: int | None

    @property
    def top_via(self) -> Via:
        return self.vias[0]


def message_info(message: Message) -> MessageInfo:
    """Parse the mandatory headers or raise `ParseError` naming the first wrong one.

    The result is kept on the message until its headers change, since every layer asks.
    """
    cached = current_info(message)
    if cached is not None and cached.vias:  # (a view kept before our Via: parse, which raises)
        return cached
    info = _message_info(message)
    message.parsed = (message.headers, message.headers.version, info)
    return info


def current_info(message: Message) -> MessageInfo | None:
    """The parsed view kept on ``message`` if its headers have not changed since, else None."""
    cached = message.parsed
    if cached is not None and cached[0] is message.headers and cached[1] == message.headers.version:
        assert isinstance(cached[2], MessageInfo)
        return cached[2]
    return None


def keep_info(message: Message, info: MessageInfo) -> None:
    """Keep ``info`` as ``message``'s parsed view: for a message we build ourselves from the
    values of its mandatory headers, so that the layers below need not parse them back."""
    message.parsed = (message.headers, message.headers.version, info)


#: Most From/To values kept parsed by their text (:func:`name_addr`); the lot is dropped when full.
NAME_ADDR_CACHE = 1024
_name_addrs: dict[str, NameAddr] = {}


def name_addr(text: str) -> NameAddr:
    """``parse_name_addr(text)``, kept by the text: a call's messages repeat their From and To
    (the ACK's From is the INVITE's, the answer to our BYE has the BYE's From and To, see
    :func:`remember_name_addr`). A value is immutable, so sharing it is safe; errors are not
    kept (each bad header is parsed again and refused again)."""
    value = _name_addrs.get(text)
    if value is None:
        value = parse_name_addr(text)
        _keep_name_addr(text, value)
    return value


def remember_name_addr(value: NameAddr) -> str:
    """``str(value)``, kept for :func:`name_addr`: for a From or To we write, whose answer comes
    back with the same text (its parse is ``value``: ``parse_name_addr(str(v)) == v``, tested)."""
    text = str(value)
    _keep_name_addr(text, value)
    return text


def forget_name_addrs() -> None:
    """Drop the kept From/To values: after a busy spell they are the load's (each carries a
    dialog's tag), and spread over the heap they pin memory the idle phone could give back
    (net/memory_trim.py calls this)."""
    _name_addrs.clear()


def _keep_name_addr(text: str, value: NameAddr) -> None:
    if len(_name_addrs) >= NAME_ADDR_CACHE:
        _name_addrs.clear()
    _name_addrs[text] = value


def _message_info(message: Message) -> MessageInfo:
    headers = message.headers
    first, counts = headers.first_values()  # one pass for the checks and the values below
    for name in SINGLE_HEADERS:
        if counts.get(name.lower(), 0) > 1:
            raise ParseError(f"more than one {name} header")
    missing = [n for n in ("Via", "CSeq", "From", "To", "Call-ID") if n.lower() not in first]
    if missing:
        raise ParseError(f"missing mandatory header(s): {', '.join(missing)}")
    call_id = first["call-id"]
    if not call_id or _SPACE_RE.search(call_id):
        raise ParseError(f"invalid Call-ID {call_id[:60]!r}")
    cseq = parse_cseq(first["cseq"])
    try:
        vias = tuple(parse_via(v) for v in headers.get_all("Via"))
    except ParseError as exc:
        raise ParseError(f"invalid Via header: {exc}") from None
    if not vias:
        raise ParseError("empty Via header")
    try:
        from_ = name_addr(first["from"])
    except ParseError as exc:
        raise ParseError(f"invalid From header: {exc}") from None
    try:
        to = name_addr(first["to"])
    except ParseError as exc:
        raise ParseError(f"invalid To header: {exc}") from None
    max_forwards = None
    mf = first.get("max-forwards")
    if mf is not None:
        if not _is_digits(mf.strip()) or len(mf.strip()) > 10 or int(mf) > 255:
            raise ParseError(f"invalid Max-Forwards {mf[:20]!r}")
        max_forwards = int(mf)
    expires = first.get("expires")
    if expires is not None:
        parse_delta_seconds(expires, "Expires")
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError(
            f"CSeq method {cseq.method} does not match request method {message.method}"
        )
    return MessageInfo(call_id, cseq, from_, to, vias, max_forwards)


def option_tags(headers: Headers, name: str) -> list[str]:
    """Option tags of Require/Supported/Proxy-Require, lowercased (RFC 3261 section 19.2)."""
    return [tag.lower() for tag in headers.get_all(name)]


def media_types(headers: Headers, name: str = "Accept") -> list[str]:
    """The type/subtype items of Accept or Content-Type, lowercased, without parameters."""
    return (
        [item.split(";")[0].strip().lower() for item in headers.get_all(name)]
        if name in headers
        else []
    )


def content_type(headers: Headers) -> str | None:
    value = headers.get("Content-Type")
    return value.split(";")[0].strip().lower() if value else None


def has_tag(name_addr_text: str) -> bool:
    """True when a From/To value has a tag header parameter (RFC 3261 section 8.2.6.2).

    A `;tag=` inside <URI> or a quoted display name is no tag; a value too broken to parse
    falls back to a plain search.
    """
    try:
        return name_addr(name_addr_text).tag is not None
    except ParseError:
        return bool(_TAG_RE.search(name_addr_text))


def make_response(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to `request` from its raw headers (RFC 3261 section 8.2.6.2).

    Via, From, Call-ID and CSeq are copied; To is copied and given `to_tag` unless it has one
    (a 100 Trying gets no tag: pass None).
    """
    out = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_raw(name):
            if name == "To" and to_tag and not has_tag(value):
                value = f"{value};tag={to_tag}"
            out.add(name, value)
    if status == 100 and "Timestamp" in request.headers:  # RFC 3261 section 8.2.6.1
        out.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in headers:
        out.add(name, value)
    if body:
        out.set("Content-Type", content_type or "application/sdp")
    return Response(status, reason, out, body)


def split_header_list(value: str) -> list[str]:
    return split_list(value)


def make_cancel(invite: Request) -> Request:
    """The CANCEL of ``invite`` (RFC 3261 section 9.1): its Request-URI, top Via (the same
    branch, so it matches the INVITE's transaction), Route, From, To, Call-ID and CSeq number."""
    headers = Headers()
    headers.add("Via", invite.headers.get_raw("Via")[0])
    for route in invite.headers.get_raw("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    cseq = (invite.headers.get("CSeq") or "1").split()[0]
    headers.add("CSeq", f"{cseq} CANCEL")
    return Request("CANCEL", invite.uri, headers)
