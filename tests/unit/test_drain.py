"""Graceful drain (siproc.calls.drain): the pure state machine, then the whole phone in virtual
time (tests/phone_sim.py): DRAIN on main stdin, 503 to new INVITEs and OPTIONS, CALL refused,
the calls that are up finish untouched, the phone quits when the last has ended or at the
deadline (SIPROC_DRAIN_TIMEOUT)."""

from __future__ import annotations

import pytest

from siproc.calls.drain import DRAIN_RETRY_AFTER, Drain, DrainState
from siproc.sip.message import Request
from tests.phone_sim import OFFER, FarEnd, PhoneSim

# --- the state machine -------------------------------------------------------------------------


def test_serving_refuses_nothing() -> None:
    drain = Drain(0)
    assert drain.state is DrainState.SERVING and not drain.draining
    assert drain.refusal("INVITE", 0.0) is None
    assert drain.refusal("OPTIONS", 0.0) is None
    assert drain.refuses_calls() is None
    assert drain.next_deadline() is None
    assert not drain.calls_changed(0)  # no calls while serving is no reason to quit


def test_draining_refuses_invite_and_options_with_retry_after() -> None:
    drain = Drain(0)
    assert drain.start(10.0, calls=2)
    assert drain.state is DrainState.DRAINING
    for method in ("INVITE", "OPTIONS"):
        refusal = drain.refusal(method, 11.0)
        assert refusal is not None and refusal.status == 503
        assert dict(refusal.headers) == {"Retry-After": str(DRAIN_RETRY_AFTER)}
    for method in ("MESSAGE", "REGISTER", "SUBSCRIBE"):
        assert drain.refusal(method, 11.0) is None
    assert drain.refuses_calls() is not None and "draining" in drain.refuses_calls()  # type: ignore[operator]
    assert drain.next_deadline() is None  # no timeout: wait however long


def test_done_when_the_last_call_ends() -> None:
    drain = Drain(0)
    drain.start(0.0, calls=2)
    assert not drain.calls_changed(1)
    assert drain.state is DrainState.DRAINING
    assert drain.calls_changed(0)
    assert drain.state is DrainState.DONE and "last call" in drain.why
    assert not drain.calls_changed(0)  # DONE once
    assert drain.refusal("INVITE", 1.0) is not None  # still no new calls while quitting


def test_start_without_calls_is_done_at_once() -> None:
    drain = Drain(30)
    assert drain.start(5.0, calls=0)
    assert drain.state is DrainState.DONE
    assert drain.next_deadline() is None


def test_second_start_changes_nothing() -> None:
    drain = Drain(30)
    assert drain.start(5.0, calls=1)
    assert not drain.start(20.0, calls=1)
    assert drain.next_deadline() == 35.0  # the first DRAIN's deadline stands


def test_deadline_retry_after_counts_down() -> None:
    drain = Drain(30)
    drain.start(100.0, calls=3)
    assert drain.next_deadline() == 130.0
    refusal = drain.refusal("INVITE", 110.2)
    assert refusal is not None and dict(refusal.headers)["Retry-After"] == "20"
    refusal = drain.refusal("INVITE", 129.9)
    assert refusal is not None and dict(refusal.headers)["Retry-After"] == "1"
    assert not drain.handle_timer(129.99)
    assert drain.state is DrainState.DRAINING
    assert drain.handle_timer(130.0)
    assert drain.state is DrainState.DONE and "SIPROC_DRAIN_TIMEOUT" in drain.why
    assert not drain.handle_timer(131.0)


def test_negative_timeout_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        Drain(-1)


# --- the whole phone ---------------------------------------------------------------------------


def _watch_quits(sim: PhoneSim) -> list[str]:
    """The reasons the phone asked to shut down for (the sim does not run Phone.run)."""
    reasons: list[str] = []
    original = sim.phone.request_shutdown

    def record(why: str = "QUIT") -> None:
        reasons.append(why)
        original(why)

    sim.phone.request_shutdown = record  # type: ignore[method-assign]
    return reasons


def _last_status(sim: PhoneSim, call_id: str) -> tuple[int, str | None]:
    [*_, last] = sim.responses(call_id)
    return last.status, last.headers.get("Retry-After")


def _options(sim: PhoneSim) -> bytes:
    far = FarEnd(sim)
    return far.request("OPTIONS")


def test_drain_with_no_call_quits_at_once() -> None:
    with PhoneSim() as sim:
        quits = _watch_quits(sim)
        sim.command("DRAIN")
        assert quits == ["DRAIN: the last call has ended"]


def test_drain_lets_the_call_finish_refuses_new_ones_then_quits() -> None:
    with PhoneSim() as sim:
        quits = _watch_quits(sim)
        up = FarEnd(sim)
        up.connect()
        [handler] = sim.handlers
        assert handler.events == ["CONNECTED"]
        # Serving: OPTIONS is 200.
        probe = FarEnd(sim)
        probe.send("OPTIONS")
        assert _last_status(sim, probe.call_id)[0] == 200

        sim.command("DRAIN")
        assert quits == []  # a call is up

        late = FarEnd(sim, user="bob")
        late.send("INVITE", OFFER)
        sim.advance(0.1)
        assert _last_status(sim, late.call_id) == (503, str(DRAIN_RETRY_AFTER))
        assert len(sim.handlers) == 1  # no handler for it
        probe = FarEnd(sim)
        probe.send("OPTIONS")
        assert _last_status(sim, probe.call_id) == (503, str(DRAIN_RETRY_AFTER))

        sim.command("CALL sip:carol@127.0.0.1:5098")
        sim.advance(0.1)
        assert "CALL 'sip:carol@127.0.0.1:5098': refused: siproc is draining" in (
            sim.stderr.getvalue()
        )
        assert not any(isinstance(m, Request) and m.method == "INVITE" for m, _ in sim.sent), (
            "no INVITE may leave while draining"
        )
        assert len(sim.phone.calls) == 1

        # The call that was up goes on: in-dialog requests work, and it ends as the far
        # end wants, not cut by the drain.
        up.send("INFO")
        sim.advance(0.1)
        assert _last_status(sim, up.call_id)[0] == 200
        sim.advance(30)
        assert quits == [] and handler.events == ["CONNECTED"]
        up.send("BYE")
        sim.advance(1)
        assert handler.events[-1] == "DISCONNECTED 200 remote hangup"
        assert quits == ["DRAIN: the last call has ended"]


def test_drain_deadline_quits_with_calls_up() -> None:
    with PhoneSim({"SIPROC_DRAIN_TIMEOUT": "10"}) as sim:
        quits = _watch_quits(sim)
        FarEnd(sim).connect()
        sim.command("DRAIN")
        late = FarEnd(sim, user="bob")
        late.send("INVITE", OFFER)
        sim.advance(3)
        assert _last_status(sim, late.call_id)[0] == 503
        # Retry-After: the seconds left until the deadline (about 10 - 0.1)
        assert _last_status(sim, late.call_id)[1] == "10"
        sim.command("DRAIN")  # again: nothing changes, the deadline stands
        sim.advance(6.5)
        assert quits == []
        sim.advance(1)
        assert quits == ["DRAIN: deadline of 10 s (SIPROC_DRAIN_TIMEOUT) passed"]


def test_calls_ringing_when_the_drain_starts_are_not_cut() -> None:
    with PhoneSim(script=lambda env: ("RINGING",)) as sim:
        quits = _watch_quits(sim)
        ringing = FarEnd(sim)
        ringing.send("INVITE", OFFER)
        sim.advance(0.1)
        assert _last_status(sim, ringing.call_id)[0] == 180
        sim.command("DRAIN")
        ringing.send("INVITE", OFFER, cseq=1, branch=ringing.invite_branch)  # retransmission
        sim.advance(0.1)
        assert _last_status(sim, ringing.call_id)[0] == 180  # not a 503
        ringing.send("CANCEL", cseq=1, branch=ringing.invite_branch)
        sim.advance(1)
        assert sorted(r.status for r in sim.responses(ringing.call_id))[-1] == 487
        assert quits == ["DRAIN: the last call has ended"]
