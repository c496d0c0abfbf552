"""Graceful drain: stop taking new calls, let the current ones finish, then quit (pure).

Theory of operation: a phone in front of which a load balancer (Kamailio's dispatcher,
docs/scale-out.md) spreads calls must be taken out of service without cutting a call. ``DRAIN``
on the main stdin, or SIGUSR1, moves :class:`Drain` from SERVING to DRAINING:

- a new INVITE outside a dialog is refused with 503 and Retry-After (RFC 3261 section 21.5.4),
  statelessly by the endpoint's admission gate, so no handler starts and a dispatcher fails
  over to its next destination (its failure route sees the 503);
- OPTIONS outside a dialog gets the same 503: RFC 3261 section 11.2 says an OPTIONS response is
  the one an INVITE would have had, and a dispatcher that probes with OPTIONS marks us inactive;
- `CALL` lines on the main stdin are refused with a one-line error;
- everything inside a dialog (ACK, BYE, re-INVITE, INFO...) goes on as before, and so do the
  transfers a current call's handler asks for: they belong to calls that were already up.

When the last call has ended the phone quits (DONE: un-REGISTER, exit 0). With a deadline
(SIPROC_DRAIN_TIMEOUT seconds, 0 for none) the calls still up when it passes are ended as QUIT
ends them. The phone (calls/phone.py) owns the timer and the call count; this module decides.
"""

from __future__ import annotations

import logging
import math
from enum import Enum

from siproc.sip.endpoint import Refuse

__all__ = ["DRAIN_RETRY_AFTER", "Drain", "DrainState"]

log = logging.getLogger(__name__)

#: Retry-After of the 503s while draining without a deadline (seconds). With a deadline it is
#: the time left until then: by that time this instance is gone (or started again).
DRAIN_RETRY_AFTER = 60

#: Requests outside a dialog that a draining phone refuses (see the module docstring).
REFUSED_WHILE_DRAINING = frozenset({"INVITE", "OPTIONS"})


class DrainState(Enum):
    SERVING = "serving"  # taking new calls
    DRAINING = "draining"  # no new calls; waiting for the current ones to end
    DONE = "done"  # the last call ended, or the deadline passed: the phone quits


class Drain:
    """The drain state of one phone; see the module docstring. ``timeout``: seconds from the
    start of the drain until the calls still up are ended (0: wait for them however long)."""

    def __init__(self, timeout: float) -> None:
        if timeout < 0:
            raise ValueError(f"a drain timeout cannot be negative: {timeout}")
        self.timeout = timeout
        self.state = DrainState.SERVING
        self.started_at: float | None = None
        self.why = ""  # why the phone quits (DONE)

    def _set_state(self, new: DrainState) -> None:
        old, self.state = self.state, new
        log.debug("drain: %s -> %s", old.value, new.value)

    @property
    def draining(self) -> bool:
        """True from the DRAIN on (also once DONE): no new calls are taken."""
        return self.state is not DrainState.SERVING

    def start(self, now: float, calls: int) -> bool:
        """DRAIN (or SIGUSR1) with ``calls`` calls up: False when already draining. DONE at
        once when no call is up."""
        if self.state is not DrainState.SERVING:
            return False
        self.started_at = now
        self._set_state(DrainState.DRAINING)
        self.calls_changed(calls)
        return True

    def calls_changed(self, calls: int) -> bool:
        """The number of calls up changed; True when that makes the drain DONE."""
        if self.state is DrainState.DRAINING and calls == 0:
            self.why = "DRAIN: the last call has ended"
            self._set_state(DrainState.DONE)
            return True
        return False

    def next_deadline(self) -> float | None:
        """When the calls still up are ended, or None (no deadline, or not draining)."""
        if self.state is not DrainState.DRAINING or not self.timeout:
            return None
        assert self.started_at is not None
        return self.started_at + self.timeout

    def handle_timer(self, now: float) -> bool:
        """True when the deadline has passed and the drain is now DONE (then as QUIT)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return False
        self.why = f"DRAIN: deadline of {self.timeout:g} s (SIPROC_DRAIN_TIMEOUT) passed"
        self._set_state(DrainState.DONE)
        return True

    def refusal(self, method: str, now: float) -> Refuse | None:
        """The answer to a new request outside a dialog: a 503 while draining for INVITE and
        OPTIONS, else None (the usual admission applies)."""
        if not self.draining or method not in REFUSED_WHILE_DRAINING:
            return None
        deadline = self.next_deadline()
        retry = DRAIN_RETRY_AFTER if deadline is None else max(1, math.ceil(deadline - now))
        return Refuse(503, "Service Unavailable (draining)", (("Retry-After", str(retry)),))

    def refuses_calls(self) -> str | None:
        """Why a `CALL` line is refused now, or None when it may go out."""
        if not self.draining:
            return None
        return "refused: siproc is draining (DRAIN or SIGUSR1): no new calls"
