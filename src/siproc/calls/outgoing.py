"""The caller's side of a call's INVITE (RFC 3261 section 13.2): for ``CALL <uri>``.

Theory of operation: `OutgoingInvite` builds the INVITE with our SDP offer and sends it in a
client transaction; a 401/407 is answered with the call's digest credentials by sending it
again with the next CSeq (section 22.2). Provisional responses move the call to EARLY and give
the handler ``RINGING`` or ``PROGRESS`` once each; an SDP answer in an unreliable 18x starts
early media at once (RFC 3960 section 2). The first 2xx creates the dialog, is ACKed, and
connects the call; a retransmitted 2xx is ACKed again (section 13.2.2.4), even after the INVITE
transaction is gone (`resend_ack`). A final failure ends the call with its status.

Hanging up before the answer CANCELs the INVITE (section 9.1), but only once a provisional
response came; until then the CANCEL waits for one. A 2xx that crosses our CANCEL is ACKed and
the call ended with BYE (section 15).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import ALLOW, CallState, reason_phrase
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import OfferAnswerError, accept_answer
from siproc.sip.dialog import Dialog
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import content_type
from siproc.sip.message import Headers, Request, Response
from siproc.sip.transaction import Destination, ResponseReceived, TransactionTimeout
from siproc.sip.uri import SipUri

if TYPE_CHECKING:
    from siproc.calls.call import Call

__all__ = ["OutgoingInvite"]


class OutgoingInvite:
    """The INVITE client side of one outgoing call; see the module docstring."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.invite: Request | None = None  # what we send, less credentials; CSeq goes up
        self._sent: Request | None = None  # the last INVITE sent (CANCEL and dialog copy it)
        self._destination: Destination | None = None
        self._offer: SessionDescription | None = None
        self._provisional = False  # a provisional response came: a CANCEL may go out
        self._ack: tuple[bytes, Destination] | None = None
        self._ack_request: Request | None = None  # the ACK of our INVITE's 2xx, once it came
        self._ack_wait: asyncio.TimerHandle | None = None  # see _send_ack
        self._early_events: set[str] = set()  # RINGING / PROGRESS events already sent

    def start(
        self, target: SipUri, destination: Destination, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        call = self.call
        self._destination = destination
        local_host = call.phone.local_host_for(destination)
        self._offer = call.make_offer(local_host)
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
        self.invite = Request("INVITE", str(target), headers, self._offer.serialize())
        self._send()

    def _send(self) -> None:
        assert self.invite is not None and self._destination is not None
        invite = self.invite
        request = Request(invite.method, invite.uri, invite.headers.copy(), invite.body)
        auth = self.call.digest_session()
        if auth is not None:
            for name, value in auth.headers("INVITE", request.uri):
                request.headers.add(name, value)
        self._provisional = False
        self._sent = request
        self.call.phone.send_request(request, self._destination, self._on_event)

    def _on_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        call = self.call
        if isinstance(event, TransactionTimeout):
            if call.state in (CallState.CALLING, CallState.EARLY, CallState.CANCELLING):
                call.finish(408, "no answer (timeout)")
            return
        response = event.response
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_ok(response)
        else:
            self._on_failure(response)

    def _on_provisional(self, response: Response) -> None:
        call = self.call
        self._provisional = True
        if call.state is CallState.CANCELLING:
            self._send_cancel()
            return
        status = response.status
        if status == 100 or call.state not in (CallState.CALLING, CallState.EARLY):
            return
        if self._sent is not None and call.state is CallState.CALLING:
            with contextlib.suppress(ParseError, RemoteProtocolError):  # (the 2xx decides)
                call.phone.prelocate(Dialog.from_uac(self._sent, response).next_hop())
        call._set_state(CallState.EARLY)
        early_media = self._early_media(response)
        if status == 183 or early_media:
            self._early_event(protocol.ProgressEvent())
        elif status == 180:
            self._early_event(protocol.RingingEvent())

    def _early_media(self, response: Response) -> bool:
        """Early media from the far end (RFC 3960 section 2, the "gateway model"): an SDP answer
        in an unreliable 18x is applied at once and the stream started, so the far end's
        announcements or ringback are received (and recorded) and PLAY reaches it; the 2xx
        brings the answer again and may change it (see `_on_ok`)."""
        if not response.body or content_type(response.headers) != "application/sdp":
            return False
        call = self.call
        assert self._offer is not None
        first = call.negotiated is None
        try:
            negotiated = accept_answer(self._offer, parse_sdp(response.body), call.phone.codecs)
            call.configure_media(negotiated)
        except (SdpError, OfferAnswerError) as exc:
            call.log.warning("ignoring unusable SDP in %d: %s", response.status, exc)
            return False
        call.start_media()
        if first:
            host, port = negotiated.remote_address
            call.log.info("early media from %s port %d (%d)", host, port, response.status)
            call.phone.call_changed(call)  # the call's record notes when early media began
        return True

    def _early_event(self, event: protocol.RingingEvent | protocol.ProgressEvent) -> None:
        """RINGING and PROGRESS reach the handler once each per call, however many 18x come."""
        line = protocol.format_event(event)
        if line not in self._early_events:
            self._early_events.add(line)
            self.call.event(event)

    def _on_ok(self, response: Response) -> None:
        if self._ack_request is not None:  # a retransmitted 2xx: re-ACK (section 13.2.2.4)
            self.resend_ack()
            return
        call = self.call
        assert self._sent is not None
        try:
            dialog = Dialog.from_uac(self._sent, response)
        except (ParseError, RemoteProtocolError) as exc:
            call.log.warning("unusable 2xx to our INVITE: %s", exc)
            return call.finish(502, f"bad 2xx from the remote end: {exc}")
        call.dialog = dialog
        call.remote_contact = str(dialog.remote_target)
        self._ack_request = dialog.create_request("ACK", cseq=dialog.local_cseq)
        self._send_ack()
        if call.state is CallState.CANCELLING:  # the 2xx crossed our CANCEL: ACK, then BYE
            call.send_bye()
            return
        try:
            assert self._offer is not None
            if response.body or call.negotiated is None:  # else the 18x's answer stands
                answer = parse_sdp(response.body)
                call.configure_media(accept_answer(self._offer, answer, call.phone.codecs))
        except (SdpError, OfferAnswerError) as exc:
            call.log.warning("unusable SDP answer: %s", exc)
            call._set_state(CallState.CONNECTED)
            call.send_bye()
            return
        call._set_state(CallState.CONNECTED)
        call.start_media()
        call.event(protocol.Connected())

    def _send_ack(self) -> None:
        """ACK the 2xx at the dialog's remote target. A name not resolved yet (the far end's
        Contact, looked up off the loop) defers the ACK to the 2xx's next retransmission; if
        it still cannot be sent 64*T1 later, the call ends (the far end gives up on us then
        too, RFC 3261 section 13.3.1.4)."""
        call = self.call
        assert self._ack_request is not None and call.dialog is not None
        try:
            destination = call.phone.destination_for(call.dialog.next_hop())
        except OSError as exc:
            if self._ack_wait is None:
                call.log.info("the ACK waits: %s", exc)
                self._ack_wait = call.later(64 * call.phone.timer_t1, self._ack_never_sent)
            return
        self._ack = (call.phone.send_ack(self._ack_request, destination), destination)
        if self._ack_wait is not None:
            self._ack_wait.cancel()
            self._ack_wait = None

    def _ack_never_sent(self) -> None:
        self._ack_wait = None
        if self._ack is None and not self.call.ended:
            self.call.log.warning("the far end's Contact could not be reached: no ACK sent")
            self.call.finish(503, "the far end's Contact cannot be reached")

    def resend_ack(self) -> None:
        """Send the ACK to our INVITE's 2xx again, if there is one (section 13.2.2.4)."""
        if self._ack is not None:
            self.call.phone.send_raw(*self._ack)
        elif self._ack_request is not None:
            self._send_ack()

    def _on_failure(self, response: Response) -> None:
        call = self.call
        status = response.status
        auth = call.digest_session()
        if status in (401, 407) and call.state is not CallState.CANCELLING and auth:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            if auth.authorize(status, response.headers.get_raw(header)):
                assert self.invite is not None
                cseq = int((self.invite.headers.get("CSeq") or "1").split()[0]) + 1
                self.invite.headers.set("CSeq", f"{cseq} INVITE")
                self._send()
                return
            call.log.error("call rejected: %s", auth.failure)
        call.finish(status, response.reason or reason_phrase(status, ""))

    # -- CANCEL ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The call is hung up before the answer: CANCEL now if a provisional response came,
        else when one comes (RFC 3261 section 9.1; see `_on_provisional`)."""
        if self._provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        """CANCEL our INVITE (RFC 3261 section 9.1): same Via branch, CSeq number, Route."""
        invite = self._sent
        if invite is None or self._destination is None:
            return
        headers = Headers()
        headers.add("Via", invite.headers.get_raw("Via")[0])
        for route in invite.headers.get_raw("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        cseq = (invite.headers.get("CSeq") or "1").split()[0]
        headers.add("CSeq", f"{cseq} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        self.call.phone.send_request(cancel, self._destination, self._on_cancel_event)

    def _on_cancel_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        call = self.call
        if isinstance(event, TransactionTimeout) and call.state is CallState.CANCELLING:
            call.finish(408, "CANCEL not answered")
