"""CPU priority of the media workers: real-time while they keep up, normal when they cannot.

Theory of operation: a media tick that waits for the CPU is heard, as jitter, by every call of
the worker. Measured with 1000 calls on two cores (``bench/load.py``), the workers' send
intervals had a p99 of 8-13 ms at normal priority and of 2.5-3.5 ms with real-time scheduling:
the cost of a tick is the same, what changes is that no other process preempts it. So, as
audio servers do (JACK, PipeWire through RTKit, Asterisk's ``-p``), a worker asks for
``SCHED_RR`` at a low real-time priority (:data:`RT_PRIORITY`), which root, ``CAP_SYS_NICE`` or
an ``RLIMIT_RTPRIO`` (systemd's ``LimitRTPRIO=``) allow; failing that a nice value of
:data:`HIGH_NICE`; failing that it runs as it is. ``SIPROC_MEDIA_PRIORITY`` caps what is asked.

Real-time tasks run before every normal one, so a worker that has more calls than one core can
carry must not keep that priority: SIP signalling and the handlers would starve (the kernel
leaves them only 5% of the CPU). :class:`OverloadGuard` watches the share of time the worker's
media clock is busy; after :data:`OVERLOAD_SECONDS` seconds above :data:`OVERLOAD_SHARE` the
worker drops to ``high`` (then it is scheduled fairly, with more weight) and says so once.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from siproc.config import MEDIA_PRIORITIES

__all__ = [
    "HIGH_NICE",
    "OVERLOAD_SECONDS",
    "OVERLOAD_SHARE",
    "PRIORITIES",
    "RT_PRIORITY",
    "OverloadGuard",
    "set_priority",
]

log = logging.getLogger(__name__)

PRIORITIES: Final = MEDIA_PRIORITIES  # SIPROC_MEDIA_PRIORITY, most first
RT_PRIORITY: Final = 10  # SCHED_RR 1..99: above every normal task, below kernel/audio threads
HIGH_NICE: Final = -10  # "high": fair scheduling with ~10x the weight of a nice 0 process
OVERLOAD_SHARE: Final = 0.85  # busy share of a core above which real-time is given up
OVERLOAD_SECONDS: Final = 3  # consecutive seconds above it


def set_priority(wanted: str) -> str:
    """Ask for ``wanted`` (one of :data:`PRIORITIES`) or the best below it that this process
    may have; return what it got. Never raises."""
    if wanted not in PRIORITIES:
        raise ValueError(f"unknown media priority {wanted!r} (one of {', '.join(PRIORITIES)})")
    for level in PRIORITIES[PRIORITIES.index(wanted) :]:
        try:
            if level == "realtime":
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
            else:
                if os.sched_getscheduler(0) != os.SCHED_OTHER:
                    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
                if level == "high":
                    os.setpriority(os.PRIO_PROCESS, 0, HIGH_NICE)
            return level
        except (OSError, AttributeError) as exc:  # EPERM; AttributeError: not Linux
            log.debug("media priority %s not allowed: %s", level, exc)
    return "normal"


class OverloadGuard:
    """Decides when a real-time worker must step down: feed it the media clock's accumulated
    busy seconds once a second; :meth:`check` returns True once the busy share stayed above
    ``share`` for ``seconds`` consecutive checks."""

    def __init__(self, share: float = OVERLOAD_SHARE, seconds: int = OVERLOAD_SECONDS) -> None:
        if not 0 < share <= 1 or seconds < 1:
            raise ValueError("share must be in (0, 1] and seconds at least 1")
        self.share = share
        self.seconds = seconds
        self._last: tuple[float, float] | None = None  # (now, busy) at the last check
        self._over = 0
        self.last_share = 0.0

    def check(self, now: float, busy: float) -> bool:
        last, self._last = self._last, (now, busy)
        if last is None or now <= last[0]:
            return False
        self.last_share = (busy - last[1]) / (now - last[0])
        self._over = self._over + 1 if self.last_share > self.share else 0
        return self._over >= self.seconds
