"""Mid-call offer/answer of one call: hold, resume, re-INVITE and UPDATE, sans-I/OS.

Theory of operation
-------------------
Once a call is connected, either side may change the session with a new offer (RFC 3264
section 8), in a re-INVITE (RFC 3261 section 14) or an UPDATE (RFC 3311). This machine is the
second region of a call's INVITE session (the first, the call's own state, is
`siproc.sip.invite_session`): its state says which offer/answer exchange is in progress, and
its one table `OFFER_TRANSITIONS` says how that changes. Like the first region, each input
takes ``now`` and returns actions; the edge (`siproc.calls.session`) builds the SDP and the
messages and reports back.

- ``HOLD`` offers ``sendonly`` (``inactive`` when the far end holds us already, section 8.4),
  ``RESUME`` offers ``sendrecv``: `SendReinvite`; the far end's answer comes back through
  `ApplyMedia` (mid-call) and `media_applied`, after which the hold state changes.
- One INVITE transaction at a time per dialog (section 14.1): a re-INVITE that arrives while
  ours is pending gets 491 (section 14.2); our re-INVITE answered 491 is sent again after a
  random 2.1-4 s when we own the Call-ID (we placed the call), 0-2 s otherwise (section 14.1),
  drawn from the injected ``rng``, at most `MAX_GLARE_RETRIES` times.
- The far end's re-INVITE is answered (`AnswerOffer`, or `MakeOffer` when it has no SDP: the
  ACK brings the answer); our 2xx is retransmitted until its ACK (section 13.3.1.4) and 64*T1
  without one ends the call. An UPDATE is answered at once; one before the call is connected
  gets 500 with Retry-After (RFC 3311 section 5.2), one while an offer of ours is pending 491.
- A failed re-INVITE of ours leaves the session as it was (section 14.1) and gives the handler
  ``ERROR HOLD|RESUME <status> <reason>``; 408 and 481 also end the call (section 12.2.1.2).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from enum import Enum

from siproc.sip.errors import LocalProtocolError
from siproc.sip.invite_session import ApplyMedia, CommandRefused, Log, Tell, TellHandler
from siproc.sip.state_table import TableMachine

__all__ = [
    "DIALOG_GONE",
    "GLARE_OTHER_DELAY",
    "GLARE_OWNER_DELAY",
    "MAX_GLARE_RETRIES",
    "OFFER_TRANSITIONS",
    "AnswerOffer",
    "HangUp",
    "MakeOffer",
    "OfferState",
    "OfferTrigger",
    "Reply",
    "ResendReinviteOk",
    "SendReinvite",
    "SessionUpdate",
    "UpdateAction",
    "UpdateTimer",
]

#: Our re-INVITE is sent again at most this often after 491 Request Pending (then ERROR).
MAX_GLARE_RETRIES = 3
#: RFC 3261 section 14.1: the 491 back-off for the owner of the Call-ID and for the other side.
GLARE_OWNER_DELAY = (2.1, 4.0)
GLARE_OTHER_DELAY = (0.0, 2.0)
#: RFC 3311 section 5.2 / RFC 3261 section 14.2: Retry-After of a 500 to a premature offer.
RETRY_AFTER_MAX = 10
#: Final responses to our re-INVITE after which the dialog is over (RFC 3261 section 12.2.1.2).
DIALOG_GONE = frozenset({408, 481})


class OfferState(Enum):
    IDLE = "idle"
    OFFERING = "offering"  # our re-INVITE is out
    BACKING_OFF = "backing off"  # our re-INVITE got 491: sent again at the GLARE deadline
    ANSWERED = "answered"  # our 2xx to the far end's re-INVITE waits for its ACK


class OfferTrigger(Enum):
    SEND = "re-INVITE sent"
    QUEUE = "HOLD/RESUME waits for the ACK"
    UNSENT = "re-INVITE could not be sent"
    ACCEPTED = "2xx to our re-INVITE"
    GLARE = "491 to our re-INVITE"
    FAILED = "3xx-6xx or timeout of our re-INVITE"
    RETRY = "491 back-off over"
    REINVITE = "re-INVITE answered 2xx"
    REINVITE_REFUSED = "re-INVITE answered 491 or 488"
    UPDATE = "UPDATE answered"
    UPDATE_REFUSED = "UPDATE answered 491"
    ACK = "ACK to our 2xx"
    ACK_BACKING_OFF = "ACK to our 2xx while our back-off runs"
    OK_RETRANSMIT = "2xx retransmission timer"
    NO_ACK = "no ACK for our 2xx"


OS = OfferState
OT = OfferTrigger
#: The one table of the mid-call offer/answer (DESIGN rule 3).
OFFER_TRANSITIONS: dict[tuple[OfferState, OfferTrigger], OfferState] = {
    (OS.IDLE, OT.SEND): OS.OFFERING,
    (OS.ANSWERED, OT.QUEUE): OS.ANSWERED,  # section 14.1: after the ACK of theirs
    (OS.OFFERING, OT.UNSENT): OS.IDLE,
    (OS.OFFERING, OT.ACCEPTED): OS.IDLE,
    (OS.OFFERING, OT.GLARE): OS.BACKING_OFF,
    (OS.OFFERING, OT.FAILED): OS.IDLE,
    (OS.BACKING_OFF, OT.RETRY): OS.OFFERING,
    (OS.ANSWERED, OT.RETRY): OS.ANSWERED,  # sent after the ACK
    (OS.IDLE, OT.REINVITE): OS.ANSWERED,
    (OS.BACKING_OFF, OT.REINVITE): OS.ANSWERED,
    (OS.ANSWERED, OT.REINVITE): OS.ANSWERED,  # a new INVITE: the last ACK is overdue anyway
    (OS.IDLE, OT.REINVITE_REFUSED): OS.IDLE,  # 491 before the call is connected, or 488
    (OS.OFFERING, OT.REINVITE_REFUSED): OS.OFFERING,  # 491: the INVITEs crossed
    (OS.BACKING_OFF, OT.REINVITE_REFUSED): OS.BACKING_OFF,
    (OS.ANSWERED, OT.REINVITE_REFUSED): OS.ANSWERED,
    (OS.IDLE, OT.UPDATE): OS.IDLE,
    (OS.BACKING_OFF, OT.UPDATE): OS.BACKING_OFF,
    (OS.ANSWERED, OT.UPDATE): OS.ANSWERED,
    (OS.OFFERING, OT.UPDATE_REFUSED): OS.OFFERING,
    (OS.ANSWERED, OT.UPDATE_REFUSED): OS.ANSWERED,  # our offer in the 2xx is pending
    (OS.ANSWERED, OT.ACK): OS.IDLE,
    (OS.ANSWERED, OT.ACK_BACKING_OFF): OS.BACKING_OFF,
    (OS.ANSWERED, OT.OK_RETRANSMIT): OS.ANSWERED,
    (OS.ANSWERED, OT.NO_ACK): OS.IDLE,
}


class UpdateTimer(Enum):
    GLARE = "491 back-off"
    OK_RETRANSMIT = "re-INVITE 2xx retransmission"
    NO_ACK = "no ACK for the re-INVITE 2xx"


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendReinvite:
    """Offer ``direction`` in a re-INVITE; the edge reports `unsent` or `reinvite_final`."""

    direction: str


@dataclass(frozen=True, slots=True)
class AnswerOffer:
    """Answer the far end's offer (media applied at once, RFC 3264 section 6), keeping our
    hold; the edge reports `answered(remote_hold)` or `unusable`."""

    hold: bool


@dataclass(frozen=True, slots=True)
class MakeOffer:
    """Offer ``direction`` in our 2xx to an offer-less re-INVITE; the ACK brings the answer."""

    direction: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request at hand (a re-INVITE or an UPDATE); ``sdp``: with our SDP."""

    status: int
    reason: str
    sdp: bool = False
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if not 200 <= self.status < 700:
            raise LocalProtocolError(f"no final response {self.status}")


@dataclass(frozen=True, slots=True)
class ResendReinviteOk:
    """Our 2xx to the far end's re-INVITE again (section 13.3.1.4)."""


@dataclass(frozen=True, slots=True)
class HangUp:
    """The dialog is gone or unreachable: end the call (BYE) with ``reason``."""

    reason: str = "hung up"


UpdateAction = (
    SendReinvite
    | AnswerOffer
    | MakeOffer
    | Reply
    | ResendReinviteOk
    | HangUp
    | ApplyMedia
    | CommandRefused
    | Tell
    | Log
)


class SessionUpdate(TableMachine[OfferState, OfferTrigger]):
    """The mid-call offer/answer of one call; see the module docstring.

    ``owner``: we placed the call (the Call-ID is ours: the longer 491 back-off);
    ``rng``: draws the back-off and Retry-After (injected, so tests are deterministic).
    """

    def __init__(
        self, *, owner: bool, rng: random.Random, t1: float = 0.5, t2: float = 4.0
    ) -> None:
        super().__init__(OFFER_TRANSITIONS, OS.IDLE)
        self.owner = owner
        self.rng = rng
        self.t1 = t1
        self.t2 = t2
        self.local_hold = False  # HOLD is in force: our SDP says we do not receive
        self.remote_hold = False  # the far end does not want to receive (HOLD event sent)
        self._want: bool | None = None  # HOLD (True) / RESUME (False) being carried out
        self._direction = ""  # what our outstanding offer asked for
        self._glare_retries = 0
        self._deadlines: dict[UpdateTimer, float] = {}
        self._ok_interval = t1
        self._answered_cseq = -1  # the far end's re-INVITE our 2xx answers
        self._offer_in_ok: str | None = None  # we offered (this direction) in that 2xx
        self._reliable = False
        self._media_for: str | None = None  # "answer" to our re-INVITE, "ack" to our 2xx offer
        self._ok_status = 200  # the 2xx whose answer is being applied

    @property
    def media_for(self) -> str | None:
        """What the pending `ApplyMedia` answers: ``answer`` (to our re-INVITE's offer) or
        ``ack`` (the ACK's answer to the offer in our 2xx)."""
        return self._media_for

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def deadline(self, timer: UpdateTimer) -> float | None:
        return self._deadlines.get(timer)

    def close(self) -> None:
        """The call is over: no more timers, nothing in progress."""
        self._deadlines.clear()
        self._want = None
        self._media_for = None

    # -- HOLD and RESUME ------------------------------------------------------------------------

    def _verb(self, hold: bool | None = None) -> str:
        return "HOLD" if (self._want if hold is None else hold) else "RESUME"

    def command(self, now: float, hold: bool, *, connected: bool, state: str) -> list[UpdateAction]:
        """``HOLD`` (True) or ``RESUME`` (False) from the handler; ``state``: the call's."""
        verb = self._verb(hold)
        if not connected:
            return [CommandRefused(verb, f"not possible while the call is {state}")]
        if self._want is not None:
            return [CommandRefused(verb, f"{self._verb()} is still in progress")]
        if self.local_hold == hold:
            what = "already on hold" if hold else "not on hold"
            return [CommandRefused(verb, f"the call is {what}")]
        self._want = hold
        self._glare_retries = 0
        if self._step(OT.QUEUE):
            return []
        return self._send()

    def _send(self) -> list[UpdateAction]:
        if self._want is None or not self._step(OT.SEND):
            return []
        return [SendReinvite(self._offer_direction())]

    def _offer_direction(self) -> str:
        """What our offer asks for: sendonly to hold (inactive when the far end holds us
        already, RFC 3264 section 8.4), sendrecv to resume."""
        direction = "sendrecv"
        if self._want:
            direction = "inactive" if self.remote_hold else "sendonly"
        self._direction = direction
        return direction

    def unsent(self, now: float, reason: str) -> list[UpdateAction]:
        """Our re-INVITE could not be made or sent (SRTP policy, the far end unreachable)."""
        verb = self._verb()
        self._want = None
        self._step(OT.UNSENT)
        return [CommandRefused(verb, reason)]

    def reinvite_final(
        self, now: float, status: int, reason: str, sdp: bytes = b"", *, connected: bool
    ) -> list[UpdateAction]:
        """The final response to our re-INVITE (408 for none); 2xx ones the edge has ACKed."""
        verb = self._verb()
        if 200 <= status < 300:
            if not self._step(OT.ACCEPTED):
                return []
            if not connected or self._want is None:
                self._want = None
                return []
            self._media_for = "answer"
            self._ok_status = status
            return [ApplyMedia(sdp, mid_call=True)]
        if status == 491 and self._glare_retries < MAX_GLARE_RETRIES and connected:
            if not self._step(OT.GLARE):
                return []
            self._glare_retries += 1
            low, high = GLARE_OWNER_DELAY if self.owner else GLARE_OTHER_DELAY
            delay = round(self.rng.uniform(low, high), 2)  # units of 10 ms (section 14.1)
            self._deadlines[UpdateTimer.GLARE] = now + delay
            text = f"re-INVITE crossed the far end's (491): again in {delay:.2f} s"
            return [Log(logging.INFO, text)]
        if not self._step(OT.FAILED):
            return []
        if not connected:
            self._want = None
            return []
        return self._failed(verb, status, reason)

    def _failed(self, verb: str, status: int, reason: str) -> list[UpdateAction]:
        self._want = None
        actions: list[UpdateAction] = [CommandRefused(verb, f"{status} {reason}".rstrip())]
        if status in DIALOG_GONE:
            text = f"re-INVITE got {status}: the dialog is gone; ending the call"
            actions += [Log(logging.WARNING, text), HangUp()]
        return actions

    def unackable(self, now: float) -> list[UpdateAction]:
        """The 2xx to our re-INVITE cannot be ACKed (its new Contact does not resolve)."""
        self._step(OT.ACCEPTED)
        self._want = None
        return [HangUp("the far end's new Contact cannot be reached")]

    # -- media facts ----------------------------------------------------------------------------

    def media_applied(self, now: float, *, remote_hold: bool) -> list[UpdateAction]:
        """The SDP answer `ApplyMedia` asked for is in force; ``remote_hold``: it says the
        far end does not want to receive."""
        purpose, self._media_for = self._media_for, None
        if purpose is None:
            raise LocalProtocolError("media_applied without ApplyMedia")
        actions: list[UpdateAction] = []
        direction = self._direction
        if purpose == "answer":
            want = self._want
            self._want = None
            if want is not None:
                self.local_hold = want
                what = "put on hold" if want else "taken off hold"
                actions.append(Log(logging.INFO, f"call {what} by us"))
        else:
            direction = self._offer_in_ok or "sendrecv"
        return actions + self._hold_events(remote_hold, direction) + self._send()

    def media_failed(self, now: float, reason: str) -> list[UpdateAction]:
        purpose, self._media_for = self._media_for, None
        if purpose is None:
            raise LocalProtocolError("media_failed without ApplyMedia")
        if purpose == "answer":
            text = f"unusable SDP answer to our re-INVITE: {reason}"
            verb = self._verb()
            return [
                Log(logging.WARNING, text),
                *self._failed(verb, self._ok_status, f"unusable SDP answer ({reason})"),
            ]
        text = f"no usable SDP answer in the ACK: the session is unchanged ({reason})"
        return [Log(logging.WARNING, text), *self._send()]

    def _hold_events(self, remote_hold: bool, our_offer: str | None) -> list[UpdateAction]:
        """A new offer/answer is in force: report the far end's hold or resume. An answer to
        our offer shows the far end's wish to receive only when we offered to send."""
        if our_offer is not None and our_offer not in ("sendrecv", "sendonly"):
            return []
        if remote_hold == self.remote_hold:
            return []
        self.remote_hold = remote_hold
        text = "put on hold" if remote_hold else "taken off hold"
        sending = "paused" if remote_hold else "resumed"
        return [
            Log(logging.INFO, f"{text} by the remote end: sending {sending}"),
            Tell(TellHandler.HOLD if remote_hold else TellHandler.RESUME),
        ]

    # -- the far end's offers -------------------------------------------------------------------

    def reinvite(
        self, now: float, cseq: int, *, has_offer: bool, connected: bool, reliable: bool
    ) -> list[UpdateAction]:
        """A re-INVITE (RFC 3261 section 14.2): 491 while ours is pending, else answer its
        offer, or offer in our 2xx."""
        if not connected or self.state is OS.OFFERING:
            self._step(OT.REINVITE_REFUSED)
            return [Reply(491, "Request Pending")]
        self._answered_cseq = cseq
        self._reliable = reliable
        if has_offer:
            self._offer_in_ok = None
            return [AnswerOffer(self.local_hold)]
        direction = "sendrecv"
        if self.local_hold:
            direction = "inactive" if self.remote_hold else "sendonly"
        self._offer_in_ok = direction
        return [MakeOffer(direction)]

    def unusable(self, now: float, reason: str) -> list[UpdateAction]:
        """The far end's offer cannot be answered (or our offer not made): 488."""
        self._step(OT.REINVITE_REFUSED)
        return [Reply(488, f"Not Acceptable Here ({reason})")]

    def answered(
        self, now: float, *, remote_hold: bool | None, invite: bool = True
    ) -> list[UpdateAction]:
        """Our SDP for the far end's re-INVITE (or UPDATE) is ready: 200 with it.
        ``remote_hold``: what its offer says (None when we offered)."""
        if invite:
            self._deadlines.pop(UpdateTimer.OK_RETRANSMIT, None)
            self._step(OT.REINVITE)
            self._deadlines[UpdateTimer.NO_ACK] = now + 64 * self.t1
            if not self._reliable:
                self._ok_interval = self.t1
                self._deadlines[UpdateTimer.OK_RETRANSMIT] = now + self.t1
        else:
            self._step(OT.UPDATE)
        actions: list[UpdateAction] = [Reply(200, "OK", sdp=True)]
        if remote_hold is not None:
            actions += self._hold_events(remote_hold, None)
        return actions

    def update(
        self, now: float, *, has_sdp: bool, sdp_type: bool, connected: bool
    ) -> list[UpdateAction]:
        """An UPDATE (RFC 3311 section 5.2): a target refresh, with or without an offer."""
        if has_sdp and not sdp_type:
            return [Reply(415, "Unsupported Media Type")]
        if not has_sdp:
            return [Reply(200, "OK")]
        if not connected:
            after = self.rng.randint(0, RETRY_AFTER_MAX)
            return [Reply(500, "Server Internal Error", retry_after=after)]
        if self.state is OS.OFFERING or (self.state is OS.ANSWERED and self._offer_in_ok):
            self._step(OT.UPDATE_REFUSED)
            return [Reply(491, "Request Pending")]
        return [AnswerOffer(self.local_hold)]

    def ack(self, now: float, cseq: int, sdp: bytes = b"") -> list[UpdateAction]:
        """The ACK to our 2xx to a re-INVITE; it answers our offer if we made one."""
        if self.state is not OS.ANSWERED or cseq != self._answered_cseq:
            return []
        self._deadlines.pop(UpdateTimer.OK_RETRANSMIT, None)
        self._deadlines.pop(UpdateTimer.NO_ACK, None)
        if UpdateTimer.GLARE in self._deadlines:
            self._step(OT.ACK_BACKING_OFF)
        else:
            self._step(OT.ACK)
        if self._offer_in_ok is not None:
            self._media_for = "ack"
            return [ApplyMedia(sdp, mid_call=True)]
        return self._send()

    # -- timers ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[UpdateAction]:
        actions: list[UpdateAction] = []
        for timer, at in sorted(self._deadlines.items(), key=lambda item: item[1]):
            if at > now or self._deadlines.get(timer) != at:
                continue
            del self._deadlines[timer]
            match timer:
                case UpdateTimer.GLARE:  # in ANSWERED: sent after the ACK
                    if self._step(OT.RETRY) and self.state is OS.OFFERING:
                        actions.append(SendReinvite(self._offer_direction()))
                case UpdateTimer.OK_RETRANSMIT:
                    if self._step(OT.OK_RETRANSMIT):
                        self._ok_interval = min(self._ok_interval * 2, self.t2)
                        self._deadlines[timer] = now + self._ok_interval
                        actions.append(ResendReinviteOk())
                case UpdateTimer.NO_ACK:
                    if self._step(OT.NO_ACK):
                        self._deadlines.pop(UpdateTimer.OK_RETRANSMIT, None)
                        text = "no ACK for our 2xx to the re-INVITE: ending the call"
                        actions += [Log(logging.WARNING, text), HangUp()]
        return actions
