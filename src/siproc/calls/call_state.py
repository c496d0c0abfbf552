"""The fixed SIP values every part of a call uses: our Allow header, and the call's states
(`CallState`, the states of the INVITE session machine in `siproc.sip.invite_session`, whose
one table says how they change).
"""

from __future__ import annotations

from siproc.sip.invite_session import SessionState, reason_phrase

__all__ = ["ALLOW", "CallState", "reason_phrase"]

#: Our Allow header value (RFC 3261 section 20.5): the methods a call and the phone take.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, REFER, NOTIFY, UPDATE"

CallState = SessionState
