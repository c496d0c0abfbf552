"""SAY: speak a text to the far end of one call (text to speech, net/tts.py).

Theory of operation: ``SAY <text>`` starts rendering at once, off the event loop (or takes the
rendering from the cache), at the rate of the call's codec (16 kHz while no codec is agreed
yet, which the player resamples for a narrowband codec). When it is ready it plays as PLAY
plays a file: mixed with the others, from the start of the call's media (so a SAY given at
RINGING or PROGRESS is ready when the call connects) and stoppable.

Naming: the handler's n-th SAY in a call (counting from 1, every SAY line that parsed) ends
with ``STOPPED say:<n>`` (not with the cache file's name, so a handler can tell it from its own
PLAYs): when it has played, when STOP or a GATHER's ``bargein`` stops it, or, if it fails, with
``ERROR SAY <reason>`` instead. STOP first stops the newest SAY still being rendered, if any,
then the file started last. A SAY whose call ends is dropped silently (DISCONNECTED says it).

The name is put on the way out: :class:`CallSpeech` wraps the stream's ``on_stopped``, which
reports the cache file's path, and gives it the SAY's name instead (the first SAY still playing
that file, in the order they started).

A call has one `CallSpeech` from its first SAY on (``Call.say``); it sees the call as a
`SpeakingCall`, the few things it reads and the one it calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from siproc.calls.call_state import CallState
from siproc.logs import CallLog
from siproc.media.player import MediaFileError
from siproc.net.media_stream import MediaStream
from siproc.net.tts import TextToSpeech, TtsError
from siproc.sdp.offer_answer import NegotiatedMedia

__all__ = ["MAX_RENDERING", "UNKNOWN_RATE", "CallSpeech", "SpeakingCall"]

UNKNOWN_RATE = 16000  # Hz rendered for a call whose codec is not agreed yet
#: Renders one call may have under way (a STOPped SAY's render goes on for the cache and
#: counts until it ends); a SAY beyond them is ``ERROR SAY``, not one more engine run queued.
MAX_RENDERING = 8


class SpeakingCall(Protocol):
    """What SAY uses of a call (`siproc.calls.call.Call` is one)."""

    stream: MediaStream
    log: CallLog

    @property
    def state(self) -> CallState: ...
    @property
    def negotiated(self) -> NegotiatedMedia | None: ...
    @property
    def ended(self) -> bool: ...
    def report_error(self, command: str, reason: str) -> None: ...


class CallSpeech:
    """The SAYs of one call; see the module docstring. ``tts``: the phone's engine and cache;
    ``loop``: where the renderings run."""

    def __init__(
        self, call: SpeakingCall, tts: TextToSpeech, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.call = call
        self.tts = tts
        self.loop = loop
        self._count = 0
        self._pending: dict[int, asyncio.Task[None]] = {}  # rendering, in the order given
        self._rendering: set[asyncio.Task[None]] = set()  # also those STOP took off the call
        self._playing: list[tuple[str, str]] = []  # (file, SAY name) in the order they started
        stopped = call.stream.on_stopped
        self._on_stopped: Callable[[str], None] | None = stopped
        call.stream.on_stopped = self._stopped

    def say(self, text: str) -> None:
        """``SAY <text>`` (the line parsed and unescaped)."""
        call = self.call
        self._count += 1
        number = self._count
        if call.state in (CallState.ENDED, CallState.TERMINATING) or call.stream.closed:
            return call.report_error("SAY", f"the call is {call.state.value}")
        try:
            self.tts.command()
        except TtsError as exc:
            return call.report_error("SAY", str(exc))
        if len(self._rendering) >= MAX_RENDERING:
            return call.report_error("SAY", f"{MAX_RENDERING} SAYs of this call are being rendered")
        rate = call.stream.sample_rate if call.negotiated is not None else UNKNOWN_RATE
        task = self.loop.create_task(self._render_and_play(number, text, rate))
        self._pending[number] = task
        self._rendering.add(task)
        task.add_done_callback(self._rendering.discard)
        return None

    async def _render_and_play(self, number: int, text: str, rate: int) -> None:
        call = self.call
        try:
            path, cached = await self.tts.render(text, rate)
        except TtsError as exc:
            if self._pending.pop(number, None) is not None and not call.ended:
                call.report_error("SAY", str(exc))
            return
        except Exception as exc:  # a bug: this SAY fails, the call goes on
            call.log.exception("SAY %d failed", number)
            if self._pending.pop(number, None) is not None and not call.ended:
                call.report_error("SAY", f"internal error ({type(exc).__name__})")
            return
        if self._pending.pop(number, None) is None:  # stopped while it was rendered
            return
        if call.state in (CallState.ENDED, CallState.TERMINATING) or call.stream.closed:
            return
        name = str(path)
        try:
            call.stream.play(name)
        except MediaFileError as exc:
            return call.report_error("SAY", exc.reason)
        self._playing.append((name, f"say:{number}"))
        call.log.info(
            "SAY %d plays%s (%d characters)", number, " from the cache" * cached, len(text)
        )

    def stop_pending(self) -> bool:
        """STOP: stop the newest SAY still being rendered; False if there is none."""
        if not self._pending:
            return False
        number = max(self._pending)
        del self._pending[number]  # its render goes on, for the cache; it will not play
        self._report(f"say:{number}")
        return True

    def stop_all(self) -> int:
        """Bargein: stop every SAY still being rendered (the playing ones are stopped with the
        other files); how many."""
        numbers = sorted(self._pending)
        self._pending.clear()
        for number in numbers:
            self._report(f"say:{number}")
        return len(numbers)

    def _stopped(self, name: str) -> None:
        for index, (file, label) in enumerate(self._playing):
            if file == name:
                del self._playing[index]
                name = label
                break
        self._report(name)

    def _report(self, name: str) -> None:
        if self._on_stopped is not None:
            self._on_stopped(name)
