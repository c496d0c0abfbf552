"""A small kit for call handlers written in Python (siproc(1), HANDLER KIT).

siproc runs one handler per call; the handler writes commands on its stdout and reads events on
its stdin (the line protocol of :mod:`siproc.calls.protocol`). This module wraps that protocol:

* :class:`CallInfo`: the call's environment (``SIPROC_REMOTE_URI``, ``SIPROC_CALL_ID`` ...) as a
  frozen dataclass;
* events as typed objects, parsed by siproc's own :func:`~siproc.calls.protocol.parse_event`
  (plus :class:`Gathered` for ``GATHER``, and :class:`UnknownEvent` for lines a newer siproc
  may send);
* commands as methods: :meth:`Call.answer`, :meth:`Call.play`, :meth:`Call.record`,
  :meth:`Call.dtmf`, :meth:`Call.say`, :meth:`Call.gather` (returns the keys),
  :meth:`Call.transfer`, :meth:`Call.hangup`, :meth:`Call.message` ...;
* two flavours: :class:`Call` blocks, :class:`AsyncCall` is for asyncio; :func:`run` and
  :func:`run_async` start either and turn the end of the call into a clean exit.

The end of a call (``DISCONNECTED``, end of input, or SIGTERM, which siproc sends 0.2 s after
``DISCONNECTED``) raises :class:`CallEnded` from whatever waits on the call; its subclass
:class:`Terminated` says SIGTERM came. Under :func:`run` SIGTERM interrupts the handler where it
is (as Ctrl-C raises KeyboardInterrupt), so ``finally`` blocks run; :func:`run` then exits 0.

Events that arrive while the handler waits for something else (a DTMF digit during
``play(wait=True)``) are kept, in order, for :meth:`Call.next_event`. Write logs to stderr:
stdout is the command channel. Example::

    from siproc.handler import Call, run

    def main(call: Call) -> None:
        call.answer()
        call.play("menu.wav")
        key = call.gather(max_digits=1, timeout=5)
        call.play("one.wav" if key == "1" else "bye.wav", wait=True)
        call.hangup()

    run(main)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeAlias, TypeVar

from siproc.calls import protocol
from siproc.calls.protocol import (
    Answer,
    Command,
    Connected,
    Disconnected,
    Dtmf,
    DtmfReceived,
    ErrorEvent,
    Hangup,
    Hold,
    HoldEvent,
    Message,
    MessageReceived,
    Play,
    Progress,
    ProgressEvent,
    Record,
    Resume,
    ResumeEvent,
    Ringing,
    RingingEvent,
    Stop,
    Stopped,
    Transfer,
)

__all__ = [
    "AsyncCall",
    "Call",
    "CallEnded",
    "CallEvent",
    "CallInfo",
    "CommandFailed",
    # the events, re-exported from siproc.calls.protocol so that handlers import one module
    "Connected",
    "Disconnected",
    "DtmfReceived",
    "ErrorEvent",
    "Gathered",
    "HoldEvent",
    "MessageReceived",
    "ProgressEvent",
    "ResumeEvent",
    "RingingEvent",
    "Stopped",
    "Terminated",
    "UnknownEvent",
    "parse_event",
    "run",
    "run_async",
]

T = TypeVar("T")

#: Reasons a GATHER ends (``GATHERED <digits> <why>``).
GATHER_ENDINGS = frozenset({"finish", "timeout", "max"})


# --------------------------------------------------------------------------------------------
# The call's environment


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What siproc tells a handler in its environment (siproc(1), HANDLER ENVIRONMENT)."""

    call_id: str
    outgoing: bool
    remote_uri: str
    remote_id: str = ""  # the From (incoming) or To (outgoing) header, display name included
    remote_display_name: str = ""
    remote_user: str = ""  # the user part, safe for a file name
    remote_contact: str = ""
    local_uri: str = ""
    request_uri: str = ""
    referred_by: str | None = None  # a call placed because of a transfer (REFER)
    #: X- headers of an incoming INVITE, by their variable's suffix: ``X_FOO`` for X-Foo.
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> CallInfo:
        """Read ``env`` (default ``os.environ``); ``ValueError`` if siproc did not start us."""
        env = os.environ if env is None else env
        if "SIPROC_CALL_ID" not in env:
            raise ValueError("SIPROC_CALL_ID is not set: this handler was not started by siproc")
        prefix = "SIPROC_HEADER_"
        return cls(
            call_id=env["SIPROC_CALL_ID"],
            outgoing=env.get("SIPROC_OUTGOING", "n") == "y",
            remote_uri=env.get("SIPROC_REMOTE_URI", ""),
            remote_id=env.get("SIPROC_REMOTE_ID", ""),
            remote_display_name=env.get("SIPROC_REMOTE_DISPLAY_NAME", ""),
            remote_user=env.get("SIPROC_REMOTE_USER", ""),
            remote_contact=env.get("SIPROC_REMOTE_CONTACT", ""),
            local_uri=env.get("SIPROC_LOCAL_URI", ""),
            request_uri=env.get("SIPROC_REQUEST_URI", ""),
            referred_by=env.get("SIPROC_REFERRED_BY"),
            headers={k.removeprefix(prefix): v for k, v in env.items() if k.startswith(prefix)},
        )


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Gathered:
    """``GATHERED <digits> <finish|timeout|max>``: the keys a ``GATHER`` collected (``digits``
    may be empty, written ``-`` on the line), and why it ended."""

    digits: str
    ended: str

    def __post_init__(self) -> None:
        if self.ended not in GATHER_ENDINGS:
            raise ValueError(f"GATHERED must end with finish, timeout or max, not {self.ended!r}")
        if any(c not in protocol.DTMF_DIGITS for c in self.digits):
            raise ValueError(f"invalid DTMF digits {self.digits!r}")


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event line this version of the kit does not know (from a newer siproc)."""

    line: str


CallEvent: TypeAlias = protocol.Event | Gathered | UnknownEvent


def parse_event(line: str) -> CallEvent:
    """One event line as a typed event: siproc's own parser, plus ``GATHERED``; a line that
    neither knows is an :class:`UnknownEvent` (never an exception)."""
    line = line.removesuffix("\n").removesuffix("\r")
    verb, _, rest = line.partition(" ")
    if verb == "GATHERED":
        digits, _, ended = rest.partition(" ")
        try:
            return Gathered("" if digits == "-" else digits.upper(), ended)
        except ValueError:
            return UnknownEvent(line)
    try:
        return protocol.parse_event(line)
    except ValueError:
        return UnknownEvent(line)


class CallEnded(Exception):
    """The call is over: ``DISCONNECTED`` came (``status``, ``reason``), or the input ended."""

    def __init__(self, status: int | None = None, reason: str = "") -> None:
        what = f"{status} {reason}".strip() if status is not None else reason or "input closed"
        super().__init__(f"the call ended: {what}")
        self.status = status
        self.reason = reason


class Terminated(CallEnded):
    """siproc sent SIGTERM: the call is over and the handler must leave (within 3 s)."""


class CommandFailed(Exception):
    """siproc answered a command with ``ERROR <command> <reason>``."""

    def __init__(self, error: ErrorEvent) -> None:
        super().__init__(f"{error.command} failed: {error.reason}")
        self.error = error


# --------------------------------------------------------------------------------------------
# What both flavours share: state, commands as lines, matching events


class _CallBase:
    def __init__(self, info: CallInfo | None, stdout: int) -> None:
        self.info = CallInfo.from_environ() if info is None else info
        self.connected = False
        self.disconnected: Disconnected | None = None
        self._stdout = stdout
        self._pending: deque[CallEvent] = deque()
        self._eof = False
        self._terminated = False
        self._gather_locally = False  # siproc refused GATHER: collect DTMF events ourselves
        self._playing: list[str] = []

    @property
    def ended(self) -> bool:
        """The call is over: DISCONNECTED came, the input ended, or SIGTERM."""
        return self.disconnected is not None or self._eof or self._terminated

    @property
    def terminated(self) -> bool:
        """SIGTERM came."""
        return self._terminated

    @property
    def playing(self) -> tuple[str, ...]:
        """The files PLAYed whose ``STOPPED`` (or ``ERROR PLAY``) has not been read yet."""
        return tuple(self._playing)

    def _end(self) -> CallEnded:
        if self._terminated:
            return Terminated(*self._status())
        return CallEnded(*self._status())

    def _status(self) -> tuple[int | None, str]:
        if self.disconnected is not None:
            return self.disconnected.status, self.disconnected.reason
        return None, "terminated (SIGTERM)" if self._terminated else ""

    def _seen(self, event: CallEvent) -> None:
        if isinstance(event, Connected):
            self.connected = True
        elif isinstance(event, Disconnected):
            self.disconnected = event
        elif isinstance(event, Stopped) and event.file in self._playing:
            self._playing.remove(event.file)
        elif isinstance(event, ErrorEvent) and event.command == "PLAY" and self._playing:
            self._playing.pop()  # the refused one is the last asked for

    def _play(self, file: str) -> None:
        self.send(Play(file))
        self._playing.append(file)

    def _typed_ahead(self, gather: _LocalGather) -> Gathered | None:
        """Feed the kept DTMF events (keys pressed before a gather) to ``gather``."""
        while (event := self._take_pending(_is_dtmf)) is not None:
            done = gather.add(event.digit)
            if done is not None:
                return done
        return None

    def _take_pending(self, accept: Callable[[CallEvent], T | None]) -> T | None:
        for index, event in enumerate(self._pending):
            result = accept(event)
            if result is not None:
                del self._pending[index]
                return result
        return None

    def send(self, command: Command | str) -> None:
        """Write one command (a protocol value, or a line such as ``"SAY hello"``)."""
        line = command if isinstance(command, str) else protocol.format_command(command)
        if "\n" in line or "\r" in line:
            raise ValueError("a command line must not contain CR or LF")
        data = (line + "\n").encode("utf-8")
        with contextlib.suppress(BrokenPipeError):
            while data:
                data = data[os.write(self._stdout, data) :]

    # Commands that do not wait -----------------------------------------------------------

    def ringing(self) -> None:
        """``RINGING``: 180 Ringing for an incoming call."""
        self.send(Ringing())

    def progress(self) -> None:
        """``PROGRESS``: 183 Session Progress (early media) for an incoming call."""
        self.send(Progress())

    def answer(self) -> None:
        """``ANSWER``: answer an incoming call (``CONNECTED`` follows)."""
        self.send(Answer())

    def hangup(self, status: int | None = None) -> None:
        """``HANGUP [status]``: end the call; ``status`` 400-699 rejects an unanswered one."""
        self.send(Hangup(status))

    def stop(self) -> None:
        """``STOP``: stop the file started last."""
        self.send(Stop())

    def dtmf(self, digits: str) -> None:
        """``DTMF <digits>``: send DTMF (0-9 * # A-D)."""
        self.send(Dtmf(digits))

    def message(self, text: str) -> None:
        """``MESSAGE <text>``: send a SIP MESSAGE in the call."""
        self.send(Message(text))

    def record(self, file: str | None, *, stereo: bool = False) -> None:
        """``RECORD <file> [stereo]``; ``record(None)`` stops recording."""
        self.send(Record(file, stereo))

    def transfer(self, uri: str) -> None:
        """``TRANSFER <uri>``: blind transfer (REFER); the call usually ends after it."""
        self.send(Transfer(uri))

    def hold(self) -> None:
        self.send(Hold())

    def resume(self) -> None:
        self.send(Resume())

    def say(self, text: str) -> None:
        """``SAY <text>``: speak ``text`` (needs a siproc with speech, issue 10)."""
        if not text.strip():
            raise ValueError("missing text")
        self.send(f"SAY {protocol.escape_text(text)}")

    def _gather_line(self, max_digits: int, timeout: float, finish: str) -> str:
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, not {max_digits}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if len(finish) > 1 or (finish and finish not in protocol.DTMF_DIGITS):
            raise ValueError(f"finish must be one DTMF key or empty, not {finish!r}")
        line = f"GATHER max={max_digits} timeout={timeout:g}"
        return f"{line} finish={finish}" if finish else line


def _stopped_or_error(file: str) -> Callable[[CallEvent], Stopped | ErrorEvent | None]:
    def accept(event: CallEvent) -> Stopped | ErrorEvent | None:
        if isinstance(event, Stopped) and event.file == file:
            return event
        if isinstance(event, ErrorEvent) and event.command == "PLAY":
            return event
        return None

    return accept


def _gathered_or_error(event: CallEvent) -> CallEvent | None:
    if isinstance(event, Gathered):
        return event
    if isinstance(event, ErrorEvent) and event.command == "GATHER":
        return event
    return None


def _is_dtmf(event: CallEvent) -> DtmfReceived | None:
    return event if isinstance(event, DtmfReceived) else None


def _is_connected(event: CallEvent) -> Connected | None:
    return event if isinstance(event, Connected) else None


class _LocalGather:
    """GATHER done by the kit from DTMF events, for a siproc without GATHER."""

    def __init__(self, max_digits: int, finish: str) -> None:
        self.max_digits = max_digits
        self.finish = finish
        self.digits = ""

    def add(self, digit: str) -> Gathered | None:
        if self.finish and digit == self.finish:
            return Gathered(self.digits, "finish")
        self.digits += digit
        if len(self.digits) >= self.max_digits:
            return Gathered(self.digits, "max")
        return None


# --------------------------------------------------------------------------------------------
# The blocking flavour


class Call(_CallBase):
    """A call driven by blocking methods. ``Call()`` uses stdin, stdout and the environment."""

    def __init__(self, info: CallInfo | None = None, *, stdin: int = 0, stdout: int = 1) -> None:
        super().__init__(info, stdout)
        self._stdin = stdin
        self._buffer = bytearray()

    def terminate(self) -> None:
        """What SIGTERM does (:func:`run` installs it): end the call, raise :class:`Terminated`."""
        self._terminated = True
        raise self._end()

    def _sigterm(self, signum: int, frame: FrameType | None) -> None:
        if not self._terminated:  # once: cleanup code after the first one runs undisturbed
            self.terminate()

    def _read_line(self, deadline: float | None) -> str | None:
        """The next line from stdin; None when ``deadline`` passed; '' at end of input."""
        while b"\n" not in self._buffer:
            if self._eof:
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest.decode("utf-8", "replace")
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._stdin], [], [], wait)
            if not ready:
                return None
            data = os.read(self._stdin, 65536)
            if not data:
                self._eof = True
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.decode("utf-8", "replace") or "\n"  # a blank line is not end of input

    def _read_event(self, deadline: float | None) -> CallEvent | None:
        while True:
            if self.disconnected is not None or self._terminated:
                raise self._end()
            line = self._read_line(deadline)
            if line is None:
                return None
            if line == "":
                raise self._end()
            if line.strip():
                event = parse_event(line)
                self._seen(event)
                return event

    def _wait(self, accept: Callable[[CallEvent], T | None], timeout: float | None) -> T | None:
        """The first event (kept or new) ``accept`` takes; None after ``timeout`` seconds.
        Other new events are kept for :meth:`next_event`. Raises :class:`CallEnded`."""
        found = self._take_pending(accept)
        if found is not None:
            return found
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._read_event(deadline)
            if event is None:
                return None
            result = accept(event)
            if result is not None:
                return result
            self._pending.append(event)

    def next_event(self, timeout: float | None = None) -> CallEvent | None:
        """The next event (None after ``timeout`` seconds). ``DISCONNECTED`` is the last one;
        after it (or at the end of input, or SIGTERM) :class:`CallEnded` is raised."""
        if self._pending:
            return self._pending.popleft()
        return self._read_event(None if timeout is None else time.monotonic() + timeout)

    def events(self) -> Iterator[CallEvent]:
        """Every event, ``DISCONNECTED`` last (then the iteration stops)."""
        with contextlib.suppress(CallEnded):
            while True:
                event = self.next_event()
                assert event is not None
                yield event

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait for ``CONNECTED``; False after ``timeout`` seconds."""
        return self.connected or self._wait(_is_connected, timeout) is not None

    def play(self, file: str, *, wait: bool = False) -> None:
        """``PLAY <file>``; with ``wait``, return once ``STOPPED <file>`` came, and raise
        :class:`CommandFailed` if siproc refused the file."""
        self._play(file)
        if wait:
            result = self._wait(_stopped_or_error(file), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)

    def gather(self, max_digits: int = 1, timeout: float = 5.0, finish: str = "#") -> str:
        """Collect up to ``max_digits`` DTMF keys, until ``finish`` or ``timeout`` seconds
        without a key; return them ('' if none). Keys pressed before (DTMF events not read
        yet) count first. Sends ``GATHER`` for the rest; if siproc does not know it, collects
        the DTMF events here instead (same rules)."""
        self._gather_line(max_digits, timeout, finish)  # checks the arguments
        self._drain()
        gather = _LocalGather(max_digits, finish)
        done = self._typed_ahead(gather)
        if done is not None:
            return done.digits
        if not self._gather_locally:
            self.send(self._gather_line(max_digits - len(gather.digits), timeout, finish))
            result = self._wait(_gathered_or_error, None)
            if isinstance(result, Gathered):
                return gather.digits + result.digits
            assert isinstance(result, ErrorEvent)
            if "unknown command" not in result.reason:
                raise CommandFailed(result)
            self._gather_locally = True
        while True:
            event = self._wait(_is_dtmf, timeout)
            if event is None:
                return gather.digits
            done = gather.add(event.digit)
            if done is not None:
                return done.digits

    def _drain(self) -> None:
        """Read the events that are already there, without waiting, into the kept ones."""
        while not self.ended:
            event = self._read_event(time.monotonic())
            if event is None:
                return
            self._pending.append(event)


def _call_info(info: CallInfo | None) -> CallInfo:
    """``info``, or the environment's; exit 2 with one line when siproc did not start us."""
    if info is not None:
        return info
    try:
        return CallInfo.from_environ()
    except ValueError as exc:
        print(f"{os.path.basename(sys.argv[0])}: {exc}", file=sys.stderr)
        sys.exit(2)


def run(main: Callable[[Call], object], info: CallInfo | None = None) -> None:
    """Run ``main(call)`` for the call siproc started us for, then exit 0 when ``main``
    returns or the call ends (:class:`CallEnded`, also on SIGTERM). Anything else ``main``
    raises goes on as usual (a traceback on stderr, exit status 1)."""
    call = Call(_call_info(info))
    signal.signal(signal.SIGTERM, call._sigterm)
    with contextlib.suppress(CallEnded):
        main(call)
    sys.exit(0)


# --------------------------------------------------------------------------------------------
# The asyncio flavour


class AsyncCall(_CallBase):
    """A call driven by coroutines; create it in a running loop (:func:`run_async` does).
    SIGTERM ends whatever waits on the call with :class:`Terminated`."""

    def __init__(self, info: CallInfo | None = None, *, stdin: int = 0, stdout: int = 1) -> None:
        super().__init__(info, stdout)
        self._loop = asyncio.get_running_loop()
        self._stdin = stdin
        self._buffer = bytearray()
        self._changed = asyncio.Event()
        os.set_blocking(stdin, False)
        self._loop.add_reader(stdin, self._readable)

    def close(self) -> None:
        """Stop reading stdin (idempotent)."""
        self._loop.remove_reader(self._stdin)

    def terminate(self) -> None:
        """What SIGTERM does (:func:`run_async` installs it): waits raise :class:`Terminated`."""
        self._terminated = True
        self._changed.set()

    def _readable(self) -> None:
        try:
            data = os.read(self._stdin, 65536)
        except BlockingIOError:
            return
        if not data:
            self._eof = True
            self.close()
        self._buffer += data
        self._changed.set()

    def _next_line(self) -> str | None:
        """A whole line from the buffer ('' at end of input), or None."""
        if b"\n" in self._buffer:
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer[:] = rest
            return line.decode("utf-8", "replace") or "\n"
        if self._eof:
            rest = bytes(self._buffer)
            self._buffer.clear()
            return rest.decode("utf-8", "replace")
        return None

    async def _read_event(self, deadline: float | None) -> CallEvent | None:
        while True:
            if self.disconnected is not None or self._terminated:
                raise self._end()
            line = self._next_line()
            if line == "":
                raise self._end()
            if line is not None:
                if line.strip():
                    event = parse_event(line)
                    self._seen(event)
                    return event
                continue
            self._changed.clear()
            wait = None if deadline is None else deadline - self._loop.time()
            if wait is not None and wait <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                return None

    async def _wait(
        self, accept: Callable[[CallEvent], T | None], timeout: float | None
    ) -> T | None:
        found = self._take_pending(accept)
        if found is not None:
            return found
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            event = await self._read_event(deadline)
            if event is None:
                return None
            result = accept(event)
            if result is not None:
                return result
            self._pending.append(event)

    async def next_event(self, timeout: float | None = None) -> CallEvent | None:
        """As :meth:`Call.next_event`."""
        if self._pending:
            return self._pending.popleft()
        return await self._read_event(None if timeout is None else self._loop.time() + timeout)

    async def events(self) -> AsyncIterator[CallEvent]:
        """Every event until the call ends."""
        with contextlib.suppress(CallEnded):
            while True:
                event = await self.next_event()
                assert event is not None
                yield event

    async def wait_connected(self, timeout: float | None = None) -> bool:
        return self.connected or await self._wait(_is_connected, timeout) is not None

    async def play(self, file: str, *, wait: bool = False) -> None:
        """As :meth:`Call.play`."""
        self._play(file)
        if wait:
            result = await self._wait(_stopped_or_error(file), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)

    async def gather(self, max_digits: int = 1, timeout: float = 5.0, finish: str = "#") -> str:
        """As :meth:`Call.gather`."""
        self._gather_line(max_digits, timeout, finish)  # checks the arguments
        await self._drain()
        gather = _LocalGather(max_digits, finish)
        done = self._typed_ahead(gather)
        if done is not None:
            return done.digits
        if not self._gather_locally:
            self.send(self._gather_line(max_digits - len(gather.digits), timeout, finish))
            result = await self._wait(_gathered_or_error, None)
            if isinstance(result, Gathered):
                return gather.digits + result.digits
            assert isinstance(result, ErrorEvent)
            if "unknown command" not in result.reason:
                raise CommandFailed(result)
            self._gather_locally = True
        while True:
            event = await self._wait(_is_dtmf, timeout)
            if event is None:
                return gather.digits
            done = gather.add(event.digit)
            if done is not None:
                return done.digits

    async def _drain(self) -> None:
        """Read the events that are already there, without waiting, into the kept ones."""
        if not self._eof:
            self._readable()
        while not self.ended:
            event = await self._read_event(self._loop.time())
            if event is None:
                return
            self._pending.append(event)


def run_async(main: Callable[[AsyncCall], Awaitable[object]], info: CallInfo | None = None) -> None:
    """As :func:`run`, for a coroutine function ``main(call)``."""

    info = _call_info(info)

    async def body() -> None:
        call = AsyncCall(info)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, call.terminate)
        try:
            await main(call)
        except CallEnded:
            pass
        finally:
            call.close()

    asyncio.run(body())
    sys.exit(0)
