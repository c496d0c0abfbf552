"""Requests a call sends inside its dialog, answering digest challenges (RFC 3261 section 22).

Theory of operation: an in-dialog request (MESSAGE, a re-INVITE for HOLD/RESUME ...) can be
challenged like the INVITE was: 407 by a proxy on the route set, 401 by the far end.
`InDialogRequest` builds the request from the dialog (RFC 3261 section 12.2.1.1), sends it,
and answers each challenge the call's `DigestSession` can answer by sending the request again
with the next CSeq and the credentials (section 22.2: a new request, same Call-ID, CSeq
incremented). The final response that is not such a challenge, or the transaction timeout
(reported as ``None``, section 8.1.3.1), goes to ``on_final`` exactly once.

Later 2xx responses to the same INVITE (the far end retransmits its 2xx until it sees our ACK,
section 13.3.1.4; the transaction passes them up in its Accepted state, RFC 6026 section 7.2)
go to ``on_2xx_again``, so that the owner re-sends its ACK.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from siproc.sip.auth import DigestSession, challenge_header
from siproc.sip.dialog import Dialog
from siproc.sip.message import Request, Response
from siproc.sip.transaction import Destination, ResponseReceived, TransactionTimeout

if TYPE_CHECKING:
    from siproc.calls.services import PhoneServices

__all__ = ["MAX_AUTH_ATTEMPTS", "InDialogRequest"]

#: Challenges answered for one request before giving up (a proxy and the far end may both
#: challenge, and a stale nonce costs one more round; anything beyond is a loop).
MAX_AUTH_ATTEMPTS = 4


class InDialogRequest:
    """One request in a dialog, resent per answered challenge; see the module docstring.

    ``headers`` are added after the dialog's own (Content-Type, Contact ...); ``body`` is
    sent as is. ``on_final(request, response)`` gets the request that was answered (the last
    one sent, whose CSeq an ACK must reuse) and its final response, or ``None`` on timeout.
    """

    def __init__(
        self,
        phone: PhoneServices,
        dialog: Dialog,
        method: str,
        auth: DigestSession | None,
        on_final: Callable[[Request, Response | None], None],
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        on_2xx_again: Callable[[Response], object] | None = None,
    ) -> None:
        self.phone = phone
        self.dialog = dialog
        self.method = method
        self.auth = auth
        self.headers = list(headers)
        self.body = body
        self.on_final = on_final
        self.on_2xx_again = on_2xx_again
        self.request: Request | None = None
        self.destination: Destination | None = None
        self.provisional = False  # a 1xx came for the request sent last (a CANCEL may go)
        self.done = False
        self._attempts = 0

    def send(self) -> None:
        """Send (or, after a challenge, send again) with a new CSeq."""
        request = self.dialog.create_request(self.method)
        for name, value in self.headers:
            request.headers.add(name, value)
        if self.auth is not None:
            for name, value in self.auth.headers(self.method, request.uri, self.body):
                request.headers.add(name, value)
        request.body = self.body
        self.request = request
        self.provisional = False
        try:
            destination = self.phone.destination_for(self.dialog.next_hop())
        except OSError:  # the remote target's name is not resolved: as if unanswered
            self.phone.loop.call_soon(self._final, request, None)
            return
        self.destination = destination
        self.phone.send_request(request, destination, lambda event: self._on_event(request, event))

    def _on_event(self, request: Request, event: ResponseReceived | TransactionTimeout) -> None:
        if request is not self.request:  # an earlier attempt, already answered
            return
        if isinstance(event, TransactionTimeout):
            self._final(request, None)
            return
        response = event.response
        if response.status < 200:
            self.provisional = True
            return
        if self.done:
            if 200 <= response.status < 300 and self.on_2xx_again is not None:
                self.on_2xx_again(response)
            return
        if response.status in (401, 407) and self._answer_challenge(response):
            return
        if self.auth is not None and response.status not in (401, 407):
            self.auth.accepted()
        self._final(request, response)

    def _answer_challenge(self, response: Response) -> bool:
        if self.auth is None or self._attempts >= MAX_AUTH_ATTEMPTS:
            return False
        if not self.auth.authorize(
            response.status, response.headers.get_raw(challenge_header(response.status))
        ):
            return False
        self._attempts += 1
        self.send()
        return True

    def _final(self, request: Request, response: Response | None) -> None:
        self.done = True
        self.on_final(request, response)
