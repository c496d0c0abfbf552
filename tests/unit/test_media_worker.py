"""Unit tests of siproc.net.media_worker: how a worker paces the commands of its channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from siproc.net import media_worker
from siproc.net.clock import MEDIA_TICK, MediaClock
from siproc.net.media_channel import Channel, Message
from siproc.net.media_worker import MediaWorker


class FakeTime:
    """The worker's clock in virtual time: when the next tick is due, the time, the work
    waiting for the end of the next tick."""

    def __init__(self) -> None:
        self.now = 100.0
        self.due = 100.0 + MEDIA_TICK
        self.after: list[Callable[[], None]] = []

    def tick(self, cost: float) -> None:
        """The tick due runs, ``cost`` seconds long, then what waited for it."""
        self.now = self.due + cost
        self.due += MEDIA_TICK
        after, self.after = self.after, []
        for callback in after:
            callback()


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("tick_cost", [0.005, 0.019])
def test_a_busy_worker_still_takes_a_burst_of_commands_in_a_bounded_time(
    tick_cost: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands wait for the end of a tick when the next one is near, but a worker whose
    ticks take most of the 20 ms (95 % busy: it still keeps up, no tick skipped) must not
    fall to one command per tick: a burst of 200 (20 calls set up, or ended) would take 4 s,
    and the control process gives a close up after 10 s (media_pool.CLOSE_TIMEOUT)."""
    fake = FakeTime()
    handled: list[Message] = []

    def on_message(self: MediaWorker, message: Message, fds: list[int]) -> None:
        handled.append(message)
        fake.now += 50e-6  # what a cheap command (PLAY, DTMF, a setting) costs

    monkeypatch.setattr(media_worker, "_monotonic", lambda: fake.now)
    monkeypatch.setattr(MediaClock, "next_due", property(lambda self: fake.due))
    monkeypatch.setattr(MediaClock, "after_next_tick", lambda self, cb: fake.after.append(cb))
    monkeypatch.setattr(MediaWorker, "_on_message", on_message)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = Channel.pair()
        control = Channel(loop, ours, lambda m, f: None, lambda: None)
        worker = MediaWorker(loop, theirs)
        try:
            fake.now = fake.due - 0.001  # the burst arrives 1 ms before a tick
            for i in range(200):
                control.send(("dtmf", i, "1"))
            await _until(lambda: fake.after)
            assert handled == []  # nothing this near the tick
            ticks = 0
            while len(handled) < 200:
                assert ticks < 20, f"{len(handled)} commands taken in {ticks} ticks"
                fake.tick(tick_cost)
                ticks += 1
                await _until(lambda: fake.after or len(handled) == 200)
            assert handled == [("dtmf", i, "1") for i in range(200)]  # in order
        finally:
            worker.stop()
            control.close()

    asyncio.run(main())
