"""The messages of the callee's side of a call's INVITE (RFC 3261 section 13.3).

What to answer and when is decided by the call's `InviteSession` (sip/invite_session.py); this
module builds and sends it. `IncomingInvite.start` checks the offer before any handler runs, so
a call we cannot take is refused at once; an INVITE without SDP makes us offer in the 2xx and
take the answer from the ACK (RFC 3264 section 5). Responses that create the dialog carry our
Contact and the INVITE's Record-Route (section 12.1.1). The 2xx is kept serialized for its
retransmissions (section 13.3.1.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siproc.calls.call_state import ALLOW
from siproc.sdp.model import SessionDescription, parse_sdp
from siproc.sip.dialog import Dialog
from siproc.sip.headers import make_response
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["IncomingInvite"]


class IncomingInvite:
    """The INVITE server side of one incoming call; see the module docstring."""

    def __init__(self, call: CallView, request: Request, tx: ServerTransaction) -> None:
        self.call = call
        self.invite = request  # the far end's INVITE
        self.tx = tx
        self.sdp: SessionDescription | None = None  # our SDP for the 18x and the 2xx
        self.ok: bytes = b""  # our 2xx, serialized, for its retransmissions

    def start(self, local_host: str) -> Dialog:
        """Our SDP (the answer to the INVITE's offer, or our offer for the 2xx); raises for an
        offer we cannot answer. Returns the dialog the INVITE makes (section 12.1.1)."""
        call, request = self.call, self.invite
        dialog = Dialog.from_uas(request, call.local_tag)
        if request.body:
            self.sdp = call.make_answer(parse_sdp(request.body), local_host)
        else:
            self.sdp = call.make_offer(local_host)
        return dialog

    def respond(self, status: int, reason: str, with_sdp: bool = False) -> Response:
        """Answer the INVITE with `status`; our Contact on all but failures."""
        call, tx, invite = self.call, self.tx, self.invite
        extra: list[tuple[str, str]] = []
        if status < 300:
            extra.append(("Contact", f"<{call.contact_for(tx.reply_to)}>"))
        if 100 < status < 300:
            # A response that creates a dialog copies the request's Record-Route values, in
            # order (RFC 3261 section 12.1.1), so the caller's in-dialog requests take the route.
            extra += [("Record-Route", value) for value in invite.headers.get_raw("Record-Route")]
        if status == 200:
            extra.append(("Allow", ALLOW))
        body = self.sdp.serialize() if with_sdp and self.sdp is not None else b""
        response = make_response(
            invite, status, reason, to_tag=call.local_tag, headers=extra, body=body
        )
        call.phone.respond(tx, response)
        if 200 <= status < 300:
            self.ok = serialize(response)
        return response

    def resend_ok(self) -> None:
        """Our 2xx again (RFC 3261 section 13.3.1.4: the UAS core, not the transaction)."""
        if self.ok:
            self.call.phone.send_raw(self.ok, self.tx.reply_to)
