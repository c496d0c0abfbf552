"""``STREAM`` and ``STREAM STOP`` of a call: its one stream to a voice bot, on the call's side.

The WebSocket itself runs where the call's audio runs (:mod:`siproc.net.media_stream_edge`:
in the media worker, or here when the stream runs in this process); the call's `MediaStream`
starts and stops it (``bot_start``/``bot_stop``), whichever kind of stream it is. This module
checks the command, builds the :class:`~siproc.net.media_stream_edge.StreamSpec` (a fresh
``streamSid``; the custom parameters plus ``remoteUri`` and ``direction`` unless the handler
gave them) and turns what the stream reports into handler lines: ``STREAM CONNECTED
<streamSid>``, ``STREAM STOPPED <reason>`` and ``ERROR STREAM <reason>``. One stream per call
at a time. It sees the call as a `StreamingCall`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import ParamSpec, Protocol

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.config import TlsSettings
from siproc.logs import CallLog
from siproc.media.media_stream_protocol import StreamFormat
from siproc.net.media_stream import MediaStream
from siproc.net.media_stream_edge import StreamSpec
from siproc.sip.uri import NameAddr

__all__ = ["CallBot", "StreamingCall"]

P = ParamSpec("P")


class StreamingCall(Protocol):
    """What STREAM uses of a call (`siproc.calls.call.Call` is one)."""

    call_id: str
    outgoing: bool
    remote: NameAddr
    stream: MediaStream
    log: CallLog

    @property
    def state(self) -> CallState: ...
    def event(self, event: protocol.Event) -> None: ...
    def report_error(self, command: str, reason: str) -> None: ...
    def guard(self, fn: Callable[P, object]) -> Callable[P, None]: ...


class CallBot:
    """The STREAM of one call; ``tls``: how a ``wss:`` bot's certificate is checked."""

    def __init__(self, call: StreamingCall, tls: TlsSettings) -> None:
        self.call = call
        self.tls = tls
        self.stream_sid: str | None = None  # the running stream's, if one runs

    def command(self, command: protocol.Stream) -> None:
        """``STREAM <url> ...`` (start) or ``STREAM STOP`` (``url`` None)."""
        call = self.call
        if command.url is None:
            return self._stop()
        if call.state in (CallState.ENDED, CallState.TERMINATING) or call.stream.closed:
            return call.report_error("STREAM", f"the call is {call.state.value}")
        if self.stream_sid is not None:
            return call.report_error("STREAM", f"a stream is running ({self.stream_sid})")
        params = dict(command.parameters)
        params.setdefault("remoteUri", str(call.remote.uri))
        params.setdefault("direction", "outbound" if call.outgoing else "inbound")
        spec = StreamSpec(
            url=command.url,
            format=StreamFormat(command.format),
            parameters=tuple(params.items()),
            stream_sid="MZ" + secrets.token_hex(16),  # Twilio's form: MZ and 32 hex digits
            call_sid=call.call_id,
            ca_file=self.tls.ca_file,
            verify=self.tls.verify,
        )
        sid = self.stream_sid = spec.stream_sid

        def report(kind: str, text: str) -> None:
            self._on_report(sid, kind, text)

        call.stream.bot_start(spec, call.guard(report))
        call.log.info("stream %s to %s starting", sid, spec.url)
        return None

    def _stop(self) -> None:
        if self.stream_sid is None:
            return self.call.report_error("STREAM", "no stream is running")
        self.call.stream.bot_stop()
        return None

    def _on_report(self, sid: str, kind: str, text: str) -> None:
        call = self.call
        if self.stream_sid != sid:  # a stream that ended already (its late words)
            return
        if kind == "CONNECTED":
            call.event(protocol.StreamEvent("CONNECTED", text))
            return
        self.stream_sid = None
        if kind == "STOPPED":
            call.event(protocol.StreamEvent("STOPPED", text))
        else:
            call.report_error("STREAM", text)
