"""GATHER: collect a call's DTMF keys into one ``GATHERED <keys> <why>`` event.

Theory of operation: :class:`KeyCollector` is the pure state machine (DESIGN.md section 1,
rule 1). It is built with the GATHER command and ``now``; each key goes in with
:meth:`KeyCollector.key`, and the edge keeps one timer at :meth:`KeyCollector.next_deadline`
and calls :meth:`KeyCollector.handle_timer` when it fires. Whatever ends the collection
(``max`` keys in, the ``finish`` key, a ``timeout``, or :meth:`KeyCollector.cancel` for a
GATHER that replaces it) comes out once, as a :class:`~siproc.calls.protocol.Gathered`, and the
collector is DONE.

Timing: until the first key the deadline is ``first`` seconds after the GATHER (``timeout``
when ``first`` is not given); after each key it is ``timeout`` seconds after that key (the
inter-digit timeout). A key on the deadline itself still counts: keys are handled before
timers at the same instant.

:class:`CallGather` drives one collector for a call (seen as a `GatheringCall`): its deadline is
one of those the call's one timer waits for (``next_deadline``/``handle_timer``, as the session
machines'), and the call hands it every DTMF key it tells the handler, whatever carried it (RFC
4733 events, SIP INFO, in-band tones), so the handler still gets its ``DTMF <key>`` events
during a GATHER, each before the ``GATHERED`` it completes. A new GATHER ends the running one
with ``GATHERED <keys> cancelled``; when the call ends (HANGUP, BYE ...) a running GATHER ends
silently (the handler hears DISCONNECTED). ``bargein`` stops the prompts at the first key: every
file playing and every SAY (calls/say.py), each of which reports its ``STOPPED``.
"""

from __future__ import annotations

import enum
import logging
from typing import Protocol

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.say import CallSpeech
from siproc.logs import CallLog
from siproc.net.media_stream import MediaStream

__all__ = ["CallGather", "GatherState", "GatheringCall", "KeyCollector"]

log = logging.getLogger(__name__)

#: A GATHER given in these states is refused: the call is ending.
_ENDING = (CallState.ENDED, CallState.TERMINATING, CallState.CANCELLING)


class GatherState(enum.Enum):
    COLLECTING = "collecting"
    DONE = "done"


_TRANSITIONS = {GatherState.COLLECTING: {GatherState.DONE}, GatherState.DONE: set()}


class KeyCollector:
    """One GATHER in virtual time; see the module docstring."""

    def __init__(self, command: protocol.Gather, now: float) -> None:
        self.command = command
        self.state = GatherState.COLLECTING
        self.keys = ""
        self._deadline: float | None = now + command.first_timeout

    def _set_state(self, new: GatherState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"GATHER: illegal {self.state.value} -> {new.value}")
        log.debug("GATHER %s -> %s", self.state.value, new.value)
        self.state = new

    def _end(self, why: str) -> protocol.Gathered:
        self._set_state(GatherState.DONE)
        self._deadline = None
        return protocol.Gathered(self.keys, why)

    @property
    def done(self) -> bool:
        return self.state is GatherState.DONE

    def key(self, key: str, now: float) -> protocol.Gathered | None:
        """One DTMF key (0-9 * # A-D); the result if it ends the collection. Keys after the
        end are ignored (None)."""
        if self.done:
            return None
        if key == self.command.finish:
            return self._end("finish")
        self.keys += key
        if len(self.keys) >= self.command.max_keys:
            return self._end("max")
        self._deadline = now + self.command.timeout
        return None

    def next_deadline(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> protocol.Gathered | None:
        """The edge's timer fired at ``now``: the result if the deadline has passed."""
        if self._deadline is None or now < self._deadline:
            return None
        return self._end("timeout")

    def cancel(self) -> protocol.Gathered | None:
        """A later GATHER replaces this one: the keys so far, ``cancelled`` (None if done)."""
        return None if self.done else self._end("cancelled")


class GatheringCall(Protocol):
    """What GATHER uses of a call (`siproc.calls.call.Call` is one)."""

    stream: MediaStream
    log: CallLog
    speech: CallSpeech | None  # its SAYs, which a bargein stops

    @property
    def state(self) -> CallState: ...
    @property
    def ended(self) -> bool: ...
    def now(self) -> float: ...
    def rearm(self) -> None: ...
    def event(self, event: protocol.Event) -> None: ...
    def report_error(self, command: str, reason: str) -> None: ...


class CallGather:
    """The GATHER of one call: one collector at a time, whose deadline the call's timer keeps."""

    def __init__(self, call: GatheringCall) -> None:
        self.call = call
        self._collector: KeyCollector | None = None

    @property
    def active(self) -> bool:
        return self._collector is not None and not self._collector.done

    def start(self, command: protocol.Gather) -> None:
        """``GATHER ...``: refused once the call is ending; a running GATHER ends first, as
        ``GATHERED <keys> cancelled``."""
        call = self.call
        if call.state in _ENDING:
            return call.report_error("GATHER", f"the call is {call.state.value}")
        if self._collector is not None:
            self._report(self._collector.cancel())
        self._collector = KeyCollector(command, call.now())
        call.rearm()
        return None

    def on_key(self, key: str) -> None:
        """A DTMF key the handler has just been told of."""
        collector = self._collector
        if collector is None or collector.done or self.call.ended:
            return
        first = not collector.keys
        result = collector.key(key, self.call.now())
        if first and collector.command.bargein:
            self._barge_in()
        self._report(result)
        self.call.rearm()

    def close(self) -> None:
        """The call is over: drop the GATHER without an event."""
        self._collector = None

    def _barge_in(self) -> None:
        call = self.call
        stopped = call.speech.stop_all() if call.speech is not None else 0
        while not call.stream.closed and call.stream.stop_last() is not None:
            stopped += 1
        if stopped:
            call.log.info("GATHER bargein: %d prompt(s) stopped", stopped)

    def next_deadline(self) -> float | None:
        collector = self._collector
        return None if collector is None else collector.next_deadline()

    def handle_timer(self, now: float) -> None:
        """The call's timer fired at ``now``: ``GATHERED <keys> timeout`` if it is due."""
        collector = self._collector
        if collector is None:
            return
        if self.call.ended:
            return self.close()
        self._report(collector.handle_timer(now))
        self.call.rearm()
        return None

    def _report(self, result: protocol.Gathered | None) -> None:
        if result is None:
            return
        self.call.log.info("GATHERED %s %s", result.keys or "-", result.why)
        self.call.event(result)
