"""Mid-call session changes of one call: hold and resume, re-INVITE and UPDATE.

Theory of operation. Once a call is connected, either side may change the session with a new
offer (RFC 3264 section 8): in a re-INVITE (RFC 3261 section 14) or an UPDATE (RFC 3311). The
offer says what its sender wants to *receive*, so hold is expressed by the side that holds:

- The far end holds us with ``a=sendonly`` (or ``a=inactive``, or the RFC 2543 ``c=0.0.0.0``,
  RFC 3264 section 8.4). We answer ``recvonly``/``inactive``, the stream stops sending (its
  direction, :meth:`siproc.net.rtp_socket.RtpStream.configure`) and the handler hears ``HOLD``;
  an offer that wants to receive again gives ``RESUME`` and sending resumes. Files keep playing
  in real time while held (they are not paused), so ``STOPPED`` still comes on time.
- ``HOLD`` sends a re-INVITE whose offer is ``sendonly`` (``inactive`` when the far end holds
  us already, section 8.4); ``RESUME`` offers ``sendrecv``. While we hold, our answers to the
  far end's offers keep not receiving. We still send while we hold (``PLAY`` music on hold).
- Every offer may also move the far end's media (new ``c=``/``m=`` address: the stream follows
  and forgets the latched source) and refresh the remote target (the dialog takes the new
  Contact, RFC 3261 section 12.2).

One INVITE transaction at a time per dialog (section 14.1): a re-INVITE that arrives while ours
is pending gets 491 (section 14.2); our re-INVITE answered 491 is sent again after a random
2.1-4 s when we own the Call-ID (we placed the call), 0-2 s otherwise (section 14.1). Our 2xx to
a re-INVITE is retransmitted until its ACK (section 13.3.1.4), and the ACK carries the answer when
we offered in the 2xx (re-INVITE without SDP). An UPDATE is answered at once (no ACK); an offer in
an UPDATE before the call is connected gets 500 with Retry-After (RFC 3311 section 5.2), one
while an offer of ours is pending gets 491.

A non-2xx final response leaves the session as it was (section 14.1) and tells the handler
``ERROR HOLD|RESUME <status> <reason>``; 481, 408 and a timeout also end the call (the dialog is
gone or unreachable, section 12.2.1.2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.in_dialog import InDialogRequest
from siproc.calls.retransmit import OkRetransmitter
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import NegotiatedMedia, OfferAnswerError, accept_answer
from siproc.sip.headers import content_type, make_response
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction import Destination, ServerTransaction

if TYPE_CHECKING:
    from siproc.calls.call import Call

__all__ = ["MAX_GLARE_RETRIES", "SessionUpdates"]

#: Our re-INVITE is sent again at most this often after 491 Request Pending (then ERROR).
MAX_GLARE_RETRIES = 3
#: RFC 3261 section 14.1: the 491 back-off for the owner of the Call-ID and for the other side.
GLARE_OWNER_DELAY = (2.1, 4.0)
GLARE_OTHER_DELAY = (0.0, 2.0)
#: RFC 3311 section 5.2 / RFC 3261 section 14.2: Retry-After of a 500 to a premature offer.
RETRY_AFTER_MAX = 10
#: Final responses to our re-INVITE after which the dialog is over (RFC 3261 section 12.2.1.2).
DIALOG_GONE = frozenset({408, 481})


@dataclass(slots=True)
class _AwaitingAck:
    """Our 2xx to a re-INVITE, retransmitted until its ACK (RFC 3261 section 13.3.1.4)."""

    cseq: int
    offer: SessionDescription | None  # we offered in the 2xx: the ACK brings the answer
    retransmitter: OkRetransmitter


def _cseq_number(message: Request | Response) -> int:
    value = (message.headers.get("CSeq") or "0").split()
    return int(value[0]) if value and value[0].isdigit() else -1


def _offer_direction(offer: SessionDescription) -> str:
    audio = next((m for m in offer.media if m.media == "audio" and m.port), None)
    if audio is None:
        return "inactive"
    for direction in ("sendrecv", "sendonly", "recvonly", "inactive"):
        if audio.has_attribute(direction):
            return direction
    return "sendrecv"


class SessionUpdates:
    """Hold state and mid-call offer/answer of one call; see the module docstring."""

    def __init__(self, call: Call, allow: str) -> None:
        self.call = call
        self.allow = allow  # our Allow header value
        self.local_hold = False  # HOLD is in force: our SDP says we do not receive
        self.remote_hold = False  # the far end does not want to receive (HOLD event sent)
        self._want: bool | None = None  # HOLD (True) / RESUME (False) being carried out
        self._client: InDialogRequest | None = None  # our re-INVITE in flight
        self._client_offer: SessionDescription | None = None
        self._retry: asyncio.TimerHandle | None = None  # 491 back-off
        self._glare_retries = 0
        self._ack: tuple[int, bytes, Destination] | None = None  # ACK to our last re-INVITE 2xx
        self._server: _AwaitingAck | None = None

    # -- commands -------------------------------------------------------------------------------

    def command(self, hold: bool) -> None:
        """``HOLD`` (True) or ``RESUME`` (False) from the handler."""
        call = self.call
        verb = "HOLD" if hold else "RESUME"
        if not call.connected or call.dialog is None:
            return call.report_error(verb, f"not possible while the call is {call.state.value}")
        if self._want is not None:
            pending = "HOLD" if self._want else "RESUME"
            return call.report_error(verb, f"{pending} is still in progress")
        if self.local_hold == hold:
            return call.report_error(
                verb, "the call is " + ("already on hold" if hold else "not on hold")
            )
        self._want = hold
        self._glare_retries = 0
        self._maybe_send()
        return None

    def _maybe_send(self) -> None:
        """Send our re-INVITE unless an INVITE transaction is in progress (section 14.1)."""
        if self._want is None or self._client is not None or self._retry is not None:
            return
        if self._server is not None:  # the far end's re-INVITE: wait for its ACK
            return
        call = self.call
        dialog = call.dialog
        if call.ended or dialog is None:
            self._want = None
            return
        phone = call.phone
        verb = "HOLD" if self._want else "RESUME"
        try:
            destination = phone.destination_for(dialog.next_hop())
        except OSError as exc:
            self._want = None
            return call.report_error(verb, f"the far end cannot be reached: {exc}")
        direction = ("inactive" if self.remote_hold else "sendonly") if self._want else "sendrecv"
        try:  # SDES keys go only over TLS: the remote target's hop may not be (RFC 4568 8.3)
            offer = call.make_offer(
                phone.local_host_for(destination),
                direction=direction,
                secure=destination.transport == "tls",
            )
        except OfferAnswerError as exc:
            self._want = None
            return call.report_error(verb, str(exc))
        self._client_offer = offer
        self._client = InDialogRequest(
            phone,
            dialog,
            "INVITE",
            call.digest_session(),
            self._on_final,
            headers=[
                ("Contact", f"<{call.contact_for(destination)}>"),
                ("Allow", self.allow),
                ("Content-Type", "application/sdp"),
            ],
            body=offer.serialize(),
            on_2xx_again=self.reack,
        )
        call.log.info(
            "re-INVITE to %s the call (%s)", "hold" if self._want else "resume", direction
        )
        self._client.send()

    def _on_retry(self) -> None:
        self._retry = None
        self._maybe_send()

    def _on_final(self, request: Request, response: Response | None) -> None:
        self._client = None
        call = self.call
        # In any state a 2xx is always ACKed; a target we cannot reach ends the call.
        ok = response is not None and 200 <= response.status < 300
        if ok and response is not None and not self._acknowledge(request, response):
            self._want = None
            return call.hangup(reason="the far end's new Contact cannot be reached")
        want, offer = self._want, self._client_offer
        if not call.connected or want is None or offer is None:
            self._want = None
            return
        verb = "HOLD" if want else "RESUME"
        if response is None:
            return self._failed(verb, 408, "Request Timeout (no response)")
        status = response.status
        if status >= 300:
            if status == 491 and self._glare_retries < MAX_GLARE_RETRIES:
                self._glare_retries += 1
                low, high = GLARE_OWNER_DELAY if call.outgoing else GLARE_OTHER_DELAY
                delay = round(call.phone.rng.uniform(low, high), 2)  # 10 ms units (14.1)
                call.log.info("re-INVITE crossed the far end's (491): again in %.2f s", delay)
                self._retry = call.later(delay, self._on_retry)
                return None
            return self._failed(verb, status, response.reason)
        try:
            negotiated = accept_answer(offer, parse_sdp(response.body), call.phone.codecs)
            call.configure_media(negotiated)
        except (SdpError, OfferAnswerError) as exc:
            call.log.warning("unusable SDP answer to our re-INVITE: %s", exc)
            return self._failed(verb, status, f"unusable SDP answer ({exc})")
        self._want = None
        self.local_hold = want
        call.log.info("call %s by us", "put on hold" if want else "taken off hold")
        self._applied(negotiated, _offer_direction(offer))
        return None

    def _acknowledge(self, request: Request, response: Response) -> bool:
        """ACK a 2xx to our re-INVITE: CSeq and credentials of the INVITE (section 13.2.2.4),
        sent to the remote target the 2xx refreshed (section 12.2.1.2). False when that
        target's name is not resolved (it is never looked up on the event loop)."""
        call = self.call
        dialog = call.dialog
        assert dialog is not None
        dialog.update_from_response(response)
        call.remote_contact = str(dialog.remote_target)
        cseq = _cseq_number(request)
        ack = dialog.create_request("ACK", cseq=cseq)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in request.headers.get_raw(name):
                ack.headers.add(name, value)
        try:
            destination = call.phone.destination_for(dialog.next_hop())
        except OSError as exc:
            call.log.warning("cannot ACK the 2xx to our re-INVITE: %s", exc)
            return False
        self._ack = (cseq, call.phone.send_ack(ack, destination), destination)
        return True

    def reack(self, response: Response) -> bool:
        """A retransmitted 2xx to our re-INVITE: send its ACK again (section 13.2.2.4)."""
        ack = self._ack
        if ack is None or not 200 <= response.status < 300 or _cseq_number(response) != ack[0]:
            return False
        self.call.phone.send_raw(ack[1], ack[2])
        return True

    def _failed(self, verb: str, status: int, reason: str) -> None:
        self._want = None
        call = self.call
        call.report_error(verb, f"{status} {reason}".rstrip())
        if status in DIALOG_GONE:
            call.log.warning("re-INVITE got %d: the dialog is gone; ending the call", status)
            call.hangup()

    # -- the far end's offers -------------------------------------------------------------------

    def on_reinvite(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """A re-INVITE (RFC 3261 section 14.2): answer its offer, or offer in our 2xx."""
        call = self.call
        phone = call.phone
        if not call.connected or self._client is not None:
            phone.respond(tx, make_response(request, 491, "Request Pending"))
            return
        self._stop_waiting_for_ack()  # a new INVITE: the ACK to the last 2xx is overdue anyway
        try:
            sdp, negotiated = self._answer(request, local_host, tx.reply_to.transport == "tls")
        except (SdpError, OfferAnswerError) as exc:
            phone.respond(tx, make_response(request, 488, f"Not Acceptable Here ({exc})"))
            return
        response = self._ok(request, tx, sdp)
        phone.respond(tx, response)
        self._server = _AwaitingAck(
            cseq=_cseq_number(request),
            offer=sdp if negotiated is None else None,
            retransmitter=OkRetransmitter(
                phone,
                serialize(response),
                tx.reply_to,
                keep_going=lambda: not self.call.ended,
                give_up=self.call.guard(self._no_ack),
            ),
        )
        if negotiated is not None:
            self._applied(negotiated, None)

    def on_update(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """An UPDATE (RFC 3311 section 5.2): a target refresh, with or without an offer."""
        call = self.call
        phone = call.phone
        if request.body and content_type(request.headers) != "application/sdp":
            headers = [("Accept", "application/sdp")]
            phone.respond(
                tx, make_response(request, 415, "Unsupported Media Type", headers=headers)
            )
            return
        if not request.body:
            phone.respond(tx, self._ok(request, tx, None))
            return
        if not call.connected:
            retry = [("Retry-After", str(call.phone.rng.randint(0, RETRY_AFTER_MAX)))]
            phone.respond(tx, make_response(request, 500, "Server Internal Error", headers=retry))
            return
        if self._client is not None or (self._server is not None and self._server.offer):
            phone.respond(tx, make_response(request, 491, "Request Pending"))
            return
        try:
            sdp, negotiated = self._answer(request, local_host, tx.reply_to.transport == "tls")
        except (SdpError, OfferAnswerError) as exc:
            phone.respond(tx, make_response(request, 488, f"Not Acceptable Here ({exc})"))
            return
        phone.respond(tx, self._ok(request, tx, sdp))
        if negotiated is not None:
            self._applied(negotiated, None)

    def _answer(
        self, request: Request, local_host: str, secure: bool
    ) -> tuple[SessionDescription, NegotiatedMedia | None]:
        """Our SDP for the far end's request: the answer to its offer (media applied now,
        RFC 3264 section 6), or, without one, our offer (negotiated when the ACK answers)."""
        call = self.call
        if request.body and content_type(request.headers) == "application/sdp":
            answer = call.make_answer(
                parse_sdp(request.body), local_host, hold=self.local_hold, secure=secure
            )
            return answer, call.negotiated
        direction = ("inactive" if self.remote_hold else "sendonly") if self.local_hold else None
        return call.make_offer(local_host, direction=direction or "sendrecv", secure=secure), None

    def _ok(
        self, request: Request, tx: ServerTransaction, sdp: SessionDescription | None
    ) -> Response:
        call = self.call
        dialog = call.dialog
        if dialog is not None:  # the dialog took the new Contact in check_request()
            call.remote_contact = str(dialog.remote_target)
        headers = [("Contact", f"<{call.contact_for(tx.reply_to)}>"), ("Allow", self.allow)]
        body = sdp.serialize() if sdp is not None else b""
        return make_response(request, 200, "OK", headers=headers, body=body)

    def _no_ack(self) -> None:
        self._server = None
        self.call.log.warning("no ACK for our 2xx to the re-INVITE: ending the call")
        self.call.hangup()

    def _stop_waiting_for_ack(self) -> None:
        waiting, self._server = self._server, None
        if waiting is not None:
            waiting.retransmitter.stop()

    def on_ack(self, request: Request) -> None:
        """The ACK to our 2xx to a re-INVITE; it answers our offer if we made one."""
        waiting = self._server
        if waiting is None or _cseq_number(request) != waiting.cseq:
            return
        self._stop_waiting_for_ack()
        call = self.call
        if waiting.offer is not None:
            try:
                answer = parse_sdp(request.body)
                negotiated = accept_answer(waiting.offer, answer, call.phone.codecs)
                call.configure_media(negotiated)
            except (SdpError, OfferAnswerError) as exc:
                call.log.warning(
                    "no usable SDP answer in the ACK: the session is unchanged (%s)", exc
                )
            else:
                self._applied(negotiated, _offer_direction(waiting.offer))
        self._maybe_send()

    # -- hold state -----------------------------------------------------------------------------

    def _applied(self, negotiated: NegotiatedMedia, our_offer: str | None) -> None:
        """A new offer/answer is in force: report the far end's hold or resume. ``our_offer``
        is the direction we offered, None when the far end offered. An answer to our offer
        shows the far end's wish to receive only when we offered to send."""
        if our_offer is not None and our_offer not in ("sendrecv", "sendonly"):
            return
        held = negotiated.remote_hold
        if held == self.remote_hold:
            return
        self.remote_hold = held
        call = self.call
        call.log.info(  # the media stream logs its packet count when sending pauses
            "%s by the remote end: sending %s",
            "put on hold" if held else "taken off hold",
            "paused" if held else "resumed",
        )
        call.event(protocol.HoldEvent() if held else protocol.ResumeEvent())

    def close(self) -> None:
        """The call is over: stop every timer."""
        self._stop_waiting_for_ack()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._want = None
