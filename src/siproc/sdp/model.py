"""SDP session descriptions: parse and serialize (RFC 8866, which obsoletes RFC 4566).

The parser is lenient where real phones are sloppy and strict where a mistake would send
media to the wrong place:

- LF or CRLF line ends, trailing blanks and empty lines are accepted (RFC 8866 section 5 asks
  for CRLF but tells parsers to accept LF as well).
- Unknown line types and unknown attributes are kept verbatim so that a round trip loses
  nothing that matters. (RFC 8866 section 5 would have a parser ignore a whole description
  containing a type letter it does not understand; a phone gains nothing by refusing a call
  over a stray line, so we keep the line and carry on.) Malformed ``b=`` lines are dropped.
- ``m=`` (section 5.14), ``c=`` (section 5.7) and ``o=`` (section 5.2) are checked field by
  field, RTP payload types must be 0-127, and every active stream must have a connection
  address at media or session level (section 5.7). Violations raise :class:`SdpError` naming
  the line.
- Numbers have a digit limit (:data:`MAX_DIGITS`, 20 for the 64-bit ``o=`` and ``t=`` values):
  a longer one is malformed, never a slow or failing ``int()``.
- A control character (below 0x20 other than the CRLF or LF line end, or 0x7f) anywhere
  raises :class:`SdpError`: section 9 allows none outside ``byte-string`` text, and nothing
  we pass on (to a codec, a log line or a handler) may carry one.

Serialization writes CRLF and the line order of RFC 8866 section 5 (session: v o s i u e p c b
t r z k a; media: m i c b k a).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

__all__ = [
    "DIRECTIONS",
    "MAX_DIGITS",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "connection_address",
    "direction",
    "fmtp",
    "parse_sdp",
    "rtpmap",
]

#: The direction attributes of RFC 8866 sections 6.7.1-6.7.4 (RFC 3264 section 5.1).
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# Line order of RFC 8866 section 5, for the optional lines kept in ``other_lines``.
_SESSION_BEFORE_C = "iuep"
_SESSION_AFTER_T = "trzk"
_MEDIA_BEFORE_C = "i"
_MEDIA_AFTER_B = "k"

#: Longest number we read (ports, payload types, clock rates, bandwidths, TTLs): 10 digits
#: hold any 32-bit value; the 64-bit o= sess-id/sess-version and t= times get 20.
MAX_DIGITS = 10
_MAX_DIGITS_64 = 20
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class SdpError(ValueError):
    """The session description is malformed where it matters; the message names the line."""


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``
    (RFC 8866 section 5.2)."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __post_init__(self) -> None:
        for name in ("username", "nettype", "addrtype", "address"):
            _check_field(f"o= {name}", getattr(self, name))
        if self.sess_id < 0 or self.sess_version < 0:
            raise SdpError("o= sess-id and sess-version must not be negative")

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 8866 section 5.7).

    ``address`` is the bare address; the multicast suffixes ``/<ttl>`` (IP4 only) and
    ``/<number of addresses>`` are kept in ``ttl`` and ``count``.
    """

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        for name in ("nettype", "addrtype", "address"):
            _check_field(f"c= {name}", getattr(self, name))

    def __str__(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP6 <address>`` for an IPv6 literal, ``IN IP4 <address>`` otherwise."""
        return cls("IN", _addrtype_of(address), address)


@dataclass(slots=True)
class MediaDescription:
    """One media section: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines
    (RFC 8866 section 5.14). ``attributes`` keeps ``a=`` lines in order as (name, value);
    value is None for property attributes such as ``a=sendrecv``."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=<name>`` (None when absent or a property attribute)."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        """As the dataclass's, but ``a=crypto`` values (SRTP keys, RFC 4568) are masked."""
        attributes = [(k, "<masked>" if k.lower() == "crypto" else v) for k, v in self.attributes]
        return (
            f"MediaDescription(media={self.media!r}, port={self.port!r}, proto={self.proto!r}, "
            f"formats={self.formats!r}, port_count={self.port_count!r}, "
            f"connection={self.connection!r}, attributes={attributes!r}, "
            f"bandwidths={self.bandwidths!r}, other_lines={self.other_lines!r})"
        )

    def attribute_values(self, name: str) -> list[str | None]:
        """The values of every ``a=<name>`` line, in order."""
        return [value for key, value in self.attributes if key == name]

    def has_attribute(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def lines(self) -> list[str]:
        """The media section as SDP lines without line ends."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        out += _typed(self.other_lines, _MEDIA_BEFORE_C)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={kind}:{value}" for kind, value in self.bandwidths]
        out += _typed(self.other_lines, _MEDIA_AFTER_B)
        out += _unknown(self.other_lines, _MEDIA_BEFORE_C + _MEDIA_AFTER_B)
        out += [_attribute_line(key, value) for key, value in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body (RFC 8866 section 5)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    time: tuple[int, int] = (0, 0)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    def attribute(self, name: str) -> str | None:
        """The value of the first session-level ``a=<name>`` (None if absent or a flag)."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def has_attribute(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    def serialize(self) -> bytes:
        """The description as UTF-8 bytes with CRLF line ends (RFC 8866 section 5)."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name or ' '}"]
        out += _typed(self.other_lines, _SESSION_BEFORE_C)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={kind}:{value}" for kind, value in self.bandwidths]
        out.append(f"t={self.time[0]} {self.time[1]}")
        out += _typed(self.other_lines, _SESSION_AFTER_T)
        out += _unknown(self.other_lines, _SESSION_BEFORE_C + _SESSION_AFTER_T)
        out += [_attribute_line(key, value) for key, value in self.attributes]
        for media in self.media:
            out += media.lines()
        for line in out:
            if "\r" in line or "\n" in line:
                raise SdpError(f"line {line!r} contains CR or LF")
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.serialize()


# --------------------------------------------------------------------------------------------
# Parsing


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body (RFC 8866 section 5); raise :class:`SdpError` with the bad line."""
    text = data.decode("utf-8", errors="replace")
    version: int | None = None
    origin: Origin | None = None
    session_name: str | None = None
    session_conn: Connection | None = None
    time: tuple[int, int] | None = None
    session_attrs: list[tuple[str, str | None]] = []
    session_bw: list[tuple[str, int]] = []
    session_other: list[tuple[str, str]] = []
    medias: list[MediaDescription] = []

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        control = _CONTROL_RE.search(line)
        if control is not None:
            raise SdpError(f"line {number}: control character {control.group()!r} in {line[:40]!r}")
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not (line[0].isascii() and line[0].isalpha()):
            raise SdpError(f"line {number}: {line!r} is not <type>=<value>")
        kind, value = line[0], line[2:]
        current = medias[-1] if medias else None
        if kind == "m":
            medias.append(_parse_m(value, number))
        elif kind == "a":
            attr = _parse_a(value)
            (current.attributes if current else session_attrs).append(attr)
        elif kind == "c":
            conn = _parse_c(value, number)
            if current is None:
                session_conn = conn
            else:
                current.connection = conn
        elif kind == "b":
            bandwidth = _parse_b(value)
            if bandwidth is not None:
                (current.bandwidths if current else session_bw).append(bandwidth)
        elif current is not None:
            current.other_lines.append((kind, value))
        elif kind == "v":
            if version is not None:
                raise SdpError(f"line {number}: second v= line")
            if value.strip() != "0":
                raise SdpError(f"line {number}: unsupported SDP version {value!r} (only v=0)")
            version = 0
        elif kind == "o":
            origin = _parse_o(value, number)
        elif kind == "s":
            session_name = value
        elif kind == "t" and time is None:
            time = _parse_t(value, number)
        else:
            session_other.append((kind, value))

    if version is None:
        raise SdpError("missing v= line")
    if origin is None:
        raise SdpError("missing o= line")
    for index, media in enumerate(medias):
        if media.port != 0 and media.connection is None and session_conn is None:
            raise SdpError(
                f"m= line {index + 1} ({media.media} {media.port}) has no c= line "
                "and there is no session-level c= line"
            )
    return SessionDescription(
        origin=origin,
        session_name=session_name if session_name is not None else "-",
        connection=session_conn,
        time=time if time is not None else (0, 0),
        attributes=session_attrs,
        media=medias,
        bandwidths=session_bw,
        other_lines=session_other,
        version=version,
    )


def _parse_o(value: str, number: int) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise SdpError(f"line {number}: o= needs 6 fields, got {len(fields)}: {value!r}")
    username, sess_id_text, sess_version_text, nettype, addrtype, address = fields
    sess_id = _uint(sess_id_text, _MAX_DIGITS_64)
    sess_version = _uint(sess_version_text, _MAX_DIGITS_64)
    if sess_id is None or sess_version is None:
        raise SdpError(
            f"line {number}: o= sess-id and sess-version must be numeric "
            f"(at most {_MAX_DIGITS_64} digits): {value[:80]!r}"
        )
    return Origin(username, sess_id, sess_version, nettype, addrtype, address)


def _parse_t(value: str, number: int) -> tuple[int, int]:
    times = [_uint(f, _MAX_DIGITS_64) for f in value.split()]
    if len(times) != 2 or times[0] is None or times[1] is None:
        raise SdpError(f"line {number}: t= needs <start-time> <stop-time>: {value[:80]!r}")
    return times[0], times[1]


def _parse_c(value: str, number: int) -> Connection:
    fields = value.split()
    if len(fields) != 3:
        raise SdpError(
            f"line {number}: c= needs <nettype> <addrtype> <connection-address>: {value!r}"
        )
    nettype, addrtype, address_field = fields
    address, *suffix_texts = address_field.split("/")
    suffixes = [_uint(s) for s in suffix_texts]
    if len(suffixes) > 2 or None in suffixes:
        raise SdpError(f"line {number}: bad c= address {address_field[:80]!r}")
    ttl: int | None = None
    count: int | None = None
    upper = addrtype.upper()
    if upper == "IP4" and suffixes:
        ttl = suffixes[0]
        count = suffixes[1] if len(suffixes) == 2 else None
    elif suffixes:  # RFC 8866 section 5.7: IP6 multicast has a count and no TTL
        if len(suffixes) != 1:
            raise SdpError(f"line {number}: bad c= address {address_field[:80]!r}")
        count = suffixes[0]
    if nettype.upper() == "IN" and upper in ("IP4", "IP6"):
        _check_address(upper, address, number)
    return Connection(nettype, addrtype, address, ttl, count)


def _check_address(addrtype: str, address: str, number: int) -> None:
    """IP4/IP6 literals must be valid; FQDNs (RFC 8866 section 5.7) must look like names."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        if addrtype == "IP4" and _is_uint(address.replace(".", "")):
            raise SdpError(f"line {number}: bad IP4 address {address!r}") from None
        if addrtype == "IP6" and ":" in address:
            raise SdpError(f"line {number}: bad IP6 address {address!r}") from None
        labels = address.rstrip(".").split(".")
        if not all(label and _is_label(label) for label in labels):
            raise SdpError(f"line {number}: bad {addrtype} address {address!r}") from None
        return
    if (parsed.version == 4) != (addrtype == "IP4"):
        raise SdpError(f"line {number}: address {address!r} does not match {addrtype}")


def _is_label(label: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c == "-") for c in label)


def _parse_m(value: str, number: int) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise SdpError(f"line {number}: m= needs <media> <port> <proto> <fmt>...: {value!r}")
    media, port_field, proto, *formats = fields
    port_text, _, count_text = port_field.partition("/")
    port = _uint(port_text)
    if port is None or port > 65535:
        raise SdpError(f"line {number}: bad m= port {port_field[:40]!r}")
    port_count: int | None = None
    if count_text:
        port_count = _uint(count_text)
        if port_count is None or port_count < 1:
            raise SdpError(f"line {number}: bad m= port count {port_field[:40]!r}")
    if not formats and port != 0:
        raise SdpError(f"line {number}: m= line without formats: {value[:80]!r}")
    if "RTP/" in proto.upper():
        for fmt in formats:
            payload_type = _uint(fmt)
            if payload_type is None or payload_type > 127:
                raise SdpError(f"line {number}: bad RTP payload type {fmt[:20]!r} in m= line")
    return MediaDescription(media, port, proto, formats, port_count)


def _is_uint(text: str) -> bool:
    """ASCII digits only (str.isdigit() also accepts superscripts that int() rejects)."""
    return text.isascii() and text.isdigit()


def _uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of 1 to ``max_digits`` ASCII digits, else None (never a slow ``int()``)."""
    return int(text) if len(text) <= max_digits and _is_uint(text) else None


def _parse_a(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    return (name.strip(), rest.strip() if colon else None)


def _parse_b(value: str) -> tuple[str, int] | None:
    kind, colon, amount_text = value.partition(":")
    amount = _uint(amount_text.strip())
    if not colon or not kind.strip() or amount is None:
        return None
    return kind.strip(), amount


# --------------------------------------------------------------------------------------------
# Serialization helpers


def _check_field(what: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise SdpError(f"{what} must be a non-empty word without blanks, not {value!r}")


def _addrtype_of(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # an FQDN (RFC 8866 section 5.7)


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _typed(lines: list[tuple[str, str]], kinds: str) -> list[str]:
    """The kept lines of ``kinds``, in RFC order by type, each type in its original order."""
    return [f"{k}={v}" for kind in kinds for k, v in lines if k == kind]


def _unknown(lines: list[tuple[str, str]], known: str) -> list[str]:
    return [f"{k}={v}" for k, v in lines if k not in known]


# --------------------------------------------------------------------------------------------
# Helpers for offer/answer


def rtpmap(media: MediaDescription) -> dict[int, tuple[str, int, int]]:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`` as {pt: (encoding, clock, channels)}.

    RFC 8866 section 6.6; channels defaults to 1. Malformed lines are skipped (the format then
    counts as unknown), and only the first mapping of a payload type counts.
    """
    result: dict[int, tuple[str, int, int]] = {}
    for value in media.attribute_values("rtpmap"):
        if value is None:
            continue
        pt_text, _, encoding = value.partition(" ")
        parts = encoding.strip().split("/")
        pt = _uint(pt_text)
        numbers = [_uint(p.strip()) for p in parts[1:]]
        if pt is None or len(parts) not in (2, 3) or not parts[0] or None in numbers:
            continue
        clock, channels = numbers[0], numbers[1] if len(numbers) == 2 else 1
        assert clock is not None and channels is not None
        result.setdefault(pt, (parts[0], clock, channels))
    return result


def fmtp(media: MediaDescription) -> dict[int, str]:
    """``a=fmtp:<pt> <parameters>`` as {pt: parameters} (RFC 8866 section 6.15)."""
    result: dict[int, str] = {}
    for value in media.attribute_values("fmtp"):
        if value is None:
            continue
        pt_text, _, params = value.partition(" ")
        pt = _uint(pt_text)
        if pt is not None:
            result.setdefault(pt, params.strip())
    return result


def direction(
    where: SessionDescription | MediaDescription, media: MediaDescription | None = None
) -> str:
    """The effective direction attribute (RFC 8866 sections 6.7.1-6.7.4, RFC 3264 5.1).

    ``direction(sdp, media)``: the media-level attribute, else the session-level one, else
    "sendrecv". ``direction(sdp)`` or ``direction(media)`` looks at that level only.
    """
    levels: list[list[tuple[str, str | None]]] = []
    if media is not None:
        levels.append(media.attributes)
    levels.append(where.attributes)
    for attributes in levels:
        for key, value in attributes:
            if value is None and key in DIRECTIONS:
                return key
    return "sendrecv"


def connection_address(sdp: SessionDescription, media: MediaDescription) -> str | None:
    """The address the media goes to: media-level c= overrides session-level c= (RFC 8866
    section 5.7). None when neither exists."""
    conn = media.connection or sdp.connection
    return conn.address if conn is not None else None
