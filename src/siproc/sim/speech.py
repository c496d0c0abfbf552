"""SAY and GATHER in the simulator, as siproc does them (calls/say.py, calls/gather.py).

Theory of operation
-------------------
GATHER: :class:`SimGather` drives siproc's own pure collector,
:class:`~siproc.calls.gather.KeyCollector`, the way :class:`~siproc.calls.gather.CallGather`
drives it for a real call: one collector and one timer; every key the far end presses is first
told to the handler as ``DTMF <key>`` and then given to the collector, so a ``GATHERED`` comes
after the ``DTMF`` that completes it; a new GATHER ends the running one (``GATHERED <keys>
cancelled``); the end of the call drops it silently; ``bargein`` stops the prompts at the first
key (every SAY still being rendered, in the order they were given, then every file and SAY
playing, the newest first, each with its ``STOPPED``), before the ``GATHERED``.

SAY: :class:`SimSpeech` numbers the SAYs as siproc does (the n-th SAY line that parsed ends
with ``STOPPED say:<n>``) and plays each like a file, for a duration that depends on the mode:

* ``engine`` (siproc's way): the engine siproc would use (SIPROC_TTS_COMMAND, or espeak-ng on
  PATH) renders the text, through siproc's own :class:`~siproc.net.tts.TextToSpeech` and its
  cache (SIPROC_TTS_CACHE_DIR); the SAY lasts as long as the speech. No engine: ``ERROR SAY
  no text-to-speech engine ...`` at once, an engine that fails: ``ERROR SAY <its reason>``,
  exactly siproc's words. STOP while a SAY is being rendered stops that SAY (the newest first).
* ``estimate`` (no engine needed, for CI): no rendering; a SAY lasts
  :func:`estimate_seconds` (espeak-ng's default pace, 175 words a minute, at least
  :data:`MIN_SAY_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

import soundfile

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.gather import KeyCollector
from siproc.net.tts import TextToSpeech, TtsError

if TYPE_CHECKING:
    from siproc.sim.runner import Simulation

__all__ = ["MIN_SAY_SECONDS", "WORDS_PER_MINUTE", "SimGather", "SimSpeech", "estimate_seconds"]

log = logging.getLogger("siproc.sim")

#: The pace of the ``estimate`` mode: espeak-ng's default speed (its ``-s``), words a minute.
WORDS_PER_MINUTE = 175
#: The shortest SAY in the ``estimate`` mode, seconds (espeak-ng's pauses around a word).
MIN_SAY_SECONDS = 0.5


def estimate_seconds(text: str) -> float:
    """How long ``text`` takes to say at :data:`WORDS_PER_MINUTE` (at least the minimum)."""
    return max(MIN_SAY_SECONDS, len(text.split()) * 60.0 / WORDS_PER_MINUTE)


class SimSpeech:
    """The SAYs of the simulated call; ``tts`` None is the ``estimate`` mode."""

    def __init__(self, sim: Simulation, tts: TextToSpeech | None) -> None:
        self.sim = sim
        self.tts = tts
        self._count = 0
        self._pending: dict[int, asyncio.Task[None]] = {}  # being rendered, by number
        self._tasks: set[asyncio.Task[None]] = set()  # every render (a stopped one goes on)

    def say(self, text: str) -> None:
        """``SAY <text>`` (parsed and unescaped), as calls/say.py answers it."""
        sim = self.sim
        self._count += 1
        number = self._count
        if sim.state is CallState.ENDED:
            return sim.error("SAY", f"the call is {sim.state.value}")
        if self.tts is None:
            seconds = estimate_seconds(text)
            sim.note("sim", f"say:{number} lasts {seconds:.2f} s (estimated, no engine run)")
            sim.play_for(f"say:{number}", seconds)
            return None
        try:
            self.tts.command()
        except TtsError as exc:
            return sim.error("SAY", str(exc))
        task = asyncio.ensure_future(self._render_and_play(number, text))
        self._pending[number] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _render_and_play(self, number: int, text: str) -> None:
        sim = self.sim
        assert self.tts is not None
        try:
            path, cached = await self.tts.render(text, sim.rate)
            seconds = soundfile.info(str(path)).duration
        except (TtsError, RuntimeError) as exc:  # RuntimeError: soundfile, a cache file gone
            if self._pending.pop(number, None) is not None and sim.state is not CallState.ENDED:
                sim.error("SAY", str(exc))
            return
        if self._pending.pop(number, None) is None or sim.state is CallState.ENDED:
            return  # stopped while it was rendered, or the call is over
        engine = os.path.basename(self.tts.command()[0])
        how = "from the cache" if cached else f"rendered by {engine}"
        sim.note("sim", f"say:{number} lasts {seconds:.2f} s ({how})")
        sim.play_for(f"say:{number}", seconds)

    def stop_pending(self) -> bool:
        """STOP: stop the newest SAY still being rendered; False if there is none."""
        if not self._pending:
            return False
        number = max(self._pending)
        del self._pending[number]  # its render goes on, for the cache; it will not play
        self.sim.event(protocol.Stopped(f"say:{number}"))
        return True

    def stop_all(self) -> int:
        """Bargein: stop every SAY still being rendered; how many."""
        numbers = sorted(self._pending)
        self._pending.clear()
        for number in numbers:
            self.sim.event(protocol.Stopped(f"say:{number}"))
        return len(numbers)

    def drop(self) -> None:
        """The call ended: the SAYs being rendered will not play (no event)."""
        self._pending.clear()

    async def close(self) -> None:
        """The run is over: stop the renders still running."""
        running = list(self._tasks)
        self._pending.clear()
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, TtsError):
                await task


class SimGather:
    """The GATHER of the simulated call: one :class:`KeyCollector` at a time and its timer."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._collector: KeyCollector | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, command: protocol.Gather) -> None:
        """``GATHER ...``: a running GATHER ends first, as ``GATHERED <keys> cancelled``."""
        sim = self.sim
        if sim.state is CallState.ENDED:
            return sim.error("GATHER", f"the call is {sim.state.value}")
        if self._collector is not None:
            self._report(self._collector.cancel())
        self._collector = KeyCollector(command, sim.clock())
        self._rearm()
        return None

    def on_key(self, key: str) -> None:
        """A DTMF key the handler has just been told of."""
        collector = self._collector
        if collector is None or collector.done or self.sim.state is CallState.ENDED:
            return
        first = not collector.keys
        result = collector.key(key, self.sim.clock())
        if first and collector.command.bargein:
            self._barge_in()
        self._report(result)
        self._rearm()

    def close(self) -> None:
        """The call is over: drop the GATHER without an event."""
        self._collector = None
        self._rearm()

    def _barge_in(self) -> None:
        sim = self.sim
        stopped = sim.speech.stop_all()
        while sim.stop_last() is not None:
            stopped += 1
        if stopped:
            sim.note("sim", f"GATHER bargein: {stopped} prompt(s) stopped")

    def _on_timer(self) -> None:
        self._timer = None
        collector = self._collector
        if collector is None:
            return
        self._report(collector.handle_timer(self.sim.clock()))
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = None if self._collector is None else self._collector.next_deadline()
        if deadline is not None:
            self._timer = self.sim.later(max(0.0, deadline - self.sim.clock()), self._on_timer)

    def _report(self, result: protocol.Gathered | None) -> None:
        if result is not None:
            self.sim.event(result)
