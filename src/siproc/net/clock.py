"""The one media clock: a single 20 ms tick that drives every active RTP stream.

Theory of operation (DESIGN.md section 2): one clock serves all calls, so a hundred calls cost
one timer per 20 ms, not a hundred. When the first stream is added the clock takes an absolute
start time ``t0 = loop.time()`` and schedules tick ``n`` at ``t0 + n * interval`` with
``loop.call_at``. Scheduling from the start time instead of "now + 20 ms" keeps the long-run
rate exact: a tick that fires 3 ms late does not delay the following ones.

When the loop is late by a little (a busy callback, a GC pause), the overdue ticks run back to
back until the clock has caught up, as a real sound card's buffer would; the peer's jitter buffer
absorbs that. When it is late by more than ``max_lag`` ticks, the clock does not burst the whole
backlog out: it skips ahead to the current tick, counts the skipped ticks in ``skipped_ticks``
and logs a warning. Streams can read ``skipped_ticks`` to advance their RTP timestamps across
the gap, so the receiver sees a gap rather than audio arriving late.

A stream is any object with ``tick(now: float) -> None``. An exception from one stream's tick is
logged and does not stop the other streams or the clock. The clock stops (cancels its timer)
when its last stream and its last reader are removed and restarts with a fresh start time when
one is added again.

Each tick runs in three phases (DESIGN.md section 2):

1. **Send**: tick every stream: mix, encode, send its packet. What can wait (recording, the
   sound-card sinks, STOPPED, RTCP) a stream hands to :meth:`defer`, so that this loop stays
   short and every stream's packet leaves at about the same time in each tick: the send
   interval then barely depends on how much else a tick has to do, or on where in the loop a
   busy machine preempts us.
2. **Receive**: one ``select.epoll`` holds every socket registered with :meth:`add_reader`
   (the streams' RTP and RTCP sockets). It is polled with timeout 0 and each ready socket's
   reader reads **one** datagram; the poll is repeated while sockets are ready, at most
   :data:`RECV_ROUNDS` times per tick, so a flooded socket cannot starve the others or the
   clock. Reading one datagram per readiness report means no empty read (and no
   ``BlockingIOError``) per packet; the loop never wakes up per packet either: RTP is
   received in batches once per tick, which the receivers' jitter buffers absorb (the
   streams take each packet's arrival time from the kernel, so the RFC 3550 jitter they
   measure does not include this batching).
3. **Deferred** work, in the order it was deferred, until the next tick is due: what is left
   then waits for the next tick's phase 3 (and runs first there, whatever the time), so that
   a slow tick (a busy machine, calls starting) delays recording by a tick instead of delaying
   the next packets. Work is postponed once at most, so it never piles up.

Tried and not kept: preparing every packet in one tick and sending them all at the start of the
next ("send-first"): about as regular, at the price of one tick more latency.

The clock runs while it has streams or readers, so a stream's sockets are read (latching,
early media, RTCP) before it starts sending; the first stream added restarts it from a fresh
start time, so the tick phase follows the first stream's start, whether readers came before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import time
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["MEDIA_TICK", "RECV_ROUNDS", "MediaClock", "TickStream"]

log = logging.getLogger(__name__)

MEDIA_TICK: Final = 0.020  # seconds; the ptime we send (RFC 3551 section 4.5: 20 ms default)
MAX_LAG_TICKS: Final = 5  # beyond this many overdue ticks, skip instead of catching up
_LOGGED_ERRORS_PER_STREAM: Final = 3  # then one log every _ERROR_LOG_EVERY errors
_ERROR_LOG_EVERY: Final = 500
# Receive rounds per tick: each reads at most one datagram per ready socket, so one socket gets
# at most this many per tick (16 x 50 ticks/s = 800 packets/s, 8x G.711 at 20 ms) and the rest
# stays in its kernel buffer for the next tick.
RECV_ROUNDS: Final = 16
DEFERRED_CHECK_EVERY: Final = 16  # deferred works between two looks at the time
_monotonic: Final = time.monotonic  # the loop's clock (asyncio, and uvloop in ms steps)


class TickStream(Protocol):
    def tick(self, now: float) -> None: ...


class MediaClock:
    """Calls ``tick(now)`` on every added stream once per ``interval`` seconds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = MEDIA_TICK,
        max_lag_ticks: int = MAX_LAG_TICKS,
        *,
        phase: float | None = None,
    ) -> None:
        """``phase`` (0 <= phase < 1): start on the grid ``t = (k + phase) * interval`` of the
        loop's clock (CLOCK_MONOTONIC, the same in every process), so that the clocks of
        several media workers tick at fixed offsets from each other instead of at random
        ones. None: start at once."""
        if phase is not None and not 0 <= phase < 1:
            raise ValueError(f"phase must be in [0, 1), not {phase}")
        self._phase = phase
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if max_lag_ticks < 1:
            raise ValueError(f"max_lag_ticks must be at least 1, not {max_lag_ticks}")
        self._loop = loop
        self.interval = interval
        self.max_lag_ticks = max_lag_ticks
        self._streams: dict[TickStream, None] = {}  # an ordered set
        self._errors: dict[object, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._n = 0  # index of the next tick
        self.ticks = 0  # ticks run since creation
        self.skipped_ticks = 0  # ticks skipped because the loop was late, since creation
        self.now = 0.0  # loop.time() at the start of the current (or last) tick
        self._epoll: select.epoll | None = None  # created with the first reader
        self._readers: dict[int, Callable[[], None]] = {}  # fd -> read one datagram
        self._deferred: list[Callable[[float], None]] | None = None  # a list in phase 1
        self._backlog: list[tuple[Callable[[float], None], float]] = []  # postponed once
        self.postponed = 0  # deferred works postponed to the next tick, since creation
        self._after_tick: list[Callable[[], None]] = []  # after_next_tick()
        self.busy = 0.0  # seconds spent in ticks, since creation (media_priority.py)
        self.lag_max = 0.0  # seconds: the latest a tick ran since `take_lag_max` (metrics)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    def add(self, stream: TickStream) -> None:
        """Tick ``stream`` from the next tick on; start the clock if it is the first stream.
        The first stream also sets the tick phase: a clock that was only reading (streams
        opened, none started) restarts from now, as if it had been stopped."""
        if not self._streams and self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._streams[stream] = None
        self._start_timer()

    def remove(self, stream: TickStream) -> None:
        """Stop ticking ``stream`` (no error if it is not there); stop the clock if it was the
        last one. Safe to call from inside a tick."""
        self._streams.pop(stream, None)
        self._errors.pop(stream, None)
        self._stop_if_idle()

    def add_reader(self, fd: int, read_one: Callable[[], None]) -> None:
        """Call ``read_one()`` in the receive phase of each tick while ``fd`` is readable, at
        most :data:`RECV_ROUNDS` times per tick. ``read_one`` reads one datagram and handles
        its own errors (an exception is logged). Starts the clock."""
        if self._epoll is None:
            self._epoll = select.epoll()
        if fd in self._readers:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = read_one
        self._start_timer()

    def remove_reader(self, fd: int) -> bool:
        """Stop reading ``fd`` (call before closing it); False if it was not registered."""
        if self._readers.pop(fd, None) is None:
            return False
        if self._epoll is not None:
            # An fd already closed has left the epoll set with its file.
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        self._stop_if_idle()
        return True

    def defer(self, work: Callable[[float], None]) -> bool:
        """In the send phase of a tick: run ``work(now)`` after the receive phase and return
        True. Outside a tick (a stream ticked directly, in tests): False, run it yourself."""
        deferred = self._deferred
        if deferred is None:
            return False
        deferred.append(work)
        return True

    @property
    def next_due(self) -> float | None:
        """When the next tick is due (the loop's clock, :func:`time.monotonic`), None while
        the clock is stopped."""
        if self._handle is None:
            return None
        return self._start + self._n * self.interval

    def after_next_tick(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, at the end of the next tick (after its deferred work), or
        from the loop at once while the clock is stopped: work that must not delay a tick
        (a media worker's burst of commands, net/media_channel.py) waits for one to end."""
        if self._handle is None:
            self._loop.call_soon(callback)
        else:
            self._after_tick.append(callback)

    def take_lag_max(self) -> float:
        """The latest a tick ran since the last call (seconds), and start again from 0."""
        lag, self.lag_max = self.lag_max, 0.0
        return lag

    def close(self) -> None:
        """Remove every stream and reader, run postponed work, and stop."""
        backlog, self._backlog = self._backlog, []
        for work, then in backlog:
            self._run_deferred(work, then)
        for stream in list(self._streams):
            self.remove(stream)
        for fd in list(self._readers):
            self.remove_reader(fd)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def _start_timer(self) -> None:
        if self._handle is None:
            now = self._loop.time()
            if self._phase is not None:  # the next grid point
                offset = self._phase * self.interval
                now = (math.floor((now - offset) / self.interval) + 1) * self.interval + offset
            self._start = now
            self._n = 0
            self._handle = self._loop.call_at(self._start, self._on_tick)
            log.debug("media clock started (interval %.3f s)", self.interval)

    def _stop_if_idle(self) -> None:
        if not self._streams and not self._readers and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            log.debug("media clock stopped after %d ticks", self.ticks)
            after, self._after_tick = self._after_tick, []
            for callback in after:  # no next tick to wait for
                self._loop.call_soon(callback)

    def _on_tick(self) -> None:
        began = _monotonic()
        try:
            self._tick()
        finally:
            self.busy += _monotonic() - began
        if self._after_tick:
            after, self._after_tick = self._after_tick, []
            for callback in after:
                try:
                    callback()
                except Exception:
                    log.exception("work after a media tick failed")

    def _tick(self) -> None:
        now = self._loop.time()
        due = self._start + self._n * self.interval
        late = now - due
        if late > self.lag_max:
            self.lag_max = late
        if late > self.max_lag_ticks * self.interval:
            current = math.floor((now - self._start) / self.interval)
            skipped = current - self._n
            if skipped > 0:
                self.skipped_ticks += skipped
                self._n = current
                log.warning(
                    "media clock %.0f ms late: skipped %d ticks (%d in total)",
                    late * 1000,
                    skipped,
                    self.skipped_ticks,
                )
        self._n += 1
        self.ticks += 1
        self.now = now
        self._handle = self._loop.call_at(self._start + self._n * self.interval, self._on_tick)
        streams = self._streams
        deferred: list[Callable[[float], None]] = []
        self._deferred = deferred
        try:
            for stream in tuple(streams):  # phase 1
                if stream not in streams:  # removed by an earlier stream's tick
                    continue
                try:
                    stream.tick(now)
                except Exception:
                    self._log_error(stream)
        finally:
            self._deferred = None
        if self._epoll is not None and self._readers:  # phase 2
            self._receive(self._epoll)
        backlog, self._backlog = self._backlog, []
        for work, then in backlog:  # phase 3: first what the last tick postponed
            self._run_deferred(work, then)
        next_due = self._start + self._n * self.interval
        for i, work in enumerate(deferred):
            if i % DEFERRED_CHECK_EVERY == 0 and i and _monotonic() >= next_due:
                self._backlog = [(rest, now) for rest in deferred[i:]]
                self.postponed += len(self._backlog)
                return
            self._run_deferred(work, now)

    def _run_deferred(self, work: Callable[[float], None], now: float) -> None:
        try:
            work(now)
        except Exception:
            self._log_error(getattr(work, "__self__", work))  # the stream, throttled

    def _receive(self, epoll: select.epoll) -> None:
        """Phase 2: one datagram per ready socket per round, until none is ready."""
        poll = epoll.poll
        readers = self._readers
        maxevents = len(readers) + 1
        for _ in range(RECV_ROUNDS):
            events = poll(0, maxevents)
            if not events:
                return
            for fd, _mask in events:
                read_one = readers.get(fd)
                if read_one is None:  # removed by an earlier reader in this round
                    continue
                try:
                    read_one()
                except Exception:
                    log.exception("media reader of fd %d failed", fd)

    def _log_error(self, stream: object) -> None:
        count = self._errors.get(stream, 0) + 1
        self._errors[stream] = count
        if count <= _LOGGED_ERRORS_PER_STREAM or count % _ERROR_LOG_EVERY == 0:
            log.exception("media tick of %r failed (error %d of this stream)", stream, count)
