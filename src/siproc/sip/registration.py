"""Registration as a client (RFC 3261 section 10), sans-I/O.

Theory of operation: `Registration` builds each REGISTER (same Call-ID, CSeq counting up,
section 10.2) and digests each final response into one `RegistrationResult`:

- `SendAgain`: resend at once (a digest challenge answered, 423 Interval Too Brief raised our
  expiry to Min-Expires (section 10.2.8), or the registrar saw us behind a NAT and the Contact
  must carry the address it saw (RFC 3581 `received`/`rport` in the top Via of the 200)).
- `Registered`: when to refresh (well before expiry).
- `Failed`: a one-line reason and when to try again: the backoff doubles from `retry_min`
  (30 s by default, SIPROC_REGISTER_RETRY) to 15 min, and a rejected password is not retried
  faster than that, so a wrong password is one clear error line per attempt, not a loop of
  noise. The same backoff serves a registrar that cannot be reached at all: a name that does
  not resolve (yet), no answer (Timer F), or a TCP connection that cannot be made
  (`on_transport_error`).

The caller (the phone) sends what `build_request()` returns and feeds back responses, timeouts
and transport errors; it owns the clock and the timer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum

from siproc.sip.auth import DigestSession, challenge_header
from siproc.sip.errors import LocalProtocolError, ParseError
from siproc.sip.headers import message_info, parse_delta_seconds
from siproc.sip.message import Headers, Request, Response
from siproc.sip.uri import NameAddr, SipUri, parse_name_addr_list

log = logging.getLogger(__name__)

RETRY_MIN = 30.0  # seconds before the first retry after a failure
RETRY_MAX = 900.0
REFRESH_MARGIN = 60.0  # refresh this long before expiry, or at half the expiry if shorter


class RegistrationState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


_TRANSITIONS: dict[RegistrationState, frozenset[RegistrationState]] = {
    RegistrationState.IDLE: frozenset({RegistrationState.REGISTERING}),
    RegistrationState.REGISTERING: frozenset(
        {RegistrationState.REGISTERED, RegistrationState.FAILED, RegistrationState.UNREGISTERING}
    ),
    RegistrationState.REGISTERED: frozenset(
        {RegistrationState.REGISTERING, RegistrationState.UNREGISTERING}
    ),
    RegistrationState.FAILED: frozenset(
        {RegistrationState.REGISTERING, RegistrationState.UNREGISTERING}
    ),
    RegistrationState.UNREGISTERING: frozenset({RegistrationState.UNREGISTERED}),
    RegistrationState.UNREGISTERED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SendAgain:
    reason: str


@dataclass(frozen=True, slots=True)
class Registered:
    expires: int
    refresh_at: float


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    retry_at: float | None  # None: unregistering ended (or gave up for good)


@dataclass(frozen=True, slots=True)
class Unregistered:
    status: int


RegistrationResult = SendAgain | Registered | Failed | Unregistered


class Registration:
    """One account's binding at its registrar."""

    def __init__(
        self,
        *,
        registrar: SipUri,
        aor: NameAddr,
        contact: SipUri,
        expires: int,
        call_id: str,
        from_tag: str,
        auth: DigestSession | None,
        rewrite_contact: bool = True,
        retry_min: float = RETRY_MIN,
        instance: str | None = None,
    ) -> None:
        self.registrar = registrar
        self.aor = aor.without_params("tag")
        self.contact = contact
        self.expires = expires
        self.call_id = call_id
        self.from_tag = from_tag
        self.auth = auth
        self.rewrite_contact = rewrite_contact
        if not 0 < retry_min <= RETRY_MAX:
            raise LocalProtocolError(f"registration: retry_min {retry_min} not in (0, {RETRY_MAX}]")
        self.retry_min = retry_min
        # RFC 5626 section 4.1 (and RFC 5627): "+sip.instance" names this user agent instance
        # (a urn:uuid:), so that a registrar tells the bindings of several instances of one
        # account apart, and one instance started again replaces its old binding.
        if instance is not None and not instance.startswith("urn:uuid:"):
            raise LocalProtocolError(f"registration: instance {instance!r} is not a urn:uuid:")
        self.instance = instance
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.failures = 0
        self._auth_retries = 0

    def _set_state(self, new: RegistrationState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"registration: illegal {self.state.value} -> {new.value}")
        log.debug("registration %s: %s -> %s", self.aor.uri, self.state.value, new.value)
        self.state = new

    def start(self) -> None:
        self._set_state(RegistrationState.REGISTERING)

    def stop(self) -> bool:
        """Begin un-registering (Expires: 0); False if there is nothing to remove."""
        was_bound = self.state in (RegistrationState.REGISTERED, RegistrationState.REGISTERING)
        if self.state in (RegistrationState.UNREGISTERING, RegistrationState.UNREGISTERED):
            return False
        if self.state is RegistrationState.IDLE:
            self.state = RegistrationState.UNREGISTERED
            return False
        self._set_state(RegistrationState.UNREGISTERING)
        return was_bound

    def build_request(self) -> Request:
        """The next REGISTER, without Via (the endpoint adds it)."""
        if self.state not in (RegistrationState.REGISTERING, RegistrationState.UNREGISTERING):
            self._set_state(RegistrationState.REGISTERING)
        self.cseq += 1
        expires = 0 if self.state is RegistrationState.UNREGISTERING else self.expires
        # Section 10.2: the Request-URI names the registrar's domain; "the userinfo and '@'
        # components of the SIP URI MUST NOT be present".
        registrar = replace(self.registrar, user=None, password=None, headers=())
        uri = (
            str(registrar.without_params("transport"))
            if registrar.transport == "udp"
            else str(registrar)
        )
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.aor.with_params(tag=self.from_tag)))
        headers.add("To", str(self.aor))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        instance = f';+sip.instance="<{self.instance}>"' if self.instance else ""
        headers.add("Contact", f"<{self.contact}>{instance};expires={expires}")
        headers.add("Expires", str(expires))
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, NOTIFY")
        if self.auth is not None:
            for name, value in self.auth.headers("REGISTER", uri):
                headers.add(name, value)
        return Request("REGISTER", uri, headers)

    def on_response(self, response: Response, now: float) -> RegistrationResult:
        """Digest a final response to our last REGISTER."""
        status = response.status
        if self.state is RegistrationState.UNREGISTERED:
            # A late answer to a REGISTER sent before the un-REGISTER completed (e.g. stop()
            # while the first REGISTER was in flight): nothing is left to change.
            return Unregistered(status)
        if self.state is RegistrationState.UNREGISTERING:
            if status in (401, 407) and self._answer_challenge(response):
                return SendAgain(f"{status} challenge answered")
            self._set_state(RegistrationState.UNREGISTERED)
            return Unregistered(status)
        if status in (401, 407):
            if self._answer_challenge(response):
                return SendAgain(f"{status} challenge answered")
            reason = self.auth.failure if self.auth and self.auth.failure else None
            if self.auth is None:
                reason = f"{status}: the registrar asks for a password; set SIPROC_PASSWORD"
            return self._fail(reason or f"{status} {response.reason}", now)
        if status == 423:
            try:
                minimum = parse_delta_seconds(
                    response.headers.get("Min-Expires") or "", "Min-Expires"
                )
            except ParseError:
                return self._fail("423 Interval Too Brief without a usable Min-Expires", now)
            if minimum <= self.expires:
                return self._fail(
                    f"423 Interval Too Brief although {self.expires} >= {minimum}", now
                )
            self.expires = minimum
            return SendAgain(f"423: expiry raised to Min-Expires {minimum}")
        if 200 <= status < 300:
            if self.auth is not None:
                self.auth.accepted()
            if self.rewrite_contact:
                rewritten = self._nat_contact(response)
                if rewritten is not None:
                    self.contact = rewritten
                    return SendAgain(f"registrar sees us at {rewritten.host}:{rewritten.port}")
            granted = self._granted_expires(response)
            self._set_state(RegistrationState.REGISTERED)
            self.failures = 0
            margin = min(REFRESH_MARGIN, granted / 2)
            return Registered(granted, now + max(granted - margin, 1.0))
        return self._fail(f"{status} {response.reason}".strip(), now)

    def on_timeout(self, now: float) -> RegistrationResult:
        if self.state is RegistrationState.UNREGISTERING:
            self._set_state(RegistrationState.UNREGISTERED)
            return Unregistered(408)
        return self._fail("no answer from the registrar (timeout)", now)

    def on_transport_error(self, reason: str, now: float) -> RegistrationResult:
        """The registrar could not be reached: a refused or broken connection, or, before a
        REGISTER could even be built for it, a name that does not resolve (RFC 3263 section
        4.3: no server left to try). Failed, retried with the backoff."""
        if self.state is RegistrationState.UNREGISTERED:
            return Unregistered(503)
        if self.state is RegistrationState.UNREGISTERING:
            self._set_state(RegistrationState.UNREGISTERED)
            return Unregistered(503)
        if self.state in (RegistrationState.IDLE, RegistrationState.REGISTERED):
            self._set_state(RegistrationState.REGISTERING)  # a refresh that could not go out
        return self._fail(f"cannot reach the registrar: {reason}", now)

    def _answer_challenge(self, response: Response) -> bool:
        if self.auth is None:
            return False
        return self.auth.authorize(
            response.status, response.headers.get_raw(challenge_header(response.status))
        )

    def _fail(self, reason: str, now: float) -> Failed:
        self._set_state(RegistrationState.FAILED)
        self.failures += 1
        delay = min(self.retry_min * 2 ** min(self.failures - 1, 32), RETRY_MAX)
        return Failed(reason, now + delay)

    def _granted_expires(self, response: Response) -> int:
        for value in response.headers.get_raw("Contact"):
            try:
                contacts = parse_name_addr_list(value)
            except ParseError:
                continue
            for contact in contacts:
                if isinstance(contact.uri, SipUri) and contact.uri.matches(self.contact):
                    granted = _delta_seconds(contact.param("expires"))
                    if granted is not None:
                        return granted
        granted = _delta_seconds(response.headers.get("Expires"))
        return self.expires if granted is None else granted

    def _nat_contact(self, response: Response) -> SipUri | None:
        """The Contact the registrar can reach, if it differs from ours (RFC 3581 section 4)."""
        try:
            via = message_info(response).top_via
        except ParseError:
            return None
        host = via.received or self.contact.host
        rport = via.rport
        # A Contact without a port means the transport's default (RFC 3261 section 19.1.2).
        ours = self.contact.port or (5061 if self.contact.transport == "tls" else 5060)
        port = ours
        if rport and rport.isascii() and rport.isdigit() and len(rport) <= 5:
            port = int(rport) if 0 < int(rport) < 65536 else ours
        if host == self.contact.host and port == ours:
            return None
        return replace(self.contact, host=host, port=port)


def _delta_seconds(text: str | None) -> int | None:
    """An expires value (RFC 3261 section 20.19: delta-seconds, at most 2**32-1), or None when
    absent or malformed (a registrar's 5000-digit number or "²" is ignored, not a crash)."""
    if text is None:
        return None
    try:
        return parse_delta_seconds(text, "expires")
    except ParseError:
        return None
