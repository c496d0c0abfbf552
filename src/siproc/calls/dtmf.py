"""DTMF in the signalling of one call: ``DTMF <digits>`` out, SIP INFO with a key in.

Theory of operation: keys go out as RFC 4733 telephone-events in the RTP stream when
telephone-event was negotiated and we may send (`siproc.media.dtmf` builds them); otherwise as
one SIP INFO per key (``application/dtmf-relay``, the de facto format of RFC 2976 INFO DTMF),
each sent once the previous one got its final response, so that they arrive in order. A
refused INFO drops the keys still queued and tells the handler ``ERROR DTMF``. Which key goes
when, and what is dropped, is decided by `siproc.sip.info_dtmf.InfoDtmfQueue`; this module
sends the requests and talks to the handler. Keys that come in INFO (``application/dtmf-relay``
or ``application/dtmf``) reach the handler as ``DTMF`` events, like the ones the stream
decodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.sip.headers import content_type
from siproc.sip.info_dtmf import (
    DTMF_RELAY,
    InfoDtmfQueue,
    InfoFailed,
    SendInfo,
    dtmf_relay_body,
    info_dtmf_key,
)
from siproc.sip.message import Request
from siproc.sip.transaction import ResponseReceived, TransactionTimeout

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["CallDtmf"]


class CallDtmf:
    """DTMF out (RFC 4733 or SIP INFO) and DTMF in SIP INFO for one call."""

    def __init__(self, call: CallView) -> None:
        self.call = call
        self._info = InfoDtmfQueue()  # DTMF keys waiting for their SIP INFO

    def send(self, digits: str) -> None:
        """``DTMF <digits>`` (already validated by the protocol parser). INFO is also the way
        while we may not send RTP (the remote put us on hold, RFC 3264 section 8.4). During
        early media (PROGRESS sent, or an 18x with SDP received) only RFC 4733 events can be
        sent."""
        call = self.call
        early = call.state is CallState.EARLY_MEDIA or (
            call.state is CallState.EARLY and call.negotiated is not None
        )
        if not early and (call.state is not CallState.CONNECTED or call.dialog is None):
            return call.report_error("DTMF", f"not possible while the call is {call.state.value}")
        negotiated = call.negotiated
        if (
            negotiated is not None
            and negotiated.telephone_event_pt is not None
            and negotiated.direction in ("sendrecv", "sendonly")
        ):
            try:
                call.stream.send_dtmf(digits)
            except ValueError as exc:
                return call.report_error("DTMF", str(exc))
            return None
        if early:
            return call.report_error(
                "DTMF", "no telephone-event for early media (INFO needs CONNECTED)"
            )
        self._carry_out(self._info.add(digits))
        return None

    def _carry_out(self, action: SendInfo | InfoFailed | None) -> None:
        """Send the INFO `InfoDtmfQueue` asks for, or tell the handler why keys were dropped."""
        call = self.call
        if isinstance(action, InfoFailed):
            if call.state is CallState.CONNECTED:
                call.report_error("DTMF", action.text)
            return
        if action is None:
            return
        if call.state is not CallState.CONNECTED or call.dialog is None:
            self._info.clear()
            return
        request = call.dialog.create_request("INFO")
        request.headers.add("Content-Type", DTMF_RELAY)
        request.body = dtmf_relay_body(action.key)
        try:
            destination = call.phone.destination_for(call.dialog.next_hop())
        except OSError as exc:  # the remote target's name is not resolved
            return self._carry_out(self._info.unsent(f"the far end cannot be reached: {exc}"))
        call.phone.send_request(request, destination, self._on_info_response)
        return None

    def _on_info_response(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, TransactionTimeout):
            return self._carry_out(self._info.response(None))
        return self._carry_out(self._info.response(event.response.status, event.response.reason))

    def on_info(self, request: Request) -> None:
        """DTMF in SIP INFO: application/dtmf-relay (Signal=5) and application/dtmf (5)."""
        digit = info_dtmf_key(content_type(request.headers), request.body)
        if digit:
            try:
                self.call.event(protocol.DtmfReceived(digit))
            except ValueError:
                self.call.log.info("ignoring INFO with DTMF %r", digit)
