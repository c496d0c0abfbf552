"""Mid-call session changes of one call, the edge of `siproc.sip.session_update`.

What to do is decided by the call's `SessionUpdate` machine (hold and resume, re-INVITE and
UPDATE, the 491 glare back-off, the retransmission of our 2xx to a re-INVITE): see its module
docstring for the rules and the RFC sections. This module carries out its actions: it builds
our SDP (offers and answers; SDES keys only over TLS, RFC 4568 section 8.3), sends our
re-INVITE in the dialog (`InDialogRequest`, challenges answered), ACKs its 2xx at the remote
target the 2xx refreshed (RFC 3261 sections 12.2.1.2 and 13.2.2.4, and again for each
retransmission of it), answers the far end's re-INVITE or UPDATE on its transaction, applies
SDP answers to the stream and reports what they say back to the machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.in_dialog import InDialogRequest
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import OfferAnswerError, accept_answer
from siproc.sip.headers import content_type, make_cancel, make_response
from siproc.sip.invite_session import ApplyMedia, CommandRefused, Log, Tell, TellHandler
from siproc.sip.message import Request, Response, serialize
from siproc.sip.session_update import (
    AnswerOffer,
    HangUp,
    MakeOffer,
    Reply,
    ResendReinviteOk,
    SendReinvite,
    SessionUpdate,
    UpdateAction,
)
from siproc.sip.transaction import Destination, ServerTransaction

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["SessionUpdates"]

_EVENTS: dict[TellHandler, protocol.Event] = {
    TellHandler.HOLD: protocol.HoldEvent(),
    TellHandler.RESUME: protocol.ResumeEvent(),
}


def _cseq_number(message: Request | Response) -> int:
    value = (message.headers.get("CSeq") or "0").split()
    return int(value[0]) if value and value[0].isdigit() else -1


def _has_offer(request: Request) -> bool:
    return bool(request.body) and content_type(request.headers) == "application/sdp"


class SessionUpdates:
    """The edge of one call's `SessionUpdate`; see the module docstring."""

    def __init__(self, call: CallView, allow: str) -> None:
        self.call = call
        self.allow = allow  # our Allow header value
        phone = call.phone
        self.machine = SessionUpdate(
            owner=call.outgoing, rng=phone.rng, t1=phone.timer_t1, t2=phone.timer_t2
        )
        self._client: InDialogRequest | None = None  # our re-INVITE
        self._client_offer: SessionDescription | None = None  # in our re-INVITE
        self._ack: tuple[int, bytes, Destination] | None = None  # ACK to our last re-INVITE 2xx
        self._server_offer: SessionDescription | None = None  # our offer in a 2xx
        self._ok: tuple[bytes, Destination] | None = None  # our 2xx to their re-INVITE
        # the far end's request being answered, while its input is fed
        self._at_hand: tuple[Request, ServerTransaction, str] | None = None
        self._sdp: SessionDescription | None = None  # our SDP for the reply at hand

    @property
    def local_hold(self) -> bool:
        return self.machine.local_hold

    @property
    def remote_hold(self) -> bool:
        return self.machine.remote_hold

    # -- inputs ---------------------------------------------------------------------------------

    def command(self, hold: bool) -> None:
        """``HOLD`` (True) or ``RESUME`` (False) from the handler."""
        call = self.call
        connected = call.connected and call.dialog is not None
        self.feed(
            self.machine.command(call.now(), hold, connected=connected, state=call.state.value)
        )

    def on_reinvite(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """A re-INVITE (RFC 3261 section 14.2)."""
        call = self.call
        actions = self.machine.reinvite(
            call.now(),
            _cseq_number(request),
            has_offer=_has_offer(request),
            connected=call.connected,
            reliable=tx.reply_to.reliable,
        )
        self._answering(request, tx, local_host, actions)

    def on_update(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """An UPDATE (RFC 3311 section 5.2): a target refresh, with or without an offer."""
        call = self.call
        actions = self.machine.update(
            call.now(),
            has_sdp=bool(request.body),
            sdp_type=content_type(request.headers) == "application/sdp",
            connected=call.connected,
        )
        self._answering(request, tx, local_host, actions)

    def _answering(
        self,
        request: Request,
        tx: ServerTransaction,
        local_host: str,
        actions: list[UpdateAction],
    ) -> None:
        self._at_hand = (request, tx, local_host)
        try:
            self.feed(actions)
        finally:
            self._at_hand = None
            self._sdp = None

    def on_ack(self, request: Request) -> None:
        """The ACK to our 2xx to a re-INVITE; it answers our offer if we made one."""
        call = self.call
        self.feed(self.machine.ack(call.now(), _cseq_number(request), request.body))

    def reack(self, response: Response) -> bool:
        """A retransmitted 2xx to our re-INVITE: send its ACK again (section 13.2.2.4)."""
        ack = self._ack
        if ack is None or not 200 <= response.status < 300 or _cseq_number(response) != ack[0]:
            return False
        self.call.phone.send_raw(ack[1], ack[2])
        return True

    def close(self) -> None:
        """The call is over: stop every timer, and CANCEL our re-INVITE if the far end
        answered it only provisionally (RFC 3261 section 9.1: its transaction then ends 64*T1
        later; an INVITE in Proceeding would otherwise wait for ever)."""
        self.machine.close()
        client, self._client = self._client, None
        if client is None or client.done or not client.provisional:
            return
        if client.request is not None and client.destination is not None:
            self.call.phone.send_request(
                make_cancel(client.request), client.destination, lambda event: None
            )

    # -- carrying out ---------------------------------------------------------------------------

    def feed(self, actions: list[UpdateAction]) -> None:
        call = self.call
        try:
            for action in actions:
                self._carry_out(action)
        finally:
            call.rearm()

    def _carry_out(self, action: UpdateAction) -> None:
        call, machine = self.call, self.machine
        match action:
            case SendReinvite(direction=direction):
                self._send_reinvite(direction)
            case AnswerOffer(hold=hold):
                self._answer_offer(hold)
            case MakeOffer(direction=direction):
                self._make_offer(direction)
            case Reply():
                self._reply(action)
            case ResendReinviteOk():
                if self._ok is not None:
                    call.phone.send_raw(*self._ok)
            case HangUp(reason=reason):
                call.hangup(reason=reason)
            case ApplyMedia(sdp=sdp):
                offer = self._server_offer if machine.media_for == "ack" else self._client_offer
                assert offer is not None, "an answer without an offer"
                try:
                    negotiated = accept_answer(offer, parse_sdp(sdp), call.phone.codecs)
                    call.configure_media(negotiated)
                except (SdpError, OfferAnswerError) as exc:
                    return self.feed(machine.media_failed(call.now(), str(exc)))
                self.feed(machine.media_applied(call.now(), remote_hold=negotiated.remote_hold))
            case CommandRefused(verb=verb, reason=reason):
                call.report_error(verb, reason)
            case Tell(event=event):
                call.event(_EVENTS[event])
            case Log(level=level, message=message):
                call.log.log(level, "%s", message)
        return None

    def _send_reinvite(self, direction: str) -> None:
        call, machine = self.call, self.machine
        dialog = call.dialog
        if call.ended or dialog is None:
            return self.feed(machine.unsent(call.now(), "the dialog is gone"))
        phone = call.phone
        try:
            destination = phone.destination_for(dialog.next_hop())
        except OSError as exc:
            return self.feed(machine.unsent(call.now(), f"the far end cannot be reached: {exc}"))
        try:  # SDES keys go only over TLS: the remote target's hop may not be (RFC 4568 8.3)
            offer = call.make_offer(
                phone.local_host_for(destination),
                direction=direction,
                secure=destination.transport == "tls",
            )
        except OfferAnswerError as exc:
            return self.feed(machine.unsent(call.now(), str(exc)))
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
        self._client.send()
        hold = direction != "sendrecv"
        call.log.info("re-INVITE to %s the call (%s)", "hold" if hold else "resume", direction)
        return None

    def _on_final(self, request: Request, response: Response | None) -> None:
        call, machine = self.call, self.machine
        now = call.now()
        if response is None:
            status, reason, body = 408, "Request Timeout (no response)", b""
        else:
            status, reason, body = response.status, response.reason, response.body
        # In any state a 2xx is always ACKed; a target we cannot reach ends the call.
        acked = response is None or status >= 300 or self._acknowledge(request, response)
        if not acked:
            return self.feed(machine.unackable(now))
        self.feed(machine.reinvite_final(now, status, reason, body, connected=call.connected))
        return None

    def _acknowledge(self, request: Request, response: Response) -> bool:
        """ACK a 2xx to our re-INVITE: CSeq and credentials of the INVITE (section 13.2.2.4),
        sent to the remote target the 2xx refreshed (section 12.2.1.2). False when that
        target's name is not resolved (it is never looked up on the event loop)."""
        call = self.call
        dialog = call.dialog
        assert dialog is not None
        dialog.update_from_response(response)  # the remote target it refreshes
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

    # -- the far end's request at hand ----------------------------------------------------------

    def _answer_offer(self, hold: bool) -> None:
        """Answer the far end's offer (RFC 3264 section 6: in force at once)."""
        assert self._at_hand is not None
        request, tx, local_host = self._at_hand
        call, machine = self.call, self.machine
        try:
            self._sdp = call.make_answer(
                parse_sdp(request.body),
                local_host,
                hold=hold,
                secure=tx.reply_to.transport == "tls",
            )
        except (SdpError, OfferAnswerError) as exc:
            return self.feed(machine.unusable(call.now(), str(exc)))
        assert call.negotiated is not None
        self.feed(
            machine.answered(
                call.now(),
                remote_hold=call.negotiated.remote_hold,
                invite=request.method == "INVITE",
            )
        )
        return None

    def _make_offer(self, direction: str) -> None:
        """Our offer in the 2xx to an offer-less re-INVITE (RFC 3264 section 5)."""
        assert self._at_hand is not None
        _, tx, local_host = self._at_hand
        call, machine = self.call, self.machine
        try:
            secure = tx.reply_to.transport == "tls"
            self._sdp = call.make_offer(local_host, direction=direction, secure=secure)
        except OfferAnswerError as exc:
            return self.feed(machine.unusable(call.now(), str(exc)))
        self._server_offer = self._sdp
        self.feed(machine.answered(call.now(), remote_hold=None))
        return None

    def _reply(self, reply: Reply) -> None:
        assert self._at_hand is not None
        request, tx, _ = self._at_hand
        call = self.call
        if reply.status != 200:
            headers: list[tuple[str, str]] = []
            if reply.retry_after is not None:
                headers.append(("Retry-After", str(reply.retry_after)))
            if reply.status == 415:
                headers.append(("Accept", "application/sdp"))
            response = make_response(request, reply.status, reply.reason, headers=headers)
            call.phone.respond(tx, response)
            return
        headers = [("Contact", f"<{call.contact_for(tx.reply_to)}>"), ("Allow", self.allow)]
        body = self._sdp.serialize() if reply.sdp and self._sdp is not None else b""
        response = make_response(request, 200, "OK", headers=headers, body=body)
        call.phone.respond(tx, response)
        if request.method == "INVITE":
            self._ok = (serialize(response), tx.reply_to)
