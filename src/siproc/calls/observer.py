"""Watching calls from the side: the times of a call and its facts at the end.

Theory of operation: the phone tells a `CallObserver` when a call is created (`opened`), when
its state changes (`changed`, from `Phone.call_changed`), when we send it ringing
(`ringing`: an incoming call's 180) and when it has ended with its media closed (`ended`,
from the call, just before its handler hears ``DISCONNECTED``). The observer notes the wall
clock at each step, and at the end builds the call's `CallFacts` (calls/records.py) and hands
them to its sinks: the ``SIPROC_CDR`` file and the metrics (calls/metrics.py). `finished`
(the phone forgets the call) and `flush` (siproc stops) make sure that a call that ended some
other way (a handler that could not start, the last resort of an internal error, a shutdown
that gave up waiting) gets its record too: exactly one per call.

The observer reads the call (a `RecordedCall`: what a record needs of it); it never changes
it. It is kept apart from `calls/call.py` so that the call's state machine can change without
the records changing with it.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from siproc.calls.call_state import CallState
from siproc.calls.handler import HandlerProcess
from siproc.calls.records import CallFacts, ended_by
from siproc.net.media_stream import MediaStream
from siproc.sdp.offer_answer import NegotiatedMedia
from siproc.sip.uri import NameAddr

__all__ = ["CallObserver", "RecordedCall", "facts_of"]

log = logging.getLogger(__name__)

Sink = Callable[[CallFacts], None]


class RecordedCall(Protocol):
    """What a call's record reads of it (`siproc.calls.call.Call` is one)."""

    call_id: str
    outgoing: bool
    local: NameAddr
    remote: NameAddr
    request_uri: str
    referred_by: str
    recordings: list[str]
    stream: MediaStream
    handler: HandlerProcess | None
    handler_done: bool

    @property
    def state(self) -> CallState: ...
    @property
    def negotiated(self) -> NegotiatedMedia | None: ...
    @property
    def end_status(self) -> int | None: ...
    @property
    def end_reason(self) -> str: ...
    @property
    def limit_reached(self) -> str: ...
    @property
    def transfer_target(self) -> str | None: ...


@dataclass(slots=True)
class _Times:
    created: float
    ringing: float | None = None
    early_media: float | None = None
    answered: float | None = None
    ended: float | None = None
    answer_sent: bool = False  # incoming: our SDP answer went out (183 or 2xx)
    ended_locally: bool = False  # we sent the BYE, CANCEL or final response
    handler_gone: bool = False  # the handler had exited when the call ended
    stopping: bool = False  # siproc was shutting down when the call ended
    recorded: bool = False


class CallObserver:
    """See the module docstring. ``stopping()``: whether siproc is shutting down."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        stopping: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sinks = list(sinks)
        self._stopping = stopping
        self.clock = clock
        self._times: weakref.WeakKeyDictionary[RecordedCall, _Times] = weakref.WeakKeyDictionary()

    def _of(self, call: RecordedCall) -> _Times:
        times = self._times.get(call)
        if times is None:
            times = self._times[call] = _Times(self.clock())
        return times

    def opened(self, call: RecordedCall) -> None:
        self._of(call)

    def ringing(self, call: RecordedCall) -> None:
        times = self._of(call)
        if times.ringing is None:
            times.ringing = self.clock()

    def changed(self, call: RecordedCall) -> None:
        times = self._of(call)
        now = self.clock()
        match call.state:
            case CallState.EARLY:  # our INVITE got a provisional response
                if times.ringing is None:
                    times.ringing = now
                # an SDP answer in it is early media (RFC 3960 section 2): the phone tells
                # us again once it is applied (Call._apply_answer)
                if call.negotiated is not None and times.early_media is None:
                    times.early_media = now
            case CallState.EARLY_MEDIA if times.early_media is None:
                times.early_media = now
                times.answer_sent = True
            case CallState.ANSWERING:
                times.answer_sent = True
            case CallState.CONNECTED if times.answered is None:
                times.answered = now
                times.answer_sent = True
            case CallState.CANCELLING | CallState.TERMINATING:
                times.ended_locally = True
            case CallState.ENDED if times.ended is None:
                times.ended = now
                times.handler_gone = call.handler is None or call.handler_done
                times.stopping = self._stopping()
            case _:
                pass

    def ended(self, call: RecordedCall) -> None:
        """The call has ended and its media is closed: record it (once)."""
        times = self._of(call)
        if times.recorded:
            return
        times.recorded = True
        if times.ended is None:  # ended without passing through ENDED's state change
            times.ended = self.clock()
            times.stopping = self._stopping()
        facts = facts_of(call, times)
        for sink in self.sinks:
            try:
                sink(facts)
            except Exception as exc:  # a full disk must not keep the call from ending
                log.error("call %s: its record could not be written: %s", call.call_id[:12], exc)

    def finished(self, call: RecordedCall) -> None:
        """The phone forgets the call: record it if `ended` was never called."""
        self.ended(call)

    def flush(self, calls: Sequence[RecordedCall]) -> None:
        """siproc stops now: a record for every call that still has none."""
        for call in calls:
            self.ended(call)


def facts_of(call: RecordedCall, times: _Times) -> CallFacts:
    """The facts of ``call`` (ended) with its ``times``."""
    assert times.ended is not None
    status = call.end_status or 500
    reason = call.end_reason or ("handler failed to start" if call.handler is None else "ended")
    # an unanswered incoming call we refused ends with "hung up before answer" (no BYE)
    local = times.ended_locally or reason.startswith("hung up")
    who = ended_by(
        status=status,
        reason=reason,
        ended_locally=local,
        handler_gone=times.handler_gone,
        stopping=times.stopping,
        limit=bool(call.limit_reached),
    )
    remote = call.remote.without_params("tag")
    # An incoming call refused before its answer went out negotiated nothing on the wire,
    # whatever siproc had prepared; an outgoing call has media once an SDP answer came.
    negotiated = call.negotiated if call.outgoing or times.answer_sent else None
    codec = None
    if negotiated is not None:
        codec = f"{negotiated.codec.name}/{negotiated.codec.clock_rate}"
    stats = call.stream.stats
    handler = call.handler
    code = handler.returncode if handler is not None and times.handler_gone else None
    target = call.transfer_target
    return CallFacts(
        call_id=call.call_id,
        direction="out" if call.outgoing else "in",
        local_uri=str(call.local.uri),
        local_name=call.local.display_name or "",
        remote_uri=str(remote.uri),
        remote_name=remote.display_name or "",
        request_uri=call.request_uri,
        created=min(times.created, times.ended),
        ringing=times.ringing,
        early_media=times.early_media,
        answered=times.answered,
        ended=times.ended,
        status=status if 100 <= status <= 699 else 500,
        reason=reason,
        ended_by=who,
        codec=codec,
        srtp=negotiated is not None and negotiated.srtp is not None,
        packets_sent=stats.packets_sent,
        packets_received=stats.packets_received,
        packets_lost=max(0, stats.lost),
        jitter_ms=stats.jitter_ms,
        rtt_ms=stats.rtt_ms,
        recordings=tuple(call.recordings),
        transfer_target=target,
        referred_by=call.referred_by or None,
        handler_exit=code if code is not None and code >= 0 else None,
        handler_signal=-code if code is not None and code < 0 else None,
    )
