"""An asyncio event loop on a virtual clock: `VirtualLoop`.

Its clock jumps to the next timer instead of waiting for it, so that seconds of timers (SIP
Timer B, RTCP intervals, the 20 ms media clock) pass in milliseconds of real time and a test is
deterministic. Its selector never reports an event: what a test feeds in comes by
``call_soon``, by a thread (``call_soon_threadsafe``), or through sockets that the code under
test polls itself (the media clock's epoll). Used by tests/phone_sim.py and the RTCP tests.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["VirtualLoop"]


class _VirtualSelector(selectors.BaseSelector):
    """Never has an event; a wait for ``timeout`` moves the virtual clock instead."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled: something outside (a thread) must come
            time.sleep(0.001)
        elif timeout > 0:
            self._loop.now += timeout
        return []

    def close(self) -> None:
        self._keys.clear()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock (see the module docstring)."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(selector=_VirtualSelector(self))
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self.now
