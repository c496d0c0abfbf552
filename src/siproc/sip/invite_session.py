"""The INVITE dialog usage of one call (RFC 3261 sections 13-15), sans-I/O.

Theory of operation
-------------------
`InviteSession` decides what a call does; the edge (`siproc.calls.call.Call`) does it. Inputs
are method calls that each take ``now`` and stand for one fact: a response to our INVITE, a
request in the dialog, a handler command, the result of applying an SDP answer to the media
(`media_applied` / `media_failed`), or a timer (`handle_timer`). Each returns a list of typed
actions (`Respond`, `SendAck`, `SendBye`, `ApplyMedia`, `Tell`, `Ended` ...) for the edge to
carry out in order. Message building, the network, the media stream and the handler process
stay at the edge; what to answer, when to retransmit and what ends the call with which status
are decided here, where they can be tested without sockets or clocks.

Every state change goes through one table, `TRANSITIONS`: ``(state, trigger) -> state``. An
input that has no row for the current state is not applicable and is ignored (a stray ACK, a
CANCEL that crossed our 200, a second BYE); a handler command without a row is refused with
`CommandRefused`. So the table is the whole of what can happen to a call's signalling. The walk
itself (and the record of the rows taken, for the coverage test) is `siproc.sip.state_table`.

`ApplyMedia` is always the last action of its list: the edge applies the far end's SDP answer
to the stream and reports back with `media_applied` or `media_failed`, whose actions depend on
it (the ``CONNECTED`` event, or BYE for an unusable answer).

Timers are named deadlines (`Timer`): the 2xx retransmission (T1 doubling to T2 on unreliable
transports) and the give-up 64*T1 after the 2xx without ACK (section 13.3.1.4), the ring
timeout of an unanswered incoming call (480, section 21.4.18), the maximum call duration, and
the wait for the far end's Contact to resolve so that our ACK can go out (64*T1, after which
the far end gives up on us too). `next_deadline()` is the earliest; `handle_timer(now)` fires
the ones due.
"""

from __future__ import annotations

import logging
from enum import Enum

from siproc.sip.errors import LocalProtocolError
from siproc.sip.session_actions import (
    Action,
    AnswerChallenge,
    ApplyMedia,
    CommandRefused,
    ConfirmDialog,
    Ended,
    Log,
    ResendAck,
    ResendOk,
    Respond,
    SendAck,
    SendBye,
    SendCancel,
    StartMedia,
    StopMedia,
    Tell,
    TellHandler,
)
from siproc.sip.state_table import TableMachine

__all__ = [
    "TRANSITIONS",
    "Action",
    "AnswerChallenge",
    "ApplyMedia",
    "CommandRefused",
    "ConfirmDialog",
    "Ended",
    "InviteSession",
    "Log",
    "ResendAck",
    "ResendOk",
    "Respond",
    "Role",
    "SendAck",
    "SendBye",
    "SendCancel",
    "SessionState",
    "StartMedia",
    "StopMedia",
    "Tell",
    "TellHandler",
    "Timer",
    "Trigger",
    "reason_phrase",
]

_log = logging.getLogger(__name__)

_REASONS = {
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


def reason_phrase(status: int, default: str = "Call Ended") -> str:
    """The reason phrase we send with `status` (``HANGUP <status>``), else `default`."""
    return _REASONS.get(status, default)


class Role(Enum):
    UAC = "uac"  # we sent the INVITE (CALL <uri>)
    UAS = "uas"  # the far end's INVITE


class SessionState(Enum):
    CALLING = "calling"  # outgoing INVITE sent, nothing back yet
    EARLY = "early"  # outgoing: a provisional response arrived
    INCOMING = "incoming"  # incoming INVITE, not answered yet
    EARLY_MEDIA = "early media"  # incoming: 183 with our SDP answer sent, media flowing
    ANSWERING = "answering"  # incoming: 2xx sent, waiting for the ACK
    CONNECTED = "connected"
    CANCELLING = "cancelling"  # outgoing: hung up before the answer
    TERMINATING = "terminating"  # our BYE is on its way
    ENDED = "ended"


class Trigger(Enum):
    # the responses to our INVITE (section 13.2.2)
    TRYING = "100 received"
    PROVISIONAL = "18x received"
    ACCEPTED = "2xx received"
    ACCEPTED_AGAIN = "2xx retransmission received"
    BAD_2XX = "unusable 2xx received"
    CHALLENGED = "401/407 answered"
    REJECTED = "3xx-6xx received"
    INVITE_TIMEOUT = "INVITE not answered"
    CANCEL_TIMEOUT = "CANCEL not answered"
    ACK_UNSENT = "ACK cannot be sent in time"
    # our answer to the far end's INVITE (section 13.3.1)
    RING = "RINGING"
    PROGRESS = "PROGRESS"
    ANSWER = "ANSWER"
    OK_RETRANSMIT = "2xx retransmission timer"
    NO_ACK = "no ACK for our 2xx"
    ACK = "ACK received"
    ACK_AFTER_HANGUP = "ACK received after a hang-up"
    CANCEL = "CANCEL received"
    RING_TIMEOUT = "ring timeout"
    # media facts
    MEDIA_APPLIED = "SDP answer applied"
    MEDIA_FAILED = "SDP answer unusable"
    # ending (section 15)
    HANGUP = "hang-up"
    MAX_DURATION = "maximum call duration"
    ABORT = "internal error"
    NOT_STARTED = "could not start"
    BYE = "BYE received"
    BYE_ANSWERED = "our BYE answered"
    BYE_UNSENT = "our BYE cannot be sent"
    BYE_TIMEOUT = "our BYE not answered"
    FORCE_END = "ended locally"


S = SessionState
T = Trigger
_UNANSWERED = (S.INCOMING, S.EARLY_MEDIA)
_UAC_EARLY = (S.CALLING, S.EARLY)
_LIVE = tuple(s for s in S if s is not S.ENDED)

#: The one table of the call's signalling (DESIGN rule 3), in the style of h11's ``_state.py``.
TRANSITIONS: dict[tuple[SessionState, Trigger], SessionState] = {
    # -- we sent the INVITE -------------------------------------------------------------------
    (S.CALLING, T.TRYING): S.CALLING,
    (S.EARLY, T.TRYING): S.EARLY,
    (S.CANCELLING, T.TRYING): S.CANCELLING,  # a CANCEL may go out now (section 9.1)
    (S.CALLING, T.PROVISIONAL): S.EARLY,
    (S.EARLY, T.PROVISIONAL): S.EARLY,
    (S.CANCELLING, T.PROVISIONAL): S.CANCELLING,
    (S.CALLING, T.ACCEPTED): S.CONNECTED,
    (S.EARLY, T.ACCEPTED): S.CONNECTED,
    (S.CANCELLING, T.ACCEPTED): S.TERMINATING,  # the 2xx crossed our CANCEL: ACK, then BYE
    (S.CONNECTED, T.ACCEPTED_AGAIN): S.CONNECTED,  # re-ACK (section 13.2.2.4)
    (S.TERMINATING, T.ACCEPTED_AGAIN): S.TERMINATING,
    (S.ENDED, T.ACCEPTED_AGAIN): S.ENDED,
    (S.CALLING, T.BAD_2XX): S.ENDED,
    (S.EARLY, T.BAD_2XX): S.ENDED,
    (S.CANCELLING, T.BAD_2XX): S.ENDED,
    (S.CALLING, T.CHALLENGED): S.CALLING,  # the INVITE again, with credentials (22.2)
    (S.EARLY, T.CHALLENGED): S.EARLY,
    (S.CALLING, T.REJECTED): S.ENDED,
    (S.EARLY, T.REJECTED): S.ENDED,
    (S.CANCELLING, T.REJECTED): S.ENDED,  # 487 to our CANCELled INVITE
    (S.CALLING, T.INVITE_TIMEOUT): S.ENDED,
    (S.EARLY, T.INVITE_TIMEOUT): S.ENDED,
    (S.CANCELLING, T.INVITE_TIMEOUT): S.ENDED,
    (S.CANCELLING, T.CANCEL_TIMEOUT): S.ENDED,
    (S.CONNECTED, T.ACK_UNSENT): S.ENDED,
    (S.TERMINATING, T.ACK_UNSENT): S.ENDED,
    # -- the far end's INVITE -----------------------------------------------------------------
    (S.INCOMING, T.RING): S.INCOMING,
    (S.EARLY_MEDIA, T.RING): S.EARLY_MEDIA,
    (S.INCOMING, T.PROGRESS): S.EARLY_MEDIA,
    (S.EARLY_MEDIA, T.PROGRESS): S.EARLY_MEDIA,  # the 183 again (it is not sent reliably)
    (S.INCOMING, T.ANSWER): S.ANSWERING,
    (S.EARLY_MEDIA, T.ANSWER): S.ANSWERING,
    (S.ANSWERING, T.OK_RETRANSMIT): S.ANSWERING,
    (S.ANSWERING, T.NO_ACK): S.TERMINATING,
    (S.ANSWERING, T.ACK): S.CONNECTED,
    (S.ANSWERING, T.ACK_AFTER_HANGUP): S.TERMINATING,  # section 15: the BYE waited for it
    (S.INCOMING, T.CANCEL): S.ENDED,
    (S.EARLY_MEDIA, T.CANCEL): S.ENDED,
    (S.INCOMING, T.RING_TIMEOUT): S.ENDED,
    (S.EARLY_MEDIA, T.RING_TIMEOUT): S.ENDED,
    # -- media facts --------------------------------------------------------------------------
    (S.EARLY, T.MEDIA_APPLIED): S.EARLY,  # early media (RFC 3960 section 2)
    (S.EARLY, T.MEDIA_FAILED): S.EARLY,  # ignored: the 2xx brings the answer again
    (S.CONNECTED, T.MEDIA_APPLIED): S.CONNECTED,
    (S.CONNECTED, T.MEDIA_FAILED): S.TERMINATING,  # unusable answer in the 2xx or ACK: BYE
    # -- ending -------------------------------------------------------------------------------
    (S.INCOMING, T.HANGUP): S.ENDED,  # a final response (603, or 480 if the handler left)
    (S.EARLY_MEDIA, T.HANGUP): S.ENDED,
    (S.CALLING, T.HANGUP): S.CANCELLING,
    (S.EARLY, T.HANGUP): S.CANCELLING,
    (S.ANSWERING, T.HANGUP): S.ANSWERING,  # section 15: no BYE before the ACK
    (S.CONNECTED, T.HANGUP): S.TERMINATING,
    (S.INCOMING, T.MAX_DURATION): S.ENDED,
    (S.EARLY_MEDIA, T.MAX_DURATION): S.ENDED,
    (S.CALLING, T.MAX_DURATION): S.CANCELLING,
    (S.EARLY, T.MAX_DURATION): S.CANCELLING,
    (S.ANSWERING, T.MAX_DURATION): S.ANSWERING,
    (S.CONNECTED, T.MAX_DURATION): S.TERMINATING,
    (S.INCOMING, T.ABORT): S.ENDED,
    (S.EARLY_MEDIA, T.ABORT): S.ENDED,
    (S.CALLING, T.ABORT): S.CANCELLING,
    (S.EARLY, T.ABORT): S.CANCELLING,
    (S.ANSWERING, T.ABORT): S.TERMINATING,  # a broken call does not wait for the ACK
    (S.CONNECTED, T.ABORT): S.TERMINATING,
    (S.CANCELLING, T.ABORT): S.CANCELLING,  # on its way out already
    (S.TERMINATING, T.ABORT): S.TERMINATING,
    (S.INCOMING, T.NOT_STARTED): S.ENDED,  # the handler could not start
    (S.CALLING, T.NOT_STARTED): S.ENDED,  # (before the INVITE went out)
    (S.INCOMING, T.BYE): S.ENDED,  # early BYE: 487 to the INVITE (section 15.1.2)
    (S.EARLY_MEDIA, T.BYE): S.ENDED,
    (S.ANSWERING, T.BYE): S.ENDED,
    (S.CONNECTED, T.BYE): S.ENDED,
    (S.TERMINATING, T.BYE): S.ENDED,  # the BYEs crossed
    (S.TERMINATING, T.BYE_ANSWERED): S.ENDED,
    (S.TERMINATING, T.BYE_TIMEOUT): S.ENDED,
    (S.TERMINATING, T.BYE_UNSENT): S.ENDED,
    **{(state, T.FORCE_END): S.ENDED for state in _LIVE},
}

#: Handler commands and the triggers they fire; a command without a row is refused.
_COMMANDS = {"RINGING": T.RING, "PROGRESS": T.PROGRESS, "ANSWER": T.ANSWER, "HANGUP": T.HANGUP}


class Timer(Enum):
    OK_RETRANSMIT = "2xx retransmission"  # section 13.3.1.4: T1, doubling up to T2
    NO_ACK = "no ACK"  # section 13.3.1.4: 64*T1 after the 2xx
    ACK_WAIT = "ACK wait"  # the far end's Contact does not resolve: 64*T1 to send our ACK
    RING = "ring timeout"
    MAX_DURATION = "maximum duration"


class InviteSession(TableMachine[SessionState, Trigger]):
    """The signalling of one call; see the module docstring.

    ``offer_in_invite`` (UAS): the far end's INVITE had an SDP offer; without one we offer in
    our 2xx and the ACK brings the answer (RFC 3264 section 5). ``reliable``: our 2xx goes
    over a reliable transport and is not retransmitted (section 13.3.1.4).
    """

    def __init__(
        self,
        role: Role,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        offer_in_invite: bool = True,
        reliable: bool = False,
        name: str = "",
    ) -> None:
        if not 0 < t1 <= t2:
            raise LocalProtocolError(f"invite session: need 0 < T1 {t1} <= T2 {t2}")
        initial = S.CALLING if role is Role.UAC else S.INCOMING
        super().__init__(TRANSITIONS, initial, log=_log, log_as=f"call {name}")
        self.role = role
        self.t1 = t1
        self.t2 = t2
        self.offer_in_invite = offer_in_invite
        self.reliable = reliable
        self.name = name  # for the debug log of state changes
        self.end_status: int | None = None
        self.end_reason = ""
        # the limit whose deadline ended the call, if one did ("ring timeout", "maximum call
        # duration"): a call record says ended_by timeout even when the far end's answer to
        # our CANCEL (487) does not say why
        self.limit_reached = ""
        self._deadlines: dict[Timer, float] = {}
        self._ok_interval = t1
        self._provisional = False  # UAC: a provisional response came, a CANCEL may go out
        self._cancel_sent = False
        self._acked = False  # UAC: the first 2xx came and was ACKed (or its ACK waits)
        self._media_known = False  # UAC: an 18x's SDP answer is in force
        self._awaiting_media: tuple[Trigger, int] | None = None  # what ApplyMedia was for
        self._told: set[TellHandler] = set()
        self._bye_after_ack = False  # UAS: hung up while our 2xx waits for its ACK
        self._bye_reason = "hung up"

    def _end(self, trigger: Trigger, status: int, reason: str) -> list[Action]:
        """Take ``trigger``'s row, which must lead to ENDED: the call is over."""
        if not self._step(trigger):
            return []
        if self.state is not S.ENDED:
            raise LocalProtocolError(f"{trigger.value} does not end the call")
        self._deadlines.clear()
        self._awaiting_media = None
        self.end_status, self.end_reason = status, reason
        return [Ended(status, reason)]

    @property
    def ended(self) -> bool:
        return self.state is S.ENDED

    @property
    def early_status(self) -> int:
        """The 18x whose SDP answer `ApplyMedia` is applying (0 for none)."""
        waiting = self._awaiting_media
        return waiting[1] if waiting is not None and waiting[0] is T.PROVISIONAL else 0

    # -- timers ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def deadline(self, timer: Timer) -> float | None:
        return self._deadlines.get(timer)

    def set_limits(self, now: float, *, ring_timeout: float, max_duration: float) -> None:
        """Arm the call's limits: an incoming call unanswered after ``ring_timeout`` seconds
        gets 480 (section 21.4.18), any call is hung up after ``max_duration``; 0 is off."""
        if ring_timeout and self.role is Role.UAS and self.state in _UNANSWERED:
            self._deadlines[Timer.RING] = now + ring_timeout
        if max_duration and not self.ended:
            self._deadlines[Timer.MAX_DURATION] = now + max_duration

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for timer, at in sorted(self._deadlines.items(), key=lambda item: item[1]):
            if at <= now and self._deadlines.get(timer) == at:
                del self._deadlines[timer]
                actions += self._fire(timer, now)
        return actions

    def _fire(self, timer: Timer, now: float) -> list[Action]:
        match timer:
            case Timer.OK_RETRANSMIT:
                if not self._step(T.OK_RETRANSMIT):
                    return []
                self._ok_interval = min(self._ok_interval * 2, self.t2)
                self._deadlines[Timer.OK_RETRANSMIT] = now + self._ok_interval
                return [ResendOk()]
            case Timer.NO_ACK:
                if not self._step(T.NO_ACK):
                    return []
                self._deadlines.pop(Timer.OK_RETRANSMIT, None)
                self._bye_after_ack = False
                warning = Log(logging.WARNING, "no ACK for our 200 OK: ending the call")
                return [warning, *self._bye("hung up")]
            case Timer.ACK_WAIT:
                return [
                    Log(logging.WARNING, "the far end's Contact could not be reached: no ACK sent"),
                    *self._end(T.ACK_UNSENT, 503, "the far end's Contact cannot be reached"),
                ]
            case Timer.RING:
                if not self.can(T.RING_TIMEOUT):
                    return []
                reason = "Temporarily Unavailable (no answer)"
                self.limit_reached = "ring timeout"
                return [
                    Log(logging.INFO, "not answered in time: 480"),
                    Respond(480, reason),
                    *self._end(T.RING_TIMEOUT, 480, "no answer"),
                ]
            case Timer.MAX_DURATION:
                reason = "maximum call duration"
                if not self.can(T.MAX_DURATION):
                    return []
                self.limit_reached = reason
                log = Log(logging.INFO, f"hanging up: {reason} reached")
                return [
                    log,
                    *self._hang_up(T.MAX_DURATION, None, bye_reason=reason, ended_reason=reason),
                ]

    # -- our INVITE: its responses (section 13.2.2) ----------------------------------------------

    def provisional(self, now: float, status: int, sdp: bytes = b"") -> list[Action]:
        """A 1xx to our INVITE; ``sdp``: the SDP answer in it, if any (early media)."""
        self._provisional = True
        if status == 100:
            if not self._step(T.TRYING):
                return []
            return self._deferred_cancel()
        if not self._step(T.PROVISIONAL):
            return []
        if self.state is S.CANCELLING:
            return self._deferred_cancel()
        if sdp:
            self._awaiting_media = (T.PROVISIONAL, status)
            return [ApplyMedia(sdp)]
        return self._early_event(status, early_media=False)

    def _deferred_cancel(self) -> list[Action]:
        if self.state is S.CANCELLING and not self._cancel_sent:
            self._cancel_sent = True
            return [SendCancel()]
        return []

    def _early_event(self, status: int, *, early_media: bool) -> list[Action]:
        """RINGING and PROGRESS reach the handler once each per call, however many 18x come."""
        if status == 183 or early_media:
            event = TellHandler.PROGRESS
        elif status == 180:
            event = TellHandler.RINGING
        else:
            return []
        if event in self._told:
            return []
        self._told.add(event)
        return [Tell(event)]

    def accepted(self, now: float, sdp: bytes = b"") -> list[Action]:
        """A 2xx to our INVITE whose dialog the edge made: ACK it and connect (or BYE, when it
        crossed our CANCEL). A retransmission of it is ACKed again (section 13.2.2.4)."""
        if self._acked:
            return self.accepted_again(now)
        if not self._step(T.ACCEPTED):
            return []
        self._acked = True
        if self.state is S.TERMINATING:  # the 2xx crossed our CANCEL
            self._bye_reason = "hung up"
            return [SendAck(), SendBye(self._bye_reason)]
        if sdp or not self._media_known:  # else the 18x's answer stands
            self._awaiting_media = (T.ACCEPTED, 200)
            return [SendAck(), ApplyMedia(sdp)]
        return [SendAck(), *self._connected(proven=False)]

    def bad_2xx(self, now: float, reason: str) -> list[Action]:
        """A 2xx whose dialog cannot be made (a malformed Contact, say)."""
        return [
            Log(logging.WARNING, f"unusable 2xx to our INVITE: {reason}"),
            *self._end(T.BAD_2XX, 502, f"bad 2xx from the remote end: {reason}"),
        ]

    def ack_unsent(self, now: float) -> list[Action]:
        """Our ACK could not go out (the far end's Contact is not resolved yet): it goes with
        the 2xx's next retransmission; 64*T1 later the call is given up."""
        if Timer.ACK_WAIT not in self._deadlines and not self.ended:
            self._deadlines[Timer.ACK_WAIT] = now + 64 * self.t1
        return []

    def ack_sent(self) -> None:
        self._deadlines.pop(Timer.ACK_WAIT, None)

    def final_failure(self, now: float, status: int, reason: str) -> list[Action]:
        """A 3xx-6xx to our INVITE: a challenge to answer, or the end of the call."""
        if status in (401, 407) and self.can(T.CHALLENGED):
            return [AnswerChallenge(status, reason)]
        return self.rejected(now, status, reason)

    def invite_resent(self, now: float) -> list[Action]:
        """The INVITE went out again with credentials (section 22.2)."""
        if self._step(T.CHALLENGED):
            self._provisional = False
        return []

    def rejected(self, now: float, status: int, reason: str) -> list[Action]:
        return self._end(T.REJECTED, status, reason or reason_phrase(status, ""))

    def invite_timeout(self, now: float) -> list[Action]:
        return self._end(T.INVITE_TIMEOUT, 408, "no answer (timeout)")

    def cancel_timeout(self, now: float) -> list[Action]:
        return self._end(T.CANCEL_TIMEOUT, 408, "CANCEL not answered")

    # -- the far end's INVITE (section 13.3.1) ---------------------------------------------------

    def command(self, now: float, verb: str, status: int | None = None) -> list[Action]:
        """A handler command about the INVITE: RINGING, PROGRESS, ANSWER or HANGUP."""
        trigger = _COMMANDS[verb]
        if not self.can(trigger):
            if trigger is T.HANGUP:
                return [CommandRefused(verb, f"the call is already {self.state.value}")]
            return [CommandRefused(verb, f"not possible while the call is {self.state.value}")]
        match trigger:
            case T.RING:
                self._step(T.RING)
                return [Respond(180, "Ringing")]
            case T.PROGRESS:
                if not self.offer_in_invite:
                    return [CommandRefused(verb, "the INVITE has no SDP offer to answer early")]
                self._step(T.PROGRESS)
                return [Respond(183, "Session Progress", sdp=True), StartMedia()]
            case T.ANSWER:
                self._step(T.ANSWER)
                self._deadlines.pop(Timer.RING, None)
                self._deadlines[Timer.NO_ACK] = now + 64 * self.t1
                if not self.reliable:
                    self._ok_interval = self.t1
                    self._deadlines[Timer.OK_RETRANSMIT] = now + self.t1
                return [Respond(200, "OK", sdp=True)]
            case _:
                return self.hangup(now, status)

    def accepted_again(self, now: float) -> list[Action]:
        """A retransmission of the 2xx to our INVITE (after its transaction, too): ACK again."""
        if not self._acked:
            return []
        return [ResendAck()] if self._step(T.ACCEPTED_AGAIN) else []

    def ack(self, now: float, sdp: bytes = b"") -> list[Action]:
        """The ACK to our 2xx to the INVITE (not to a re-INVITE's)."""
        if self.state is not S.ANSWERING:
            return []
        self._deadlines.pop(Timer.OK_RETRANSMIT, None)
        self._deadlines.pop(Timer.NO_ACK, None)
        if self._bye_after_ack:
            self._step(T.ACK_AFTER_HANGUP)
            return [ConfirmDialog(), *self._bye(self._bye_reason)]
        self._step(T.ACK)
        if not self.offer_in_invite:  # we offered in the 2xx: the ACK has the answer
            self._awaiting_media = (T.ACK, 200)
            return [ConfirmDialog(), ApplyMedia(sdp)]
        return [ConfirmDialog(), *self._connected(proven=True)]

    def cancel(self, now: float) -> list[Action]:
        """CANCEL for the INVITE (section 9.2; the edge answers the CANCEL itself 200): 487
        to the INVITE if it is not answered yet; a CANCEL that crossed our 2xx changes
        nothing."""
        if not self.can(T.CANCEL):
            return []
        return [
            Respond(487, "Request Terminated"),
            *self._end(T.CANCEL, 487, "cancelled by the caller"),
        ]

    # -- media facts ----------------------------------------------------------------------------

    def media_applied(self, now: float) -> list[Action]:
        waiting, self._awaiting_media = self._awaiting_media, None
        if waiting is None:
            raise LocalProtocolError("media_applied without ApplyMedia")
        if not self._step(T.MEDIA_APPLIED):
            return []
        cause, status = waiting
        if cause is T.PROVISIONAL:
            self._media_known = True
            return [StartMedia(), *self._early_event(status, early_media=True)]
        return self._connected(proven=cause is T.ACK)

    def media_failed(self, now: float, reason: str) -> list[Action]:
        waiting, self._awaiting_media = self._awaiting_media, None
        if waiting is None:
            raise LocalProtocolError("media_failed without ApplyMedia")
        cause, status = waiting
        if not self._step(T.MEDIA_FAILED):
            return []
        if cause is T.PROVISIONAL:
            log = Log(logging.WARNING, f"ignoring unusable SDP in {status}: {reason}")
            return [log, *self._early_event(status, early_media=False)]
        where = "no usable SDP answer in the ACK" if cause is T.ACK else "unusable SDP answer"
        return [Log(logging.WARNING, f"{where}: {reason}"), *self._bye("hung up")]

    def _connected(self, *, proven: bool) -> list[Action]:
        return [StartMedia(proven=proven), Tell(TellHandler.CONNECTED)]

    # -- ending (section 15) --------------------------------------------------------------------

    def hangup(
        self,
        now: float,
        status: int | None = None,
        *,
        handler_gone: bool = False,
        reason: str = "hung up",
    ) -> list[Action]:
        """End the call from our side, as fits its state: a final response to an unanswered
        INVITE (``status``, else 480 when the handler is gone, else 603), CANCEL before the
        answer (section 9.1), BYE with ``reason`` once the ACK came (section 15)."""
        return self._hang_up(T.HANGUP, status, bye_reason=reason, handler_gone=handler_gone)

    def _hang_up(
        self,
        trigger: Trigger,
        status: int | None,
        *,
        bye_reason: str,
        ended_reason: str = "hung up before answer",
        handler_gone: bool = False,
    ) -> list[Action]:
        state = self.state
        if not self.can(trigger):
            return []
        if state in _UNANSWERED:
            if status is None:
                status = 480 if handler_gone else 603
            phrase = reason_phrase(status)
            if trigger is T.MAX_DURATION:
                status, phrase = 480, "Temporarily Unavailable"
            return [Respond(status, phrase), *self._end(trigger, status, ended_reason)]
        self._step(trigger)
        if state in _UAC_EARLY:
            return [StopMedia(), *(self._deferred_cancel() if self._provisional else [])]
        if self.state is S.ANSWERING:
            self._bye_after_ack = True
            self._bye_reason = bye_reason
            return []
        if self.state is S.TERMINATING and state is not S.TERMINATING:
            return self._bye(bye_reason)
        return []

    def _bye(self, reason: str) -> list[Action]:
        """BYE (the state is TERMINATING now, by a hang-up, NO_ACK or MEDIA_FAILED)."""
        self._bye_reason = reason
        self._deadlines.pop(Timer.OK_RETRANSMIT, None)
        self._deadlines.pop(Timer.NO_ACK, None)
        return [StopMedia(), SendBye(reason)]

    def abort(self, now: float, status: int = 500) -> list[Action]:
        """Something unexpected broke the call: end it from whatever state it is in."""
        state = self.state
        if state in (S.ANSWERING, S.CONNECTED):
            self._step(T.ABORT)
            return self._bye("internal error")
        if state in (S.CANCELLING, S.TERMINATING):
            self._step(T.ABORT)
            return []
        return self._hang_up(T.ABORT, status, bye_reason="internal error")

    def not_started(self, now: float, status: int, reason: str, phrase: str) -> list[Action]:
        """The call could not start (no handler, nowhere to send the INVITE): ``phrase`` is
        the final response to the far end's INVITE."""
        if not self.can(T.NOT_STARTED):
            return []
        respond: list[Action] = [Respond(status, phrase)] if self.role is Role.UAS else []
        return [*respond, *self._end(T.NOT_STARTED, status, reason)]

    def bye(self, now: float) -> list[Action]:
        """A BYE from the far end (the edge answers it 200): 487 to an INVITE not answered
        yet (section 15.1.2)."""
        respond: list[Action] = (
            [Respond(487, "Request Terminated")] if self.state in _UNANSWERED else []
        )
        ended = self._end(T.BYE, 200, "remote hangup")
        return [*respond, *ended] if ended else []

    def bye_answered(self, now: float) -> list[Action]:
        return self._end(T.BYE_ANSWERED, 200, self._bye_reason)

    def bye_timeout(self, now: float) -> list[Action]:
        return self._end(T.BYE_TIMEOUT, 408, "BYE not answered")

    def bye_unsent(self, now: float, why: str) -> list[Action]:
        return [
            Log(logging.WARNING, f"BYE not sent: {why}"),
            *self._end(
                T.BYE_UNSENT, 503, f"{self._bye_reason} (the far end is unreachable: {why})"
            ),
        ]

    def force_end(self, status: int, reason: str) -> list[Action]:
        """End here and now, without any more SIP (the last resort of an aborting call)."""
        return self._end(T.FORCE_END, status, reason)
