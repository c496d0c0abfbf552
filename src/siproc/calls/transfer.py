"""Blind call transfer for one `Call`: the edge of `siproc.sip.refer_session`.

What happens in a transfer, both as the transferor (the handler's ``TRANSFER <uri>``) and as
the transferee (a REFER received), is decided by the two machines of
`siproc.sip.refer_session` (see its module docstring for the rules and RFC sections). This
module carries out their actions: it sends the REFER and the NOTIFYs in the dialog (answering
401/407 with the call's credentials), answers the REFER and NOTIFY requests on their
transactions, has the phone place the new call of an accepted REFER (its handler gets
``SIPROC_REFERRED_BY``) and watches that call's state for the NOTIFYs.

A REFER outside any dialog is answered 403 by the phone (we only transfer calls we are in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.in_dialog import InDialogRequest
from siproc.sip.dialog import DialogState
from siproc.sip.errors import ParseError
from siproc.sip.headers import make_response, message_info
from siproc.sip.invite_session import CommandRefused, Log
from siproc.sip.message import Request, Response
from siproc.sip.refer import SIPFRAG_CONTENT_TYPE, format_refer_to, refer_event
from siproc.sip.refer_session import (
    IncomingRefer,
    NewCall,
    OutgoingRefer,
    PlaceCall,
    ReferAction,
    SendNotify,
    SendRefer,
)
from siproc.sip.session_update import HangUp, Reply
from siproc.sip.transaction import ServerTransaction
from siproc.sip.uri import NameAddr

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["CallTransfer", "send_in_dialog"]


def send_in_dialog(
    call: CallView,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes,
    on_final: Callable[[Request, Response | None], None],
) -> InDialogRequest | None:
    """Send REFER or NOTIFY in the call's dialog, answering 401/407 with the call's credentials;
    None when the dialog is gone. Both are target refresh requests (RFC 3515 section 2.4.2,
    RFC 6665 section 4.1.2.1), and those carry our Contact (RFC 3261 section 12.2.1.1)."""
    dialog = call.dialog
    if dialog is None or call.ended or dialog.state is DialogState.TERMINATED:
        return None
    try:
        destination = call.phone.destination_for(dialog.next_hop())
    except OSError:  # the remote target's name is not resolved: as if the dialog were gone
        return None
    contact = ("Contact", f"<{call.contact_for(destination)}>")
    request = InDialogRequest(
        call.phone,
        dialog,
        method,
        call.digest_session(),
        on_final,
        headers=[contact, *headers],
        body=body,
    )
    request.send()
    return request


class CallTransfer:
    """Both transfer roles of one call; see the module docstring."""

    def __init__(self, call: CallView) -> None:
        self.call = call
        self.outgoing = OutgoingRefer()  # ours (TRANSFER)
        self.incoming = IncomingRefer()  # the far end's (REFER)
        self.new_call: CallView | None = None  # the transferee's call to the target
        self._target: NameAddr | None = None
        self._referred_to = ""  # the target of the far end's REFER we accepted
        self._refer: InDialogRequest | None = None
        self._refer_cseq = 0  # the REFER we accepted (the NOTIFYs' Event id, RFC 3515 2.4.6)
        self._at_hand: tuple[Request, ServerTransaction] | None = None
        self._command = False  # the input being fed is a handler command

    @property
    def target(self) -> str | None:
        """Where the call was transferred: ours (TRANSFER), else the far end's (REFER)."""
        return self.outgoing.target or self._referred_to or None

    def deadlines(self) -> tuple[float | None, float | None]:
        return self.outgoing.next_deadline(), self.incoming.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.feed(self.outgoing.handle_timer(now))
        self.feed(self.incoming.handle_timer(now, connected=self.call.connected))

    def close(self) -> None:
        self.outgoing.close()
        self.incoming.close()

    @property
    def refer_cseq(self) -> str | None:
        """The CSeq number of the REFER sent last (the NOTIFYs' Event id, RFC 3515 2.4.6)."""
        request = self._refer.request if self._refer is not None else None
        if request is None:
            return None
        return (request.headers.get("CSeq") or "").split(" ", 1)[0]

    # -- inputs ---------------------------------------------------------------------------------

    def start(self, text: str) -> None:
        """``TRANSFER <uri>``."""
        call = self.call
        target_error = None
        try:
            self._target = call.phone.expand_target(text)
        except ParseError as exc:
            target_error = str(exc)
        actions = self.outgoing.start(
            call.now(),
            connected=call.state is CallState.CONNECTED and call.dialog is not None,
            call_state=call.state.value,
            target=str(self._target.uri) if self._target is not None else "",
            target_error=target_error,
        )
        self._command = True
        try:
            self.feed(actions)
        finally:
            self._command = False

    def on_refer(self, request: Request, tx: ServerTransaction) -> None:
        call = self.call
        actions = self.incoming.refer(
            call.now(),
            request,
            connected=call.state is CallState.CONNECTED,
            call_state=call.state.value,
            remote=str(call.remote.uri),
            allowed=call.phone.refer_allowed,
        )
        self._refer_cseq = message_info(request).cseq.number
        self._answering(request, tx, actions)

    def on_notify(self, request: Request, tx: ServerTransaction) -> None:
        call = self.call
        self._answering(request, tx, self.outgoing.notify(call.now(), request, self.refer_cseq))

    def _answering(
        self, request: Request, tx: ServerTransaction, actions: list[ReferAction]
    ) -> None:
        self._at_hand = (request, tx)
        try:
            self.feed(actions)
        finally:
            self._at_hand = None

    # -- carrying out ---------------------------------------------------------------------------

    def feed(self, actions: list[ReferAction]) -> None:
        try:
            for action in actions:
                self._carry_out(action)
        finally:
            self.call.rearm()

    def _carry_out(self, action: ReferAction) -> None:
        call = self.call
        match action:
            case SendRefer():
                self._send_refer()
            case SendNotify(frag=frag, state=state):
                headers = [
                    ("Event", str(refer_event(self._refer_cseq))),
                    ("Subscription-State", str(state)),
                    ("Content-Type", SIPFRAG_CONTENT_TYPE),
                ]
                sent = send_in_dialog(call, "NOTIFY", headers, frag.serialize(), self._notified)
                if sent is None:  # the old call is over: nobody to tell
                    self.feed(self.incoming.notify_unsent(call.now()))
            case PlaceCall(target=target, referred_by=referred_by):
                self._referred_to = str(target)
                call.phone.place_referred_call(target, referred_by, call.guard(self._placed))
            case Reply(status=status, reason=reason):
                assert self._at_hand is not None
                request, tx = self._at_hand
                headers = []
                if status == 202:
                    headers.append(("Contact", f"<{call.contact_for(tx.reply_to)}>"))
                call.phone.respond(tx, make_response(request, status, reason, headers=headers))
            case HangUp(reason=reason):
                call.hangup(reason=reason)
            case CommandRefused(verb=verb, reason=reason):
                if self._command:
                    call.report_error(verb, reason)
                elif not call.ended:  # a transfer that failed later
                    call.event(protocol.ErrorEvent(verb, reason))
            case Log(level=level, message=message):
                call.log.log(level, "%s", message)

    def _send_refer(self) -> None:
        call, target = self.call, self._target
        assert target is not None
        call.log.info("transferring the call to %s", target.uri)
        headers = [
            ("Refer-To", format_refer_to(target)),
            # RFC 3892: who asked for the transfer; our address of record in this call.
            ("Referred-By", f"<{call.local.uri}>"),
        ]
        self._refer = send_in_dialog(call, "REFER", headers, b"", self._on_refer_final)
        if self._refer is None:
            self.feed(self.outgoing.unsent(call.now()))

    def _on_refer_final(self, request: Request, response: Response | None) -> None:
        call = self.call
        if call.ended:
            return
        status = None if response is None else response.status
        reason = "" if response is None else response.reason
        self.feed(self.outgoing.refer_final(call.now(), status, reason))

    def _notified(self, request: Request, response: Response | None) -> None:
        call = self.call
        if response is None:
            return self.feed(self.incoming.notify_final(call.now(), None))
        self.feed(self.incoming.notify_final(call.now(), response.status, response.reason))
        return None

    def _placed(self, new_call: CallView | None) -> None:
        call = self.call
        if new_call is not None:
            self.new_call = new_call
            # What goes wrong in telling the transferor (a NOTIFY on the old call) is the old
            # call's fault, and must not break the new call's state change (calls/call.py guard)
            new_call.on_state_change = call.guard(self._on_new_call_state)
            call.log.info(
                "transferred by %s to %s: new call %s",
                new_call.referred_by,
                new_call.request_uri,
                new_call.call_id,
            )
        self.feed(self.incoming.placed(call.now(), new_call is not None))

    def _on_new_call_state(self, new_call: CallView) -> None:
        now = self.call.now()
        match new_call.state:
            case CallState.EARLY:
                self.feed(self.incoming.new_call(now, NewCall.RINGING))
            case CallState.CONNECTED:
                self.feed(self.incoming.new_call(now, NewCall.CONNECTED))
            case CallState.ENDED:
                actions = self.incoming.new_call(
                    now, NewCall.ENDED, new_call.end_status, new_call.end_reason
                )
                self.feed(actions)
            case _:
                pass
