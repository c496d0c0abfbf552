"""The callee's side of a call's INVITE (RFC 3261 section 13.3): for an INVITE that starts one.

Theory of operation: `IncomingInvite.start` checks the offer before any handler runs, so a call
we cannot take is refused at once; an INVITE without SDP makes us offer in the 2xx and take the
answer from the ACK (RFC 3264 section 5). The handler's ``RINGING`` sends 180, ``PROGRESS`` a
183 with our SDP answer and early media (RFC 3960 section 2), ``ANSWER`` the 200 OK. Responses
that create the dialog carry our Contact and the INVITE's Record-Route (section 12.1.1).

The 2xx is retransmitted until the ACK comes (section 13.3.1.4: T1, doubling up to T2, for
64*T1, the transaction layer's job ends with the 2xx); without an ACK the call is ended with BYE.
A hang-up while waiting for the ACK sends its BYE after the ACK (section 15). CANCEL gets 200
and the INVITE 487 (section 9.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import ALLOW, CallState
from siproc.calls.retransmit import OkRetransmitter
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import OfferAnswerError, accept_answer
from siproc.sip.dialog import Dialog, DialogState
from siproc.sip.headers import make_response
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from siproc.calls.call import Call

__all__ = ["IncomingInvite"]


class IncomingInvite:
    """The INVITE server side of one incoming call; see the module docstring."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.invite: Request | None = None  # the far end's INVITE
        self._tx: ServerTransaction | None = None
        self._answer: SessionDescription | None = None  # our SDP for the 18x and the 2xx
        self._pending_offer = False  # we offered in our 2xx; the ACK brings the answer
        self._ok: OkRetransmitter | None = None
        self.bye_after_ack = False  # hung up while the 2xx waits for its ACK (section 15)

    def start(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """Check the offer now, so that a call we cannot take is refused before any handler."""
        call = self.call
        self._tx = tx
        self.invite = request
        call.request_uri = request.uri
        call.dialog = Dialog.from_uas(request, call.local_tag)
        call.remote_contact = str(call.dialog.remote_target)
        call.phone.prelocate(call.dialog.next_hop())  # for our BYE or re-INVITE, off the loop
        if request.body:
            offer = parse_sdp(request.body)
            self._answer = call.make_answer(offer, local_host)
        else:
            self._pending_offer = True
            self._answer = call.make_offer(local_host)

    def respond(self, status: int, reason: str, body: bytes = b"") -> Response:
        """Answer the INVITE with `status`; our Contact on all but failures."""
        call = self.call
        tx, invite = self._tx, self.invite
        assert tx is not None and invite is not None
        extra: list[tuple[str, str]] = []
        if status < 300:
            extra.append(("Contact", f"<{call.contact_for(tx.reply_to)}>"))
        if 100 < status < 300:
            # A response that creates a dialog copies the request's Record-Route values, in
            # order (RFC 3261 section 12.1.1), so the caller's in-dialog requests take the route.
            extra += [("Record-Route", value) for value in invite.headers.get_raw("Record-Route")]
        if status == 200:
            extra.append(("Allow", ALLOW))
        response = make_response(
            invite, status, reason, to_tag=call.local_tag, headers=extra, body=body
        )
        call.phone.respond(tx, response)
        return response

    def progress(self) -> None:
        """``PROGRESS``: 183 Session Progress with our SDP answer, and media from now on
        (early media, RFC 3960 section 2), so PLAY and DTMF reach the caller before ANSWER.

        The 183 is not sent reliably (no 100rel, RFC 3262): the INVITE server transaction
        sends it again whenever the caller retransmits the INVITE (RFC 3261 section 17.2.1),
        and PROGRESS may be repeated. ANSWER sends the same SDP in the 200 OK. An INVITE
        without an offer cannot have early media: our offer would need a reliable 18x. The
        caller (`commands.execute`) has checked that the call is INCOMING or EARLY_MEDIA."""
        call = self.call
        if self._pending_offer or self._answer is None:
            return call.report_error("PROGRESS", "the INVITE has no SDP offer to answer early")
        self.respond(183, "Session Progress", self._answer.serialize())
        call._set_state(CallState.EARLY_MEDIA)
        call.start_media()
        return None

    def answer(self) -> None:
        """``ANSWER``: 200 OK with our SDP, retransmitted until the ACK (section 13.3.1.4)."""
        call = self.call
        phone = call.phone
        assert self._answer is not None and self._tx is not None
        response = self.respond(200, "OK", self._answer.serialize())
        call._set_state(CallState.ANSWERING)
        self._ok = OkRetransmitter(
            phone,
            serialize(response),
            self._tx.reply_to,
            keep_going=lambda: call.state is CallState.ANSWERING,
            give_up=call.guard(self._no_ack),
        )

    def _no_ack(self) -> None:
        call = self.call
        call.log.warning("no ACK for our 200 OK: ending the call")
        self.bye_after_ack = False
        call._set_state(CallState.CONNECTED)
        call.send_bye()

    def close(self) -> None:
        """The call is over: stop retransmitting the 2xx."""
        if self._ok is not None:
            self._ok.stop()
            self._ok = None

    def on_ack(self, request: Request) -> None:
        """The ACK to our 2xx to the INVITE: the call is connected (and hung up at once if the
        handler hung up meanwhile)."""
        call = self.call
        if call.state is not CallState.ANSWERING:
            return
        self.close()
        if self._pending_offer:
            self._pending_offer = False
            try:
                assert self._answer is not None
                negotiated = accept_answer(self._answer, parse_sdp(request.body), call.phone.codecs)
                call.configure_media(negotiated)
            except (SdpError, OfferAnswerError) as exc:
                call.log.warning("no usable SDP answer in the ACK: %s", exc)
                call._set_state(CallState.CONNECTED)
                call.send_bye()
                return
        assert call.dialog is not None
        call.dialog.set_state(DialogState.CONFIRMED)
        call._set_state(CallState.CONNECTED)
        if self.bye_after_ack:
            call.send_bye()
            return
        call.stream.prove()  # the ACK came: our 2xx reached the far end
        call.start_media()
        call.event(protocol.Connected())

    def on_cancel(self, cancel_tx: ServerTransaction, request: Request) -> None:
        """CANCEL for our INVITE (RFC 3261 section 9.2): 200 to it, 487 to the INVITE."""
        call = self.call
        assert self.invite is not None
        call.phone.respond(cancel_tx, make_response(request, 200, "OK", to_tag=call.local_tag))
        if call.state in (CallState.INCOMING, CallState.EARLY_MEDIA):
            self.respond(487, "Request Terminated")
            call.finish(487, "cancelled by the caller")
