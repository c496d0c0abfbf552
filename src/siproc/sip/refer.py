"""REFER and its implicit subscription, the pure parts (RFC 3515, RFC 3892, RFC 3420, RFC 6665).

Theory of operation: a blind transfer (RFC 5589 section 6) is one in-dialog REFER whose
``Refer-To`` names the transfer target. The recipient (the transferee) answers 202 Accepted,
which creates an implicit subscription to the ``refer`` event package in the same dialog
(RFC 3515 section 2.4.4); it then reports the progress of its new call in NOTIFY requests whose
body is a ``message/sipfrag`` (RFC 3420) holding the status line of the latest response, e.g.
``SIP/2.0 200 OK``. The NOTIFY that carries a final status (>= 200) ends the subscription
(``Subscription-State: terminated``, RFC 3515 section 2.4.7).

This module builds and parses those headers and bodies; the call layer
(`siproc.calls.transfer`) runs the two roles. Parsers raise `ParseError`, and
`refer_target()` raises `RemoteProtocolError` with the status to answer a bad REFER with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import parse_delta_seconds
from siproc.sip.message import Headers
from siproc.sip.uri import NameAddr, SipUri, parse_header_params, parse_name_addr

#: The event package of the implicit subscription (RFC 3515 section 3).
REFER_EVENT = "refer"
#: Content-Type of NOTIFY bodies (RFC 3515 section 2.4.5, RFC 3420 section 2).
SIPFRAG_CONTENT_TYPE = "message/sipfrag;version=2.0"
SIPFRAG_MEDIA_TYPE = "message/sipfrag"
#: How long the implicit subscription lasts, in seconds, when we are the notifier. RFC 3515
#: section 2.4.4 leaves the duration to the notifier; a blind transfer is over well before.
REFER_SUBSCRIPTION_EXPIRES = 60
#: How long the transferor waits for the next NOTIFY before giving up on the transfer: 64*T1,
#: the time any non-INVITE transaction may take (RFC 3261 section 17.1.2.2, Timer F).
NOTIFY_WAIT = 32.0

_STATUS_LINE_RE = re.compile(r"SIP/2\.0[ \t]+([1-6][0-9]{2})(?:[ \t]+([^\r\n]*))?", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


# -- Refer-To and Referred-By ------------------------------------------------------------------


def format_refer_to(target: SipUri | NameAddr) -> str:
    """The Refer-To value: always a name-addr in angle brackets (RFC 3515 section 2.1).

    RFC 3515 requires the brackets when the URI has parameters or headers (a URI param would
    otherwise be read as a header param); using them always is simplest and always correct.
    """
    if isinstance(target, SipUri):
        return f"<{target}>"
    return str(target)


def parse_refer_to(value: str) -> NameAddr:
    """Parse one Refer-To value (RFC 3515 section 2.1): a name-addr or addr-spec with params."""
    return parse_name_addr(value)


def parse_referred_by(value: str) -> NameAddr:
    """Parse a Referred-By value (RFC 3892 section 3): a name-addr with optional params."""
    return parse_name_addr(value)


def refer_target(headers: Headers) -> SipUri:
    """The SIP URI a received REFER asks us to call, or the error to answer the REFER with.

    - no Refer-To, or more than one (RFC 3515 section 2.4.1: exactly one) -> 400;
    - a Refer-To that does not parse -> 400;
    - a scheme other than sip/sips -> 416 Unsupported URI Scheme (RFC 3261 section 21.4.14);
    - a ``method`` other than INVITE in the URI (RFC 3515 section 2.1) -> 501: we only call.

    URI headers (``?Replaces=...``, used for attended transfer) and the ``method`` parameter
    are removed: the target is called with a plain INVITE.
    """
    values = headers.get_raw("Refer-To")
    if not values:
        raise RemoteProtocolError(400, "Bad Request (missing Refer-To)")
    if len(values) > 1:
        raise RemoteProtocolError(400, "Bad Request (more than one Refer-To)")
    try:
        target = parse_refer_to(values[0])
    except ParseError as exc:
        raise RemoteProtocolError(400, f"Bad Request (Refer-To: {str(exc)[:80]})") from None
    uri = target.uri
    if not isinstance(uri, SipUri):
        raise RemoteProtocolError(416, f"Unsupported URI Scheme ({uri.scheme}: in Refer-To)")
    method = uri.param("method")
    if method is not None and method.upper() != "INVITE":
        raise RemoteProtocolError(501, f"Not Implemented (Refer-To method={method[:20]})")
    return replace(uri, headers=()).without_params("method")


# -- message/sipfrag -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sipfrag:
    """The status line of a ``message/sipfrag`` NOTIFY body (RFC 3420, RFC 3515 section 2.4.5)."""

    status: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise ValueError(f"status must be 100-699, not {self.status}")
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError("reason phrase contains a line break")

    @property
    def final(self) -> bool:
        return self.status >= 200

    def serialize(self) -> bytes:
        """The body: the status line and its CRLF (RFC 3420 section 2: a fragment of a SIP
        message; a lone start line is a valid one). Some peers (baresip) insist on a reason
        phrase, so an empty one is sent as the status code's usual phrase or ``Unknown``."""
        return f"SIP/2.0 {self.status} {self.reason or 'Unknown'}\r\n".encode()


def parse_sipfrag(body: bytes) -> Sipfrag:
    """The status line at the start of a ``message/sipfrag`` body (RFC 3420 section 2).

    Leading blank lines are skipped; headers after the status line are ignored. Raises
    ParseError for a body that does not start with a SIP/2.0 status line.
    """
    text = body.decode("utf-8", "replace").lstrip("\r\n")
    first = text.split("\n", 1)[0].rstrip("\r")
    match = _STATUS_LINE_RE.fullmatch(first.strip())
    if match is None:
        raise ParseError(f"sipfrag body does not start with a SIP/2.0 status line: {first[:60]!r}")
    return Sipfrag(int(match.group(1)), (match.group(2) or "").strip())


# -- Event and Subscription-State --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventHeader:
    """``Event: refer;id=93809824`` (RFC 6665 section 8.2.1, RFC 3515 section 2.4.6)."""

    package: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not _TOKEN_RE.fullmatch(self.package):
            raise ValueError(f"bad event package {self.package!r}")
        if self.id is not None and not _TOKEN_RE.fullmatch(self.id):
            raise ValueError(f"bad event id {self.id!r}")

    def __str__(self) -> str:
        return self.package if self.id is None else f"{self.package};id={self.id}"


def parse_event(value: str) -> EventHeader:
    """Parse an Event header value; the package name is case-insensitive (RFC 6665 8.2.1)."""
    package, _, rest = value.strip().partition(";")
    package = package.strip().lower()
    if not _TOKEN_RE.fullmatch(package):
        raise ParseError(f"bad Event header {value[:60]!r}")
    event_id = None
    if rest:
        params = parse_header_params(rest)
        for name, param_value in params:
            if name.lower() == "id":
                event_id = param_value
    if event_id is not None and not _TOKEN_RE.fullmatch(event_id):
        raise ParseError(f"bad Event id in {value[:60]!r}")
    return EventHeader(package, event_id)


def refer_event(refer_cseq: int | None = None) -> EventHeader:
    """The Event header of NOTIFYs for a REFER: ``refer;id=<the REFER's CSeq number>``.

    RFC 3515 section 2.4.6: the id is needed only when several REFERs share a dialog; it is
    always allowed, and every peer we know accepts it.
    """
    return EventHeader(REFER_EVENT, None if refer_cseq is None else str(refer_cseq))


SUBSCRIPTION_STATES = ("active", "pending", "terminated")


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """``Subscription-State`` (RFC 6665 section 8.2.3): state, expires, reason."""

    state: str
    expires: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if not _TOKEN_RE.fullmatch(self.state):
            raise ValueError(f"bad subscription state {self.state!r}")
        if self.reason is not None and not _TOKEN_RE.fullmatch(self.reason):
            raise ValueError(f"bad subscription reason {self.reason!r}")
        if self.expires is not None and self.expires < 0:
            raise ValueError("expires must not be negative")

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def __str__(self) -> str:
        out = self.state
        if self.reason is not None:
            out += f";reason={self.reason}"
        if self.expires is not None:
            out += f";expires={self.expires}"
        return out


def parse_subscription_state(value: str) -> SubscriptionState:
    """Parse a Subscription-State value. An unknown state is kept as is: RFC 6665 section
    8.2.3 lets new values appear, and the caller treats any state but terminated as alive."""
    state, _, rest = value.strip().partition(";")
    state = state.strip().lower()
    if not _TOKEN_RE.fullmatch(state):
        raise ParseError(f"bad Subscription-State {value[:60]!r}")
    expires: int | None = None
    reason: str | None = None
    if rest:
        for name, param_value in parse_header_params(rest):
            key = name.lower()
            if key == "expires" and param_value is not None:
                expires = parse_delta_seconds(param_value, "Subscription-State expires")
            elif key == "reason" and param_value is not None:
                if not _TOKEN_RE.fullmatch(param_value):
                    raise ParseError(f"bad Subscription-State reason {param_value[:30]!r}")
                reason = param_value.lower()
    return SubscriptionState(state, expires, reason)


def active(expires: int = REFER_SUBSCRIPTION_EXPIRES) -> SubscriptionState:
    return SubscriptionState("active", expires=expires)


def terminated(reason: str = "noresource") -> SubscriptionState:
    """The state of the last NOTIFY of a REFER subscription: RFC 3515 section 2.4.7 uses
    ``reason=noresource`` once the referenced request has its final response."""
    return SubscriptionState("terminated", reason=reason)
