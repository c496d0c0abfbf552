"""The states of a call, the one table of its legal transitions (DESIGN rule 3), and the fixed
SIP values every part of a call uses: our Allow header and the reason phrases we end calls with.

They live apart from `calls/call.py` so that the modules a `Call` hands its work to (the INVITE
sides in `outgoing.py` and `incoming.py`, `commands.py`, `dtmf.py`, `transfer.py`) can import
them at run time without an import cycle. `Call._set_state` enforces `TRANSITIONS`.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ALLOW", "TRANSITIONS", "CallState", "reason_phrase"]

#: Our Allow header value (RFC 3261 section 20.5): the methods a call and the phone take.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, REFER, NOTIFY, UPDATE"


class CallState(Enum):
    CALLING = "calling"  # outgoing INVITE sent, nothing back yet
    EARLY = "early"  # outgoing: a provisional response arrived
    INCOMING = "incoming"  # incoming INVITE, not answered yet
    EARLY_MEDIA = "early media"  # incoming: 183 with our SDP answer sent, media flowing
    ANSWERING = "answering"  # incoming: 2xx sent, waiting for the ACK
    CONNECTED = "connected"
    CANCELLING = "cancelling"  # outgoing: hung up before the answer
    TERMINATING = "terminating"  # our BYE is on its way
    ENDED = "ended"


S = CallState
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.CALLING: frozenset({S.EARLY, S.CONNECTED, S.CANCELLING, S.ENDED}),
    S.EARLY: frozenset({S.CONNECTED, S.CANCELLING, S.ENDED}),
    S.INCOMING: frozenset({S.EARLY_MEDIA, S.ANSWERING, S.ENDED}),
    S.EARLY_MEDIA: frozenset({S.ANSWERING, S.ENDED}),
    S.ANSWERING: frozenset({S.CONNECTED, S.TERMINATING, S.ENDED}),
    S.CONNECTED: frozenset({S.TERMINATING, S.ENDED}),
    S.CANCELLING: frozenset({S.TERMINATING, S.ENDED}),
    S.TERMINATING: frozenset({S.ENDED}),
    S.ENDED: frozenset(),
}

_REASONS = {
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


def reason_phrase(status: int, default: str = "Call Ended") -> str:
    """The reason phrase we send with `status` (``HANGUP <status>``), else `default`."""
    return _REASONS.get(status, default)
