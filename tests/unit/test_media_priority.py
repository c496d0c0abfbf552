"""media_priority: what a worker gets when it asks, and when it must step down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from siproc.net.media_priority import PRIORITIES, OverloadGuard


def _ask(wanted: str) -> tuple[str, int, int]:
    """set_priority(wanted) in a child process (never in the test runner itself); what it
    got, its scheduling policy and nice value."""
    code = (
        "import os; from siproc.net.media_priority import set_priority; "
        f"got = set_priority({wanted!r}); "
        "print(got, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got, policy, nice = out.stdout.split()
    return got, int(policy), int(nice)


@pytest.mark.parametrize("wanted", PRIORITIES)
def test_a_worker_gets_what_it_asks_for_or_the_best_below(wanted: str) -> None:
    got, policy, nice = _ask(wanted)
    assert PRIORITIES.index(got) >= PRIORITIES.index(wanted)
    if got == "realtime":
        assert policy == os.SCHED_RR
    else:
        assert policy == os.SCHED_OTHER
    if got == "high":
        assert nice == -10
    if got == "normal":
        assert nice == os.getpriority(os.PRIO_PROCESS, 0)
    if os.geteuid() == 0:  # root may have every level: it gets exactly the one it asked for
        assert got == wanted


def test_an_unknown_priority_is_our_bug() -> None:
    from siproc.net.media_priority import set_priority

    with pytest.raises(ValueError, match="unknown media priority"):
        set_priority("urgent")


def test_the_guard_steps_down_after_consecutive_busy_seconds_only() -> None:
    guard = OverloadGuard(share=0.85, seconds=3)
    busy = 0.0
    assert not guard.check(0.0, busy)  # the first reading only sets the base
    for second, share in enumerate([0.9, 0.95, 0.5, 0.9, 0.9], start=1):
        busy += share
        assert not guard.check(float(second), busy), second  # the 0.5 second reset the count
    busy += 0.99
    assert guard.check(6.0, busy)
    assert guard.last_share == pytest.approx(0.99)


def test_the_guard_ignores_a_clock_that_did_not_move() -> None:
    guard = OverloadGuard(share=0.5, seconds=1)
    assert not guard.check(5.0, 1.0)
    assert not guard.check(5.0, 9.0)  # no time passed: no share to compute
    assert guard.check(6.0, 10.0)


def test_the_guard_validates() -> None:
    with pytest.raises(ValueError):
        OverloadGuard(share=0.0)
    with pytest.raises(ValueError):
        OverloadGuard(seconds=0)
