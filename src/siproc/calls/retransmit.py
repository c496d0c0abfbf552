"""Our 2xx to an INVITE, sent again until its ACK arrives (RFC 3261 section 13.3.1.4).

The UAS core, not the transaction, retransmits a 2xx: at T1, doubling up to T2, on unreliable
transports; on reliable ones it is sent once. Either way, no ACK within 64*T1 means the dialog
is to be ended. The first INVITE of a call (calls/incoming.py) and a re-INVITE
(calls/session.py) both use this; they differ only in when to stop and what giving up means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from siproc.sip.transaction import Destination

if TYPE_CHECKING:
    from siproc.calls.services import PhoneServices


class OkRetransmitter:
    """Resends `data` to `destination` until `stop()`; calls `give_up` after 64*T1.

    `keep_going()` is asked at every timer: False ends the retransmission silently (the call
    moved on, say ended, and nobody waits for this ACK any more).
    """

    def __init__(
        self,
        phone: PhoneServices,
        data: bytes,
        destination: Destination,
        *,
        keep_going: Callable[[], bool],
        give_up: Callable[[], None],
    ) -> None:
        t1 = phone.timer_t1
        self._phone = phone
        self._data = data
        self._destination = destination
        self._keep_going = keep_going
        self._give_up = give_up
        self._interval = 64 * t1 if destination.reliable else t1
        self._deadline = phone.loop.time() + 64 * t1
        self._timer: asyncio.TimerHandle | None = phone.loop.call_later(self._interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._keep_going():
            return
        phone = self._phone
        if phone.loop.time() >= self._deadline:
            self._give_up()
            return
        if not self._destination.reliable:
            phone.send_raw(self._data, self._destination)
            self._interval = min(self._interval * 2, phone.timer_t2)
        self._timer = phone.loop.call_later(self._interval, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
