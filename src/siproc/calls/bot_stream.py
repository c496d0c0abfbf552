"""``STREAM`` and ``STREAM STOP`` of a call: its one stream to a voice bot, on the call's side.

The WebSocket itself runs where the call's audio runs (:mod:`siproc.net.media_stream_edge`:
in the media worker, or here when ``SIPROC_MEDIA_WORKERS=0``); this module checks the command,
builds the :class:`~siproc.net.media_stream_edge.StreamSpec` (a fresh ``streamSid``; the
custom parameters plus ``remoteUri`` and ``direction`` unless the handler gave them) and turns
what the stream reports into handler lines: ``STREAM CONNECTED <streamSid>``, ``STREAM STOPPED
<reason>`` and ``ERROR STREAM <reason>``. One stream per call at a time.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.media.media_stream_protocol import StreamFormat
from siproc.net.media_pool import RemoteStream
from siproc.net.media_stream_edge import BotStream, StreamSpec

if TYPE_CHECKING:
    from siproc.calls.call import Call

__all__ = ["BotLink", "stream_command"]


@dataclass(slots=True)
class BotLink:
    """The call's running stream: its id, and the edge itself when it runs in this process."""

    stream_sid: str
    local: BotStream | None = None


def stream_command(call: Call, command: protocol.Stream) -> None:
    if command.url is None:
        return _stop(call)
    if call.state in (CallState.ENDED, CallState.TERMINATING) or call.stream.closed:
        return call.report_error("STREAM", f"the call is {call.state.value}")
    if call.bot is not None:
        return call.report_error("STREAM", f"a stream is running ({call.bot.stream_sid})")
    params = dict(command.parameters)
    params.setdefault("remoteUri", str(call.remote.uri))
    params.setdefault("direction", "outbound" if call.outgoing else "inbound")
    tls = getattr(getattr(call.phone, "config", None), "tls", None)
    spec = StreamSpec(
        url=command.url,
        format=StreamFormat(command.format),
        parameters=tuple(params.items()),
        stream_sid="MZ" + secrets.token_hex(16),  # Twilio's form: MZ and 32 hex digits
        call_sid=call.call_id,
        ca_file=getattr(tls, "ca_file", None),
        verify=getattr(tls, "verify", True),
    )
    link = BotLink(spec.stream_sid)
    call.bot = link

    def report(kind: str, text: str) -> None:
        _on_report(call, link, kind, text)

    stream = call.stream
    if isinstance(stream, RemoteStream):
        stream.on_bot = call.guard(report)
        stream.bot_start(spec)
    else:
        link.local = BotStream(call.phone.loop, stream, spec, call.guard(report), call.log)
        link.local.start()
    call.log.info("stream %s to %s starting", spec.stream_sid, spec.url)
    return None


def _stop(call: Call) -> None:
    link = call.bot
    if link is None:
        return call.report_error("STREAM", "no stream is running")
    if link.local is not None:
        link.local.stop("handler")
    elif isinstance(call.stream, RemoteStream):
        call.stream.bot_stop()
    return None


def _on_report(call: Call, link: BotLink, kind: str, text: str) -> None:
    if call.bot is not link:  # a stream that ended already (its late words)
        return
    if kind == "CONNECTED":
        call.event(protocol.StreamEvent("CONNECTED", text))
        return
    call.bot = None
    if kind == "STOPPED":
        call.event(protocol.StreamEvent("STOPPED", text))
    else:
        call.report_error("STREAM", text)
