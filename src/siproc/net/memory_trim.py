"""Give the memory of a busy spell back once the phone is quiet again (issue 12, item 3).

Theory of operation: after a load of 1000 calls the main process holds on to about 45 MiB that
it no longer uses. It is not a leak: the objects alive equal the idle ones, give or take a few
hundred. It is fragmentation. CPython's small-object allocator (pymalloc) returns a 1 MiB arena
to the system only when every block in it is free, and the glibc heap returns pages only from
its top, so a few hundred small objects allocated during the load and still alive after it pin
tens of arenas. Measured with a pool walk after 1000 calls (bench/footprint.py), the pinning
objects are almost all in caches and free lists, not in siproc's own state:

* uvloop's free lists (Cython ``@freelist(250)``) of ``Handle`` and ``TimerHandle`` (and of
  the closure scopes of its pipe coroutines, 8) and ``_asyncio``'s of future iterators (255):
  their last freed objects are kept for reuse, and after a load these are spread over the whole
  heap;
* CPython's method cache (4096 entries) keeps a strong reference to each attribute name it
  caches, including names that are fresh strings (pickle's ``find_class`` looks up the class
  name read from each message of a media worker);
* CPython's own free lists (floats, tuples, lists, dicts), which a full ``gc.collect()``
  empties, and the free glibc pages that only ``malloc_trim`` hands back.

`MemoryTrim` swaps the contents of the uvloop and asyncio free lists for a reserve of the same
objects allocated while the phone was idle (so the free lists end up in memory the idle phone
uses anyway, and the objects of the load are freed), clears the method cache, collects, and
asks glibc to trim. The phone calls `busy()` when a call starts and `quiet()` when the last
call has ended; the trim runs `delay` seconds after the last `quiet()` (after the last call's
transactions have ended, RFC 3261 Timer J is 64*T1) and only if calls ran since the last trim.
It costs one full collection (tens of ms at idle) and keeps ~70 KB of reserve objects.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Final

from siproc.sip.headers import forget_name_addrs

log = logging.getLogger(__name__)

# The sizes of the free lists, exactly: uvloop's DEFAULT_FREELIST_SIZE (includes/consts.pxi),
# CPython's FI_FREELIST_MAXLEN (Modules/_asynciomodule.c) and Cython's closure-scope free
# lists (8; uvloop's connect_read_pipe/connect_write_pipe, one each per handler). Taking
# exactly this many empties a full free list and allocates nothing fresh: fresh objects taken
# while the load's arenas are still there could land in them and pin them again.
HANDLE_FREELIST: Final = 250
FUTURE_ITER_FREELIST: Final = 255
PIPE_SCOPES: Final = 8
FAR_FUTURE: Final = 86400.0  # seconds: the reserve's timer handles are cancelled at once


def _noop() -> None:
    pass


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` (hands free pages in the middle of the heap back too), or None
    where there is no glibc (musl) or no ctypes."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrim:
    """See the module docstring. ``loop`` is the running loop (uvloop or asyncio)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self.delay = delay
        self._reserve: list[object] = []
        # one context for all reserve handles: uvloop copies the current one per handle otherwise
        self._context = contextvars.Context()
        self._timer: asyncio.TimerHandle | None = None
        self._used = False  # calls ran since the last trim
        self._trim: Callable[[], object] | None = None
        self._trim_looked_up = False
        self.trims = 0  # trims done (tests, logs)
        self._spent = 0.0  # seconds the trim's first step took
        # only uvloop keeps free lists of pipe coroutine scopes
        self._pipes = type(loop).__module__.startswith("uvloop")

    def prime(self) -> None:
        """Allocate the reserve; call once the phone is up and idle."""
        self._reserve = self._take()

    def close(self) -> None:
        """Drop the reserve and any pending trim (shutdown)."""
        self._used = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release(self._reserve)

    def __del__(self) -> None:
        self._release(self._reserve)  # its coroutines closed: no "never awaited" warnings

    def busy(self) -> None:
        """A call started: no trim while it runs."""
        self._used = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def quiet(self) -> None:
        """The last call ended: trim after `delay` seconds unless a call starts before."""
        if not self._used or self.delay <= 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.delay, self._swap)

    def _take(self) -> list[object]:
        """As many of each object whose free list pins memory as its free list holds: out of
        the free list while it has some, then fresh."""
        loop = self._loop
        context = self._context
        handles = [loop.call_soon(_noop, context=context) for _ in range(HANDLE_FREELIST)]
        for handle in handles:
            handle.cancel()
        timers = [
            loop.call_later(FAR_FUTURE, _noop, context=context) for _ in range(HANDLE_FREELIST)
        ]
        for timer in timers:
            timer.cancel()
        future = loop.create_future()
        iters = [future.__await__() for _ in range(FUTURE_ITER_FREELIST)]
        # never run; a coroutine's closure scope lives until it is closed (`_release`)
        pipes: list[Coroutine[object, object, object]] = []
        for _ in range(PIPE_SCOPES if self._pipes else 0):
            pipes.append(loop.connect_read_pipe(asyncio.Protocol, None))
            pipes.append(loop.connect_write_pipe(asyncio.Protocol, None))
        return [handles, timers, iters, pipes]

    @staticmethod
    def _release(taken: list[object]) -> None:
        """Free what `_take` took, now (the coroutines closed first: never awaited)."""
        for group in taken:
            for item in group:  # type: ignore[attr-defined]
                if isinstance(item, Coroutine):
                    item.close()
        taken.clear()

    def _swap(self) -> None:
        """Step 1: free what only the method cache and reference cycles hold; then empty the
        free lists into ``drained`` and free the reserve into them: the drained objects are
        freed for good (the free lists are full). ``call_soon`` handles stay in the loop's
        ready queue until its next turn, hence step 2 a moment later."""
        self._timer = None
        self._used = False
        started = time.perf_counter()
        sys._clear_type_cache()
        forget_name_addrs()  # the load's From/To values (1024 dialogs' tags)
        gc.collect()
        drained = self._take()
        self._release(self._reserve)  # into the free lists, now empty
        self._release(drained)  # freed for good, but the cancelled handles still queued
        self._spent = time.perf_counter() - started
        self._loop.call_later(0.05, self._collect)

    def _collect(self) -> None:
        """Step 2: a full collection (it empties CPython's own free lists), a new reserve (out
        of uvloop's and asyncio's free lists: the old reserve's memory), and glibc's trim."""
        started = time.perf_counter()
        gc.collect()
        self._release(self._reserve)  # (empty unless step 2 runs twice)
        self._reserve = self._take()
        if not self._trim_looked_up:
            self._trim_looked_up = True
            self._trim = _malloc_trim()
        if self._trim is not None:
            self._trim()
        self.trims += 1
        spent = self._spent + time.perf_counter() - started
        log.debug("quiet for %g s after calls: memory trimmed in %.0f ms", self.delay, 1e3 * spent)
