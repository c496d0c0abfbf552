"""Types shared by the transaction state machines (RFC 3261 section 17, RFC 6026).

Import them from `siproc.sip.transaction`, which explains how the machines work. This module
holds what both sides need: timer values, destinations, the outputs (a `Send` or an event for
the transaction user), the states, the transaction keys of sections 17.1.3 and 17.2.3, the ACK of
section 17.1.1.3 and `TransactionBase`, the timer bookkeeping and the one `_set_state()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, TypeGuard

from siproc.sip.errors import LocalProtocolError, ParseError
from siproc.sip.headers import BRANCH_MAGIC_COOKIE, message_info
from siproc.sip.message import Headers, Request, Response

if TYPE_CHECKING:
    from siproc.sip.client_transaction import ClientTransaction
    from siproc.sip.server_transaction import ServerTransaction

logger = logging.getLogger(__name__)

TRANSPORTS = frozenset({"udp", "tcp", "tls"})
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls"})  # RFC 3261 section 18: no retransmissions
ACK_MAX_FORWARDS = "70"  # RFC 3261 section 8.1.1.6, used for the ACK of section 17.1.1.3

# Timer names: the letters of RFC 3261 table 4 and RFC 6026 section 8.11.
TIMER_A = "A"  # INVITE request retransmission (17.1.1.2)
TIMER_B = "B"  # INVITE client timeout (17.1.1.2)
TIMER_D = "D"  # INVITE client wait for response retransmissions (17.1.1.2)
TIMER_E = "E"  # non-INVITE request retransmission (17.1.2.2)
TIMER_F = "F"  # non-INVITE client timeout (17.1.2.2)
TIMER_G = "G"  # INVITE final response retransmission (17.2.1)
TIMER_H = "H"  # INVITE server wait for ACK (17.2.1)
TIMER_I = "I"  # INVITE server wait for ACK retransmissions (17.2.1)
TIMER_J = "J"  # non-INVITE server wait for request retransmissions (17.2.2)
TIMER_K = "K"  # non-INVITE client wait for response retransmissions (17.1.2.2)
TIMER_L = "L"  # INVITE server wait in Accepted (RFC 6026 section 7.1)
TIMER_M = "M"  # INVITE client wait in Accepted (RFC 6026 section 7.2)
TIMER_CANCELLED = "cancelled"  # INVITE client: no final 64*T1 after our CANCEL (9.1)
RETRANSMIT_TIMERS = frozenset({TIMER_A, TIMER_E, TIMER_G})


@dataclass(frozen=True, slots=True)
class Timers:
    """T1, T2, T4 of RFC 3261 section 17.1.1.1 and table 4, and Timer D.

    Timer D is "> 32 s for UDP" (table 4), not a multiple of T1, so it has its own field.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise LocalProtocolError(f"timers need 0 < T1 <= T2, got T1={self.t1} T2={self.t2}")
        if self.t4 <= 0 or self.d < 0:
            raise LocalProtocolError(f"timers need T4 > 0 and D >= 0, got {self.t4}, {self.d}")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


DEFAULT_TIMERS = Timers()


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a transaction's messages go: transport (lower case), host and port.

    ``server_name``, for TLS only, is the name the server's certificate must carry (RFC 5922
    section 4: the host of the URI that was resolved); empty: the host (an IP address) itself.
    It takes no part in equality: a destination is its transport address."""

    transport: str
    host: str
    port: int
    server_name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise LocalProtocolError(f"unknown transport {self.transport!r}")
        if not self.host:
            raise LocalProtocolError("a destination needs a host")
        if not 0 < self.port < 65536:
            raise LocalProtocolError(f"port {self.port} out of range")

    @property
    def reliable(self) -> bool:
        """True for stream transports, which retransmit by themselves (RFC 3261 section 17)."""
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to pass to the transport for `destination`."""

    data: bytes
    destination: Destination

    def __post_init__(self) -> None:
        if not self.data:
            raise LocalProtocolError("Send with no data")


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response the client transaction passes up to the TU (RFC 3261 section 17.1)."""

    transaction: ClientTransaction
    response: Response

    def __post_init__(self) -> None:
        if not 100 <= self.response.status <= 699:
            raise LocalProtocolError(f"status {self.response.status} out of range")


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B or F (client: the TU reports 408) or Timer H (server: no ACK) fired."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated: the endpoint removes it from its table."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for a non-2xx final response arrived (absorbed; informational)."""

    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class AckToTU:
    """An ACK matched an INVITE server transaction in Accepted: it is the dialog's.

    RFC 6026 figure 7 ("ACK / to TU"). It happens only when a peer reuses the INVITE's branch
    for the ACK of a 2xx (RFC 3261 section 17.1.1.3 says it must not) or under the RFC 2543
    matching rules; the TU handles it like any ACK for a 2xx.
    """

    transaction: ServerTransaction
    request: Request

    def __post_init__(self) -> None:
        if self.request.method != "ACK":
            raise LocalProtocolError(f"AckToTU with a {self.request.method} request")


Output = (
    Send | ResponseReceived | TransactionTimeout | TransactionTerminated | AckReceived | AckToTU
)


class TransactionState(Enum):
    """States of RFC 3261 figures 5 to 8 and RFC 6026's Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


Transitions = dict[TransactionState, frozenset[TransactionState]]


# -- keys and the ACK (RFC 3261 sections 17.1.1.3, 17.1.3, 17.2.3) -----------------------------


def has_rfc3261_branch(branch: str | None) -> TypeGuard[str]:
    """True when `branch` starts with the magic cookie and has more after it (section 8.1.1.7).

    A bare cookie (RFC 4475 section 3.2.1) is treated as an RFC 2543 branch.
    """
    return (
        branch is not None
        and branch.startswith(BRANCH_MAGIC_COOKIE)
        and len(branch) > len(BRANCH_MAGIC_COOKIE)
    )


def server_key(request: Request) -> tuple[str, ...]:
    """The key that matches `request` to a server transaction (RFC 3261 section 17.2.3).

    With an RFC 3261 branch: (branch, sent-by host lower-cased, sent-by port or '', method),
    where an ACK uses INVITE (the ACK of a non-2xx belongs to the INVITE transaction) and CANCEL
    keeps its own method (it is a transaction of its own).

    Otherwise the RFC 2543 rules: (Request-URI, To tag, From tag, Call-ID, CSeq number, top Via
    as received, method as above). For INVITE and ACK the To tag is left empty: RFC 3261
    compares the ACK's To tag with that of the response sent, which the INVITE did not carry,
    so a key built from the request alone could never match the ACK with it.
    Raises `ParseError` when the mandatory headers cannot be parsed.
    """
    info = message_info(request)
    via = info.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if has_rfc3261_branch(branch):
        port = "" if via.port is None else str(via.port)
        return (branch, via.host.lower(), port, method)
    to_tag = "" if method == "INVITE" else info.to.tag or ""
    return (
        request.uri,
        to_tag,
        info.from_.tag or "",
        info.call_id,
        str(info.cseq.number),
        request.headers.get_all("Via")[0],
        method,
    )


def client_key(response: Response) -> tuple[str, str]:
    """(top Via branch, CSeq method) of a response (RFC 3261 section 17.1.3).

    Raises `ParseError` when the mandatory headers cannot be parsed or the top Via has no branch.
    """
    info = message_info(response)
    branch = info.top_via.branch
    if not branch:
        raise ParseError("response top Via has no branch")
    return (branch, info.cseq.method)


def make_ack_for_non_2xx(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 (RFC 3261 section 17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number come from the INVITE, To from the response
    (with its tag); only the INVITE's top Via; its Route headers; no body.
    """
    if request.method != "INVITE":
        raise LocalProtocolError(f"an ACK acknowledges an INVITE, not a {request.method}")
    if not 300 <= response.status <= 699:
        raise LocalProtocolError(f"the transaction ACKs only 300-699, not {response.status}")
    info = message_info(request)
    to = response.headers.get("To")
    if to is None:
        raise ParseError("response without a To header")
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    headers.add("Max-Forwards", ACK_MAX_FORWARDS)
    for route in request.headers.get_raw("Route"):
        headers.add("Route", route)
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", info.call_id)
    headers.add("CSeq", f"{info.cseq.number} ACK")
    headers.add("Content-Length", "0")
    return Request("ACK", request.uri, headers)


# -- timers and states shared by the four machines ---------------------------------------------


class TransactionBase:
    """Timer bookkeeping and the state setter shared by the four machines."""

    _TRANSITIONS: ClassVar[Transitions] = {}
    _KIND: ClassVar[str] = "transaction"

    def __init__(self, state: TransactionState, timers: Timers, reliable: bool) -> None:
        self.state = state
        self.timers = timers
        self._reliable = reliable
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._log_id = ""

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def next_deadline(self) -> float | None:
        """When `handle_timer()` next has something to do, or None."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Output]:
        """Fire every timer due at `now`, earliest first (a timeout before a retransmission)."""
        out: list[Output] = []
        while self._deadlines and not self.terminated:
            name, at = min(
                self._deadlines.items(), key=lambda item: (item[1], item[0] in RETRANSMIT_TIMERS)
            )
            if at > now:
                break
            del self._deadlines[name]
            out += self._fire(name, at, now)
        return out

    def _fire(self, name: str, at: float, now: float) -> list[Output]:
        raise NotImplementedError

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _arm_retransmit(self, name: str, now: float) -> None:
        """Start retransmission timer `name` at T1, on unreliable transports only."""
        if not self._reliable:
            self._intervals[name] = self.timers.t1
            self._deadlines[name] = now + self.timers.t1

    def _rearm_retransmit(self, name: str, at: float, now: float, interval: float) -> None:
        """Re-arm `name`, which was due at `at`, for `interval` later (from `now` if late)."""
        self._intervals[name] = interval
        due = at + interval
        self._deadlines[name] = due if due > now else now + interval

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _linger(self, name: str, unreliable_duration: float, now: float) -> None:
        """Arm a wait-for-retransmissions timer: zero on a reliable transport."""
        self._arm(name, now if self._reliable else now + unreliable_duration)

    def _set_state(self, new: TransactionState) -> None:
        old = self.state
        if new not in self._TRANSITIONS.get(old, frozenset()):
            raise LocalProtocolError(
                f"{self._KIND} transaction {self._log_id}: illegal {old.value} -> {new.value}"
            )
        self.state = new
        logger.debug("%s transaction %s: %s -> %s", self._KIND, self._log_id, old.value, new.value)
        if new is TransactionState.TERMINATED:
            self._deadlines.clear()
