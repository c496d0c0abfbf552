"""SIP URIs and name-addr values (RFC 3261 sections 19.1 and 25.1, RFC 2396 escapes).

A `SipUri` keeps the user part escaped exactly as received: comparing and re-sending it must not
change a byte (RFC 3261 section 19.1.4 compares unescaped, which `SipUri.matches` does). URIs of
other schemes (`tel:`, `mailto:`, `soap.beep:`) parse to `AbsoluteUri`: they may appear in
headers (RFC 4475 section 3.3.4) but a Request-URI of such a scheme is answered 416.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote

from siproc.sip.errors import ParseError

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# RFC 3261 section 25.1: token and the characters of user / password / params / headers.
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
_USER_CHARS = frozenset(_UNRESERVED + "%&=+$,;?/")
_PASSWORD_CHARS = frozenset(_UNRESERVED + "%&=+$,")
_PARAM_CHARS = frozenset(_UNRESERVED + "%[]/:&+$")
_HEADER_CHARS = frozenset(_UNRESERVED + "%[]/?:+$")
_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?"
)
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# The character checks as one regular expression each, not a Python loop per character (a
# few thousand characters are checked per call set up). \s of a str pattern is exactly
# str.isspace().
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # TOKEN_CHARS
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+")  # TOKEN_CHARS and []:
_DISPLAY_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\s]*")  # TOKEN_CHARS and whitespace
_NOT_IN_URI_RE = re.compile(r'[\s<>"]')
_NOT_IN: dict[frozenset[str], re.Pattern[str]] = {}


def _first_not_in(allowed: frozenset[str]) -> re.Pattern[str]:
    """A pattern that finds the first character not in `allowed` (made once per set)."""
    pattern = _NOT_IN.get(allowed)
    if pattern is None:
        pattern = re.compile(f"[^{re.escape(''.join(sorted(allowed)))}]")
        _NOT_IN[allowed] = pattern
    return pattern


Params = tuple[tuple[str, str | None], ...]


def _check_chars(text: str, allowed: frozenset[str], what: str) -> None:
    bad = _first_not_in(allowed).search(text)
    if bad is not None:
        raise ParseError(f"invalid character {bad.group()!r} in {what} {text!r}")
    if _ESCAPE_RE.search(text):
        raise ParseError(f"broken %-escape in {what} {text!r}")


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` (RFC 3261 section 25.1 hostport); IPv6 references keep no brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ParseError(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
        if not _HOSTNAME_RE.fullmatch(host):
            raise ParseError(f"invalid host {host!r}")
    if not rest:
        return host, None
    # port = 1*DIGIT, ASCII digits only (RFC 3261 section 25.1, RFC 5234 appendix B.1).
    digits = rest[1:]
    if not rest.startswith(":") or not (digits.isascii() and digits.isdigit()) or len(rest) > 6:
        raise ParseError(f"invalid port in {text!r}")
    port = int(digits)
    if not 0 < port < 65536:
        raise ParseError(f"port {port} out of range in {text!r}")
    return host, port


def format_host(host: str) -> str:
    """A host for a URI or Via: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def parse_params(text: str, *, allowed: frozenset[str] = _PARAM_CHARS) -> Params:
    """Parse `;name[=value]` pairs (the leading `;` is already gone). Names are lowercased."""
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not name:
            raise ParseError(f"empty parameter in {text!r}")
        _check_chars(name, allowed, "parameter name")
        if eq:
            value = value.strip()
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise ParseError(f"unterminated quoted parameter value in {text!r}")
            else:
                _check_chars(value, allowed, "parameter value")
            params.append((name.lower(), value))
        else:
            params.append((name.lower(), None))
    return tuple(params)


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: Params, name: str) -> str | None:
    """The value of parameter `name` ('' for a flag without value), or None when absent."""
    for n, v in params:
        if n == name:
            return "" if v is None else v
    return None


def set_param(params: Params, name: str, value: str | None) -> Params:
    """A copy of `params` with `name` set (appended if new, replaced in place otherwise)."""
    if any(n == name for n, _ in params):
        return tuple((n, value if n == name else v) for n, v in params)
    return (*params, (name, value))


@dataclass(frozen=True, slots=True)
class SipUri:
    """A `sip:` or `sips:` URI (RFC 3261 section 19.1.1)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in ("sip", "sips"):
            raise ParseError(f"SipUri scheme must be sip or sips, not {self.scheme!r}")
        if not self.host:
            raise ParseError("a SIP URI needs a host")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def transport(self) -> str:
        """The transport this URI asks for, lowercase (RFC 3263 section 4.1 defaults): a
        sips: URI is always TLS (over TCP; RFC 5630 section 3.1.3), whatever its parameter."""
        value = (self.param("transport") or "").lower()
        if self.scheme == "sips":
            return "tls"
        return value or "udp"

    def with_params(self, **changes: str | None) -> SipUri:
        params = self.params
        for name, value in changes.items():
            params = set_param(params, name, value)
        return replace(self, params=params)

    def without_params(self, *names: str) -> SipUri:
        return replace(self, params=tuple((n, v) for n, v in self.params if n not in names))

    @property
    def address_of_record(self) -> str:
        """scheme:user@host, the form used as a key and in To/From of REGISTER."""
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{format_host(self.host)}"

    def matches(self, other: SipUri) -> bool:
        """URI equality of RFC 3261 section 19.1.4 (simplified: user, host, port, transport)."""
        return (
            self.scheme == other.scheme
            and unquote(self.user or "") == unquote(other.user or "")
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.param("transport") == other.param("transport")
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept as text (RFC 3261 section 19.1.6)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI; `sip:`/`sips:` strictly, anything else as an `AbsoluteUri`."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise ParseError(f"not a URI: {text!r}")
    if _NOT_IN_URI_RE.search(text):
        raise ParseError(f'whitespace or <>" inside URI {text!r}')
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not rest:
            raise ParseError(f"empty {scheme}: URI")
        return AbsoluteUri(scheme, rest)
    return _parse_sip_uri(scheme, rest, text)


def parse_sip_uri(text: str) -> SipUri:
    """Parse a URI that must be sip: or sips:."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise ParseError(f"not a sip: or sips: URI: {text!r}")
    return uri


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    # The user part may hold ? ; , / (RFC 4475 section 3.1.1.2) but params and URI headers may
    # not hold @, so the last @ ends the userinfo.
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            _check_chars(pw, _PASSWORD_CHARS, "password")
            password = pw
        if not user:
            raise ParseError(f"empty user part in {text!r}")
        _check_chars(user, _USER_CHARS, "user part")
    rest, qmark, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = parse_host_port(hostport)
    params = parse_params(param_text) if semi else ()
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in header_text.split("&"):
            name, _, value = item.partition("=")
            if not name:
                raise ParseError(f"empty URI header in {text!r}")
            _check_chars(name, _HEADER_CHARS, "URI header name")
            _check_chars(value, _HEADER_CHARS, "URI header value")
            headers.append((name, value))
    return SipUri(scheme, host, user, password, port, params, tuple(headers))


# -- name-addr / addr-spec (RFC 3261 section 20.10 and 25.1) -----------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_params(self, **changes: str | None) -> NameAddr:
        params = self.params
        for name, value in changes.items():
            params = set_param(params, name, value)
        return replace(self, params=params)

    def without_params(self, *names: str) -> NameAddr:
        return replace(self, params=tuple((n, v) for n, v in self.params if n not in names))

    def __str__(self) -> str:
        name = ""
        if self.display_name:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}" '
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """Parse one name-addr or addr-spec with header params (RFC 3261 section 20.10).

    In the addr-spec form (no angle brackets) every `;param` belongs to the header, not the URI
    (RFC 3261 section 20: "the URI cannot contain commas, semicolons, or question marks"), and
    RFC 4475 section 3.1.2.13 is read that way too.
    """
    text = text.strip()
    if not text:
        raise ParseError("empty name-addr")
    display: str | None = None
    rest = text
    if text.startswith('"'):
        display, rest = _read_quoted(text)
        rest = rest.lstrip()
        if not rest.startswith("<"):
            raise ParseError(f"display name not followed by <URI> in {text!r}")
    if "<" in rest:
        lt = rest.index("<")
        if display is None:
            name = rest[:lt].strip()
            if name:
                if not _DISPLAY_NAME_RE.fullmatch(name):
                    raise ParseError(f"unquoted display name with special characters: {name!r}")
                display = " ".join(name.split())
        gt = rest.find(">", lt)
        if gt < 0:
            raise ParseError(f"missing '>' in {text!r}")
        uri = parse_uri(rest[lt + 1 : gt].strip())
        tail = rest[gt + 1 :].strip()
    else:
        uri_text, semi, tail = rest.partition(";")
        uri = parse_uri(uri_text.strip())
        if isinstance(uri, SipUri) and uri.headers:
            raise ParseError(f"URI headers need angle brackets in {text!r}")
        tail = semi + tail
    params: Params = ()
    if tail:
        if not tail.startswith(";"):
            raise ParseError(f"unexpected text {tail!r} after URI in {text!r}")
        params = parse_header_params(tail[1:])
    return NameAddr(uri, display, params)


def parse_header_params(text: str) -> Params:
    """Parse `;`-separated generic-params of a header (RFC 3261 section 25.1): tokens or quoted."""
    params: list[tuple[str, str | None]] = []
    for item in _split_outside_quotes(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise ParseError(f"invalid header parameter {item!r}")
        value = value.strip()
        if eq:
            if value.startswith('"'):
                _read_quoted(value)
            elif not _PARAM_VALUE_RE.fullmatch(value):
                raise ParseError(f"invalid header parameter value {item!r}")
            params.append((name.lower(), value))
        else:
            params.append((name.lower(), None))
    return tuple(params)


def _read_quoted(text: str) -> tuple[str, str]:
    """Read a quoted-string at the start of `text`; return (unescaped content, rest)."""
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), text[i + 1 :]
        out.append(c)
        i += 1
    raise ParseError(f"unterminated quoted string in {text!r}")


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text and "<" not in text:  # the common case: nothing to step over
        return text.split(sep)
    parts: list[str] = []
    depth_quote = False
    angle = False
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if depth_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                depth_quote = False
        elif c == '"':
            depth_quote = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if depth_quote:
        raise ParseError(f"unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


def split_list(text: str) -> list[str]:
    """Split a comma-separated header value at commas outside quotes and angle brackets."""
    return [p.strip() for p in _split_outside_quotes(text, ",") if p.strip()]


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Parse a Contact/Route/Record-Route value that may list several entries."""
    return [parse_name_addr(item) for item in split_list(text)]
