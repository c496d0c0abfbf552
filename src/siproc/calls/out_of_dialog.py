"""What the phone answers to a request outside any dialog that starts no call (pure).

RFC 3261 section 12.2.2 and 8.2: a request with no To tag that is not an INVITE is answered
here, by one function, so that the phone only wires it: OPTIONS gets our capabilities (section
11.2), MESSAGE a 200 (RFC 3428 section 7; the phone hands the text on), requests that exist only
inside a dialog or a subscription a 481 (BYE, INFO, UPDATE: RFC 3311 section 5.2; NOTIFY: RFC
6665 section 4.1.3), REFER a 403 (we transfer only calls we are in: a REFER outside a dialog,
which RFC 3515 allows for click-to-dial, would let anyone make us call anywhere), and any other
method a 405 with Allow (section 8.2.1).

:data:`REFUSED` is the same refusals as the admission gate answers them statelessly
(sip/endpoint.py, `Refuse`), before a transaction exists; :func:`answer` gives them to a request
that reached a transaction anyway."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from siproc.calls.call_state import ALLOW
from siproc.sip.endpoint import Refuse
from siproc.sip.headers import make_response
from siproc.sip.message import Request, Response

__all__ = ["ACCEPT", "ACCEPT_LANGUAGE", "REFUSED", "answer"]

ACCEPT = "application/sdp"  # RFC 3261 section 11.2: the bodies we take in an INVITE
ACCEPT_LANGUAGE = "en"
NO_TRANSACTION = "Call/Transaction Does Not Exist"  # RFC 3261 section 21.4.19

#: Requests refused outside a dialog whoever sends them, by method.
REFUSED: dict[str, Refuse] = {
    "BYE": Refuse(481, NO_TRANSACTION),
    "INFO": Refuse(481, NO_TRANSACTION),
    "UPDATE": Refuse(481, NO_TRANSACTION),  # RFC 3311 section 5.2
    "NOTIFY": Refuse(481, "Subscription Does Not Exist"),  # RFC 6665 section 4.1.3
    "REFER": Refuse(403, "Forbidden (REFER outside a call)"),
}


def answer(
    request: Request, new_tag: Callable[[], str], supported: Iterable[str]
) -> Response | None:
    """The response to ``request``, which has no To tag; None for an INVITE (a new call: the
    phone decides). ``new_tag`` makes our To tag, asked only for a response that gets one (a
    481 says no dialog exists, so it names none); ``supported``: the option tags of the
    Supported header of an OPTIONS answer."""
    method = request.method
    if method == "INVITE":
        return None
    if method == "OPTIONS":
        headers = [
            ("Allow", ALLOW),
            ("Accept", ACCEPT),
            ("Accept-Language", ACCEPT_LANGUAGE),
            ("Supported", ", ".join(sorted(supported))),
        ]
        return make_response(request, 200, "OK", to_tag=new_tag(), headers=headers)
    if method == "MESSAGE":
        return make_response(request, 200, "OK", to_tag=new_tag())
    refusal = REFUSED.get(method)
    if refusal is not None:
        assert refusal.status is not None
        tag = new_tag() if refusal.status != 481 else None
        return make_response(request, refusal.status, refusal.reason, to_tag=tag)
    return make_response(
        request, 405, "Method Not Allowed", to_tag=new_tag(), headers=[("Allow", ALLOW)]
    )
