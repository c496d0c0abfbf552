"""One handler child process: spawn it, feed it event lines, read its command lines, end it.

Theory of operation
-------------------
The handler is started with :func:`os.posix_spawn` (see "Spawning" below) in a new session (so it
leads its own process group and has no controlling terminal), stdin and stdout piped, stderr
inherited (what a handler prints on stderr shows up in siproc's stderr). The pipes are attached to
the event loop with ``connect_read_pipe`` / ``connect_write_pipe``; the exit of the child is
watched with a pidfd (``os.pidfd_open``, Linux 5.3+; a thread blocked in ``waitid(WNOWAIT)``
otherwise). Neither reaps the child: it stays a zombie until we reap it ourselves, so its pid, and
with it the process group id, cannot be reused while we may still signal the group. This is why
asyncio's child watchers are not used.

Reading. Bytes are split at ``\\n``; one ``\\r`` before it is dropped; each line is decoded as UTF-8
(``errors="replace"``) and handed to ``on_line`` in order. Lines are delivered at most
:data:`LINES_PER_ITERATION` per event-loop iteration, and reading from the pipe is paused while more
than :data:`READ_HIGH_WATER` bytes of lines wait, so a handler flooding its stdout is slowed down by
its own full pipe and cannot starve timers, media or other calls. A line longer than
:data:`~siproc.calls.protocol.MAX_LINE_BYTES` (without its ending) is not delivered: its first
``MAX_LINE_BYTES`` bytes are decoded and passed to ``on_overlong_line`` (when given; the caller
answers with ``ERROR``, see :func:`siproc.calls.protocol.overlong_line_error`), the rest up to the
next newline is skipped, and a warning is logged for the first one. Garbage lines are simply passed
to ``on_line``. An unterminated last line at end of file is delivered too.

Writing. :meth:`HandlerProcess.send` never blocks: the line goes into the pipe transport's buffer.
While that buffer holds more than :data:`MAX_WRITE_BUFFER` bytes (the handler is not reading its
stdin), further lines are dropped; a warning is logged once when dropping starts and the number of
dropped lines once the handler catches up. After the handler closed its stdin, lines are dropped
silently (debug log).

Ending. ``on_exit(returncode)`` is called exactly once, after the child has exited *and* its stdout
reached end of file *and* every line was delivered, so no command is lost. A background process
that inherited the handler's stdout therefore keeps the handler alive (its commands still count);
:meth:`~HandlerProcess.terminate` and :meth:`~HandlerProcess.kill` deal with it. ``returncode``
follows :mod:`subprocess`: the exit status, or ``-N`` when killed by signal N.

:meth:`~HandlerProcess.terminate` closes our end of the handler's stdin, sends SIGTERM to the whole
process group, and SIGKILL to the group if the handler has not finished ``grace`` seconds later.
Once a terminated handler has finished, whatever is left of its process group (a child that ignored
SIGTERM) is SIGKILLed before the handler is reaped: a handler that wants its children to clean up
must wait for them in its TERM trap. A process that left the group (``setsid``) and still holds the
stdout pipe is cut off: :data:`ABANDON_DELAY` seconds after SIGKILL we stop reading and finish.

Spawning. :func:`os.posix_spawn` (a vfork and exec in glibc) does what
``subprocess.Popen(close_fds=True, start_new_session=True)`` does, for half of the main
process's CPU (measured: 67 against 140 us per spawn with a 100-variable environment, which
Popen encodes in Python): a new session, SIGPIPE and SIGXFSZ back to their defaults, the
command found on the ``PATH`` of ``env``, an error to start it raised here, and no descriptor
inherited but stdin, stdout, stderr and those asked for. siproc's own descriptors all have
close-on-exec (PEP 446); what it inherited or a C library opened may not: with Python 3.13 and
glibc 2.34 the child closes them in one action (``POSIX_SPAWN_CLOSEFROM``); before, each of them
gets close-on-exec in siproc itself right before the spawn (Linux 5.11 ``close_range`` with
``CLOSE_RANGE_CLOEXEC``: one system call, whatever the number of descriptors; nothing siproc
runs is meant to inherit them, and every other child is started with ``close_fds``); without
it, each one found in /proc gets a ``close`` action (about 1 us per open descriptor). Only a
handler started in another directory (``cwd``) goes through Popen.

More descriptors. ``spawn(..., fds={3: a, 4: b})`` gives the child descriptors at chosen numbers
(the audio pipes of ``SIPROC_AUDIO_FDS``, calls/audio_fds.py): ``dup2`` actions put each
descriptor where it belongs. The caller keeps and closes its own descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeAlias

from siproc.calls.protocol import MAX_LINE_BYTES

if TYPE_CHECKING:
    LogLike: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = [
    "ABANDON_DELAY",
    "LINES_PER_ITERATION",
    "MAX_WRITE_BUFFER",
    "READ_HIGH_WATER",
    "HandlerProcess",
    "HandlerSpawnError",
]

#: Most lines handed to ``on_line`` in one event-loop iteration.
LINES_PER_ITERATION = 64
#: Pause reading the handler's stdout while this many bytes of lines wait for delivery.
READ_HIGH_WATER = 64 * 1024
#: Resume reading once no more than this many bytes wait.
READ_LOW_WATER = 16 * 1024
#: Drop event lines while the stdin write buffer holds more than this many bytes.
MAX_WRITE_BUFFER = 1024 * 1024
#: Seconds after SIGKILL to wait for end of file on stdout before giving up on it.
ABANDON_DELAY = 1.0


def find_handler(path: str) -> str | None:
    """The handler as it will be run, or None; a bare name is looked up in PATH like execvp."""
    if os.sep in path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(path)


class HandlerSpawnError(Exception):
    """The handler program could not be started (not found, not executable, bad cwd ...)."""


class _Child(Protocol):
    """What a handler needs of its child process: a Popen, or a :class:`_SpawnedChild`."""

    @property
    def pid(self) -> int: ...
    @property
    def stdin(self) -> IO[bytes] | None: ...
    @property
    def stdout(self) -> IO[bytes] | None: ...
    def wait(self) -> int: ...


class _SpawnedChild:
    """A child started with :func:`os.posix_spawn` (see "More descriptors" above)."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def wait(self) -> int:
        """Reap the child (blocks until it exits); its status as subprocess gives it."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _posix_spawn(argv: list[str], env: dict[str, str], fds: Mapping[int, int]) -> _Child:
    """Start ``argv`` in a new session with stdin and stdout piped and ``fds`` (child number ->
    our descriptor) at their numbers. Raises OSError as Popen does (see "Spawning")."""
    path = argv[0]
    if os.sep not in path:
        found = shutil.which(path, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        path = found
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    wanted = {0: stdin_r, 1: stdout_w, **fds}
    # What Popen's close_fds does: descriptors without close-on-exec must not reach the handler
    # (module docstring, "Spawning").
    closefrom = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)
    leaking = []
    if not closefrom and not _cloexec_from(3):
        leaking = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
    after = [(closefrom, max(wanted) + 1)] if closefrom else []
    # Every source above every target first, so that no dup2 overwrites a later source; the
    # copies are close-on-exec, the dup2 targets are not.
    high: dict[int, int] = {}
    try:
        for target, fd in wanted.items():
            high[target] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        defaults = [getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, n)]
        pid = os.posix_spawn(
            path,
            argv,
            env,
            file_actions=[
                *leaking,
                *((os.POSIX_SPAWN_DUP2, fd, target) for target, fd in high.items()),
                *after,
            ],
            setsid=True,
            setsigdef=defaults,
        )
    except BaseException:
        os.close(stdin_w)
        os.close(stdout_r)
        raise
    finally:
        for fd in (*high.values(), stdin_r, stdout_w):
            os.close(fd)
    return _SpawnedChild(pid, open(stdin_w, "wb", buffering=0), open(stdout_r, "rb", buffering=0))


_CLOSE_RANGE_CLOEXEC = 4  # linux/close_range.h (Linux 5.11)
_close_range: Any = None  # libc's close_range, once looked up; False: there is none


def _cloexec_from(first: int) -> bool:
    """Set close-on-exec on every descriptor from ``first`` on, in one ``close_range`` call;
    False where glibc (2.34) or Linux (5.11) cannot."""
    global _close_range
    if _close_range is None:
        try:
            _close_range = ctypes.CDLL(None, use_errno=True).close_range
            _close_range.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
            _close_range.restype = ctypes.c_int
        except (AttributeError, OSError):
            _close_range = False
    if _close_range is False:
        return False
    if _close_range(first, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) == 0:
        return True
    _close_range = False  # ENOSYS or EINVAL: this kernel cannot; it will not learn to
    return False


def _inheritable_fds() -> list[int]:
    """Our descriptors above 2 that a child would inherit (no close-on-exec), from /proc."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # (the listing's own, closed by now)
                if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                    out.append(fd)
    return out


class _Overlong:
    """Queue marker for a line over the limit; ``head`` is its first ``MAX_LINE_BYTES`` bytes."""

    __slots__ = ("head",)

    def __init__(self, head: bytes) -> None:
        self.head = head


class _StdoutProtocol(asyncio.Protocol):
    def __init__(self, owner: HandlerProcess) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._feed(data)

    def eof_received(self) -> bool | None:
        self._owner._stdout_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._stdout_eof()


class _StdinProtocol(asyncio.BaseProtocol):
    def __init__(self, owner: HandlerProcess) -> None:
        self._owner = owner

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._stdin_lost(exc)


class HandlerProcess:
    """A running handler; build it with :meth:`spawn`. See the module docstring."""

    def __init__(
        self,
        proc: _Child,
        loop: asyncio.AbstractEventLoop,
        on_line: Callable[[str], None],
        on_exit: Callable[[int], None],
        on_overlong_line: Callable[[str], None] | None,
        log: LogLike,
    ) -> None:
        """Internal: use :meth:`spawn`."""
        self._proc = proc
        self._loop = loop
        self._on_line = on_line
        self._on_exit = on_exit
        self._on_overlong_line = on_overlong_line
        self._log = log
        self._done: asyncio.Future[int] = loop.create_future()
        self._returncode: int | None = None
        # stdout
        self._stdout: asyncio.ReadTransport | None = None
        self._partial = bytearray()
        self._discarding = False
        self._lines: deque[bytes | _Overlong] = deque()
        self._queued_bytes = 0
        self._paused = False
        self._drain_scheduled = False
        self._eof = False
        self._overlong_count = 0
        # stdin
        self._stdin: asyncio.WriteTransport | None = None
        self._stdin_open = False  # we may write
        self._stdin_connected = False  # the transport has not reported connection_lost
        self._dropping = False
        self._dropped = 0
        # exit
        self._exited = False
        self._pidfd: int | None = None
        self._terminating = False
        self._timers: list[asyncio.TimerHandle] = []

    # ----------------------------------------------------------------------------------------
    # Construction

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        on_line: Callable[[str], None],
        on_exit: Callable[[int], None],
        log: LogLike,
        *,
        on_overlong_line: Callable[[str], None] | None = None,
        fds: Mapping[int, int] | None = None,
    ) -> HandlerProcess:
        """Start ``argv`` with exactly the environment ``env`` in ``cwd``.

        ``on_line(line)`` gets each stdout line (decoded, without line ending);
        ``on_overlong_line(head)`` each over-long line's start; ``on_exit(returncode)`` is called
        once at the end. Callbacks run on the event loop; exceptions they raise are logged.
        ``fds`` maps descriptor numbers in the child (3 and up) to ours, which we keep (see
        "More descriptors"; ``cwd`` must then be None).
        Raises :class:`HandlerSpawnError` if the program cannot be executed.
        """
        if not argv:
            raise ValueError("empty handler command")
        if fds and (cwd is not None or min(fds) < 3):
            raise ValueError("fds: child descriptors from 3 on, and no cwd")
        loop = asyncio.get_running_loop()
        proc: _Child
        try:
            if cwd is None:
                proc = _posix_spawn(argv, env, fds or {})
            else:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=None,
                    env=env,
                    cwd=cwd,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError as exc:
            where = f" in {cwd!r}" if cwd is not None and exc.filename == cwd else ""
            raise HandlerSpawnError(
                f"cannot run handler {argv[0]!r}{where}: {exc.strerror or exc}"
            ) from exc
        self = cls(proc, loop, on_line, on_exit, on_overlong_line, log)
        try:
            await self._attach()
        except BaseException:
            self._abort_spawn()
            raise
        log.debug("handler started: pid %d, %s", proc.pid, argv)
        return self

    async def _attach(self) -> None:
        # stdin first, stdout last: once stdout is connected, nothing is awaited before spawn()
        # returns, so no command line reaches ``on_line`` before the caller holds this object.
        # (The other order let the handler's first commands run during the stdin await: a call
        # answered that way lost its CONNECTED event, 16% of calls at 500 calls under load.)
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        write_transport, _ = await self._loop.connect_write_pipe(
            lambda: _StdinProtocol(self), proc.stdin
        )
        self._stdin = write_transport
        self._stdin_open = True
        self._stdin_connected = True
        read_transport, _ = await self._loop.connect_read_pipe(
            lambda: _StdoutProtocol(self), proc.stdout
        )
        self._stdout = read_transport
        self._watch_exit()

    def _abort_spawn(self) -> None:
        """Undo a half-done spawn: kill and reap the child, close everything."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._close_fds()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()

    def _watch_exit(self) -> None:
        """Get ``_leader_exited`` called when the child exits, without reaping it."""
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._leader_exited)
            return
        threading.Thread(
            target=self._wait_thread, name=f"handler-wait-{self._proc.pid}", daemon=True
        ).start()

    def _wait_thread(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self._leader_exited)

    # ----------------------------------------------------------------------------------------
    # Public state

    @property
    def pid(self) -> int:
        """The handler's pid, which is also its process group id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """``None`` until the handler has finished; then as passed to ``on_exit``."""
        return self._returncode

    @property
    def write_buffer_size(self) -> int:
        """Bytes of event lines waiting to be written to the handler's stdin."""
        if self._stdin is None or not self._stdin_open:
            return 0
        return self._stdin.get_write_buffer_size()

    @property
    def dropped_events(self) -> int:
        """Event lines dropped so far because the handler was not reading its stdin."""
        return self._dropped

    async def wait(self) -> int:
        """Wait until the handler has finished (as for ``on_exit``); returns its returncode."""
        return await asyncio.shield(self._done)

    # ----------------------------------------------------------------------------------------
    # Writing events

    def send(self, line: str) -> None:
        """Queue ``line`` plus a newline for the handler's stdin; never blocks.

        Dropped while the write buffer is over :data:`MAX_WRITE_BUFFER` bytes or after the
        handler closed its stdin. Raises ``ValueError`` if ``line`` contains CR or LF.
        """
        if "\n" in line or "\r" in line:
            raise ValueError("an event line must not contain CR or LF")
        if self._stdin is None or not self._stdin_open or self._stdin.is_closing():
            self._log.debug("handler stdin closed, event dropped: %s", line)
            return
        buffered = self._stdin.get_write_buffer_size()
        if buffered > MAX_WRITE_BUFFER:
            if not self._dropping:
                self._dropping = True
                self._log.warning(
                    "handler is not reading its stdin (%d bytes waiting): dropping events",
                    buffered,
                )
            self._dropped += 1
            return
        if self._dropping:
            self._dropping = False
            self._log.info(
                "handler is reading again; events were dropped (%d so far)", self._dropped
            )
        self._stdin.write(line.encode("utf-8", "replace") + b"\n")

    def _stdin_lost(self, exc: Exception | None) -> None:
        self._stdin_connected = False
        if self._stdin_open:
            self._stdin_open = False
            self._log.debug("handler stdin closed (%s)", exc or "by us")

    # ----------------------------------------------------------------------------------------
    # Reading commands

    def _feed(self, data: bytes) -> None:
        """Split incoming stdout bytes into queued lines."""
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data = data[newline + 1 :]
            self._discarding = False
        if b"\n" not in data:
            self._partial += data
            if len(self._partial) > MAX_LINE_BYTES + 1:  # + 1: room for the "\r" of "\r\n"
                self._queue(_Overlong(bytes(self._partial[:MAX_LINE_BYTES])))
                self._partial.clear()
                self._discarding = True
            self._schedule_drain()
            return
        if self._partial:
            data = bytes(self._partial) + data
            self._partial.clear()
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._queue_line(line)
        if len(rest) > MAX_LINE_BYTES + 1:
            self._queue(_Overlong(rest[:MAX_LINE_BYTES]))
            self._discarding = True
        else:
            self._partial += rest
        if self._queued_bytes > READ_HIGH_WATER and not self._paused and self._stdout is not None:
            self._paused = True
            self._stdout.pause_reading()
        self._schedule_drain()

    def _queue_line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        self._queue(_Overlong(line[:MAX_LINE_BYTES]) if len(line) > MAX_LINE_BYTES else line)

    def _queue(self, item: bytes | _Overlong) -> None:
        self._lines.append(item)
        self._queued_bytes += len(item) if isinstance(item, bytes) else MAX_LINE_BYTES

    def _stdout_eof(self) -> None:
        if self._eof:
            return
        self._eof = True
        if self._partial and not self._discarding:
            self._queue_line(bytes(self._partial))
        self._partial.clear()
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Deliver up to LINES_PER_ITERATION queued lines, then yield to the loop."""
        self._drain_scheduled = False
        lines = self._lines
        for _ in range(LINES_PER_ITERATION):
            if not lines:
                break
            item = lines.popleft()
            if isinstance(item, bytes):
                self._queued_bytes -= len(item)
                self._deliver(self._on_line, item.decode("utf-8", "replace"))
            else:
                self._queued_bytes -= MAX_LINE_BYTES
                self._overlong(item.head.decode("utf-8", "replace"))
        if lines:
            self._schedule_drain()
        elif self._eof:
            self._maybe_finish()
        if self._paused and self._queued_bytes <= READ_LOW_WATER and self._stdout is not None:
            self._paused = False
            self._stdout.resume_reading()

    def _overlong(self, head: str) -> None:
        self._overlong_count += 1
        level = logging.WARNING if self._overlong_count == 1 else logging.DEBUG
        self._log.log(
            level,
            "handler wrote a line over %d bytes (%d so far); skipped it",
            MAX_LINE_BYTES,
            self._overlong_count,
        )
        if self._on_overlong_line is not None:
            self._deliver(self._on_overlong_line, head)

    def _deliver(self, callback: Callable[[str], None], line: str) -> None:
        try:
            callback(line)
        except Exception:
            self._log.exception("handler line callback failed on %r", line[:200])

    # ----------------------------------------------------------------------------------------
    # Ending

    def close_stdin(self) -> None:
        """Close our end of the handler's stdin after what is queued: it reads end of file."""
        self._close_stdin(abort=False)

    def _close_stdin(self, *, abort: bool) -> None:
        """Close our end of stdin: gracefully (flush first), or dropping what is buffered."""
        self._stdin_open = False
        transport = self._stdin
        if transport is None or not self._stdin_connected:
            return
        if not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
        elif abort and transport.get_write_buffer_size():
            # close() is still flushing to a handler that does not read. (A closing transport
            # without buffer has already scheduled connection_lost: aborting it again breaks.)
            transport.abort()

    def terminate(self, grace: float = 3.0) -> None:
        """SIGTERM the handler's process group; SIGKILL it after ``grace`` seconds. Idempotent."""
        if self._terminating or self._returncode is not None:
            return
        self._terminating = True
        self._close_stdin(abort=False)  # flushes what the pipe takes, then closes
        self._log.debug("terminating handler (grace %.1f s)", grace)
        self._signal_group(signal.SIGTERM)
        self._timers.append(self._loop.call_later(grace, self._grace_expired))

    def kill(self) -> None:
        """SIGKILL the handler's process group now."""
        if self._returncode is not None:
            return
        self._terminating = True
        self._close_stdin(abort=True)
        self._grace_expired()

    def _grace_expired(self) -> None:
        if self._returncode is not None:
            return
        self._signal_group(signal.SIGKILL)
        self._timers.append(self._loop.call_later(ABANDON_DELAY, self._abandon_stdout))

    def _abandon_stdout(self) -> None:
        """Stop waiting for stdout EOF: a process outside the group holds the pipe."""
        if self._returncode is None and not self._eof and self._stdout is not None:
            self._log.warning("a process outside the handler's group holds its stdout; closing")
            self._stdout.close()
            self._stdout_eof()

    def _signal_group(self, signum: int) -> None:
        # Safe while the handler is not reaped: its zombie keeps the pid, and so the group id.
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            self._log.warning("cannot signal handler process group %d: %s", self._proc.pid, exc)

    def _leader_exited(self) -> None:
        if self._exited:
            return
        self._exited = True
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._returncode is not None or not self._exited or not self._eof or self._lines:
            return
        if self._terminating:
            self._signal_group(signal.SIGKILL)  # leftovers that ignored SIGTERM
        returncode = self._proc.wait()  # a zombie by now: returns at once
        self._returncode = returncode
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._close_fds()
        self._close_stdin(abort=True)
        if self._stdout is not None and not self._stdout.is_closing():
            self._stdout.close()
        if self._dropped:
            self._log.info("%d events were dropped for this handler", self._dropped)
        self._log.debug("handler pid %d finished: returncode %d", self._proc.pid, returncode)
        # After the transports' own connection_lost callbacks (FIFO), so the pipes are closed.
        self._loop.call_soon(self._fire_exit, returncode)

    def _close_fds(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _fire_exit(self, returncode: int) -> None:
        self._done.set_result(returncode)
        try:
            self._on_exit(returncode)
        except Exception:
            self._log.exception("handler exit callback failed")
