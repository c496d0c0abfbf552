"""sip/invite_session.py: the INVITE session machine, pure (no sockets, no clock, no sleeps).

Every test here is a *scenario*: a function that makes its sessions with ``make`` and checks
the actions they return. `test_every_row_of_the_table_is_exercised` runs all scenarios again
with a ``make`` that keeps the sessions and compares the rows they took with `TRANSITIONS`, so
the table and the tests cannot drift apart (deterministic, whatever the test order or worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from siproc.sip.errors import LocalProtocolError
from siproc.sip.invite_session import (
    TRANSITIONS,
    Action,
    AnswerChallenge,
    ApplyMedia,
    CommandRefused,
    ConfirmDialog,
    Ended,
    InviteSession,
    Log,
    ResendAck,
    ResendOk,
    Respond,
    Role,
    SendAck,
    SendBye,
    SendCancel,
    SessionState,
    StartMedia,
    StopMedia,
    Tell,
    TellHandler,
    Timer,
    Trigger,
)

S = SessionState
T1, T2 = 0.5, 4.0
SDP = b"v=0\r\n"
Make = Callable[..., InviteSession]
SCENARIOS: list[Callable[[Make], None]] = []


def scenario(fn: Callable[[Make], None]) -> Callable[[Make], None]:
    SCENARIOS.append(fn)
    return fn


def plain_make(role: Role = Role.UAS, **kwargs: Any) -> InviteSession:
    return InviteSession(role, t1=T1, t2=T2, name="test", **kwargs)


def quiet(actions: list[Action]) -> list[Action]:
    """The actions without the log lines."""
    return [a for a in actions if not isinstance(a, Log)]


def reach(make: Make, state: SessionState, role: Role | None = None) -> InviteSession:
    """A session in ``state`` (a UAC for the caller's states, else a UAS, unless ``role``)."""
    uac = role is Role.UAC or (role is None and state in (S.CALLING, S.EARLY, S.CANCELLING))
    s = make(Role.UAC if uac else Role.UAS)
    if uac:
        if state is S.CALLING:
            return s
        s.provisional(0, 180)
        if state is S.EARLY:
            return s
        if state is S.CANCELLING:
            s.hangup(0)
            return s
        s.accepted(0, SDP)
        s.media_applied(0)
    else:
        if state is S.INCOMING:
            return s
        if state is S.EARLY_MEDIA:
            s.command(0, "PROGRESS")
            return s
        s.command(0, "ANSWER")
        if state is S.ANSWERING:
            return s
        s.ack(0)
    if state is S.CONNECTED:
        return s
    s.hangup(0)
    if state is S.TERMINATING:
        return s
    s.bye_answered(0)
    assert s.state is S.ENDED
    return s


# -- the caller's side --------------------------------------------------------------------------


@scenario
def uac_ringing_then_answered(make: Make) -> None:
    s = make(Role.UAC)
    assert s.provisional(0, 100) == []
    assert s.state is S.CALLING
    assert s.provisional(0, 180) == [Tell(TellHandler.RINGING)]
    assert s.provisional(0, 180) == []  # RINGING once per call
    assert s.provisional(0, 100) == []
    assert s.state is S.EARLY
    assert s.accepted(0, SDP) == [SendAck(), ApplyMedia(SDP)]
    assert s.state is S.CONNECTED
    assert s.media_applied(0) == [StartMedia(), Tell(TellHandler.CONNECTED)]
    assert s.accepted(0, SDP) == [ResendAck()]  # the 2xx again (RFC 3261 13.2.2.4)
    assert s.accepted_again(0) == [ResendAck()]


@scenario
def uac_answered_at_once(make: Make) -> None:
    s = make(Role.UAC)
    assert s.accepted(0, SDP) == [SendAck(), ApplyMedia(SDP)]
    assert s.accepted_again(0) == [ResendAck()]  # ACKed already, while the media is applied
    assert s.media_applied(0) == [StartMedia(), Tell(TellHandler.CONNECTED)]


@scenario
def uac_early_media_then_2xx_without_sdp(make: Make) -> None:
    s = make(Role.UAC)
    assert s.provisional(0, 183, SDP) == [ApplyMedia(SDP)]
    assert s.early_status == 183
    assert s.media_applied(0) == [StartMedia(), Tell(TellHandler.PROGRESS)]
    assert s.provisional(0, 180, SDP) == [ApplyMedia(SDP)]  # RINGING after PROGRESS: no
    assert s.media_applied(0) == [StartMedia()]
    assert s.accepted(0) == [SendAck(), StartMedia(), Tell(TellHandler.CONNECTED)]


@scenario
def uac_unusable_sdp_in_an_18x_is_ignored(make: Make) -> None:
    s = make(Role.UAC)
    s.provisional(0, 180, b"junk")
    assert quiet(s.media_failed(0, "bad")) == [Tell(TellHandler.RINGING)]
    assert s.state is S.EARLY
    assert s.accepted(0) == [SendAck(), ApplyMedia(b"")]  # no answer yet: the 2xx must have it


@scenario
def uac_unusable_sdp_in_the_2xx_ends_with_bye(make: Make) -> None:
    s = make(Role.UAC)
    s.accepted(0, b"junk")
    assert quiet(s.media_failed(0, "bad")) == [StopMedia(), SendBye("hung up")]
    assert s.state is S.TERMINATING
    assert s.accepted(0) == [ResendAck()]
    assert s.bye_answered(0) == [Ended(200, "hung up")]
    assert s.accepted(0) == [ResendAck()]  # still re-ACKed after the end


@scenario
def uac_bad_2xx(make: Make) -> None:
    for state in (S.CALLING, S.EARLY, S.CANCELLING):
        s = reach(make, state)
        assert quiet(s.bad_2xx(0, "no Contact")) == [
            Ended(502, "bad 2xx from the remote end: no Contact")
        ]


@scenario
def uac_challenge_answered_or_not(make: Make) -> None:
    for state in (S.CALLING, S.EARLY):
        s = reach(make, state)
        assert s.final_failure(0, 407, "Proxy Auth") == [AnswerChallenge(407, "Proxy Auth")]
        assert s.invite_resent(0) == []
        assert s.state is state
        assert s.final_failure(0, 401, "Unauthorized") == [AnswerChallenge(401, "Unauthorized")]
        assert s.rejected(0, 401, "Unauthorized") == [Ended(401, "Unauthorized")]
    s = reach(make, S.CANCELLING)  # no new INVITE for a call we hang up
    assert s.final_failure(0, 401, "") == [Ended(401, "")]


@scenario
def uac_rejected(make: Make) -> None:
    for state in (S.CALLING, S.EARLY):
        s = reach(make, state)
        assert s.final_failure(0, 486, "Busy Here") == [Ended(486, "Busy Here")]
    s = reach(make, S.CALLING)
    assert s.final_failure(0, 603, "") == [Ended(603, "Decline")]


@scenario
def uac_invite_timeout(make: Make) -> None:
    for state in (S.CALLING, S.EARLY, S.CANCELLING):
        s = reach(make, state)
        assert s.invite_timeout(0) == [Ended(408, "no answer (timeout)")]
    assert reach(make, S.CONNECTED, Role.UAC).invite_timeout(0) == []


@scenario
def uac_hangup_before_any_response_cancels_at_the_first(make: Make) -> None:
    """RFC 3261 section 9.1: no CANCEL before a provisional response; one CANCEL only."""
    s = make(Role.UAC)
    assert s.hangup(0) == [StopMedia()]
    assert s.state is S.CANCELLING
    assert s.provisional(0, 100) == [SendCancel()]
    assert s.provisional(0, 180) == []  # not a second CANCEL
    assert s.provisional(0, 183, SDP) == []  # no early media either
    assert s.final_failure(0, 487, "Request Terminated") == [Ended(487, "Request Terminated")]


@scenario
def uac_hangup_after_a_provisional_cancels_at_once(make: Make) -> None:
    s = reach(make, S.EARLY)
    assert s.hangup(0) == [StopMedia(), SendCancel()]
    assert s.provisional(0, 180) == []
    assert s.cancel_timeout(0) == [Ended(408, "CANCEL not answered")]


@scenario
def uac_2xx_racing_our_cancel_is_acked_then_byed(make: Make) -> None:
    s = reach(make, S.CANCELLING)
    assert s.accepted(0, SDP) == [SendAck(), SendBye("hung up")]
    assert s.state is S.TERMINATING
    assert s.bye_answered(0) == [Ended(200, "hung up")]


@scenario
def uac_ack_that_cannot_be_sent_gives_up_after_64_t1(make: Make) -> None:
    s = make(Role.UAC)
    s.accepted(10, SDP)
    s.media_applied(10)
    assert s.ack_unsent(10) == []
    assert s.next_deadline() == 10 + 64 * T1
    assert s.ack_unsent(20) == []  # the first miss counts
    assert s.next_deadline() == 10 + 64 * T1
    assert quiet(s.handle_timer(10 + 64 * T1)) == [
        Ended(503, "the far end's Contact cannot be reached")
    ]
    s = make(Role.UAC)  # sent with a later retransmission: no give-up
    s.accepted(10, SDP)
    s.ack_unsent(10)
    s.ack_sent()
    assert s.next_deadline() is None
    s = reach(make, S.CONNECTED, Role.UAC)  # while our BYE is on its way
    s.ack_unsent(0)
    s.hangup(0)
    assert quiet(s.handle_timer(64 * T1))[-1] == Ended(
        503, "the far end's Contact cannot be reached"
    )


# -- the callee's side --------------------------------------------------------------------------


@scenario
def uas_ringing_progress_answer_ack(make: Make) -> None:
    s = make(Role.UAS)
    assert s.command(0, "RINGING") == [Respond(180, "Ringing")]
    assert s.command(0, "PROGRESS") == [Respond(183, "Session Progress", sdp=True), StartMedia()]
    assert s.state is S.EARLY_MEDIA
    assert s.command(0, "PROGRESS") == [Respond(183, "Session Progress", sdp=True), StartMedia()]
    assert s.command(0, "RINGING") == [Respond(180, "Ringing")]
    assert s.command(0, "ANSWER") == [Respond(200, "OK", sdp=True)]
    assert s.state is S.ANSWERING
    assert s.command(0, "ANSWER") == [
        CommandRefused("ANSWER", "not possible while the call is answering")
    ]
    assert s.ack(1) == [ConfirmDialog(), StartMedia(proven=True), Tell(TellHandler.CONNECTED)]
    assert s.state is S.CONNECTED
    assert s.ack(1) == []  # the ACK again (or a re-INVITE's: the call handles those)
    assert s.next_deadline() is None


@scenario
def uas_answer_at_once(make: Make) -> None:
    s = make(Role.UAS)
    assert s.command(0, "ANSWER") == [Respond(200, "OK", sdp=True)]


@scenario
def uas_progress_without_an_offer_is_refused(make: Make) -> None:
    s = make(Role.UAS, offer_in_invite=False)
    assert s.command(0, "PROGRESS") == [
        CommandRefused("PROGRESS", "the INVITE has no SDP offer to answer early")
    ]
    assert s.state is S.INCOMING


@scenario
def uas_2xx_retransmitted_then_given_up(make: Make) -> None:
    """RFC 3261 section 13.3.1.4: at T1, doubling up to T2; no ACK 64*T1 later: BYE."""
    s = make(Role.UAS)
    s.command(100, "ANSWER")
    resent = []
    while s.state is S.ANSWERING:
        at = s.next_deadline()
        assert at is not None
        actions = s.handle_timer(at)
        if ResendOk() in actions:
            resent.append(at - 100)
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert at == 100 + 64 * T1
    assert s.state is S.TERMINATING
    assert quiet(actions) == [StopMedia(), SendBye("hung up")]
    assert s.bye_timeout(200) == [Ended(408, "BYE not answered")]


@scenario
def uas_2xx_over_a_reliable_transport_is_sent_once(make: Make) -> None:
    s = make(Role.UAS, reliable=True)
    s.command(0, "ANSWER")
    assert s.next_deadline() == 64 * T1
    assert ResendOk() not in s.handle_timer(64 * T1)
    assert s.state is S.TERMINATING


@scenario
def uas_offer_in_the_2xx_answer_in_the_ack(make: Make) -> None:
    s = make(Role.UAS, offer_in_invite=False)
    s.command(0, "ANSWER")
    assert s.ack(1, SDP) == [ConfirmDialog(), ApplyMedia(SDP)]
    assert s.media_applied(1) == [StartMedia(proven=True), Tell(TellHandler.CONNECTED)]


@scenario
def uas_ack_with_a_bad_sdp_ends_with_bye(make: Make) -> None:
    s = make(Role.UAS, offer_in_invite=False)
    s.command(0, "ANSWER")
    s.ack(1, b"junk")
    actions = s.media_failed(1, "no m= line")
    assert Log(logging.WARNING, "no usable SDP answer in the ACK: no m= line") in actions
    assert quiet(actions) == [StopMedia(), SendBye("hung up")]
    assert s.state is S.TERMINATING


@scenario
def uas_hangup_while_waiting_for_the_ack_byes_after_it(make: Make) -> None:
    """RFC 3261 section 15: the callee must not send BYE before the ACK."""
    s = reach(make, S.ANSWERING)
    assert s.command(0, "HANGUP") == []
    assert s.state is S.ANSWERING
    assert s.ack(1) == [ConfirmDialog(), StopMedia(), SendBye("hung up")]
    assert s.state is S.TERMINATING
    assert s.next_deadline() is None  # the 2xx is no longer retransmitted


@scenario
def uas_cancel_before_the_answer(make: Make) -> None:
    for state in (S.INCOMING, S.EARLY_MEDIA):
        s = reach(make, state)
        assert s.cancel(0) == [
            Respond(487, "Request Terminated"),
            Ended(487, "cancelled by the caller"),
        ]
        assert s.next_deadline() is None


@scenario
def uas_cancel_racing_our_200_changes_nothing(make: Make) -> None:
    s = reach(make, S.ANSWERING)
    assert s.cancel(0) == []
    assert s.state is S.ANSWERING
    assert s.ack(0)[-1] == Tell(TellHandler.CONNECTED)
    assert s.cancel(0) == []


@scenario
def uas_ring_timeout(make: Make) -> None:
    for state in (S.INCOMING, S.EARLY_MEDIA):
        s = reach(make, state)
        s.set_limits(0, ring_timeout=20, max_duration=0)
        assert s.next_deadline() == 20
        assert s.handle_timer(19.9) == []
        assert quiet(s.handle_timer(20)) == [
            Respond(480, "Temporarily Unavailable (no answer)"),
            Ended(480, "no answer"),
        ]
        assert s.limit_reached == "ring timeout"  # (its record says ended_by timeout)
    s = make(Role.UAS)  # answered in time: no 480
    s.set_limits(0, ring_timeout=20, max_duration=0)
    s.command(1, "ANSWER")
    s.ack(2)
    assert s.next_deadline() is None and s.limit_reached == ""


@scenario
def uas_bye_before_the_answer_gets_487_to_the_invite(make: Make) -> None:
    for state in (S.INCOMING, S.EARLY_MEDIA):
        s = reach(make, state)
        assert s.bye(0) == [Respond(487, "Request Terminated"), Ended(200, "remote hangup")]


@scenario
def bye_received_in_each_dialog_state(make: Make) -> None:
    """BYE before the ACK (ANSWERING), in the call, and crossing ours (TERMINATING)."""
    for state in (S.ANSWERING, S.CONNECTED, S.TERMINATING):
        s = reach(make, state)
        assert s.bye(0) == [Ended(200, "remote hangup")]
        assert s.next_deadline() is None
        assert s.bye(0) == []
        assert s.bye_answered(0) == []  # our crossed BYE's answer comes too late


# -- ending from our side -----------------------------------------------------------------------


HANGUP_EXPECTED: dict[SessionState, list[Action]] = {
    S.INCOMING: [Respond(480, "Temporarily Unavailable"), Ended(480, "hung up before answer")],
    S.EARLY_MEDIA: [Respond(480, "Temporarily Unavailable"), Ended(480, "hung up before answer")],
    S.CALLING: [StopMedia()],
    S.EARLY: [StopMedia(), SendCancel()],
    S.ANSWERING: [],
    S.CONNECTED: [StopMedia(), SendBye("hung up")],
    S.CANCELLING: [],
    S.TERMINATING: [],
    S.ENDED: [],
}


@scenario
def handler_exits_in_each_state(make: Make) -> None:
    for state, expected in HANGUP_EXPECTED.items():
        s = reach(make, state)
        assert s.hangup(0, handler_gone=True) == expected, state


@scenario
def hangup_command_in_each_state(make: Make) -> None:
    for state in S:
        s = reach(make, state)
        actions = s.command(0, "HANGUP", 486)
        if state in (S.CANCELLING, S.TERMINATING, S.ENDED):
            assert actions == [CommandRefused("HANGUP", f"the call is already {state.value}")]
        elif state in (S.INCOMING, S.EARLY_MEDIA):
            assert actions == [Respond(486, "Busy Here"), Ended(486, "hung up before answer")]
        else:
            assert actions == HANGUP_EXPECTED[state]
    s = make(Role.UAS)
    assert s.command(0, "HANGUP") == [Respond(603, "Decline"), Ended(603, "hung up before answer")]


@scenario
def commands_refused_outside_their_states(make: Make) -> None:
    for state in (S.CALLING, S.CONNECTED, S.ENDED):
        s = reach(make, state)
        for verb in ("RINGING", "PROGRESS", "ANSWER"):
            assert s.command(0, verb) == [
                CommandRefused(verb, f"not possible while the call is {state.value}")
            ]


@scenario
def maximum_duration_in_each_state(make: Make) -> None:
    expected: dict[SessionState, list[Action]] = {
        S.INCOMING: [Respond(480, "Temporarily Unavailable"), Ended(480, "maximum call duration")],
        S.EARLY_MEDIA: [
            Respond(480, "Temporarily Unavailable"),
            Ended(480, "maximum call duration"),
        ],
        S.CALLING: [StopMedia()],
        S.EARLY: [StopMedia(), SendCancel()],
        S.CONNECTED: [StopMedia(), SendBye("maximum call duration")],
    }
    for state, actions in expected.items():
        s = reach(make, state)
        s.set_limits(0, ring_timeout=0, max_duration=3600)
        assert quiet(s.handle_timer(3600)) == actions, state
        assert s.limit_reached == "maximum call duration", state
    for state in (S.CANCELLING, S.TERMINATING):  # ending already: the limit ends nothing
        s = reach(make, state)
        s.set_limits(0, ring_timeout=0, max_duration=3600)
        assert s.handle_timer(3600) == [] and s.limit_reached == "", state
    s = reach(make, S.ANSWERING)  # the 2xx waits for its ACK: the BYE waits too (section 15)
    s.set_limits(0, ring_timeout=0, max_duration=10)
    assert quiet(s.handle_timer(10)) == [ResendOk()]
    assert s.state is S.ANSWERING
    assert s.ack(11)[-1] == SendBye("maximum call duration")


@scenario
def abort_in_each_state(make: Make) -> None:
    expected: dict[SessionState, list[Action]] = {
        S.INCOMING: [Respond(500, "Call Ended"), Ended(500, "hung up before answer")],
        S.EARLY_MEDIA: [Respond(500, "Call Ended"), Ended(500, "hung up before answer")],
        S.CALLING: [StopMedia()],
        S.EARLY: [StopMedia(), SendCancel()],
        S.ANSWERING: [StopMedia(), SendBye("internal error")],  # not waiting for the ACK
        S.CONNECTED: [StopMedia(), SendBye("internal error")],
        S.CANCELLING: [],
        S.TERMINATING: [],
        S.ENDED: [],
    }
    for state, actions in expected.items():
        s = reach(make, state)
        assert s.abort(0) == actions, state


@scenario
def force_end_in_each_state(make: Make) -> None:
    for state in S:
        s = reach(make, state)
        s.set_limits(0, ring_timeout=10, max_duration=10)
        actions = s.force_end(500, "internal error")
        assert actions == ([] if state is S.ENDED else [Ended(500, "internal error")])
        assert s.state is S.ENDED
        assert s.next_deadline() is None


@scenario
def not_started(make: Make) -> None:
    s = make(Role.UAS)
    assert s.not_started(0, 500, "handler failed to start", "Server Internal Error") == [
        Respond(500, "Server Internal Error"),
        Ended(500, "handler failed to start"),
    ]
    s = make(Role.UAC)
    assert s.not_started(0, 503, "Service Unavailable (nxdomain)", "") == [
        Ended(503, "Service Unavailable (nxdomain)")
    ]
    s = reach(make, S.CANCELLING)  # the call ended before its handler started
    s.final_failure(0, 487, "")
    assert s.not_started(0, 500, "x", "x") == []


@scenario
def bye_that_cannot_be_sent(make: Make) -> None:
    s = reach(make, S.CONNECTED)
    s.hangup(0, reason="transferred")
    actions = s.bye_unsent(0, "'far.example' is not resolved (yet)")
    assert actions[-1] == Ended(
        503, "transferred (the far end is unreachable: 'far.example' is not resolved (yet))"
    )


# -- the rules around the table -----------------------------------------------------------------


@pytest.mark.parametrize("fn", SCENARIOS, ids=[fn.__name__ for fn in SCENARIOS])
def test_scenario(fn: Callable[[Make], None]) -> None:
    fn(plain_make)


def test_every_row_of_the_table_is_exercised() -> None:
    sessions: list[InviteSession] = []

    def make(role: Role = Role.UAS, **kwargs: Any) -> InviteSession:
        session = plain_make(role, **kwargs)
        sessions.append(session)
        return session

    for fn in SCENARIOS:
        fn(make)
    taken = {row for session in sessions for row in session.taken}
    missing = sorted(f"{s.name} + {t.name}" for s, t in set(TRANSITIONS) - taken)
    assert missing == []
    assert taken <= set(TRANSITIONS)


def test_every_live_state_can_be_ended_and_ended_is_final() -> None:
    for state in S:
        if state is not S.ENDED:
            assert TRANSITIONS[(state, Trigger.FORCE_END)] is S.ENDED
    for (state, _trigger), new in TRANSITIONS.items():
        if state is S.ENDED:
            assert new is S.ENDED


def test_media_results_without_apply_media_are_a_local_error() -> None:
    s = plain_make(Role.UAC)
    with pytest.raises(LocalProtocolError):
        s.media_applied(0)
    with pytest.raises(LocalProtocolError):
        s.media_failed(0, "x")


def test_bad_values_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Respond(99, "x")
    with pytest.raises(LocalProtocolError):
        Ended(0, "x")
    with pytest.raises(LocalProtocolError):
        InviteSession(Role.UAS, t1=5, t2=4)


def test_timers_are_named_and_cleared_at_the_end() -> None:
    s = plain_make(Role.UAS)
    s.set_limits(0, ring_timeout=20, max_duration=3600)
    assert s.deadline(Timer.RING) == 20 and s.deadline(Timer.MAX_DURATION) == 3600
    s.command(1, "ANSWER")
    assert s.deadline(Timer.RING) is None
    assert s.deadline(Timer.OK_RETRANSMIT) == 1 + T1
    assert s.deadline(Timer.NO_ACK) == 1 + 64 * T1
    s.bye(2)
    assert s.next_deadline() is None
