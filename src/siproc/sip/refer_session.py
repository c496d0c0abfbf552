"""Blind call transfer in one call's dialog, both roles, sans-I/O (RFC 3515, RFC 5589 section 6).

Theory of operation
-------------------
Two small machines, each with one table, that a call's edge (`siproc.calls.transfer`) drives
with ``now`` and whose actions it carries out (the header and body formats are in
`siproc.sip.refer`):

*Transferor* (`OutgoingRefer`, the handler's ``TRANSFER <uri>``): in a connected call we send
an in-dialog REFER (`SendRefer`). A 2xx (202 Accepted) creates the implicit subscription
(RFC 3515 section 2.4.4) and the transferee reports its call to the target in NOTIFYs with a
``message/sipfrag`` status line (RFC 3420), each answered here (`Reply`). A final 2xx status
means the transferee talks to the target now: we end our call with BYE (`HangUp`,
``transferred``). A REFER rejected, a final status >= 300, a subscription terminated without a
final status, or no NOTIFY for `NOTIFY_WAIT` seconds gives ``ERROR TRANSFER <status> <reason>``
and the call stays up. One transfer at a time; a NOTIFY when none is running gets 481
(RFC 6665 section 4.1.3).

*Transferee* (`IncomingRefer`, a REFER received): in a connected call we answer 202, NOTIFY
``100 Trying`` and ask the edge to place the new call (`PlaceCall`); its progress goes out as
NOTIFYs, one in flight at a time and in order (`SendNotify`): ``180 Ringing`` once, then the
final status with ``Subscription-State: terminated``. After a successful transfer the
transferor should hang up the old call; if it has not within `OLD_CALL_BYE_WAIT` seconds, we
do (`HangUp`). A NOTIFY refused or unanswered ends the reports (the transferor stopped
listening).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import content_type
from siproc.sip.invite_session import CommandRefused, Log
from siproc.sip.message import Request
from siproc.sip.refer import (
    NOTIFY_WAIT,
    REFER_EVENT,
    SIPFRAG_MEDIA_TYPE,
    Sipfrag,
    SubscriptionState,
    active,
    parse_event,
    parse_referred_by,
    parse_sipfrag,
    parse_subscription_state,
    refer_target,
    terminated,
)
from siproc.sip.session_update import HangUp, Reply
from siproc.sip.state_table import Table, TableMachine
from siproc.sip.uri import SipUri

__all__ = [
    "INCOMING_TRANSITIONS",
    "OLD_CALL_BYE_WAIT",
    "OUTGOING_TRANSITIONS",
    "IncomingRefer",
    "NewCall",
    "OutgoingRefer",
    "PlaceCall",
    "ReferAction",
    "ReferState",
    "ReferTrigger",
    "SendNotify",
    "SendRefer",
]

#: Seconds the transferee waits for the transferor's BYE after a successful transfer before
#: ending the old call itself (RFC 5589 section 6: the transferor is the one that hangs up).
OLD_CALL_BYE_WAIT = 4.0


class ReferState(Enum):
    IDLE = "idle"  # no transfer running (the last one, if any, is over)
    REFERRING = "referring"  # transferor: our REFER is out
    PLACING = "placing"  # transferee: REFER accepted, the new call is being placed
    FOLLOWING = "following"  # the transfer runs: NOTIFYs report the new call


class ReferTrigger(Enum):
    # transferor
    START = "TRANSFER"
    UNSENT = "REFER could not be sent"
    ACCEPTED = "2xx to our REFER"
    REJECTED = "REFER rejected or not answered"
    PROGRESS = "NOTIFY without a final status"
    SUCCEEDED = "NOTIFY with a final 2xx"
    FAILED = "NOTIFY with a final failure"
    SUBSCRIPTION_ENDED = "NOTIFY terminated without a final status"
    NOTIFY_TIMEOUT = "no NOTIFY in time"
    STRAY_NOTIFY = "NOTIFY with no transfer running"
    # transferee
    REFER = "REFER accepted"
    REFER_REFUSED = "REFER refused"
    PLACED = "new call placed"
    NOT_PLACED = "new call not placed"
    RINGING = "new call rings"
    CONNECTED = "new call connected"
    ENDED = "new call ended"
    OLD_CALL_WAIT = "no BYE from the transferor"


RS = ReferState
RT = ReferTrigger
_RUNNING = (RS.REFERRING, RS.FOLLOWING)

#: The transferor's table (DESIGN rule 3).
OUTGOING_TRANSITIONS: dict[tuple[ReferState, ReferTrigger], ReferState] = {
    (RS.IDLE, RT.START): RS.REFERRING,
    (RS.REFERRING, RT.UNSENT): RS.IDLE,
    (RS.REFERRING, RT.ACCEPTED): RS.FOLLOWING,
    (RS.FOLLOWING, RT.ACCEPTED): RS.FOLLOWING,  # a NOTIFY overtook the 202
    (RS.REFERRING, RT.REJECTED): RS.IDLE,
    (RS.FOLLOWING, RT.REJECTED): RS.IDLE,
    **{(state, RT.PROGRESS): RS.FOLLOWING for state in _RUNNING},
    **{(state, RT.SUCCEEDED): RS.IDLE for state in _RUNNING},
    **{(state, RT.FAILED): RS.IDLE for state in _RUNNING},
    **{(state, RT.SUBSCRIPTION_ENDED): RS.IDLE for state in _RUNNING},
    (RS.FOLLOWING, RT.NOTIFY_TIMEOUT): RS.IDLE,
    (RS.IDLE, RT.STRAY_NOTIFY): RS.IDLE,
}

#: The transferee's table.
INCOMING_TRANSITIONS: dict[tuple[ReferState, ReferTrigger], ReferState] = {
    (RS.IDLE, RT.REFER): RS.PLACING,
    (RS.IDLE, RT.REFER_REFUSED): RS.IDLE,
    (RS.PLACING, RT.REFER_REFUSED): RS.PLACING,  # 491: one transfer at a time
    (RS.FOLLOWING, RT.REFER_REFUSED): RS.FOLLOWING,
    (RS.PLACING, RT.PLACED): RS.FOLLOWING,
    (RS.PLACING, RT.NOT_PLACED): RS.IDLE,
    (RS.FOLLOWING, RT.RINGING): RS.FOLLOWING,
    (RS.FOLLOWING, RT.CONNECTED): RS.IDLE,
    (RS.FOLLOWING, RT.ENDED): RS.IDLE,
    (RS.IDLE, RT.OLD_CALL_WAIT): RS.IDLE,
}


class NewCall(Enum):
    """What the transferee's new call did (the edge watches its state)."""

    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRefer:
    """Send the REFER (Refer-To and Referred-By); the edge reports `unsent` or `refer_final`."""


@dataclass(frozen=True, slots=True)
class SendNotify:
    """Send a NOTIFY with this sipfrag and Subscription-State; the edge reports
    `notify_final` (or `notify_unsent`)."""

    frag: Sipfrag
    state: SubscriptionState


@dataclass(frozen=True, slots=True)
class PlaceCall:
    """Place the new call to ``target`` for ``referred_by``; the edge reports `placed`."""

    target: SipUri
    referred_by: str


ReferAction = SendRefer | SendNotify | PlaceCall | Reply | HangUp | CommandRefused | Log


class _Machine(TableMachine[ReferState, ReferTrigger]):
    """What both roles share: the table walk from IDLE and one deadline."""

    def __init__(self, table: Table[ReferState, ReferTrigger]) -> None:
        super().__init__(table, RS.IDLE)
        self._deadline: float | None = None

    def next_deadline(self) -> float | None:
        return self._deadline

    def close(self) -> None:
        self._deadline = None


class OutgoingRefer(_Machine):
    """The transferor's side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(OUTGOING_TRANSITIONS)
        self.target = ""
        self.last_status: Sipfrag | None = None

    @property
    def running(self) -> bool:
        return self.state is not RS.IDLE

    def start(
        self,
        now: float,
        *,
        connected: bool,
        call_state: str,
        target: str = "",
        target_error: str | None = None,
    ) -> list[ReferAction]:
        """``TRANSFER <uri>``: ``target`` (for the log), or ``target_error``: why the URI is
        not one we can refer to."""
        if not connected:
            return [CommandRefused("TRANSFER", f"not possible while the call is {call_state}")]
        if self.running:
            return [CommandRefused("TRANSFER", "a transfer is already in progress")]
        if target_error is not None:
            return [CommandRefused("TRANSFER", f"not a SIP URI: {target_error}")]
        self._step(RT.START)
        self.target = target
        self.last_status = None
        return [SendRefer()]

    def unsent(self, now: float) -> list[ReferAction]:
        self._step(RT.UNSENT)
        return [CommandRefused("TRANSFER", "the dialog is gone")]

    def refer_final(self, now: float, status: int | None, reason: str = "") -> list[ReferAction]:
        """The final response to our REFER (None: no answer)."""
        if status is not None and status < 300:
            if self._step(RT.ACCEPTED):
                self._deadline = now + NOTIFY_WAIT
            return []
        if status is None:
            status, reason = 408, "Request Timeout (REFER not answered)"
        return self._fail(RT.REJECTED, status, reason or "REFER rejected")

    def notify(self, now: float, request: Request, refer_cseq: str | None) -> list[ReferAction]:
        """A NOTIFY in the dialog: answer it and follow its sipfrag (RFC 3515 section 2.4.5).
        ``refer_cseq``: the CSeq number of the REFER sent last (the Event id, 2.4.6)."""
        if not self.running:
            self._step(RT.STRAY_NOTIFY)
            return [Reply(481, "Subscription Does Not Exist")]
        try:
            event = parse_event(request.headers.get("Event") or "")
            if event.package != REFER_EVENT:
                raise RemoteProtocolError(489, "Bad Event")
            if event.id is not None and event.id != refer_cseq:
                raise RemoteProtocolError(481, "Subscription Does Not Exist")
            state_text = request.headers.get("Subscription-State")
            state = parse_subscription_state(state_text) if state_text else active()
            frag = None
            if request.body and content_type(request.headers) == SIPFRAG_MEDIA_TYPE:
                frag = parse_sipfrag(request.body)
        except ParseError as exc:
            return [Reply(400, f"Bad Request ({str(exc)[:80]})")]
        except RemoteProtocolError as exc:
            return [Reply(exc.status, exc.reason)]
        what = f"{frag.status} {frag.reason}" if frag else "-"
        actions: list[ReferAction] = [
            Reply(200, "OK"),
            Log(logging.INFO, f"transfer NOTIFY: {what} ({state})"),
        ]
        if frag is not None:
            self.last_status = frag
        if frag is not None and frag.final:
            if frag.status < 300:
                self._step(RT.SUCCEEDED)
                self._deadline = None
                text = f"transfer to {self.target} succeeded: ending the call"
                return [*actions, Log(logging.INFO, text), HangUp("transferred")]
            return actions + self._fail(RT.FAILED, frag.status, frag.reason or "transfer failed")
        if state.terminated:
            last = f" (last status {frag.status})" if frag else ""
            reason = (
                f"Request Terminated (subscription {state.reason or 'terminated'} before a "
                f"final status{last})"
            )
            return actions + self._fail(RT.SUBSCRIPTION_ENDED, 487, reason)
        self._step(RT.PROGRESS)
        self._deadline = now + NOTIFY_WAIT  # each NOTIFY shows the transfer is alive
        return actions

    def handle_timer(self, now: float) -> list[ReferAction]:
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        reason = f"Request Timeout (no final NOTIFY within {NOTIFY_WAIT:g} s)"
        return self._fail(RT.NOTIFY_TIMEOUT, 408, reason)

    def _fail(self, trigger: ReferTrigger, status: int, reason: str) -> list[ReferAction]:
        if not self._step(trigger):
            return []
        self._deadline = None
        return [
            Log(logging.WARNING, f"transfer to {self.target} failed: {status} {reason}"),
            CommandRefused("TRANSFER", f"{status} {reason}"),
        ]


class IncomingRefer(_Machine):
    """The transferee's side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(INCOMING_TRANSITIONS)
        self._queue: deque[tuple[Sipfrag, SubscriptionState]] = deque()
        self._in_flight = False
        self._listening = True  # the transferor takes our NOTIFYs
        self._rang = False

    def refer(
        self,
        now: float,
        request: Request,
        *,
        connected: bool,
        call_state: str,
        remote: str,
        allowed: Callable[[SipUri], bool],
    ) -> list[ReferAction]:
        """A REFER in our dialog (RFC 3515 section 2.4.2): accept and follow it, or refuse.
        ``remote``: the far end's URI (Referred-By when the REFER has none); ``allowed``:
        SIPROC_ACCEPT_REFER."""
        if not connected:
            return self._refuse(403, f"Forbidden (the call is {call_state})")
        if self.state is not RS.IDLE:
            return self._refuse(491, "Request Pending (a transfer is already in progress)")
        try:
            target = refer_target(request.headers)
        except RemoteProtocolError as exc:
            return self._refuse(exc.status, exc.reason)
        if not allowed(target):
            return self._refuse(403, "Forbidden (transfer target not allowed)")
        referred_by = remote
        actions: list[ReferAction] = []
        value = request.headers.get("Referred-By")
        if value:
            try:
                referred_by = str(parse_referred_by(value).uri)
            except ParseError:
                actions.append(
                    Log(logging.INFO, f"ignoring unparseable Referred-By {value[:80]!r}")
                )
        self._step(RT.REFER)
        self._queue.clear()
        self._in_flight, self._listening, self._rang = False, True, False
        actions.append(Reply(202, "Accepted"))
        actions += self._notify(Sipfrag(100, "Trying"), active())
        return [*actions, PlaceCall(target, referred_by)]

    def _refuse(self, status: int, reason: str) -> list[ReferAction]:
        self._step(RT.REFER_REFUSED)
        return [Log(logging.WARNING, f"REFER refused: {status} {reason}"), Reply(status, reason)]

    def placed(self, now: float, ok: bool) -> list[ReferAction]:
        """The new call is placed (``ok``) or could not be."""
        if ok:
            self._step(RT.PLACED)
            return []
        if not self._step(RT.NOT_PLACED):
            return []
        return self._notify(Sipfrag(503, "Service Unavailable"), terminated())

    def new_call(
        self, now: float, what: NewCall, end_status: int | None = None, end_reason: str = ""
    ) -> list[ReferAction]:
        """The new call rang, connected or ended: tell the transferor."""
        if what is NewCall.RINGING:
            if self._rang or not self._step(RT.RINGING):
                return []
            self._rang = True
            return self._notify(Sipfrag(180, "Ringing"), active())
        if what is NewCall.CONNECTED:
            if not self._step(RT.CONNECTED):
                return []
            self._deadline = now + OLD_CALL_BYE_WAIT
            return self._notify(Sipfrag(200, "OK"), terminated())
        if not self._step(RT.ENDED):
            return []
        status = end_status or 500
        if status < 300:  # ended before it connected, yet no failure status
            status = 487
        reason = " ".join((end_reason or "Call Failed").split())
        return self._notify(Sipfrag(status, reason), terminated())

    def handle_timer(self, now: float, *, connected: bool) -> list[ReferAction]:
        """The transferor did not hang up the old call after the transfer: we do."""
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        if not connected or not self._step(RT.OLD_CALL_WAIT):
            return []
        text = "no BYE from the transferor after the transfer: hanging up"
        return [Log(logging.INFO, text), HangUp()]

    # -- the NOTIFY queue -------------------------------------------------------------------------

    def _notify(self, frag: Sipfrag, state: SubscriptionState) -> list[ReferAction]:
        if frag.final:
            self._queue.clear()  # progress that has not gone out yet is moot now
        self._queue.append((frag, state))
        return [] if self._in_flight else self._next()

    def _next(self) -> list[ReferAction]:
        if not self._queue or not self._listening:
            self._queue.clear()
            return []
        frag, state = self._queue.popleft()
        self._in_flight = True
        return [SendNotify(frag, state)]

    def notify_unsent(self, now: float) -> list[ReferAction]:
        """The old call's dialog is gone: nobody to tell any more."""
        self._in_flight = False
        self._listening = False
        self._queue.clear()
        return []

    def notify_final(self, now: float, status: int | None, reason: str = "") -> list[ReferAction]:
        """The final response to our NOTIFY (None: no answer)."""
        self._in_flight = False
        if status is None or status >= 300:
            # 481: the transferor dropped the subscription; anything else: it will not listen.
            what = "no answer" if status is None else f"{status} {reason}"
            self._listening = False
            self._queue.clear()
            text = f"NOTIFY refused ({what}): no more transfer progress reports"
            return [Log(logging.INFO, text)]
        return self._next()
