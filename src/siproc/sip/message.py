"""SIP messages: parse and serialize requests and responses (RFC 3261 sections 7 and 25).

Theory of operation: a message is a start line, an ordered list of raw headers and a body.
Headers stay raw text (with compact names expanded and folded lines joined) so that what we do
not understand is relayed byte for byte; typed views (Via, CSeq, From ...) live in `headers.py`
and are parsed when asked for. Framing differs by transport (RFC 3261 section 18.3): a datagram
holds one message and Content-Length may be absent; on a stream Content-Length is mandatory and
`framing.StreamFramer` cuts messages out of the byte stream.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from siproc.sip.errors import ParseError
from siproc.sip.uri import TOKEN_CHARS, split_list

SIP_VERSION = "SIP/2.0"

# RFC 3261 section 7.3.3 and the IANA registry: compact forms.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "MIME-Version",
        "Organization",
        "P-Asserted-Identity",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "RAck",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}
# Headers whose value is a comma-separated list (RFC 3261 section 7.3.1). The auth headers are
# not: a challenge contains commas.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "allow",
        "allow-events",
        "contact",
        "content-encoding",
        "proxy-require",
        "record-route",
        "require",
        "route",
        "supported",
        "unsupported",
        "via",
    }
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# RFC 3261 section 7.1: "The SIP-Version string is case-insensitive, but implementations MUST
# send upper-case"; DIGIT is ASCII only (RFC 5234 appendix B.1).
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS_CODE_RE = re.compile(r"[0-9]{3}")


@functools.lru_cache(maxsize=1024)
def header_key(name: str) -> str:
    """The lookup key of a header name: its canonical spelling, lower-cased."""
    return canonical_name(name).lower()


@functools.lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    """The conventional spelling of a header name; compact forms expanded."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


class Headers:
    """An ordered, case-insensitive list of raw SIP headers.

    Each entry keeps its lower-case canonical name as the lookup key, computed once.
    """

    __slots__ = ("_items", "version")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []  # (name, value, key)
        self.version = 0  # counts changes, so views parsed from the headers know when to renew
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self.version += 1
        name = canonical_name(name)
        self._items.append((name, value, name.lower()))

    def prepend(self, name: str, value: str) -> None:
        self.version += 1
        name = canonical_name(name)
        self._items.insert(0, (name, value, name.lower()))

    def set(self, name: str, value: str) -> None:
        """Replace every `name` header by one with `value` (at the first one's place)."""
        self.version += 1
        name = canonical_name(name)
        key = name.lower()
        for i, item in enumerate(self._items):
            if item[2] == key:
                self._items[i] = (name, value, key)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[2] != key]
                return
        self._items.append((name, value, key))

    def remove(self, name: str) -> None:
        self.version += 1
        key = header_key(name)
        self._items = [it for it in self._items if it[2] != key]

    def get(self, name: str) -> str | None:
        """The first `name` header's whole value, or None."""
        key = header_key(name)
        return next((v for _, v, k in self._items if k == key), None)

    def get_raw(self, name: str) -> list[str]:
        """Every `name` header line's value, unsplit."""
        key = header_key(name)
        return [v for _, v, k in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`; list headers split at their top-level commas."""
        values = self.get_raw(name)
        if header_key(name) in LIST_HEADERS:
            return [item for v in values for item in split_list(v)]
        return values

    def first_values(self) -> tuple[dict[str, str], dict[str, int]]:
        """In one pass: each header's first whole value and how many lines it has, by lookup
        key (:func:`header_key`): for a parser that asks about many headers at once."""
        first: dict[str, str] = {}
        counts: dict[str, int] = {}
        for _, value, key in self._items:
            if key in counts:
                counts[key] += 1
            else:
                counts[key] = 1
                first[key] = value
        return first, counts

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, value, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for n, v, _ in self._items]!r})"


@dataclass(slots=True)
class Request:
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    # (headers, headers.version, parsed view): message_info() parses once per change.
    parsed: tuple[Headers, int, object] | None = field(default=None, repr=False, compare=False)

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    # (headers, headers.version, parsed view): message_info() parses once per change.
    parsed: tuple[Headers, int, object] | None = field(default=None, repr=False, compare=False)

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


Message = Request | Response


def serialize(message: Message) -> bytes:
    """The wire form; Content-Length is always written, as the last header."""
    lines = [message.start_line()]
    lines += [f"{name}: {value}" for name, value in message.headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(message.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8") + message.body


def _bare_control(text: str) -> str | None:
    """What makes `text` (one line of a header section) illegal, or None.

    RFC 3261 section 25.1: CR and LF occur only as the CRLF that ends a line (or folds one), and
    NUL only inside a quoted-pair (`\\` then NUL, legal in a quoted display name: RFC 4475
    section 3.1.1.2); a NUL after an odd number of backslashes is such a pair.
    """
    if "\r" in text:
        return "a bare CR"
    if "\n" in text:
        return "a bare LF"
    index = text.find("\x00")
    while index >= 0:
        start = index
        while start > 0 and text[start - 1] == "\\":  # runs end at each NUL: linear overall
            start -= 1
        if (index - start) % 2 == 0:
            return "a NUL octet"
        index = text.find("\x00", index + 1)
    return None


def _has_stray_controls(head: str, crlf: bool) -> bool:
    """True when `head` may hold a CR, LF or NUL outside line ends: a quick test, done with
    C-speed counts, that keeps the per-line check off the common path."""
    if "\x00" in head:
        return True
    pairs = head.count("\r\n") if crlf else 0
    return head.count("\r") != pairs or (crlf and head.count("\n") != pairs)


def _split_head(head: str) -> tuple[str, Headers]:
    """Start line and headers of a header section (unfolding continuation lines).

    A header holding a bare CR or LF, or a NUL outside a quoted-pair, raises `ParseError`
    naming it; the error carries the other headers (of a request), so that the request can
    still be answered with 400 (RFC 3261 sections 8.2.2 and 25.1). So does a start line.
    """
    crlf = "\r\n" in head
    lines = head.split("\r\n") if crlf else head.split("\n")
    check = _has_stray_controls(head, crlf)
    start, header_lines = lines[0], lines[1:]
    headers = Headers()
    name: str | None = None
    value = ""
    refused: str | None = None  # why the first refused header was refused
    bad = False  # the current header (with its continuation lines) is refused
    for line in header_lines:
        problem = _bare_control(line) if check else None
        if line[:1] in (" ", "\t"):  # RFC 3261 section 7.3.1: folded continuation
            if name is None:
                raise ParseError("continuation line before the first header")
            if problem is not None:
                bad = True
                refused = refused or f"header {name[:40]!r} contains {problem}"
            # The fold and the whitespace around it count as one SP (RFC 3261 section 7.3.1);
            # leading and trailing whitespace is not part of the value.
            part = line.strip(" \t")
            if part:
                value = f"{value} {part}" if value else part
            continue
        if name is not None and not bad:
            headers.add(name, value)
        raw_name, colon, raw_value = line.partition(":")
        raw_name = raw_name.rstrip(" \t")
        if not colon or not raw_name or not _TOKEN_RE.fullmatch(raw_name):
            raise ParseError(
                f"malformed header line {line[:60]!r}",
                headers=None if _is_status_line(start) else headers,
            )
        name, value = raw_name, raw_value.strip()
        bad = problem is not None
        if bad:
            refused = refused or f"header {name[:40]!r} contains {problem}"
    if name is not None and not bad:
        headers.add(name, value)
    problem = _bare_control(start) if check else None
    if problem is not None:
        refused = f"start line {start[:60]!r} contains {problem}"
    if refused is not None:
        raise ParseError(refused, headers=None if _is_status_line(start) else headers)
    return start, headers


def _is_status_line(start: str) -> bool:
    return start[:4].upper() == "SIP/"


def _salvaged(message: Message) -> Headers | None:
    """The headers a `ParseError` carries: a request's, so that it can be answered with 400.

    A response is never answered; a broken one is dropped (RFC 4475 sections 3.1.2.5 and
    3.1.2.19), so its errors carry no headers and the endpoint cannot mistake it for a request.
    """
    return message.headers if isinstance(message, Request) else None


def _parse_start(start: str, headers: Headers) -> Message:
    if _is_status_line(start):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if not _VERSION_RE.fullmatch(version) or not _STATUS_CODE_RE.fullmatch(code):
            raise ParseError(f"malformed status line {start[:80]!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise ParseError(f"status code {status} out of range")
        return Response(status, reason, headers, version=version.upper())
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError(
            f"request line must be 'METHOD SP URI SP SIP/2.0': {start[:80]!r}", headers=headers
        )
    method, uri, version = parts
    if not all(c in TOKEN_CHARS for c in method):
        raise ParseError(f"invalid method {method[:40]!r}", headers=headers)
    if not _VERSION_RE.fullmatch(version):
        raise ParseError(f"invalid SIP version {version[:20]!r}", headers=headers)
    if uri.startswith("<") or ":" not in uri:
        raise ParseError(f"invalid Request-URI {uri[:80]!r}", headers=headers)
    return Request(method, uri, headers, version=version.upper())


def _content_length(message: Message) -> int | None:
    values = message.headers.get_raw("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        raise ParseError("more than one Content-Length header", headers=_salvaged(message))
    text = values[0].strip()
    # Content-Length = 1*DIGIT, ASCII digits only (RFC 3261 section 25.1, RFC 5234).
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ParseError(f"invalid Content-Length {text[:20]!r}", headers=_salvaged(message))
    return int(text)


def _find_head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Offsets of the end of the header section and the start of the body."""
    end = data.find(b"\r\n\r\n")
    lf_end = data.find(b"\n\n")
    if end >= 0 and (lf_end < 0 or end <= lf_end):
        return end, end + 4
    if lf_end >= 0:
        return lf_end, lf_end + 2
    return -1, -1


def parse_message(data: bytes) -> Message:
    """Parse one message from a datagram (RFC 3261 section 18.3).

    Octets beyond Content-Length are ignored (RFC 4475 section 3.1.1.8); a Content-Length larger
    than what arrived is an error (section 3.1.2.2). Without Content-Length the body runs to the
    end of the datagram.
    """
    head_end, body_start = _find_head_end(data)
    if head_end < 0:
        # A message with no body and no blank line at all is malformed.
        raise ParseError("no empty line after the headers")
    message = _parse_head(data[:head_end])
    length = _content_length(message)
    available = len(data) - body_start
    if length is None:
        message.body = data[body_start:]
    elif length > available:
        raise ParseError(
            f"Content-Length {length} is larger than the {available} body octets received",
            headers=_salvaged(message),
        )
    else:
        message.body = data[body_start : body_start + length]
    return message


def _parse_head(head: bytes) -> Message:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # keep going: only the reason phrase may be non-UTF-8
    text = text.lstrip("\r\n")
    if not text:
        raise ParseError("empty message")
    start, headers = _split_head(text)
    return _parse_start(start, headers)
