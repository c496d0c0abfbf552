"""GATHER (calls/gather.py): the key collector in virtual time, and its driver on a fake call."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.gather import CallGather, GatherState, KeyCollector
from siproc.calls.protocol import Gather, Gathered


def collect(command: Gather, keys: list[tuple[float, str]]) -> list[Gathered | None]:
    collector = KeyCollector(command, 0.0)
    return [collector.key(key, now) for now, key in keys]


def test_finish_key_ends_without_being_collected() -> None:
    collector = KeyCollector(Gather(max_keys=4, timeout=3.0, finish="#"), 0.0)
    assert [collector.key(k, t) for t, k in [(0.5, "1"), (1.0, "2"), (1.5, "3")]] == [None] * 3
    assert collector.key("#", 2.0) == Gathered("123", "finish")
    assert collector.state is GatherState.DONE
    assert collector.next_deadline() is None
    assert collector.key("4", 2.1) is None  # after the end: ignored
    assert collector.handle_timer(100.0) is None
    assert collector.keys == "123"


def test_finish_key_first_gives_no_keys() -> None:
    assert collect(Gather(finish="*"), [(1.0, "*")]) == [Gathered("", "finish")]


def test_max_keys_end_it_on_the_last_key() -> None:
    results = collect(Gather(max_keys=4, finish="#"), [(t, k) for t, k in enumerate("1234")])
    assert results == [None, None, None, Gathered("1234", "max")]


def test_the_finish_key_wins_over_max() -> None:
    results = collect(Gather(max_keys=2, finish="#"), [(0.0, "1"), (0.1, "#")])
    assert results == [None, Gathered("1", "finish")]


def test_inter_digit_timeout_runs_from_the_last_key() -> None:
    collector = KeyCollector(Gather(max_keys=4, timeout=3.0, finish="#"), 10.0)
    assert collector.next_deadline() == 13.0  # first key: timeout when first= is not given
    assert collector.key("1", 11.0) is None
    assert collector.next_deadline() == 14.0
    assert collector.key("2", 13.5) is None
    assert collector.next_deadline() == 16.5
    assert collector.handle_timer(16.49) is None  # early timer (loop granularity): not yet
    assert collector.state is GatherState.COLLECTING
    assert collector.handle_timer(16.5) == Gathered("12", "timeout")
    assert collector.done


def test_first_key_timeout_is_separate() -> None:
    collector = KeyCollector(Gather(timeout=2.0, first=10.0), 0.0)
    assert collector.next_deadline() == 10.0
    assert collector.handle_timer(9.9) is None
    collector.key("5", 9.9)
    assert collector.next_deadline() == pytest.approx(11.9)


def test_no_key_at_all_is_a_timeout_with_no_keys() -> None:
    collector = KeyCollector(Gather(), 0.0)
    assert collector.handle_timer(5.0) == Gathered("", "timeout")
    assert protocol.format_event(Gathered("", "timeout")) == "GATHERED - timeout"


def test_cancel_gives_the_keys_so_far_once() -> None:
    collector = KeyCollector(Gather(), 0.0)
    collector.key("7", 1.0)
    assert collector.cancel() == Gathered("7", "cancelled")
    assert collector.cancel() is None


def test_an_illegal_transition_is_a_bug() -> None:
    collector = KeyCollector(Gather(), 0.0)
    collector.cancel()
    with pytest.raises(RuntimeError, match="illegal done -> done"):
        collector._set_state(GatherState.DONE)


def test_the_default_max_bounds_what_a_peer_can_make_us_keep() -> None:
    collector = KeyCollector(Gather(), 0.0)
    results = [collector.key("1", i * 0.01) for i in range(protocol.GATHER_MAX_KEYS)]
    assert results[-1] == Gathered("1" * protocol.GATHER_MAX_KEYS, "max")
    assert results[:-1] == [None] * (protocol.GATHER_MAX_KEYS - 1)


# --------------------------------------------------------------------------------------------
# The driver, on a fake call with a virtual clock


class FakeCall:
    """What CallGather uses of a Call (calls/gather.py GatheringCall): now(), rearm() of its
    one timer, event(), report_error(), the stream; the timer fires at the gather's deadline."""

    def __init__(self) -> None:
        self.clock = 0.0
        self.armed: float | None = None  # where the call's one timer is
        self.events: list[str] = []
        self.state = CallState.CONNECTED
        self.log = logging.getLogger("test")
        self.speech: Any = None
        self.playing = ["prompt.wav", "music.wav"]
        self.stream = SimpleNamespace(closed=False, stop_last=self._stop_last)
        self.gather: CallGather | None = None

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def now(self) -> float:
        return self.clock

    def rearm(self) -> None:
        assert self.gather is not None
        self.armed = self.gather.next_deadline()

    def _stop_last(self) -> str | None:
        if not self.playing:
            return None
        name = self.playing.pop()
        self.events.append(f"STOPPED {name}")
        return name

    def event(self, event: protocol.Event) -> None:
        self.events.append(protocol.format_event(event))
        if self.gather is not None and isinstance(event, protocol.DtmfReceived):
            self.gather.on_key(event.digit)

    def report_error(self, command: str, reason: str) -> None:
        self.events.append(f"ERROR {command} {reason}")

    def key(self, digit: str) -> None:
        self.event(protocol.DtmfReceived(digit))

    def run_until(self, when: float) -> None:
        """Advance virtual time, firing the call's timer whenever it is due."""
        assert self.gather is not None
        while self.armed is not None and self.armed <= when:
            self.clock, self.armed = self.armed, None
            self.gather.handle_timer(self.clock)
        self.clock = when


def driven(command: Gather) -> tuple[FakeCall, CallGather]:
    call = FakeCall()
    gather = call.gather = CallGather(call)
    gather.start(command)
    return call, gather


def test_dtmf_events_flow_and_gathered_follows_the_key_that_ends_it() -> None:
    call, _ = driven(Gather(max_keys=4, timeout=3.0, finish="#"))
    for digit in "123#":
        call.clock += 0.5
        call.key(digit)
    assert call.events == ["DTMF 1", "DTMF 2", "DTMF 3", "DTMF #", "GATHERED 123 finish"]
    assert call.armed is None and call.gather is not None  # nothing left armed
    assert call.gather.next_deadline() is None


def test_the_timer_ends_it_when_the_caller_stops() -> None:
    call, _ = driven(Gather(max_keys=4, timeout=3.0, finish="#"))
    call.run_until(1.0)
    call.key("1")
    call.run_until(2.0)
    call.key("2")
    call.run_until(4.99)
    assert call.events == ["DTMF 1", "DTMF 2"]
    call.run_until(5.0)
    assert call.events == ["DTMF 1", "DTMF 2", "GATHERED 12 timeout"]
    call.run_until(60.0)
    call.key("3")  # a key after the end is only a DTMF event
    assert call.events[-2:] == ["GATHERED 12 timeout", "DTMF 3"]


def test_a_new_gather_cancels_the_running_one() -> None:
    call, gather = driven(Gather(timeout=3.0))
    call.key("9")
    gather.start(Gather(max_keys=1))
    assert call.events == ["DTMF 9", "GATHERED 9 cancelled"]
    call.key("4")
    assert call.events[-2:] == ["DTMF 4", "GATHERED 4 max"]
    call.run_until(100.0)
    assert call.events[-1] == "GATHERED 4 max"  # the first one's timer did not fire


def test_the_call_ending_drops_it_silently() -> None:
    call, gather = driven(Gather(timeout=3.0))
    call.key("1")
    call.state = CallState.ENDED
    gather.close()
    call.run_until(100.0)
    assert call.events == ["DTMF 1"]


def test_bargein_stops_the_prompts_at_the_first_key_only() -> None:
    call, _ = driven(Gather(max_keys=3, bargein=True))
    call.speech = SimpleNamespace(stop_all=lambda: call.events.append("STOPPED say:1") or 1)
    call.key("1")
    assert call.events == [
        "DTMF 1",
        "STOPPED say:1",
        "STOPPED music.wav",
        "STOPPED prompt.wav",
    ]
    call.playing.append("later.wav")
    call.key("2")
    assert call.events[-1] == "DTMF 2"
    assert call.playing == ["later.wav"]


def test_without_bargein_prompts_go_on() -> None:
    call, _ = driven(Gather(max_keys=1))
    call.key("5")
    assert call.events == ["DTMF 5", "GATHERED 5 max"]
    assert call.playing == ["prompt.wav", "music.wav"]


def test_a_gather_on_a_call_that_is_ending_is_refused() -> None:
    call = FakeCall()
    gather = call.gather = CallGather(call)
    call.state = CallState.TERMINATING
    gather.start(Gather(timeout=3.0))
    assert call.events == ["ERROR GATHER the call is terminating"]
    assert not gather.active and gather.next_deadline() is None and call.armed is None
