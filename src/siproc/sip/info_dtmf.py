"""DTMF keys in SIP INFO (``application/dtmf-relay``, the de facto format of RFC 2976 INFO DTMF),
sans-I/O.

Theory of operation
-------------------
When a call cannot send RFC 4733 telephone-events, each key of ``DTMF <digits>`` goes out in an
INFO request of its own, and the keys must arrive in order: `InfoDtmfQueue` holds them and hands
out the next one only when the previous INFO got its final response. A refused or unanswered
INFO drops the keys still queued: the far end does not take INFO DTMF, and the handler hears it
once (`InfoFailed`), not once per key. The edge (`siproc.calls.dtmf`) builds and sends the
requests with `dtmf_relay_body` and feeds back each response; no timer lives here (an
unanswered INFO is the transaction's Timer F, reported as ``None``).

Keys received in INFO are read by `info_dtmf_key`: ``application/dtmf-relay`` (``Signal=5``
among ``name=value`` lines) and ``application/dtmf`` (the key alone).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = [
    "DTMF_RELAY",
    "INFO_DTMF_DURATION_MS",
    "InfoDtmfQueue",
    "InfoFailed",
    "SendInfo",
    "dtmf_relay_body",
    "info_dtmf_key",
]

#: The Content-Type of the INFO DTMF we send (and the first one we read).
DTMF_RELAY = "application/dtmf-relay"
#: Duration= of the INFO DTMF we send, in milliseconds.
INFO_DTMF_DURATION_MS = 160


def dtmf_relay_body(key: str, duration_ms: int = INFO_DTMF_DURATION_MS) -> bytes:
    """The ``application/dtmf-relay`` body of one key."""
    return f"Signal={key}\r\nDuration={duration_ms}\r\n".encode()


def info_dtmf_key(kind: str | None, body: bytes) -> str | None:
    """The key of a received INFO whose Content-Type is ``kind`` (media type, lower case), or
    None when it carries none. The key is not validated here (the handler event does it)."""
    text = body.decode("utf-8", "replace")
    key = None
    if kind == DTMF_RELAY:
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                key = value.strip()
    elif kind == "application/dtmf":
        key = text.strip()
    return key or None


@dataclass(frozen=True, slots=True)
class SendInfo:
    """Send an INFO with ``key`` now; its final response goes to `InfoDtmfQueue.response`."""

    key: str


@dataclass(frozen=True, slots=True)
class InfoFailed:
    """An INFO was refused, unanswered or could not be sent; the queued keys are dropped.
    ``text`` says which and how many (for ``ERROR DTMF``)."""

    text: str
    dropped: int


class InfoDtmfQueue:
    """The keys of one call waiting for their INFO, one INFO in flight; see the module docstring."""

    def __init__(self) -> None:
        self._keys: deque[str] = deque()
        self._in_flight = False

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    def add(self, keys: str) -> SendInfo | None:
        """``DTMF <keys>``: the INFO to send now, or None while one is in flight."""
        self._keys.extend(keys)
        return None if self._in_flight else self._next()

    def response(self, status: int | None, reason: str = "") -> SendInfo | InfoFailed | None:
        """The final response to our INFO (``None``: no answer); a provisional one changes
        nothing. After a 2xx the next key goes out; after a failure the rest is dropped."""
        if status is not None and status < 200:
            return None
        self._in_flight = False
        if status is None or status >= 300:
            what = "no answer" if status is None else f"{status} {reason}"
            return self._drop(f"SIP INFO refused by the remote end ({what})")
        return self._next()

    def unsent(self, why: str) -> InfoFailed:
        """The INFO of the last `SendInfo` could not be sent (``why``): the rest is dropped."""
        self._in_flight = False
        return self._drop(why)

    def clear(self) -> None:
        """The call is no longer connected: forget the keys (nothing to tell)."""
        self._keys.clear()
        self._in_flight = False

    def _next(self) -> SendInfo | None:
        if not self._keys:
            return None
        self._in_flight = True
        return SendInfo(self._keys.popleft())

    def _drop(self, text: str) -> InfoFailed:
        dropped = len(self._keys)
        self._keys.clear()
        more = f"; {dropped} more not sent" if dropped else ""
        return InfoFailed(text + more, dropped)
