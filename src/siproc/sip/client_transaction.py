"""Client transactions: RFC 3261 section 17.1 with RFC 6026 section 7.2.

Import from `siproc.sip.transaction`, whose docstring explains the machines. A client
transaction sends its request (`start()`), retransmits it on unreliable transports (Timer A or
E), passes responses up to the TU and gives up after 64*T1 without a final one (Timer B or F).
"""

from __future__ import annotations

from typing import ClassVar

from siproc.sip.errors import LocalProtocolError, ParseError
from siproc.sip.headers import make_response, message_info
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction_common import (
    DEFAULT_TIMERS,
    TIMER_A,
    TIMER_B,
    TIMER_CANCELLED,
    TIMER_D,
    TIMER_E,
    TIMER_F,
    TIMER_K,
    TIMER_M,
    Destination,
    Output,
    ResponseReceived,
    Send,
    Timers,
    TransactionBase,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    Transitions,
    client_key,
    has_rfc3261_branch,
    make_ack_for_non_2xx,
)

_S = TransactionState


class ClientTransaction(TransactionBase):
    """Common part of the client machines; build one with `create_client_transaction()`."""

    _RETRANSMIT: ClassVar[str]
    _TIMEOUT: ClassVar[str]

    def __init__(
        self,
        request: Request,
        destination: Destination,
        timers: Timers,
        branch: str,
        state: TransactionState,
    ) -> None:
        super().__init__(state, timers, destination.reliable)
        self.request = request
        self.destination = destination
        self.branch = branch
        self.method = request.method
        self.key: tuple[str, str] = (branch, request.method)
        self._log_id = branch
        self._data = serialize(request)
        self._started = False

    def start(self, now: float) -> list[Output]:
        """Send the request and arm the retransmission (A or E) and timeout (B or F) timers."""
        if self._started:
            raise LocalProtocolError(f"client transaction {self.branch} started twice")
        self._started = True
        self._arm(self._TIMEOUT, now + self.timers.timeout)
        self._arm_retransmit(self._RETRANSMIT, now)
        return [Send(self._data, self.destination)]

    def on_response(self, response: Response, now: float) -> list[Output]:
        """Feed a response whose `client_key()` is this transaction's key."""
        if not self._started:
            raise LocalProtocolError(f"client transaction {self.branch}: response before start()")
        if client_key(response) != self.key:
            raise LocalProtocolError(
                f"response for {client_key(response)} routed to transaction {self.key}"
            )
        if self.terminated:
            return []
        return self._on_response(response, now)

    def on_transport_error(self, reason: str) -> list[Output]:
        """The transport could not deliver the request (a refused or broken connection).
        RFC 3261 sections 8.1.3.1 and 17.1.4: the TU treats it as a 503, so a 503 built here
        goes up, and the transaction ends (no ACK: there is no way to the server). Nothing
        happens once a final response arrived or the transaction ended."""
        if not self._started or self.state not in (_S.CALLING, _S.TRYING, _S.PROCEEDING):
            return []
        response = make_response(
            self.request, 503, f"Service Unavailable ({reason})"[:200], to_tag=None
        )
        return [ResponseReceived(self, response), *self._terminate()]

    def _on_response(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError

    def _retransmit(self, at: float, now: float, interval: float) -> list[Output]:
        self._rearm_retransmit(self._RETRANSMIT, at, now, interval)
        return [Send(self._data, self.destination)]

    def _terminate(self) -> list[Output]:
        self._set_state(_S.TERMINATED)
        return [TransactionTerminated(self)]

    def _timeout(self) -> list[Output]:
        return [TransactionTimeout(self), *self._terminate()]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.1 (figure 5) with RFC 6026 section 7.2's Accepted state."""

    _KIND = "INVITE client"
    _RETRANSMIT = TIMER_A
    _TIMEOUT = TIMER_B
    _TRANSITIONS: ClassVar[Transitions] = {
        _S.CALLING: frozenset({_S.PROCEEDING, _S.COMPLETED, _S.ACCEPTED, _S.TERMINATED}),
        _S.PROCEEDING: frozenset({_S.COMPLETED, _S.ACCEPTED, _S.TERMINATED}),
        _S.COMPLETED: frozenset({_S.TERMINATED}),
        _S.ACCEPTED: frozenset({_S.TERMINATED}),
    }

    def __init__(
        self, request: Request, destination: Destination, timers: Timers, branch: str
    ) -> None:
        super().__init__(request, destination, timers, branch, _S.CALLING)
        self._ack_data = b""

    def cancel_sent(self, now: float) -> None:
        """Our CANCEL for this INVITE went out. RFC 3261 section 9.1: with no final response
        64*T1 later, the transaction is over (a timeout to the TU); without this, a callee that
        sent 180 and then nothing would hold the transaction for ever (Timer B ends with the
        first provisional response)."""
        if self.state in (_S.CALLING, _S.PROCEEDING):
            self._arm(TIMER_CANCELLED, now + self.timers.timeout)

    def _on_response(self, response: Response, now: float) -> list[Output]:
        passed_up: list[Output] = [ResponseReceived(self, response)]
        match self.state, response.status // 100:
            case _S.CALLING | _S.PROCEEDING, 1:
                # 17.1.1.2: a provisional stops retransmissions; Timer B belongs to Calling.
                if self.state is _S.CALLING:
                    self._cancel(TIMER_A, TIMER_B)
                    self._set_state(_S.PROCEEDING)
                return passed_up
            case _S.CALLING | _S.PROCEEDING, 2:
                # RFC 6026 section 7.2: Accepted, so that 2xx retransmissions reach the TU.
                self._cancel(TIMER_A, TIMER_B, TIMER_CANCELLED)
                self._arm(TIMER_M, now + self.timers.timeout)
                self._set_state(_S.ACCEPTED)
                return passed_up
            case _S.CALLING | _S.PROCEEDING, _:
                # 17.1.1.2: ACK a 300-699 ourselves, pass it up once, wait Timer D.
                self._ack_data = serialize(make_ack_for_non_2xx(self.request, response))
                self._cancel(TIMER_A, TIMER_B, TIMER_CANCELLED)
                self._linger(TIMER_D, self.timers.d, now)
                self._set_state(_S.COMPLETED)
                return [Send(self._ack_data, self.destination), *passed_up]
            case _S.COMPLETED, 3 | 4 | 5 | 6:
                return [Send(self._ack_data, self.destination)]  # a retransmitted final
            case _S.ACCEPTED, 2:
                return passed_up  # RFC 6026 section 7.2: the dialog ACKs each 2xx
            case _:
                return []  # a late provisional, or a final of the other kind: absorbed

    def _fire(self, name: str, at: float, now: float) -> list[Output]:
        if name == TIMER_A:
            return self._retransmit(at, now, 2 * self._intervals[TIMER_A])  # 17.1.1.2: doubling
        if name in (TIMER_B, TIMER_CANCELLED):
            return self._timeout()
        if name in (TIMER_D, TIMER_M):
            return self._terminate()
        raise LocalProtocolError(f"INVITE client transaction has no timer {name}")


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.2 (figure 6)."""

    _KIND = "non-INVITE client"
    _RETRANSMIT = TIMER_E
    _TIMEOUT = TIMER_F
    _TRANSITIONS: ClassVar[Transitions] = {
        _S.TRYING: frozenset({_S.PROCEEDING, _S.COMPLETED, _S.TERMINATED}),
        _S.PROCEEDING: frozenset({_S.COMPLETED, _S.TERMINATED}),
        _S.COMPLETED: frozenset({_S.TERMINATED}),
    }

    def __init__(
        self, request: Request, destination: Destination, timers: Timers, branch: str
    ) -> None:
        super().__init__(request, destination, timers, branch, _S.TRYING)

    def _on_response(self, response: Response, now: float) -> list[Output]:
        passed_up: list[Output] = [ResponseReceived(self, response)]
        match self.state, response.status // 100:
            case _S.TRYING | _S.PROCEEDING, 1:
                if self.state is _S.TRYING:
                    self._set_state(_S.PROCEEDING)
                return passed_up
            case _S.TRYING | _S.PROCEEDING, _:
                self._cancel(TIMER_E, TIMER_F)
                self._linger(TIMER_K, self.timers.t4, now)
                self._set_state(_S.COMPLETED)
                return passed_up
            case _:
                return []  # Completed absorbs retransmitted responses (17.1.2.2)

    def _fire(self, name: str, at: float, now: float) -> list[Output]:
        if name == TIMER_E:
            # 17.1.2.2: doubling up to T2 in Trying; every T2 in Proceeding.
            interval = min(2 * self._intervals[TIMER_E], self.timers.t2)
            if self.state is _S.PROCEEDING:
                interval = self.timers.t2
            return self._retransmit(at, now, interval)
        if name == TIMER_F:
            return self._timeout()
        if name == TIMER_K:
            return self._terminate()
        raise LocalProtocolError(f"non-INVITE client transaction has no timer {name}")


def create_client_transaction(
    request: Request, destination: Destination, timers: Timers = DEFAULT_TIMERS
) -> ClientTransaction:
    """A client transaction for `request`, not started yet (call `start(now)`).

    The request's top Via must carry an RFC 3261 branch (section 8.1.1.7). An ACK never has a
    client transaction: the ACK of a non-2xx is sent by the INVITE's, that of a 2xx by the
    dialog (section 17.1.1.3 and 13.2.2.4).
    """
    if request.method == "ACK":
        raise LocalProtocolError("an ACK is never sent through a client transaction")
    try:
        info = message_info(request)
    except ParseError as exc:
        raise LocalProtocolError(f"cannot start a transaction for a broken request: {exc}") from exc
    branch = info.top_via.branch
    if not has_rfc3261_branch(branch):
        raise LocalProtocolError(f"top Via branch {branch!r} lacks the magic cookie")
    if request.method == "INVITE":
        return InviteClientTransaction(request, destination, timers, branch)
    return NonInviteClientTransaction(request, destination, timers, branch)
