"""Blind call transfer (RFC 3515 REFER, RFC 5589 section 6), both roles, for one `Call`.

Theory of operation
-------------------
*Transferor* (`Transferor`, the handler's ``TRANSFER <uri>``): in a connected call we send an
in-dialog REFER with ``Refer-To: <uri>`` and ``Referred-By: <our AOR>`` (RFC 3892), answering a
401/407 with the call's digest credentials. A 2xx (202 Accepted) creates the implicit
subscription (RFC 3515 section 2.4.4); the transferee then reports its call to the target in
NOTIFYs carrying a ``message/sipfrag`` status line (RFC 3420). Each NOTIFY is answered 200.
A final 2xx status means the transferee is now talking to the target: we end our call with BYE
(RFC 5589 section 6) and the handler gets ``DISCONNECTED 200 transferred`` and its SIGTERM. A
REFER rejected with 3xx-6xx, a final sipfrag status >= 300, a subscription terminated without a
final status, or no NOTIFY for `NOTIFY_WAIT` seconds gives the handler ``ERROR TRANSFER <status>
<reason>`` and the call stays up. One transfer at a time.

*Transferee* (`Transferee`, a REFER received in a connected call): we answer 202 Accepted,
NOTIFY ``SIP/2.0 100 Trying`` (subscription active for `REFER_SUBSCRIPTION_EXPIRES` s) and place
a new call to the Refer-To URI through the phone, exactly as ``CALL <uri>`` would; its handler
gets ``SIPROC_REFERRED_BY``. The new call's progress goes out as NOTIFYs, in order (one in
flight at a time): 180 Ringing once it rings, then the final status with ``Subscription-State:
terminated;reason=noresource``. After a successful transfer the transferor normally sends BYE
on the old call (RFC 5589 section 6); if it has not within `OLD_CALL_BYE_WAIT` seconds, we send
it ourselves. A failed new call leaves the old call up, as the transferor expects.

A REFER outside any dialog is answered 403 by the phone (we only transfer calls we are in), and
a NOTIFY that matches no transfer of ours gets 481 (RFC 6665 section 4.1.3).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.in_dialog import InDialogRequest
from siproc.sip.dialog import DialogState
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import content_type, make_response, message_info
from siproc.sip.message import Request, Response
from siproc.sip.refer import (
    NOTIFY_WAIT,
    REFER_EVENT,
    SIPFRAG_CONTENT_TYPE,
    SIPFRAG_MEDIA_TYPE,
    Sipfrag,
    SubscriptionState,
    active,
    format_refer_to,
    parse_event,
    parse_referred_by,
    parse_sipfrag,
    parse_subscription_state,
    refer_event,
    refer_target,
    terminated,
)
from siproc.sip.transaction import ServerTransaction
from siproc.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from siproc.calls.call import Call

#: Seconds the transferee waits for the transferor's BYE after a successful transfer before
#: ending the old call itself (RFC 5589 section 6: the transferor is the one that hangs up).
OLD_CALL_BYE_WAIT = 4.0


def send_in_dialog(
    call: Call,
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


# -- transferor ---------------------------------------------------------------------------------


class Transferor:
    """Our side of ``TRANSFER <uri>``: the REFER and the NOTIFYs about it."""

    def __init__(self, call: Call, target: NameAddr) -> None:
        self.call = call
        self.target = target
        self.done = False
        self.accepted = False
        self.last_status: Sipfrag | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refer: InDialogRequest | None = None

    def start(self) -> bool:
        self.call.log.info("transferring the call to %s", self.target.uri)
        headers = [
            ("Refer-To", format_refer_to(self.target)),
            # RFC 3892: who asked for the transfer; our address of record in this call.
            ("Referred-By", f"<{self.call.local.uri}>"),
        ]
        self._refer = send_in_dialog(self.call, "REFER", headers, b"", self._on_refer_final)
        return self._refer is not None

    @property
    def refer_cseq(self) -> str | None:
        """The CSeq number of the REFER sent last (the NOTIFYs' Event id, RFC 3515 2.4.6)."""
        request = self._refer.request if self._refer is not None else None
        if request is None:
            return None
        return (request.headers.get("CSeq") or "").split(" ", 1)[0]

    def _on_refer_final(self, request: Request, response: Response | None) -> None:
        if self.done or self.call.ended:
            return
        if response is None:
            self._fail(408, "Request Timeout (REFER not answered)")
        elif response.status < 300:
            self.accepted = True
            self._arm()
        else:
            self._fail(response.status, response.reason or "REFER rejected")

    def _arm(self) -> None:
        """(Re)start the wait for the next NOTIFY: each NOTIFY shows the transfer is alive."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.call.later(NOTIFY_WAIT, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        if not self.done and not self.call.ended:
            self._fail(408, f"Request Timeout (no final NOTIFY within {NOTIFY_WAIT:g} s)")

    def on_notify(self, request: Request, tx: ServerTransaction) -> None:
        """A NOTIFY in our dialog: answer it and follow the sipfrag (RFC 3515 section 2.4.5)."""
        call = self.call
        try:
            event = parse_event(request.headers.get("Event") or "")
            if event.package != REFER_EVENT:
                raise RemoteProtocolError(489, "Bad Event")
            if event.id is not None and event.id != self.refer_cseq:
                raise RemoteProtocolError(481, "Subscription Does Not Exist")
            state_text = request.headers.get("Subscription-State")
            state = parse_subscription_state(state_text) if state_text else active()
            frag = None
            if request.body and content_type(request.headers) == SIPFRAG_MEDIA_TYPE:
                frag = parse_sipfrag(request.body)
        except ParseError as exc:
            call.phone.respond(tx, make_response(request, 400, f"Bad Request ({str(exc)[:80]})"))
            return
        except RemoteProtocolError as exc:
            call.phone.respond(tx, make_response(request, exc.status, exc.reason))
            return
        if self.done:  # a late NOTIFY for a transfer that is over (RFC 6665 section 4.1.3)
            call.phone.respond(tx, make_response(request, 481, "Subscription Does Not Exist"))
            return
        call.phone.respond(tx, make_response(request, 200, "OK"))
        call.log.info(
            "transfer NOTIFY: %s (%s)", f"{frag.status} {frag.reason}" if frag else "-", state
        )
        if frag is not None:
            self.last_status = frag
        if frag is not None and frag.final:
            if frag.status < 300:
                self._succeed()
            else:
                self._fail(frag.status, frag.reason or "transfer failed")
        elif state.terminated:
            last = f" (last status {frag.status})" if frag else ""
            self._fail(
                487,
                f"Request Terminated (subscription {state.reason or 'terminated'} before a "
                f"final status{last})",
            )
        else:
            self._arm()

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, status: int, reason: str) -> None:
        self._finish()
        self.call.log.warning("transfer to %s failed: %d %s", self.target.uri, status, reason)
        if not self.call.ended:
            self.call.event(protocol.ErrorEvent("TRANSFER", f"{status} {reason}"))

    def _succeed(self) -> None:
        self._finish()
        self.call.log.info("transfer to %s succeeded: ending the call", self.target.uri)
        end_transferred_call(self.call)


def end_transferred_call(call: Call) -> None:
    """BYE after a successful transfer (RFC 5589 section 6); DISCONNECTED says ``transferred``."""
    if call.state is CallState.CONNECTED and call.dialog is not None:
        call.hangup(reason="transferred")


def start_transfer(call: Call, text: str) -> None:
    """``TRANSFER <uri>``: check the state and the URI, then send the REFER."""
    if call.state is not CallState.CONNECTED or call.dialog is None:
        call.report_error("TRANSFER", f"not possible while the call is {call.state.value}")
        return
    if call.transferor is not None and not call.transferor.done:
        call.report_error("TRANSFER", "a transfer is already in progress")
        return
    try:
        target = call.phone.expand_target(text)
    except ParseError as exc:
        call.report_error("TRANSFER", f"not a SIP URI: {exc}")
        return
    transferor = Transferor(call, target)
    call.transferor = transferor
    if not transferor.start():
        transferor.done = True
        call.report_error("TRANSFER", "the dialog is gone")


def on_notify(call: Call, request: Request, tx: ServerTransaction) -> None:
    """An in-dialog NOTIFY: ours only as part of a transfer we started."""
    if call.transferor is None:
        call.phone.respond(tx, make_response(request, 481, "Subscription Does Not Exist"))
        return
    call.transferor.on_notify(request, tx)


# -- transferee ---------------------------------------------------------------------------------


class Transferee:
    """A REFER we accepted: the new call to the target and the NOTIFYs about it."""

    def __init__(self, call: Call, refer: Request, target: SipUri, referred_by: str) -> None:
        self.call = call
        self.target = target
        self.referred_by = referred_by
        self.refer_cseq = message_info(refer).cseq.number
        self.new_call: Call | None = None
        self.done = False  # the final NOTIFY is queued
        self._queue: deque[tuple[Sipfrag, SubscriptionState]] = deque()
        self._in_flight = False
        self._subscription_alive = True
        self._last_reported = 0

    def start(self) -> None:
        self._notify(Sipfrag(100, "Trying"), active())
        self.call.phone.place_referred_call(
            self.target, self.referred_by, self.call.guard(self._placed)
        )

    def _placed(self, new_call: Call | None) -> None:
        if self.done:
            if new_call is not None:  # the transfer ended while the target was looked up
                new_call.hangup(None)
            return
        if new_call is None:
            self._notify(Sipfrag(503, "Service Unavailable"), terminated())
            return
        self.new_call = new_call
        # What goes wrong in telling the transferor (a NOTIFY on the old call) is the old
        # call's fault, and must not break the new call's state change (calls/call.py guard)
        new_call.on_state_change = self.call.guard(self._on_new_call_state)
        self.call.log.info(
            "transferred by %s to %s: new call %s", self.referred_by, self.target, new_call.call_id
        )

    def _on_new_call_state(self, new_call: Call) -> None:
        if self.done:
            return
        match new_call.state:
            case CallState.EARLY if self._last_reported < 180:
                self._last_reported = 180
                self._notify(Sipfrag(180, "Ringing"), active())
            case CallState.CONNECTED:
                self._notify(Sipfrag(200, "OK"), terminated())
                self.call.later(OLD_CALL_BYE_WAIT, self._end_old_call)
            case CallState.ENDED:
                status = new_call.end_status or 500
                if status < 300:  # ended before it connected, yet no failure status
                    status = 487
                reason = " ".join((new_call.end_reason or "Call Failed").split())
                self._notify(Sipfrag(status, reason), terminated())
            case _:
                pass

    def _end_old_call(self) -> None:
        """The transferor did not hang up the old call after the transfer: we do."""
        if self.call.state is CallState.CONNECTED:
            self.call.log.info("no BYE from the transferor after the transfer: hanging up")
            self.call.hangup()

    # -- NOTIFY queue -------------------------------------------------------------------------

    def _notify(self, frag: Sipfrag, state: SubscriptionState) -> None:
        if self.done:
            return
        if frag.final:
            self.done = True
            self._queue.clear()  # progress that has not gone out yet is moot now
        self._queue.append((frag, state))
        if not self._in_flight:
            self._send_next()

    def _send_next(self) -> None:
        if not self._queue or not self._subscription_alive:
            self._queue.clear()
            return
        frag, state = self._queue.popleft()

        headers = [
            ("Event", str(refer_event(self.refer_cseq))),
            ("Subscription-State", str(state)),
            ("Content-Type", SIPFRAG_CONTENT_TYPE),
        ]
        notify = send_in_dialog(
            self.call, "NOTIFY", headers, frag.serialize(), self._on_notify_final
        )
        self._in_flight = notify is not None
        if not self._in_flight:  # the old call is over: nobody to tell
            self._subscription_alive = False
            self._queue.clear()

    def _on_notify_final(self, request: Request, response: Response | None) -> None:
        self._in_flight = False
        if response is None or response.status >= 300:
            # 481: the transferor dropped the subscription; anything else: it will not listen.
            what = "no answer" if response is None else f"{response.status} {response.reason}"
            self.call.log.info("NOTIFY refused (%s): no more transfer progress reports", what)
            self._subscription_alive = False
            self._queue.clear()
            return
        self._send_next()


def on_refer(call: Call, request: Request, tx: ServerTransaction) -> None:
    """A REFER in our dialog (RFC 3515 section 2.4.2): accept it and follow it, or refuse it."""

    def refuse(status: int, reason: str) -> None:
        call.log.warning("REFER refused: %d %s", status, reason)
        call.phone.respond(tx, make_response(request, status, reason))

    if call.state is not CallState.CONNECTED:
        return refuse(403, f"Forbidden (the call is {call.state.value})")
    if call.transferee is not None and not call.transferee.done:
        return refuse(491, "Request Pending (a transfer is already in progress)")
    try:
        target = refer_target(request.headers)
    except RemoteProtocolError as exc:
        return refuse(exc.status, exc.reason)
    if not call.phone.refer_allowed(target):  # SIPROC_ACCEPT_REFER
        return refuse(403, "Forbidden (transfer target not allowed)")
    referred_by = str(call.remote.uri)
    value = request.headers.get("Referred-By")
    if value:
        try:
            referred_by = str(parse_referred_by(value).uri)
        except ParseError:
            call.log.info("ignoring unparseable Referred-By %r", value[:80])
    destination = tx.reply_to
    response = make_response(
        request, 202, "Accepted", headers=[("Contact", f"<{call.contact_for(destination)}>")]
    )
    call.phone.respond(tx, response)
    transferee = Transferee(call, request, target, referred_by)
    call.transferee = transferee
    transferee.start()
    return None
