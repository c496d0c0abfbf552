"""A small kit for call handlers written in Python (siproc(1), HANDLER KIT).

siproc runs one handler per call; the handler writes commands on its stdout and reads events on
its stdin (the line protocol of :mod:`siproc.calls.protocol`). This module wraps that protocol:

* :class:`CallInfo`: the call's environment (``SIPROC_REMOTE_URI``, ``SIPROC_CALL_ID`` ...) as a
  frozen dataclass;
* events as typed objects, parsed by siproc's own :func:`~siproc.calls.protocol.parse_event`
  (and :class:`UnknownEvent` for lines a newer siproc may send);
* commands as methods: :meth:`Call.answer`, :meth:`Call.play`, :meth:`Call.record`,
  :meth:`Call.dtmf`, :meth:`Call.say` (can wait for its ``STOPPED say:<n>``),
  :meth:`Call.gather` (siproc's ``GATHER``; returns the keys),
  :meth:`Call.transfer`, :meth:`Call.hangup`, :meth:`Call.message` ...;
* two flavours: :class:`Call` blocks, :class:`AsyncCall` is for asyncio; :func:`run` and
  :func:`run_async` start either and turn the end of the call into a clean exit.

The end of a call (``DISCONNECTED``, end of input, or SIGTERM, which siproc sends 0.2 s after
``DISCONNECTED``) raises :class:`CallEnded` from whatever waits on the call; its subclass
:class:`Terminated` says SIGTERM came. Under :func:`run` SIGTERM interrupts the handler where it
is (as Ctrl-C raises KeyboardInterrupt), so ``finally`` blocks run; :func:`run` then exits 0.

Events that arrive while the handler waits for something else (a DTMF digit during
``play(wait=True)``) are kept, in order, for :meth:`Call.next_event`; the ``DTMF`` events of
the keys a :meth:`Call.gather` returns go with it. Write logs to stderr:
stdout is the command channel. Example::

    from siproc.handler import Call, run

    def main(call: Call) -> None:
        call.answer()
        call.wait_connected()
        call.play("menu.wav")
        key = call.gather(max_digits=1, first=8, bargein=True)  # a key stops the menu
        call.say("You chose one." if key == "1" else "Goodbye.", wait=True)
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
from typing import TypeAlias, TypeVar, cast

from siproc.calls import protocol
from siproc.calls.protocol import (
    Answer,
    Command,
    Connected,
    Disconnected,
    Dtmf,
    DtmfReceived,
    ErrorEvent,
    Gather,
    Gathered,
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
    Say,
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
class UnknownEvent:
    """An event line this version of the kit does not know (from a newer siproc)."""

    line: str


CallEvent: TypeAlias = protocol.Event | UnknownEvent


def parse_event(line: str) -> CallEvent:
    """One event line as a typed event, by siproc's own parser; a line it does not know is an
    :class:`UnknownEvent` (never an exception)."""
    line = line.removesuffix("\n").removesuffix("\r")
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
        #: The ``GATHERED`` of the last :meth:`Call.gather` (its keys, and why it ended).
        self.gathered: Gathered | None = None
        self._stdout = stdout
        self._pending: deque[CallEvent] = deque()
        self._eof = False
        self._terminated = False
        self._playing: list[str] = []  # files and SAYs (say:<n>), in the order they started
        self._says: set[str] = set()  # the say:<n> names in _playing
        self._say_count = 0  # SAY lines sent: siproc names the n-th one say:<n>

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
        """The files PLAYed and the SAYs (``say:<n>``) whose ``STOPPED`` (or ``ERROR``) has
        not been read yet, in the order they were asked for."""
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
            self._says.discard(event.file)
        elif isinstance(event, ErrorEvent) and event.command == "PLAY":
            files = [name for name in self._playing if name not in self._says]
            if files:  # PLAY is refused at once: the refused one is the last asked for
                self._playing.reverse()
                self._playing.remove(files[-1])
                self._playing.reverse()
        elif isinstance(event, ErrorEvent) and event.command == "SAY":
            says = [name for name in self._playing if name in self._says]
            if says:  # a SAY fails at once or after rendering: taken as the oldest one
                self._playing.remove(says[0])
                self._says.discard(says[0])

    def _take_pending(self, accept: Callable[[CallEvent], T | None]) -> T | None:
        for index, event in enumerate(self._pending):
            result = accept(event)
            if result is not None:
                del self._pending[index]
                return result
        return None

    def send(self, command: Command | str) -> None:
        """Write one command (a protocol value, or a line such as ``"SAY hello"``). A PLAY
        or SAY line counts for :attr:`playing` (and SAY's numbering) as the methods do."""
        line = command if isinstance(command, str) else protocol.format_command(command)
        if "\n" in line or "\r" in line:
            raise ValueError("a command line must not contain CR or LF")
        parsed: Command | None = None if isinstance(command, str) else command
        if parsed is None:
            with contextlib.suppress(protocol.CommandError):  # siproc answers ERROR to it
                parsed = protocol.parse_command(line)
        if isinstance(parsed, Play):
            self._playing.append(parsed.file)
        elif isinstance(parsed, Say):  # siproc names the n-th SAY line that parsed say:<n>
            self._say_count += 1
            self._playing.append(f"say:{self._say_count}")
            self._says.add(f"say:{self._say_count}")
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
        """``STOP``: stop the newest SAY still being rendered, else the file or SAY started
        last."""
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

    def _say(self, text: str) -> str:
        self.send(Say(text))
        return f"say:{self._say_count}"

    def _said(self, name: str) -> Callable[[CallEvent], Stopped | ErrorEvent | None]:
        """The test for the end of the SAY ``name``: its ``STOPPED``, or the ``ERROR SAY``
        taken for it (see :meth:`_seen`)."""

        def accept(event: CallEvent) -> Stopped | ErrorEvent | None:
            if isinstance(event, Stopped) and event.file == name:
                return event
            if isinstance(event, ErrorEvent) and event.command == "SAY":
                return None if name in self._playing else event
            return None

        return accept

    def _gather(
        self, max_digits: int, timeout: float, first: float | None, finish: str, bargein: bool
    ) -> tuple[Callable[[CallEvent], Gathered | ErrorEvent | None], list[DtmfReceived]]:
        """Send ``GATHER``; the test for its end, and the DTMF events it sees (filled in)."""
        command = Gather(max_digits, timeout, first, finish or None, bargein)  # checks them
        self.send(command)
        keys: list[DtmfReceived] = []

        def accept(event: CallEvent) -> Gathered | ErrorEvent | None:
            if isinstance(event, DtmfReceived):
                keys.append(event)
            elif isinstance(event, Gathered) or (
                isinstance(event, ErrorEvent) and event.command == "GATHER"
            ):
                return event
            return None

        return accept, keys

    def _gathered(self, result: Gathered | ErrorEvent | None, keys: list[DtmfReceived]) -> str:
        """The keys of ``GATHERED``; its ``DTMF`` events, the last ones read before it, are
        consumed with it. ``ERROR GATHER`` raises :class:`CommandFailed`."""
        if isinstance(result, ErrorEvent):
            raise CommandFailed(result)
        assert result is not None
        self.gathered = result
        count = len(result.keys) + (result.why == "finish")
        for event in keys[len(keys) - count :] if count else ():
            for index, kept in enumerate(self._pending):
                if kept is event:
                    del self._pending[index]
                    break
        return result.keys


def _stopped_or_error(file: str) -> Callable[[CallEvent], Stopped | ErrorEvent | None]:
    def accept(event: CallEvent) -> Stopped | ErrorEvent | None:
        if isinstance(event, Stopped) and event.file == file:
            return event
        if isinstance(event, ErrorEvent) and event.command == "PLAY":
            return event
        return None

    return accept


def _is_connected(event: CallEvent) -> Connected | None:
    return event if isinstance(event, Connected) else None


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
        self.send(Play(file))
        if wait:
            result = self._wait(_stopped_or_error(file), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)

    def say(self, text: str, *, wait: bool = False) -> str:
        """``SAY <text>``: speak ``text``; returns the SAY's name, ``say:<n>`` for the call's
        n-th SAY, which its ``STOPPED`` carries. With ``wait``, return once that came (said,
        or stopped by STOP or a GATHER's bargein), and raise :class:`CommandFailed` on
        ``ERROR SAY`` (no engine, or it failed)."""
        name = self._say(text)
        if wait:
            result = self._wait(self._said(name), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)
        return name

    def gather(
        self,
        max_digits: int = 1,
        timeout: float = 5.0,
        finish: str = "#",
        *,
        first: float | None = None,
        bargein: bool = False,
    ) -> str:
        """``GATHER``: collect up to ``max_digits`` DTMF keys (1-128), until the ``finish`` key
        ('' for none), or ``timeout`` seconds without a key (``first``: before the first key;
        default ``timeout``); return them ('' if none). ``bargein`` stops what plays (files and
        SAYs) at the first key. Keys count from the GATHER on, as siproc counts them: keys
        pressed before stay ``DTMF`` events for :meth:`next_event`; the ``DTMF`` events of the
        keys gathered are consumed. :attr:`gathered` keeps the ``GATHERED`` (why it ended).
        Raises ``ValueError`` for options siproc would refuse, :class:`CommandFailed` on
        ``ERROR GATHER``."""
        accept, keys = self._gather(max_digits, timeout, first, finish, bargein)
        result = cast("Gathered | ErrorEvent | None", self._wait(accept, None))  # mypy: object
        return self._gathered(result, keys)


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
        self.send(Play(file))
        if wait:
            result = await self._wait(_stopped_or_error(file), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)

    async def say(self, text: str, *, wait: bool = False) -> str:
        """As :meth:`Call.say`."""
        name = self._say(text)
        if wait:
            result = await self._wait(self._said(name), None)
            if isinstance(result, ErrorEvent):
                raise CommandFailed(result)
        return name

    async def gather(
        self,
        max_digits: int = 1,
        timeout: float = 5.0,
        finish: str = "#",
        *,
        first: float | None = None,
        bargein: bool = False,
    ) -> str:
        """As :meth:`Call.gather`."""
        accept, keys = self._gather(max_digits, timeout, first, finish, bargein)
        result: Gathered | ErrorEvent | None = await self._wait(accept, None)
        return self._gathered(result, keys)


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
