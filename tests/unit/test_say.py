"""SAY on a call (calls/say.py), on a fake call whose engine renders when the test says so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.say import MAX_RENDERING, UNKNOWN_RATE, CallSpeech
from siproc.media.player import MediaFileError
from siproc.net.tts import TtsError


class FakeTts:
    """Renders complete when the test resolves them; records (text, rate)."""

    def __init__(self, engine: bool = True) -> None:
        self.engine = engine
        self.asked: list[tuple[str, int]] = []
        self.pending: list[asyncio.Future[tuple[Path, bool]]] = []

    def command(self) -> tuple[str, ...]:
        if not self.engine:
            raise TtsError("no text-to-speech engine: espeak-ng is not installed")
        return ("engine", "{file}")

    async def render(self, text: str, rate: int) -> tuple[Path, bool]:
        self.asked.append((text, rate))
        future: asyncio.Future[tuple[Path, bool]] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return await future


class FakeStream:
    def __init__(self) -> None:
        self.closed = False
        self.sample_rate = 8000
        self.playing: list[str] = []
        self.on_stopped = None  # set by the call, wrapped by CallSpeech

    def play(self, name: str) -> None:
        if name.endswith("bad.wav"):
            raise MediaFileError(name, "unreadable audio file")
        self.playing.append(name)

    def stop_last(self) -> str | None:
        name = self.playing.pop() if self.playing else None
        if name is not None:
            self.on_stopped(name)  # type: ignore[misc]
        return name

    def finish(self, name: str) -> None:  # the file played to its end
        self.playing.remove(name)
        self.on_stopped(name)  # type: ignore[misc]


def fake_call(tts: FakeTts, negotiated: bool = True) -> SimpleNamespace:
    events: list[str] = []
    call = SimpleNamespace(
        state=CallState.CONNECTED,
        stream=FakeStream(),
        negotiated=object() if negotiated else None,
        speech=None,
        events=events,
        log=logging.getLogger("test"),
        tts=tts,
        ended=False,
    )
    call.event = lambda event: events.append(protocol.format_event(event))
    call.report_error = lambda verb, reason: events.append(f"ERROR {verb} {reason}")
    call.stream.on_stopped = lambda name: call.event(protocol.Stopped(name))
    return call


def say(call: SimpleNamespace, text: str) -> None:
    """``SAY <text>`` as the call does it (``Call.say``): its speech from the first SAY on."""
    if call.speech is None:
        loop = asyncio.get_running_loop()
        call.speech = CallSpeech(call, call.tts, loop)  # type: ignore[arg-type]
    call.speech.say(text)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_say_plays_when_rendered_and_ends_as_say_n() -> None:
    async def main() -> None:
        tts = FakeTts()
        call = fake_call(tts)
        say(call, "hello")
        say(call, "hello")
        await settle()
        assert tts.asked == [("hello", 8000), ("hello", 8000)]  # at the codec's rate
        assert call.stream.playing == []  # nothing until rendered
        tts.pending[1].set_result((Path("/c/h.wav"), True))
        tts.pending[0].set_result((Path("/c/h.wav"), False))
        await settle()
        assert call.stream.playing == ["/c/h.wav", "/c/h.wav"]
        call.stream.finish("/c/h.wav")  # same file twice: named in the order they started
        assert call.events == ["STOPPED say:2"]
        call.stream.stop_last()
        assert call.events == ["STOPPED say:2", "STOPPED say:1"]
        call.stream.on_stopped("mine.wav")  # a PLAY keeps its own name
        assert call.events[-1] == "STOPPED mine.wav"

    asyncio.run(main())


def test_stop_while_rendering_stops_the_newest_say_and_it_never_plays() -> None:
    async def main() -> None:
        tts = FakeTts()
        call = fake_call(tts, negotiated=False)
        say(call, "one")
        say(call, "two")
        await settle()
        assert tts.asked[0][1] == UNKNOWN_RATE  # no codec yet: rendered wide
        assert call.speech.stop_pending() is True
        assert call.events == ["STOPPED say:2"]
        for future in tts.pending:
            future.set_result((Path("/c/x.wav"), False))
        await settle()
        assert call.stream.playing == ["/c/x.wav"]  # only SAY 1
        assert call.speech.stop_pending() is False

    asyncio.run(main())


def test_bargein_stops_every_say_still_rendering() -> None:
    async def main() -> None:
        tts = FakeTts()
        call = fake_call(tts)
        for text in ("a", "b", "c"):
            say(call, text)
        await settle()
        assert call.speech.stop_all() == 3
        assert call.events == ["STOPPED say:1", "STOPPED say:2", "STOPPED say:3"]

    asyncio.run(main())


def test_say_errors() -> None:
    async def main() -> None:
        call = fake_call(FakeTts(engine=False))
        say(call, "hi")
        assert call.events == ["ERROR SAY no text-to-speech engine: espeak-ng is not installed"]

        tts = FakeTts()
        call = fake_call(tts)
        say(call, "fails")
        say(call, "unplayable")
        await settle()
        tts.pending[0].set_exception(TtsError("espeak-ng failed (exit status 1): no voice"))
        tts.pending[1].set_result((Path("/c/bad.wav"), False))
        await settle()
        assert call.events == [
            "ERROR SAY espeak-ng failed (exit status 1): no voice",
            "ERROR SAY unreadable audio file",
        ]

        call = fake_call(tts)
        call.state = CallState.TERMINATING
        say(call, "late")
        assert call.events == ["ERROR SAY the call is terminating"]

    asyncio.run(main())


def test_a_say_whose_call_ended_is_dropped_silently() -> None:
    async def main() -> None:
        tts = FakeTts()
        call = fake_call(tts)
        say(call, "bye")
        await settle()
        call.state, call.ended, call.stream.closed = CallState.ENDED, True, True
        tts.pending[0].set_result((Path("/c/bye.wav"), False))
        await settle()
        assert call.events == [] and call.stream.playing == []

    asyncio.run(main())


def test_a_handler_cannot_queue_renders_without_end() -> None:
    """Every SAY of a new text is an engine run (seconds each, MAX_RENDERS at a time, going
    on after the call for the cache); STOP takes a SAY off the call but not its render. A
    handler writing SAY 1, SAY 2 ... (with or without STOPs) must meet a bound, not queue
    hours of engine runs."""

    async def main() -> None:
        tts = FakeTts()
        call = fake_call(tts)
        for n in range(1000):
            say(call, f"number {n}")
            if n % 2:
                call.speech.stop_pending()
        await settle()
        assert len(tts.asked) == MAX_RENDERING
        errors = [e for e in call.events if e.startswith("ERROR SAY")]
        assert len(errors) == 1000 - MAX_RENDERING
        assert errors[0] == f"ERROR SAY {MAX_RENDERING} SAYs of this call are being rendered"
        tts.pending[0].set_result((Path("/c/0.wav"), False))  # one render done: room for one
        await settle()
        say(call, "one more")
        await settle()
        assert tts.asked[-1] == ("one more", 8000)

    asyncio.run(main())
