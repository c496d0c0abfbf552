"""DTMF in the signalling of one call: ``DTMF <digits>`` out, SIP INFO with a key in.

Theory of operation: keys go out as RFC 4733 telephone-events in the RTP stream when
telephone-event was negotiated and we may send (`siproc.media.dtmf` builds them); otherwise as
one SIP INFO per key (``application/dtmf-relay``, the de facto format of RFC 2976 INFO DTMF),
each sent once the previous one got its final response, so that they arrive in order. A
refused INFO drops the keys still queued and tells the handler ``ERROR DTMF``. Keys that come
in INFO (``application/dtmf-relay`` or ``application/dtmf``) reach the handler as ``DTMF``
events, like the ones the stream decodes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.sip.headers import content_type
from siproc.sip.message import Request
from siproc.sip.transaction import ResponseReceived, TransactionTimeout

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["INFO_DTMF_DURATION_MS", "CallDtmf"]

INFO_DTMF_DURATION_MS = 160  # Duration= of an application/dtmf-relay INFO


class CallDtmf:
    """DTMF out (RFC 4733 or SIP INFO) and DTMF in SIP INFO for one call."""

    def __init__(self, call: CallView) -> None:
        self.call = call
        self._info_digits: deque[str] = deque()  # DTMF keys waiting for their SIP INFO
        self._info_in_flight = False

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
        self._info_digits.extend(digits)
        if not self._info_in_flight:
            self._send_next_info()
        return None

    def _send_next_info(self) -> None:
        call = self.call
        if call.state is not CallState.CONNECTED or call.dialog is None:
            self._info_digits.clear()
            return
        if not self._info_digits:
            return
        digit = self._info_digits.popleft()
        request = call.dialog.create_request("INFO")
        request.headers.add("Content-Type", "application/dtmf-relay")
        request.body = f"Signal={digit}\r\nDuration={INFO_DTMF_DURATION_MS}\r\n".encode()
        try:
            destination = call.phone.destination_for(call.dialog.next_hop())
        except OSError as exc:  # the remote target's name is not resolved
            dropped = len(self._info_digits)
            self._info_digits.clear()
            more = f"; {dropped} more not sent" if dropped else ""
            return call.report_error("DTMF", f"the far end cannot be reached: {exc}{more}")
        self._info_in_flight = True
        call.phone.send_request(request, destination, self._on_info_response)

    def _on_info_response(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, ResponseReceived) and event.response.status < 200:
            return
        self._info_in_flight = False
        if isinstance(event, TransactionTimeout) or event.response.status >= 300:
            what = (
                "no answer"
                if isinstance(event, TransactionTimeout)
                else f"{event.response.status} {event.response.reason}"
            )
            dropped = len(self._info_digits)
            self._info_digits.clear()
            if self.call.state is CallState.CONNECTED:
                more = f"; {dropped} more not sent" if dropped else ""
                self.call.report_error("DTMF", f"SIP INFO refused by the remote end ({what}){more}")
            return
        self._send_next_info()

    def on_info(self, request: Request) -> None:
        """DTMF in SIP INFO: application/dtmf-relay (Signal=5) and application/dtmf (5)."""
        kind = content_type(request.headers)
        text = request.body.decode("utf-8", "replace")
        digit = None
        if kind == "application/dtmf-relay":
            for line in text.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
        elif kind == "application/dtmf":
            digit = text.strip()
        if digit:
            try:
                self.call.event(protocol.DtmfReceived(digit))
            except ValueError:
                self.call.log.info("ignoring INFO with DTMF %r", digit)
