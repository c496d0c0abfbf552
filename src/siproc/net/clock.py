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
when its last stream is removed and restarts with a fresh start time when one is added again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final, Protocol

__all__ = ["MEDIA_TICK", "MediaClock", "TickStream"]

log = logging.getLogger(__name__)

MEDIA_TICK: Final = 0.020  # seconds; the ptime we send (RFC 3551 section 4.5: 20 ms default)
MAX_LAG_TICKS: Final = 5  # beyond this many overdue ticks, skip instead of catching up
_LOGGED_ERRORS_PER_STREAM: Final = 3  # then one log every _ERROR_LOG_EVERY errors
_ERROR_LOG_EVERY: Final = 500


class TickStream(Protocol):
    def tick(self, now: float) -> None: ...


class MediaClock:
    """Calls ``tick(now)`` on every added stream once per ``interval`` seconds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = MEDIA_TICK,
        max_lag_ticks: int = MAX_LAG_TICKS,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if max_lag_ticks < 1:
            raise ValueError(f"max_lag_ticks must be at least 1, not {max_lag_ticks}")
        self._loop = loop
        self.interval = interval
        self.max_lag_ticks = max_lag_ticks
        self._streams: dict[TickStream, None] = {}  # an ordered set
        self._errors: dict[TickStream, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._n = 0  # index of the next tick
        self.ticks = 0  # ticks run since creation
        self.skipped_ticks = 0  # ticks skipped because the loop was late, since creation

    @property
    def running(self) -> bool:
        return self._handle is not None

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    def add(self, stream: TickStream) -> None:
        """Tick ``stream`` from the next tick on; start the clock if it is the first stream."""
        self._streams[stream] = None
        if self._handle is None:
            self._start = self._loop.time()
            self._n = 0
            self._handle = self._loop.call_at(self._start, self._on_tick)
            log.debug("media clock started (interval %.3f s)", self.interval)

    def remove(self, stream: TickStream) -> None:
        """Stop ticking ``stream`` (no error if it is not there); stop the clock if it was the
        last one. Safe to call from inside a tick."""
        self._streams.pop(stream, None)
        self._errors.pop(stream, None)
        if not self._streams and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            log.debug("media clock stopped after %d ticks", self.ticks)

    def close(self) -> None:
        """Remove every stream and stop."""
        for stream in list(self._streams):
            self.remove(stream)

    def _on_tick(self) -> None:
        now = self._loop.time()
        due = self._start + self._n * self.interval
        late = now - due
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
        self._handle = self._loop.call_at(self._start + self._n * self.interval, self._on_tick)
        for stream in tuple(self._streams):
            if stream not in self._streams:  # removed by an earlier stream's tick
                continue
            try:
                stream.tick(now)
            except Exception:
                self._log_error(stream)

    def _log_error(self, stream: TickStream) -> None:
        count = self._errors.get(stream, 0) + 1
        self._errors[stream] = count
        if count <= _LOGGED_ERRORS_PER_STREAM or count % _ERROR_LOG_EVERY == 0:
            log.exception("media tick of %r failed (error %d of this stream)", stream, count)
