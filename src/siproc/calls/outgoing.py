"""The messages of the caller's side of a call's INVITE (RFC 3261 section 13.2): ``CALL <uri>``.

What happens on each response is decided by the call's `InviteSession`
(sip/invite_session.py); this module builds and sends the INVITE with our SDP offer, answers a
401/407 with the call's digest credentials by sending it again with the next CSeq (section
22.2), makes the dialog of the first 2xx and its ACK (section 13.2.2.4, kept for the 2xx's
retransmissions, even after the INVITE transaction is gone), and builds the CANCEL (section
9.1: same Via branch, CSeq number and Route as the INVITE).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from siproc.calls.call_state import ALLOW, CallState
from siproc.sdp.model import SessionDescription
from siproc.sip.auth import challenge_header
from siproc.sip.dialog import Dialog
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import content_type, make_cancel
from siproc.sip.message import Headers, Request, Response
from siproc.sip.transaction import Destination, ResponseReceived, TransactionTimeout
from siproc.sip.uri import SipUri

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["OutgoingInvite", "sdp_of"]


def sdp_of(message: Request | Response) -> bytes:
    """The message's body if it is an SDP (RFC 3264), else nothing."""
    if message.body and content_type(message.headers) == "application/sdp":
        return message.body
    return b""


class OutgoingInvite:
    """The INVITE client side of one outgoing call; see the module docstring."""

    def __init__(self, call: CallView) -> None:
        self.call = call
        self.invite: Request | None = None  # what we send, less credentials; CSeq goes up
        self._sent: Request | None = None  # the last INVITE sent (CANCEL and dialog copy it)
        self._destination: Destination | None = None
        self.offer: SessionDescription | None = None
        self._ack: tuple[bytes, Destination] | None = None
        self._ack_request: Request | None = None  # the ACK of our INVITE's 2xx, once it came
        self._failure: Response | None = None  # the last final failure (401/407: a challenge)

    def start(
        self, target: SipUri, destination: Destination, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        call = self.call
        self._destination = destination
        local_host = call.phone.local_host_for(destination)
        self.offer = call.make_offer(local_host)
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", str(call.local.with_params(tag=call.local_tag)))
        headers.add("To", str(call.remote))
        headers.add("Call-ID", call.call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<{call.contact_for(destination)}>")
        headers.add("Allow", ALLOW)
        for name, value in extra:  # CALL <uri> Header: value (calls/control.py)
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        self.invite = Request("INVITE", str(target), headers, self.offer.serialize())
        self._send()

    def _send(self) -> None:
        assert self.invite is not None and self._destination is not None
        invite = self.invite
        request = Request(invite.method, invite.uri, invite.headers.copy(), invite.body)
        auth = self.call.digest_session()
        if auth is not None:
            for name, value in auth.headers("INVITE", request.uri):
                request.headers.add(name, value)
        self._sent = request
        self.call.phone.send_request(request, self._destination, self._on_event)

    def _on_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        call = self.call
        session = call.invite_session
        now = call.phone.loop.time()
        if isinstance(event, TransactionTimeout):
            return call.feed(session.invite_timeout(now))
        response = event.response
        status = response.status
        if status < 200:
            if status != 100 and call.state is CallState.CALLING and self._sent is not None:
                # the early dialog's remote target, located off the loop (the 2xx decides)
                with contextlib.suppress(ParseError, RemoteProtocolError):
                    call.phone.prelocate(Dialog.from_uac(self._sent, response).next_hop())
            return call.feed(session.provisional(now, status, sdp_of(response)))
        if status >= 300:
            self._failure = response  # a 401/407 whose challenge we may answer
            return call.feed(session.final_failure(now, status, response.reason))
        if self._ack_request is not None:  # a retransmitted 2xx: re-ACK (section 13.2.2.4)
            return call.feed(session.accepted_again(now))
        assert self._sent is not None
        try:
            dialog = Dialog.from_uac(self._sent, response)
        except (ParseError, RemoteProtocolError) as exc:
            return call.feed(session.bad_2xx(now, str(exc)))
        call.dialog = dialog
        self._ack_request = dialog.create_request("ACK", cseq=dialog.local_cseq)
        return call.feed(session.accepted(now, sdp_of(response)))

    def answer_challenge(self) -> bool:
        """Send the INVITE again with credentials for the 401/407 just received (section
        22.2); False when the call's credentials cannot answer it."""
        call, response = self.call, self._failure
        auth = call.digest_session()
        if auth is None or response is None:
            return False
        if not auth.authorize(
            response.status, response.headers.get_raw(challenge_header(response.status))
        ):
            call.log.error("call rejected: %s", auth.failure)
            return False
        assert self.invite is not None
        cseq = int((self.invite.headers.get("CSeq") or "1").split()[0]) + 1
        self.invite.headers.set("CSeq", f"{cseq} INVITE")
        self._send()
        return True

    def send_ack(self) -> bool:
        """ACK the 2xx at the dialog's remote target; False when that name is not resolved
        yet (it is looked up off the loop; the ACK goes with the 2xx's next retransmission)."""
        call = self.call
        assert self._ack_request is not None and call.dialog is not None
        try:
            destination = call.phone.destination_for(call.dialog.next_hop())
        except OSError as exc:
            call.log.info("the ACK waits: %s", exc)
            return False
        self._ack = (call.phone.send_ack(self._ack_request, destination), destination)
        return True

    def resend_ack(self) -> bool:
        """The ACK to our INVITE's 2xx again (section 13.2.2.4); False if it cannot go yet."""
        if self._ack is not None:
            self.call.phone.send_raw(*self._ack)
            return True
        return self._ack_request is not None and self.send_ack()

    # -- CANCEL ---------------------------------------------------------------------------------

    def send_cancel(self) -> None:
        """CANCEL our INVITE (RFC 3261 section 9.1): same Via branch, CSeq number, Route."""
        invite = self._sent
        if invite is None or self._destination is None:
            return
        self.call.phone.send_request(make_cancel(invite), self._destination, self._on_cancel_event)

    def _on_cancel_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, TransactionTimeout):
            call = self.call
            call.feed(call.invite_session.cancel_timeout(call.phone.loop.time()))
