"""net/memory_trim.py: a trim after a quiet spell that followed calls, never during one; the
free-list swap hands uvloop's and asyncio's free lists the reserve's memory."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings

import pytest

from siproc.net import memory_trim
from siproc.net.memory_trim import (
    FUTURE_ITER_FREELIST,
    HANDLE_FREELIST,
    PIPE_SCOPES,
    MemoryTrim,
)
from tests.virtual_loop import VirtualLoop

DELAY = 33.0


def _run_for(loop: VirtualLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


@pytest.fixture
def loop() -> VirtualLoop:
    loop = VirtualLoop()
    yield loop
    loop.close()


def test_trims_once_delay_after_the_last_call(loop: VirtualLoop) -> None:
    trim = MemoryTrim(loop, DELAY)
    trim.prime()
    trim.busy()
    trim.quiet()
    _run_for(loop, DELAY - 1)
    assert trim.trims == 0
    _run_for(loop, 2)
    assert trim.trims == 1
    _run_for(loop, 10 * DELAY)  # no calls since: no second trim
    assert trim.trims == 1
    assert loop.errors == []


def test_the_trim_forgets_the_loads_from_and_to_values(loop: VirtualLoop) -> None:
    """The kept From/To parses (sip/headers.py name_addr) are the load's, one per dialog tag:
    the trim drops them, so they do not pin the arenas they were made in."""
    from siproc.sip import headers

    headers.name_addr("<sip:alice@example.com>;tag=load-1")
    assert headers._name_addrs
    trim = MemoryTrim(loop, DELAY)
    trim.prime()
    trim.busy()
    trim.quiet()
    _run_for(loop, DELAY + 1)
    assert trim.trims == 1
    assert headers._name_addrs == {}


def test_a_call_before_the_delay_puts_the_trim_off(loop: VirtualLoop) -> None:
    trim = MemoryTrim(loop, DELAY)
    trim.busy()
    trim.quiet()
    _run_for(loop, DELAY / 2)
    trim.busy()  # a new call
    _run_for(loop, DELAY)
    assert trim.trims == 0
    trim.quiet()
    _run_for(loop, DELAY / 2)
    assert trim.trims == 0
    _run_for(loop, DELAY)
    assert trim.trims == 1


def test_no_trim_without_calls_or_with_delay_zero(loop: VirtualLoop) -> None:
    idle = MemoryTrim(loop, DELAY)
    idle.quiet()  # quiet without a call (start-up)
    off = MemoryTrim(loop, 0)
    off.busy()
    off.quiet()
    _run_for(loop, 3 * DELAY)
    assert (idle.trims, off.trims) == (0, 0)


def test_trim_collects_cycles_and_keeps_a_full_reserve(loop: VirtualLoop) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    gc.disable()
    try:
        trim = MemoryTrim(loop, DELAY)
        trim.prime()
        Node()
        assert any(type(o) is Node for o in gc.get_objects())
        trim.busy()
        trim.quiet()
        _run_for(loop, DELAY + 1)
        assert not any(type(o) is Node for o in gc.get_objects())
    finally:
        gc.enable()
    handles, timers, iters, pipes = trim._reserve  # type: ignore[misc]
    assert len(handles) == len(timers) == HANDLE_FREELIST  # type: ignore[arg-type]
    assert len(iters) == FUTURE_ITER_FREELIST  # type: ignore[arg-type]
    assert pipes == []  # only uvloop has free lists of pipe coroutine scopes


def test_without_malloc_trim_the_rest_still_runs(
    loop: VirtualLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_trim, "_malloc_trim", lambda: None)
    trim = MemoryTrim(loop, DELAY)
    trim.busy()
    trim.quiet()
    _run_for(loop, DELAY + 1)
    assert trim.trims == 1


def test_malloc_trim_is_glibc_s_where_there_is_one() -> None:
    trim = memory_trim._malloc_trim()
    if trim is not None:  # glibc: returns 0 or 1
        assert trim() in (0, 1)


def test_swap_gives_uvloop_free_lists_the_reserve_s_memory() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        # a cancelled timer handle is freed once uvloop has closed its timer: a loop turn later
        def turn() -> None:
            loop.run_until_complete(asyncio.sleep(0.001))

        trim = MemoryTrim(loop, DELAY)
        trim.prime()
        turn()
        reserve_timers = {id(t) for t in trim._reserve[1]}  # type: ignore[attr-defined]
        # a load: timer handles made, then freed, refill the free list with their memory
        load = [loop.call_later(3600, lambda: None) for _ in range(2 * HANDLE_FREELIST)]
        for timer in load:
            timer.cancel()
        load_ids = {id(t) for t in load}
        del load, timer
        turn()
        trim._swap()
        turn()
        # the free list now holds the reserve: new timer handles take its memory, none the load's
        after = [loop.call_later(3600, lambda: None) for _ in range(HANDLE_FREELIST // 2)]
        ids = {id(t) for t in after}
        for timer in after:
            timer.cancel()
        # (a few of the load's slip in while the loop's own sleep timer is out of the free list)
        assert len(ids & reserve_timers) >= len(ids) - 4
        assert len(ids & load_ids) <= 4
        trim._collect()
        assert trim.trims == 1
        assert len(trim._reserve[3]) == 2 * PIPE_SCOPES  # type: ignore[arg-type]
        trim.close()
        assert trim._reserve == []
    finally:
        loop.close()


def test_no_coroutine_of_the_reserve_is_left_unclosed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    loop = uvloop.new_event_loop()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trim = MemoryTrim(loop, DELAY)
            trim.prime()
            trim._swap()
            trim._collect()
            trim._collect()  # step 2 twice: the first new reserve is released, not dropped
            assert len(trim._reserve[3]) == 2 * PIPE_SCOPES  # type: ignore[arg-type]
            del trim  # never closed: __del__ closes its coroutines
            gc.collect()
    finally:
        loop.close()
    assert unraisable == []
