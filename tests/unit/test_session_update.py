"""sip/session_update.py: hold, resume, re-INVITE, UPDATE and 491 glare, pure (virtual time).

As in test_invite_session.py, every test is a scenario that makes its machines with ``make``,
and `test_every_row_of_the_table_is_exercised` reruns them all to compare the rows taken with
`OFFER_TRANSITIONS`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import pytest

from siproc.sip.errors import LocalProtocolError
from siproc.sip.invite_session import ApplyMedia, CommandRefused, Log, Tell, TellHandler
from siproc.sip.session_update import (
    MAX_GLARE_RETRIES,
    OFFER_TRANSITIONS,
    AnswerOffer,
    HangUp,
    MakeOffer,
    OfferState,
    Reply,
    ResendReinviteOk,
    SendReinvite,
    SessionUpdate,
    UpdateAction,
    UpdateTimer,
)

OS = OfferState
T1 = 0.5
SDP = b"v=0\r\n"
Make = Callable[..., SessionUpdate]
SCENARIOS: list[Callable[[Make], None]] = []


def scenario(fn: Callable[[Make], None]) -> Callable[[Make], None]:
    SCENARIOS.append(fn)
    return fn


def plain_make(owner: bool = False, seed: int = 0, **kwargs: Any) -> SessionUpdate:
    return SessionUpdate(owner=owner, rng=random.Random(seed), t1=T1, t2=4.0, **kwargs)


def quiet(actions: list[UpdateAction]) -> list[UpdateAction]:
    return [a for a in actions if not isinstance(a, Log)]


def hold(m: SessionUpdate, now: float = 0) -> list[UpdateAction]:
    return m.command(now, True, connected=True, state="connected")


def answered_reinvite(m: SessionUpdate, now: float = 0, cseq: int = 1) -> None:
    assert m.reinvite(now, cseq, has_offer=True, connected=True, reliable=False) == [
        AnswerOffer(m.local_hold)
    ]
    m.answered(now, remote_hold=False)
    assert m.state is OS.ANSWERED


def backing_off(m: SessionUpdate, now: float = 0) -> None:
    hold(m, now)
    m.reinvite_final(now, 491, "Request Pending", connected=True)
    assert m.state is OS.BACKING_OFF


# -- our HOLD and RESUME ------------------------------------------------------------------------


@scenario
def hold_then_resume(make: Make) -> None:
    m = make()
    assert hold(m) == [SendReinvite("sendonly")]
    assert m.state is OS.OFFERING
    assert hold(m) == [CommandRefused("HOLD", "HOLD is still in progress")]
    assert m.reinvite_final(0, 200, "OK", SDP, connected=True) == [ApplyMedia(SDP, mid_call=True)]
    assert quiet(m.media_applied(0, remote_hold=False)) == []
    assert m.local_hold and m.state is OS.IDLE
    assert hold(m) == [CommandRefused("HOLD", "the call is already on hold")]
    assert m.command(0, False, connected=True, state="connected") == [SendReinvite("sendrecv")]
    m.reinvite_final(0, 200, "OK", SDP, connected=True)
    m.media_applied(0, remote_hold=False)
    assert not m.local_hold
    assert m.command(0, False, connected=True, state="connected") == [
        CommandRefused("RESUME", "the call is not on hold")
    ]


@scenario
def hold_refused_before_the_call_is_connected(make: Make) -> None:
    m = make()
    assert m.command(0, True, connected=False, state="early") == [
        CommandRefused("HOLD", "not possible while the call is early")
    ]


@scenario
def hold_while_held_offers_inactive(make: Make) -> None:
    """RFC 3264 section 8.4: the far end holds us already."""
    m = make()
    m.reinvite(0, 1, has_offer=True, connected=True, reliable=True)
    assert Tell(TellHandler.HOLD) in m.answered(0, remote_hold=True)
    m.ack(0, 1)
    assert hold(m) == [SendReinvite("inactive")]
    m.reinvite_final(0, 200, "OK", SDP, connected=True)
    assert quiet(m.media_applied(0, remote_hold=True)) == []  # our inactive says nothing


@scenario
def reinvite_unsent(make: Make) -> None:
    m = make()
    hold(m)
    assert m.unsent(0, "the far end cannot be reached") == [
        CommandRefused("HOLD", "the far end cannot be reached")
    ]
    assert m.state is OS.IDLE
    assert hold(m) == [SendReinvite("sendonly")]


@scenario
def reinvite_rejected_leaves_the_session(make: Make) -> None:
    m = make()
    hold(m)
    assert m.reinvite_final(0, 488, "Not Acceptable Here", connected=True) == [
        CommandRefused("HOLD", "488 Not Acceptable Here")
    ]
    assert not m.local_hold and m.state is OS.IDLE


@scenario
def reinvite_481_or_timeout_ends_the_call(make: Make) -> None:
    for status, reason in ((481, "Call/Transaction Does Not Exist"), (408, "Request Timeout")):
        m = make()
        hold(m)
        assert quiet(m.reinvite_final(0, status, reason, connected=True)) == [
            CommandRefused("HOLD", f"{status} {reason}"),
            HangUp(),
        ]


@scenario
def reinvite_final_after_the_call_ended_is_quiet(make: Make) -> None:
    m = make()
    hold(m)
    assert m.reinvite_final(0, 500, "Server Error", connected=False) == []
    m = make()
    hold(m)
    assert m.reinvite_final(0, 200, "OK", SDP, connected=False) == []


@scenario
def unusable_answer_to_our_reinvite(make: Make) -> None:
    m = make()
    hold(m)
    m.reinvite_final(0, 200, "OK", b"junk", connected=True)
    assert quiet(m.media_failed(0, "no m= line")) == [
        CommandRefused("HOLD", "200 unusable SDP answer (no m= line)")
    ]
    assert not m.local_hold


@scenario
def our_2xx_cannot_be_acked(make: Make) -> None:
    m = make()
    hold(m)
    assert m.unackable(0) == [HangUp("the far end's new Contact cannot be reached")]


# -- glare (RFC 3261 section 14.1) ----------------------------------------------------------------


@scenario
def glare_back_off_when_we_do_not_own_the_call_id(make: Make) -> None:
    m = make(owner=False)
    hold(m, 10)
    actions = m.reinvite_final(10, 491, "Request Pending", connected=True)
    at = m.deadline(UpdateTimer.GLARE)
    assert at is not None and 10.0 <= at <= 12.0
    assert actions == [Log(logging.INFO, f"re-INVITE crossed the far end's (491): again in "
                                         f"{at - 10:.2f} s")]  # fmt: skip
    assert m.handle_timer(at - 0.01) == []
    assert m.handle_timer(at) == [SendReinvite("sendonly")]
    assert m.state is OS.OFFERING


@scenario
def glare_back_off_when_we_own_the_call_id(make: Make) -> None:
    for seed in range(20):
        m = make(owner=True, seed=seed)
        backing_off(m, 0)
        at = m.deadline(UpdateTimer.GLARE)
        assert at is not None and 2.1 <= at <= 4.0
        assert round(at, 2) == at  # units of 10 ms


@scenario
def glare_gives_up_after_the_retries(make: Make) -> None:
    m = make()
    hold(m)
    now = 0.0
    for _ in range(MAX_GLARE_RETRIES):
        m.reinvite_final(now, 491, "Request Pending", connected=True)
        at = m.deadline(UpdateTimer.GLARE)
        assert at is not None
        now = at
        assert m.handle_timer(now) == [SendReinvite("sendonly")]
    assert m.reinvite_final(now, 491, "Request Pending", connected=True) == [
        CommandRefused("HOLD", "491 Request Pending")
    ]


@scenario
def their_reinvite_crossing_ours_gets_491(make: Make) -> None:
    m = make()
    hold(m)
    assert m.reinvite(0, 5, has_offer=True, connected=True, reliable=False) == [
        Reply(491, "Request Pending")
    ]
    assert m.state is OS.OFFERING
    assert m.update(0, has_sdp=True, sdp_type=True, connected=True) == [
        Reply(491, "Request Pending")
    ]


@scenario
def their_reinvite_while_we_back_off(make: Make) -> None:
    """Answered; the ACK comes before our back-off is over: we wait for the back-off."""
    m = make()
    backing_off(m)
    glare_at = m.deadline(UpdateTimer.GLARE)
    assert glare_at is not None
    answered_reinvite(m, 0.1, cseq=7)
    assert m.ack(0.2, 7) == []
    assert m.state is OS.BACKING_OFF
    assert m.handle_timer(glare_at) == [SendReinvite("sendonly")]
    m = make()  # the back-off ends before the ACK: our re-INVITE follows the ACK
    backing_off(m)
    glare_at = m.deadline(UpdateTimer.GLARE)
    assert glare_at is not None
    answered_reinvite(m, 0, cseq=7)
    m.handle_timer(glare_at)
    assert m.state is OS.ANSWERED
    assert m.ack(glare_at + 0.1, 7) == [SendReinvite("sendonly")]
    m = make()  # and a BACKING_OFF re-INVITE we cannot answer changes nothing
    backing_off(m)
    m.reinvite(0, 7, has_offer=True, connected=True, reliable=False)
    assert m.unusable(0, "bad") == [Reply(488, "Not Acceptable Here (bad)")]
    assert m.state is OS.BACKING_OFF


@scenario
def hold_while_their_reinvite_waits_for_its_ack(make: Make) -> None:
    m = make()
    answered_reinvite(m, cseq=3)
    assert hold(m) == []  # section 14.1: one INVITE transaction at a time
    assert m.ack(0, 2) == []  # not the ACK of that one
    assert m.ack(0, 3) == [SendReinvite("sendonly")]


# -- the far end's re-INVITE and UPDATE ---------------------------------------------------------


@scenario
def their_hold_and_resume(make: Make) -> None:
    m = make()
    assert m.reinvite(0, 1, has_offer=True, connected=True, reliable=False) == [AnswerOffer(False)]
    assert quiet(m.answered(0, remote_hold=True)) == [
        Reply(200, "OK", sdp=True),
        Tell(TellHandler.HOLD),
    ]
    m.ack(0, 1)
    m.reinvite(1, 2, has_offer=True, connected=True, reliable=False)
    assert quiet(m.answered(1, remote_hold=True)) == [Reply(200, "OK", sdp=True)]  # no news
    m.ack(1, 2)
    m.reinvite(2, 3, has_offer=True, connected=True, reliable=False)
    assert Tell(TellHandler.RESUME) in m.answered(2, remote_hold=False)


@scenario
def their_reinvite_before_the_call_is_connected(make: Make) -> None:
    m = make()
    assert m.reinvite(0, 1, has_offer=True, connected=False, reliable=False) == [
        Reply(491, "Request Pending")
    ]
    assert m.state is OS.IDLE


@scenario
def their_unusable_offer_gets_488(make: Make) -> None:
    m = make()
    m.reinvite(0, 1, has_offer=True, connected=True, reliable=False)
    assert m.unusable(0, "no common codec") == [Reply(488, "Not Acceptable Here (no common codec)")]
    assert m.state is OS.IDLE and m.next_deadline() is None


@scenario
def their_reinvite_without_sdp_gets_our_offer_and_the_ack_the_answer(make: Make) -> None:
    m = make()
    hold(m)
    m.reinvite_final(0, 200, "OK", SDP, connected=True)
    m.media_applied(0, remote_hold=False)
    assert m.reinvite(0, 4, has_offer=False, connected=True, reliable=False) == [
        MakeOffer("sendonly")  # we hold: our offer keeps not receiving
    ]
    assert m.answered(0, remote_hold=None) == [Reply(200, "OK", sdp=True)]
    assert m.update(0, has_sdp=True, sdp_type=True, connected=True) == [
        Reply(491, "Request Pending")  # our offer in the 2xx is pending
    ]
    assert m.ack(1, 4, SDP) == [ApplyMedia(SDP, mid_call=True)]
    assert m.media_for == "ack"
    assert quiet(m.media_applied(1, remote_hold=True)) == [Tell(TellHandler.HOLD)]


@scenario
def an_ack_with_an_unusable_answer_leaves_the_session(make: Make) -> None:
    m = make()
    m.reinvite(0, 4, has_offer=False, connected=True, reliable=False)
    m.answered(0, remote_hold=None)
    m.ack(1, 4, b"junk")
    actions = m.media_failed(1, "bad")
    assert quiet(actions) == [] and isinstance(actions[0], Log)
    assert m.state is OS.IDLE


@scenario
def our_2xx_to_their_reinvite_is_retransmitted_then_given_up(make: Make) -> None:
    m = make()
    answered_reinvite(m, 100, cseq=1)
    resent = []
    while m.state is OS.ANSWERED:
        at = m.next_deadline()
        assert at is not None
        actions = m.handle_timer(at)
        if ResendReinviteOk() in actions:
            resent.append(at - 100)
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert quiet(actions) == [HangUp()]
    assert at == 100 + 64 * T1


@scenario
def a_new_reinvite_replaces_the_wait_for_the_last_ack(make: Make) -> None:
    m = make()
    answered_reinvite(m, 0, cseq=1)
    answered_reinvite(m, 1, cseq=2)
    assert m.deadline(UpdateTimer.NO_ACK) == 1 + 64 * T1
    assert m.ack(2, 1) == []
    assert m.state is OS.ANSWERED
    m.reinvite(3, 3, has_offer=True, connected=True, reliable=False)
    m.unusable(3, "bad")  # a third we cannot answer: still waiting for the second's ACK
    assert m.state is OS.ANSWERED


@scenario
def updates(make: Make) -> None:
    m = make()
    assert m.update(0, has_sdp=True, sdp_type=False, connected=True) == [
        Reply(415, "Unsupported Media Type")
    ]
    assert m.update(0, has_sdp=False, sdp_type=False, connected=False) == [Reply(200, "OK")]
    [early] = m.update(0, has_sdp=True, sdp_type=True, connected=False)
    assert isinstance(early, Reply) and early.status == 500
    assert early.retry_after is not None and 0 <= early.retry_after <= 10
    assert m.update(0, has_sdp=True, sdp_type=True, connected=True) == [AnswerOffer(False)]
    assert quiet(m.answered(0, remote_hold=True, invite=False)) == [
        Reply(200, "OK", sdp=True),
        Tell(TellHandler.HOLD),
    ]
    assert m.state is OS.IDLE and m.next_deadline() is None  # no ACK for an UPDATE
    backing_off(m)
    m.update(0, has_sdp=True, sdp_type=True, connected=True)
    m.answered(0, remote_hold=True, invite=False)
    assert m.state is OS.BACKING_OFF
    m = make()
    answered_reinvite(m, 0, cseq=1)  # their re-INVITE had the offer: an UPDATE may come
    assert m.update(0, has_sdp=True, sdp_type=True, connected=True) == [AnswerOffer(False)]
    m.answered(0, remote_hold=False, invite=False)
    assert m.state is OS.ANSWERED


# -- the rules around the table -----------------------------------------------------------------


@pytest.mark.parametrize("fn", SCENARIOS, ids=[fn.__name__ for fn in SCENARIOS])
def test_scenario(fn: Callable[[Make], None]) -> None:
    fn(plain_make)


def test_every_row_of_the_table_is_exercised() -> None:
    machines: list[SessionUpdate] = []

    def make(*args: Any, **kwargs: Any) -> SessionUpdate:
        machine = plain_make(*args, **kwargs)
        machines.append(machine)
        return machine

    for fn in SCENARIOS:
        fn(make)
    taken = {row for machine in machines for row in machine.taken}
    missing = sorted(f"{s.name} + {t.name}" for s, t in set(OFFER_TRANSITIONS) - taken)
    assert missing == []


def test_media_results_without_apply_media_are_a_local_error() -> None:
    m = plain_make()
    with pytest.raises(LocalProtocolError):
        m.media_applied(0, remote_hold=False)
    with pytest.raises(LocalProtocolError):
        m.media_failed(0, "x")
    with pytest.raises(LocalProtocolError):
        Reply(100, "Trying")


def test_close_stops_every_timer() -> None:
    m = plain_make()
    answered_reinvite(m)
    m.close()
    assert m.next_deadline() is None and m.handle_timer(1000) == []
