"""Run one handler against a scripted far end, as siproc would, without any network.

Theory of operation
-------------------
The handler is started by siproc's own :class:`~siproc.calls.handler.HandlerProcess` (its own
process group, stdin and stdout pipes, stderr passed through) with the environment siproc gives
it (:func:`~siproc.calls.environment.handler_environment`). Its command lines are parsed by
siproc's parser (:func:`~siproc.calls.protocol.parse_command`) and answered as siproc's call
layer answers them: ``CONNECTED`` after ``ANSWER``, ``ERROR`` for a command the call's state does
not allow, ``STOPPED`` when a played file is over (its real length), a recording written by
siproc's recorder. At the end, as in siproc: ``DISCONNECTED``, stdin closed, SIGTERM to the group
:data:`~siproc.calls.call.TERM_DELAY` later, SIGKILL after :data:`~siproc.calls.call.HANDLER_GRACE`.

``SAY`` and ``GATHER`` are answered as siproc answers them, by siproc's own code
(:mod:`siproc.sim.speech`): GATHER through siproc's key collector, with the ``DTMF`` events
still flowing, cancel and bargein; SAY rendered by siproc's engine (or, with ``--tts
estimate``, timed from its words) and ended by ``STOPPED say:<n>``. An unknown command is
answered ``ERROR <verb> unknown command``, as siproc answers it, and noted in the transcript; it
does not fail the run.

The run fails (exit status 1) when an ``expect`` is not met (the rest of the script is skipped),
a far-end step is impossible (``answer`` a call that is not ringing), a PLAY names a file siproc
could not play, the handler exits with a status other than 0 (unless ``expect exit`` says so),
or it ignores SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TextIO

import numpy as np
import numpy.typing as npt
import soundfile

from siproc.calls import protocol
from siproc.calls.call import HANDLER_GRACE, TERM_DELAY
from siproc.calls.call_state import CallState
from siproc.calls.environment import base_environment, handler_environment
from siproc.calls.handler import HandlerProcess, HandlerSpawnError
from siproc.media.player import FilePlayer, MediaFileError
from siproc.media.recorder import CallRecorder, RecordFileError
from siproc.net.tts import TextToSpeech
from siproc.sim.script import (
    Audio,
    CallStep,
    Expect,
    ExpectExit,
    FarEnd,
    Keys,
    Script,
    Step,
    TextMessage,
    Wait,
)
from siproc.sim.speech import SimGather, SimSpeech

__all__ = ["RATE", "Simulation"]

log = logging.getLogger("siproc.sim")

#: Sample rate of the simulated call (G.711).
RATE = 8000
#: Samples per 20 ms frame.
FRAME = RATE // 50
#: Seconds between the keys of one ``dtmf`` step (a key press and a pause).
KEY_INTERVAL = 0.1
#: Seconds after TRANSFER before the far end's BYE ends the call ("transferred").
TRANSFER_DELAY = 0.1

S = CallState
_UNANSWERED = (S.INCOMING, S.EARLY_MEDIA)
_RINGING_OUT = (S.CALLING, S.EARLY)


@dataclass(frozen=True, slots=True)
class _Command:
    at: float
    line: str
    verb: str
    argument: str


class Simulation:
    """One run of ``argv`` under ``script``; :meth:`run` returns the exit status (0 or 1)."""

    rate = RATE  # the call's codec rate (SAY renders at it)

    def __init__(
        self,
        script: Script,
        argv: list[str],
        out: TextIO,
        env: dict[str, str] | None = None,
        tts: TextToSpeech | None = None,
    ) -> None:
        """``tts`` renders SAY as siproc would; None times each SAY from its words."""
        self.script = script
        self.argv = argv
        self.out = out
        self.env = base_environment(os.environ if env is None else env)
        self.state = S.INCOMING if script.call.incoming else S.CALLING
        self.failures: list[str] = []
        self.commands: list[_Command] = []
        self.handler: HandlerProcess | None = None
        self.returncode: int | None = None
        self._cursor = 0  # commands before it were matched (or passed over) by an expect
        self._news = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._playing: list[tuple[str, asyncio.TimerHandle]] = []
        self._recorder: CallRecorder | None = None
        self._recorded_until = 0.0
        self.speech = SimSpeech(self, tts)
        self.gather = SimGather(self)
        self._timers: list[asyncio.TimerHandle] = []
        self._term_sent = False

    # -- transcript ------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the start (the transcript's times)."""
        return self._loop.time() - self._start

    def clock(self) -> float:
        """The loop's clock (the ``now`` of siproc's pure cores)."""
        return self._loop.time()

    def note(self, who: str, text: str) -> None:
        self.out.write(f"{self.now():8.3f}  {who:<8} {text}\n")
        self.out.flush()

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.note("FAILED", text)

    def _where(self, step: Step) -> str:
        return f"{self.script.name}:{step.line}: {step.text}"

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> int:
        call = self.script.call
        if not await self._start_handler(call):
            return 1
        for step in self.script.steps[1:]:
            if not await self._do(step):
                break
        if self.state is not S.ENDED:
            self.note("sim", "end of script: the far end hangs up")
            self._far_end_hangup()
        await self._handler_gone()
        return self._verdict()

    async def _start_handler(self, call: CallStep) -> bool:
        remote_uri = str(call.remote.uri)
        env = handler_environment(
            self.env,
            remote=call.remote,
            remote_contact=remote_uri,
            outgoing=not call.incoming,
            call_id=f"sim-{secrets.token_hex(8)}@siproc-sim.invalid",
            local_uri=call.local_uri,
            request_uri=call.local_uri if call.incoming else remote_uri,
            invite_headers=call.headers,
        )
        self.note(f"line {call.line}", call.text)
        try:
            self.handler = await HandlerProcess.spawn(
                self.argv, env, None, self._on_line, self._on_exit, log
            )
        except HandlerSpawnError as exc:
            self.fail(str(exc))
            return False
        self.note("sim", f"handler started (pid {self.handler.pid})")
        return True

    async def _do(self, step: Step) -> bool:
        """Carry out one step; False stops the script (a failed expectation)."""
        match step:
            case Expect(absent=True):
                self.note(f"line {step.line}", step.text)
                return await self._expect_none(step)
            case Expect():
                self.note(f"line {step.line}", step.text)
                return await self._expect(step)
            case ExpectExit():
                self.note(f"line {step.line}", step.text)
                return await self._expect_exit(step)
        self.note(f"line {step.line}", step.text)
        match step:
            case Wait(seconds=seconds):
                await asyncio.sleep(seconds)
            case Keys(digits=digits):
                await self._keys(step, digits)
            case TextMessage(message=text):
                if self._connected(step):
                    self.event(protocol.MessageReceived(text))
            case Audio():
                await self._audio(step)
            case FarEnd():
                self._far_end(step)
        return True

    def _connected(self, step: Step) -> bool:
        if self.state is S.CONNECTED:
            return True
        self.fail(f"{self._where(step)}: the call is {self.state.value}, not connected")
        return False

    # -- far end ---------------------------------------------------------------------------

    def _far_end(self, step: FarEnd) -> None:
        action = step.action
        if action == "hangup":
            if self.state is S.ENDED:
                self.note("sim", "the call is over already")
            else:
                self._far_end_hangup()
        elif action in ("hold", "resume"):
            if self._connected(step):
                self.event(protocol.HoldEvent() if action == "hold" else protocol.ResumeEvent())
        elif self.state not in _RINGING_OUT:
            self.fail(f"{self._where(step)}: the call is {self.state.value}, not being placed")
        elif action == "ringing":
            self.state = S.EARLY
            self.event(protocol.RingingEvent())
        elif action == "progress":
            self.state = S.EARLY
            self.event(protocol.ProgressEvent())
        elif action == "answer":
            self.state = S.CONNECTED
            self.event(protocol.Connected())
        else:  # reject
            self._finish(step.status, step.reason)

    def _far_end_hangup(self) -> None:
        if self.state in _UNANSWERED:
            self._finish(487, "cancelled by the caller")
        elif self.state in _RINGING_OUT:
            self._finish(480, "Temporarily Unavailable")
        else:
            self._finish(200, "remote hangup")

    async def _keys(self, step: Keys, digits: str) -> None:
        if not self._connected(step):
            return
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(KEY_INTERVAL)
            if self.state is not S.CONNECTED:
                return
            self.event(protocol.DtmfReceived(digit))

    async def _audio(self, step: Audio) -> None:
        samples: npt.NDArray[np.int16]
        if step.kind == "file":
            try:
                player = FilePlayer.open(step.file, RATE)
            except MediaFileError as exc:
                self.fail(f"{self._where(step)}: {exc}")
                return
            frames = []
            while (frame := player.read_frame(FRAME)) is not None:
                frames.append(frame.copy())
            samples = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        else:
            count = round(step.seconds * RATE)
            t = np.arange(count) / RATE
            amplitude = 0.0 if step.kind == "silence" else 0.5 * 32767
            samples = (amplitude * np.sin(2 * np.pi * step.frequency * t)).astype(np.int16)
        self._record(samples)
        await asyncio.sleep(len(samples) / RATE)

    # -- handler commands ------------------------------------------------------------------

    def _on_line(self, line: str) -> None:
        if not line.strip():
            return
        self.note("handler", line)
        verb, _, argument = line.strip().partition(" ")
        self.commands.append(_Command(self.now(), line, verb.upper(), argument.strip()))
        self._news.set()
        try:
            command = protocol.parse_command(line)
        except protocol.CommandError as exc:
            if exc.reason == "unknown command":
                self.note("sim", f"unknown command {exc.command}: siproc answers ERROR")
            return self.error(exc.command, exc.reason)
        if command is not None:
            self._execute(command)
        return None

    def _execute(self, command: protocol.Command) -> None:
        state = self.state
        match command:
            case protocol.Ringing() | protocol.Progress() | protocol.Answer():
                verb = protocol.format_command(command)
                if state not in _UNANSWERED:
                    return self.error(verb, f"not possible while the call is {state.value}")
                if isinstance(command, protocol.Progress):
                    self.state = S.EARLY_MEDIA
                elif isinstance(command, protocol.Answer):
                    self.state = S.CONNECTED
                    self.event(protocol.Connected())
            case protocol.Hangup(status=status):
                if state is S.ENDED:
                    return self.error("HANGUP", "the call is already ended")
                self._hangup(status)
            case protocol.Play(file=file):
                self._play(file)
            case protocol.Stop():
                if self.speech.stop_pending():
                    return None
                if self.stop_last() is None:
                    return self.error("STOP", "nothing is playing")
            case protocol.Say(text=text):
                self.speech.say(text)
            case protocol.Gather():
                self.gather.start(command)
            case protocol.Record(file=None):
                if self._recorder is None:
                    return self.error("RECORD", "nothing is being recorded")
                self._stop_recording()
            case protocol.Record(file=str() as file, stereo=stereo):
                self._start_recording(file, stereo)
            case protocol.Message():
                if state is not S.CONNECTED:
                    return self.error("MESSAGE", f"not possible while the call is {state.value}")
            case protocol.Transfer(uri=uri):
                if state is not S.CONNECTED:
                    return self.error("TRANSFER", f"not possible while the call is {state.value}")
                self.note("sim", f"the far end accepts the transfer to {uri}")
                self.later(TRANSFER_DELAY, lambda: self._finish(200, "transferred"))
            case _:  # DTMF, HOLD, RESUME, sound cards: nothing the far end answers
                pass
        return None

    def _play(self, file: str) -> None:
        if self.state is S.ENDED:
            return self.error("PLAY", "the call is ended")
        try:
            player = FilePlayer.open(file, RATE)
        except MediaFileError as exc:
            self.fail(f"handler: PLAY {file}: {exc.reason}")
            return self.error("PLAY", str(exc))
        seconds = soundfile.info(file).duration
        player.close()
        self.play_for(file, seconds)
        return None

    def play_for(self, name: str, seconds: float) -> None:
        """``name`` (a file, or a SAY's ``say:<n>``) plays for ``seconds``, then STOPPED."""

        def stopped() -> None:
            self._playing = [(f, t) for f, t in self._playing if t is not timer]
            self.event(protocol.Stopped(name))

        timer = self.later(seconds, stopped)
        self._playing.append((name, timer))

    def stop_last(self) -> str | None:
        """Stop what was started last (STOP, bargein): its STOPPED; None if nothing plays."""
        if not self._playing:
            return None
        name, timer = self._playing.pop()
        timer.cancel()
        self.event(protocol.Stopped(name))
        return name

    def _start_recording(self, file: str, stereo: bool) -> None:
        if self.state is S.ENDED:
            return self.error("RECORD", "the call is ended")
        self._stop_recording()
        try:
            self._recorder = CallRecorder.open(file, RATE, stereo)
        except RecordFileError as exc:
            return self.error("RECORD", str(exc))
        self._recorded_until = self.now()
        return None

    def _record(self, samples: npt.NDArray[np.int16]) -> None:
        """The far end's audio into the recording, after the silence since the last."""
        if self._recorder is None:
            return
        gap = max(0, round((self.now() - self._recorded_until) * RATE))
        audio = np.concatenate([np.zeros(gap, np.int16), samples])
        for start in range(0, len(audio), FRAME):
            self._recorder.write(audio[start : start + FRAME], None)
        self._recorded_until = self.now() + len(samples) / RATE

    def _stop_recording(self) -> None:
        if self._recorder is not None:
            self._record(np.zeros(0, np.int16))
            self._recorder.close()
            self._recorder = None

    # -- the call's end --------------------------------------------------------------------

    def _hangup(self, status: int | None, *, handler_gone: bool = False) -> None:
        """Our side ends the call (calls/call.py `hangup`)."""
        if self.state in _UNANSWERED:
            if status is None:
                status = 480 if handler_gone else 603
            self._finish(status, "hung up before answer")
        elif self.state in _RINGING_OUT:
            self._finish(487, "Request Terminated")
        elif self.state is S.CONNECTED:
            self._finish(200, "hung up")

    def _finish(self, status: int, reason: str) -> None:
        if self.state is S.ENDED:
            return
        self.state = S.ENDED
        for _, timer in self._playing:
            timer.cancel()
        self._playing.clear()
        self.gather.close()
        self.speech.drop()
        self._stop_recording()
        self.note("sim", f"call ended: {status} {reason}")
        self._news.set()
        if self.handler is not None and self.returncode is None:
            self.event(protocol.Disconnected(status, reason))
            self.handler.close_stdin()
            self.later(TERM_DELAY, self._terminate)

    def _terminate(self) -> None:
        if self.handler is not None and self.returncode is None:
            self._term_sent = True
            self.note("sim", "SIGTERM to the handler's process group")
            self.handler.terminate(HANDLER_GRACE)

    def _on_exit(self, returncode: int) -> None:
        self.returncode = returncode
        if returncode >= 0:
            self.note("sim", f"handler exited with status {returncode}")
        else:
            self.note("sim", f"handler killed by {signal.Signals(-returncode).name}")
        self._news.set()
        if self.state is not S.ENDED:
            self._hangup(None, handler_gone=True)

    async def _handler_gone(self) -> None:
        while self.returncode is None:
            self._news.clear()
            await self._news.wait()
        for timer in self._timers:
            timer.cancel()
        self.gather.close()
        await self.speech.close()

    # -- expectations ----------------------------------------------------------------------

    async def _wait_news(self, deadline: float) -> bool:
        """Wait for a command or the handler's exit; False once ``deadline`` passed."""
        remaining = deadline - self._loop.time()
        if remaining <= 0:
            return False
        self._news.clear()
        try:
            await asyncio.wait_for(self._news.wait(), remaining)
        except TimeoutError:
            return False
        return True

    def _matches(self, command: _Command, expect: Expect) -> bool:
        if command.verb != expect.verb:
            return False
        pattern = expect.pattern
        argument = command.argument
        if command.verb in ("SAY", "MESSAGE"):  # the text, as siproc reads it
            argument = protocol.unescape_text(argument)
        if pattern is None or fnmatchcase(argument, pattern):
            return True
        # PLAY menu.wav also matches PLAY /usr/share/ivr/menu.wav
        return (
            command.verb in ("PLAY", "RECORD")
            and "/" not in pattern
            and fnmatchcase(os.path.basename(command.argument), pattern)
        )

    async def _expect(self, expect: Expect) -> bool:
        deadline = self._loop.time() + expect.within
        while True:
            for index in range(self._cursor, len(self.commands)):
                if self._matches(self.commands[index], expect):
                    self._cursor = index + 1
                    self.note("ok", f"line {expect.line}: {expect.text}")
                    return True
            if self.returncode is not None:
                why = "the handler exited without sending it"
                break
            if not await self._wait_news(deadline):
                why = f"not sent within {expect.within:g} s"
                break
        sent = [c.line for c in self.commands[self._cursor :]]
        what = "; it sent: " + ", ".join(sent) if sent else "; it sent nothing"
        self.fail(f"{self._where(expect)}: {why}{what}")
        return False

    async def _expect_none(self, expect: Expect) -> bool:
        """``expect no VERB [PATTERN] within T``: no such command among those not matched yet
        nor during the next T seconds (sooner if the handler exits)."""
        deadline = self._loop.time() + expect.within
        checked = self._cursor
        while True:
            for command in self.commands[checked:]:
                if self._matches(command, expect):
                    self.fail(f"{self._where(expect)}: it sent {command.line} at {command.at:.3f}")
                    return False
            checked = len(self.commands)
            if self.returncode is not None or not await self._wait_news(deadline):
                break
        self.note("ok", f"line {expect.line}: {expect.text}")
        return True

    async def _expect_exit(self, expect: ExpectExit) -> bool:
        deadline = self._loop.time() + expect.within
        while self.returncode is None:
            if not await self._wait_news(deadline):
                self.fail(f"{self._where(expect)}: still running after {expect.within:g} s")
                return False
        if expect.status is not None and self.returncode != expect.status:
            self.fail(f"{self._where(expect)}: it ended with {self.returncode}")
            return False
        self.note("ok", f"line {expect.line}: {expect.text}")
        return True

    # -- helpers ---------------------------------------------------------------------------

    def later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        timer = self._loop.call_later(delay, callback)
        self._timers.append(timer)
        return timer

    def event(self, event: protocol.Event) -> None:
        """Tell the handler ``event``; a DTMF key then goes to a running GATHER (as in
        calls/call.py: the ``DTMF`` event comes before the ``GATHERED`` it completes)."""
        self._send_line(protocol.format_event(event))
        if isinstance(event, protocol.DtmfReceived):
            self.gather.on_key(event.digit)

    def error(self, command: str, reason: str) -> None:
        self.event(protocol.ErrorEvent(command, reason))

    def _send_line(self, line: str) -> None:
        if self.handler is not None and self.returncode is None:
            self.note("event", line)
            self.handler.send(line)

    def _verdict(self) -> int:
        code = self.returncode
        if code == -signal.SIGKILL and self._term_sent:
            self.fail(f"the handler ignored SIGTERM and was killed after {HANDLER_GRACE:g} s")
        elif code is not None and code > 0 and not self.script.expects_exit:
            self.fail(f"the handler exited with status {code}")
        elif code is not None and code < 0 and not self._term_sent:
            self.fail(f"the handler was killed by {signal.Signals(-code).name}")
        return 1 if self.failures else 0
