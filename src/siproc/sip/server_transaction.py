"""Server transactions: RFC 3261 section 17.2 with RFC 6026 section 7.1.

Import from `siproc.sip.transaction`, whose docstring explains the machines. A server
transaction sends the TU's responses (`respond()`), answers retransmitted requests with the last
response, and for INVITE retransmits a 300-699 until the ACK (Timers G and H).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from siproc.sip.errors import LocalProtocolError
from siproc.sip.headers import message_info
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction_common import (
    DEFAULT_TIMERS,
    TIMER_G,
    TIMER_H,
    TIMER_I,
    TIMER_J,
    TIMER_L,
    AckReceived,
    AckToTU,
    Destination,
    Output,
    Send,
    Timers,
    TransactionBase,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    Transitions,
    has_rfc3261_branch,
    server_key,
)

logger = logging.getLogger(__name__)
_S = TransactionState


class ServerTransaction(TransactionBase):
    """Common part of the server machines; build one with `create_server_transaction()`."""

    def __init__(
        self,
        request: Request,
        reply_to: Destination,
        timers: Timers,
        key: tuple[str, ...],
        state: TransactionState,
    ) -> None:
        super().__init__(state, timers, reply_to.reliable)
        self.request = request
        self.reply_to = reply_to
        self.key = key
        self.method = request.method
        info = message_info(request)
        branch = info.top_via.branch
        self.branch = branch if has_rfc3261_branch(branch) else ""
        self._log_id = self.branch or f"rfc2543:{info.call_id}/{info.cseq.number}"
        self.last_response: Response | None = None
        self._last_data = b""

    def respond(self, response: Response, now: float) -> list[Output]:
        """Send `response` (from the TU) through the transaction."""
        if not 100 <= response.status <= 699:
            raise LocalProtocolError(f"status {response.status} out of range")
        if self.terminated:
            raise LocalProtocolError(f"server transaction {self._log_id} is terminated")
        return self._respond(response, now)

    def on_request(self, request: Request, now: float) -> list[Output]:
        """Feed a request matching this transaction: a retransmission, or the ACK of INVITE."""
        if request.method != self.method and not (
            self.method == "INVITE" and request.method == "ACK"
        ):
            raise LocalProtocolError(
                f"{request.method} routed to the {self.method} transaction {self._log_id}"
            )
        if self.terminated:
            return []
        return self._on_request(request, now)

    def _respond(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError

    def _on_request(self, request: Request, now: float) -> list[Output]:
        raise NotImplementedError

    def _send(self, response: Response) -> list[Output]:
        self.last_response = response
        self._last_data = serialize(response)
        return [Send(self._last_data, self.reply_to)]

    def _resend(self) -> list[Output]:
        return [Send(self._last_data, self.reply_to)] if self._last_data else []

    def _terminate(self) -> list[Output]:
        self._set_state(_S.TERMINATED)
        return [TransactionTerminated(self)]

    def _illegal_response(self, response: Response) -> LocalProtocolError:
        return LocalProtocolError(
            f"{self._KIND} transaction {self._log_id}: cannot send {response.status} "
            f"in state {self.state.value}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self._log_id} {self.state.value}>"


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.1 (figure 7) with RFC 6026 section 7.1's Accepted state."""

    _KIND = "INVITE server"
    _TRANSITIONS: ClassVar[Transitions] = {
        _S.PROCEEDING: frozenset({_S.COMPLETED, _S.ACCEPTED}),
        _S.COMPLETED: frozenset({_S.CONFIRMED, _S.TERMINATED}),
        _S.CONFIRMED: frozenset({_S.TERMINATED}),
        _S.ACCEPTED: frozenset({_S.TERMINATED}),
    }

    def __init__(
        self, request: Request, reply_to: Destination, timers: Timers, key: tuple[str, ...]
    ) -> None:
        super().__init__(request, reply_to, timers, key, _S.PROCEEDING)

    def _respond(self, response: Response, now: float) -> list[Output]:
        match self.state, response.status // 100:
            case _S.PROCEEDING, 1:
                return self._send(response)
            case _S.PROCEEDING, 2:
                self._arm(TIMER_L, now + self.timers.timeout)
                self._set_state(_S.ACCEPTED)
                return self._send(response)
            case _S.PROCEEDING, _:
                self._arm_retransmit(TIMER_G, now)
                self._arm(TIMER_H, now + self.timers.timeout)
                self._set_state(_S.COMPLETED)
                return self._send(response)
            case _S.ACCEPTED, 2:
                return self._send(response)  # RFC 6026 section 7.1: the TU's retransmission
        raise self._illegal_response(response)

    def _on_request(self, request: Request, now: float) -> list[Output]:
        match self.state, request.method == "ACK":
            case _S.PROCEEDING, False:
                return self._resend()  # 17.2.1: the last provisional, if any
            case _S.COMPLETED, False:
                return self._resend()  # 17.2.1: the final response again
            case _S.COMPLETED, True:
                self._cancel(TIMER_G, TIMER_H)
                self._linger(TIMER_I, self.timers.t4, now)
                self._set_state(_S.CONFIRMED)
                return [AckReceived(self)]
            case _S.ACCEPTED, True:
                return [AckToTU(self, request)]  # RFC 6026 figure 7
            case _:
                return []  # Accepted and Confirmed absorb retransmissions; a stray ACK

    def _fire(self, name: str, at: float, now: float) -> list[Output]:
        if name == TIMER_G:
            # 17.2.1: the final response again; the interval doubles up to T2.
            interval = min(2 * self._intervals[TIMER_G], self.timers.t2)
            self._rearm_retransmit(TIMER_G, at, now, interval)
            return self._resend()
        if name == TIMER_H:
            return [TransactionTimeout(self), *self._terminate()]  # 17.2.1: no ACK came
        if name in (TIMER_I, TIMER_L):
            return self._terminate()
        raise LocalProtocolError(f"INVITE server transaction has no timer {name}")


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.2 (figure 8)."""

    _KIND = "non-INVITE server"
    _TRANSITIONS: ClassVar[Transitions] = {
        _S.TRYING: frozenset({_S.PROCEEDING, _S.COMPLETED}),
        _S.PROCEEDING: frozenset({_S.COMPLETED}),
        _S.COMPLETED: frozenset({_S.TERMINATED}),
    }

    def __init__(
        self, request: Request, reply_to: Destination, timers: Timers, key: tuple[str, ...]
    ) -> None:
        super().__init__(request, reply_to, timers, key, _S.TRYING)

    def _respond(self, response: Response, now: float) -> list[Output]:
        match self.state, response.status // 100:
            case _S.TRYING | _S.PROCEEDING, 1:
                if self.state is _S.TRYING:
                    self._set_state(_S.PROCEEDING)
                return self._send(response)
            case _S.TRYING | _S.PROCEEDING, _:
                self._linger(TIMER_J, self.timers.timeout, now)
                self._set_state(_S.COMPLETED)
                return self._send(response)
        raise self._illegal_response(response)

    def _on_request(self, request: Request, now: float) -> list[Output]:
        # 17.2.2: Trying discards retransmissions; later states resend the last response.
        return [] if self.state is _S.TRYING else self._resend()

    def _fire(self, name: str, at: float, now: float) -> list[Output]:
        if name == TIMER_J:
            return self._terminate()
        raise LocalProtocolError(f"non-INVITE server transaction has no timer {name}")


def create_server_transaction(
    request: Request, reply_to: Destination, now: float, timers: Timers = DEFAULT_TIMERS
) -> tuple[ServerTransaction, list[Output]]:
    """A server transaction for a new request (RFC 3261 section 17.2) and its first outputs.

    An INVITE starts in Proceeding, anything else in Trying; neither sends anything itself (the
    endpoint sends 100 Trying for INVITE through `respond()` at once, section 17.2.1). An ACK
    never creates a server transaction. Raises `ParseError` for unparseable mandatory headers.
    """
    if request.method == "ACK":
        raise LocalProtocolError("an ACK never creates a server transaction")
    key = server_key(request)
    transaction: ServerTransaction
    if request.method == "INVITE":
        transaction = InviteServerTransaction(request, reply_to, timers, key)
    else:
        transaction = NonInviteServerTransaction(request, reply_to, timers, key)
    logger.debug("%s: created at %.3f", transaction, now)
    return transaction, []
