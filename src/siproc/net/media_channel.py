"""The message channel between siproc's control process and one media worker.

Theory of operation: one ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair per worker. A message is
one datagram (the kernel keeps the boundaries, so there is no framing to get wrong) holding a
pickled tuple whose first item is a verb; file descriptors (a call's RTP and RTCP sockets) ride
along as ``SCM_RIGHTS`` ancillary data. Both ends are siproc's own processes, started together,
so pickle is safe here; nothing from the network crosses the channel unparsed.

Messages sent in one turn of the event loop travel together: :meth:`Channel.send` pickles the
message at once (so a message that cannot be sent is the caller's error, raised there) and
queues it; the queue goes out when the loop next runs its callbacks, as few datagrams as fit
:data:`BATCH_BYTES` and :data:`BATCH_FDS`. A call set up sends about ten messages to its worker
(open, configure, RTCP, latching, start...); one system call and one wake-up of the worker for
all of them, not ten, is what lets a phone take hundreds of new calls a second (issue 12). A
datagram is a run of frames, each ``!IB`` (the pickle's length, how many of the datagram's
descriptors are the message's) and the pickle.

Sending never blocks the event loop: when the socket buffer is full the messages wait in the
queue (in order) and go out when the socket is writable again. Descriptors handed to
:meth:`Channel.send` belong to the channel from then on: it closes its copies once they are
sent (the receiving process has its own), or when the channel closes.

Receiving reads every waiting datagram when the socket is readable and hands each message in
it to ``on_message``, in order; the peer closing its end (exit, crash, kill) calls
``on_closed`` once, from the loop. A media worker paces what it takes (``pause_when`` and
``resume_later``): when ``pause_when()`` says its next media tick is near, the channel stops
after the current message, keeps the rest (in order), stops reading the socket and goes on
when ``resume_later`` calls back, after the tick, with at least one message per resumption so
that the commands always move. A burst of commands (the control process, busy, sends 150 calls'
``close`` in one datagram, each finishing a recording) then fills the gaps between ticks
instead of delaying the next ticks by 150 ms, which the clock would have to skip (issue 8,
item 6: bench/load.py --srtp at N=1000 skipped 20-30 ticks when calls ended).

Descriptors the kernel had to drop (the receiver at its limit of open files) make the messages
of that datagram arrive without any, which their handlers refuse.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import pickle
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["BATCH_BYTES", "BATCH_FDS", "MAX_FDS", "MAX_MESSAGE", "Channel", "Message"]

log = logging.getLogger(__name__)

MAX_MESSAGE: Final = 256 * 1024  # bytes; the largest message (a stream's figures) is ~1 KB
MAX_FDS: Final = 4  # descriptors per message (a stream's RTP and RTCP sockets)
BATCH_BYTES: Final = 64 * 1024  # bytes of messages gathered into one datagram (one may be more)
BATCH_FDS: Final = 64  # descriptors per datagram (the kernel allows 253: SCM_MAX_FD)
SOCKET_BUFFER: Final = 4 * 1024 * 1024  # bytes; room for bursts of commands and events
_FRAME = struct.Struct("!IB")  # a message's pickle length, its descriptor count
_FDS_SPACE: Final = socket.CMSG_SPACE(BATCH_FDS * array.array("i").itemsize)
_RECEIVE_BUFFER: Final = MAX_MESSAGE + BATCH_BYTES + _FRAME.size

Message = tuple[object, ...]


class Channel:
    """One end of a worker channel, driven by ``loop``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_message: Callable[[Message, list[int]], None],
        on_closed: Callable[[], None],
        *,
        pause_when: Callable[[], bool] | None = None,
        resume_later: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """``pause_when`` and ``resume_later`` (both or neither): hand out no more messages
        while ``pause_when()`` is true, and go on when ``resume_later`` calls its argument
        back (see the module's docstring)."""
        if (pause_when is None) != (resume_later is None):
            raise ValueError("pause_when and resume_later go together")
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._on_closed = on_closed
        self._queue: collections.deque[tuple[bytes, Sequence[int]]] = collections.deque()
        self._writing = False  # waiting for room in the socket buffer
        self._scheduled = False  # a flush is due in this turn of the loop
        self._pause_when = pause_when
        self._resume_later = resume_later
        # The rest of a datagram not handed out yet (paused): data, fds, offset, fds used.
        self._held: tuple[bytes, list[int], int, int, bool] | None = None
        self.paused = 0  # times the channel paused, since creation
        self.closed = False
        loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def pair(cls) -> tuple[socket.socket, socket.socket]:
        """A connected socket pair for a new channel (the second end goes to the worker)."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        """Queue ``message`` (with ``fds``, which the channel now owns); it goes out with the
        others of this turn of the loop. After the channel closed, the message is dropped and
        ``fds`` closed."""
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} descriptors per message, not {len(fds)}")
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message {message[0]!r} too large ({len(data)} bytes)")
        if self.closed:
            _close_fds(fds)
            return
        self._queue.append((data, fds))
        if not self._writing and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send the queue, as few datagrams as the batch limits allow, until it is empty or
        the socket buffer is full (then again when it is writable)."""
        self._scheduled = False
        queue = self._queue
        while queue and not self.closed:
            frames: list[bytes] = []
            fds: list[int] = []
            size = count = 0
            for data, message_fds in queue:
                if count and (
                    size + len(data) > BATCH_BYTES or len(fds) + len(message_fds) > BATCH_FDS
                ):
                    break
                frames += (_FRAME.pack(len(data), len(message_fds)), data)
                fds += message_fds
                size += _FRAME.size + len(data)
                count += 1
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    self._sock.sendmsg(frames, ancillary)
                else:
                    self._sock.sendmsg(frames)
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                return
            except OSError as exc:  # the worker is gone (EPIPE, ECONNRESET)
                log.debug("media channel send failed: %s", exc)
                self._lost()
                return
            for _ in range(count):
                queue.popleft()
            _close_fds(fds)
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        while not self.closed and self._held is None:
            try:
                data, ancillary, flags, _addr = self._sock.recvmsg(_RECEIVE_BUFFER, _FDS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("media channel receive failed: %s", exc)
                self._lost()
                return
            fds = _received_fds(ancillary)
            if flags & socket.MSG_CTRUNC:  # descriptors lost (our limit): the message has none
                log.error("media channel: descriptors dropped (too many open files?)")
                _close_fds(fds)
                fds = []
            if not data:  # end of file: the other end closed
                _close_fds(fds)
                self._lost()
                return
            self._deliver(data, fds, lost_fds=bool(flags & socket.MSG_CTRUNC))

    def _resume(self) -> None:
        """After a pause: the held messages first (at least one), then the socket again."""
        held, self._held = self._held, None
        if held is None or self.closed:
            return
        data, fds, offset, used, lost_fds = held
        self._deliver(data, fds, lost_fds=lost_fds, offset=offset, used=used, first=True)
        if self._held is None and not self.closed:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._readable()

    def _deliver(
        self,
        data: bytes,
        fds: list[int],
        *,
        lost_fds: bool,
        offset: int = 0,
        used: int = 0,
        first: bool = False,
    ) -> None:
        """Hand each message of one datagram to ``on_message`` with its descriptors (none when
        the kernel dropped them), from ``offset`` (``used``: descriptors handed out before).
        A frame that does not decode is dropped, the others go on. With pacing, the rest is
        held when ``pause_when()`` turns true (``first``: one message goes out anyway)."""
        view = memoryview(data)
        pause_when = self._pause_when
        while offset < len(view) and not self.closed:
            if pause_when is not None and not first and pause_when():
                self._pause(data, fds, offset, used, lost_fds)
                return
            first = False
            if len(view) - offset < _FRAME.size:
                log.error("media channel: %d stray bytes dropped", len(view) - offset)
                break
            length, count = _FRAME.unpack_from(view, offset)
            offset += _FRAME.size
            mine = [] if lost_fds else fds[used : used + count]
            used += count
            try:
                message = pickle.loads(view[offset : offset + length])
            except Exception:  # a bug, not an attack: both ends are ours
                log.exception("media channel: undecodable message dropped")
                _close_fds(mine)
                message = None
            offset += length
            if message is None:
                continue
            try:
                self._on_message(message, mine)
            except Exception:
                log.exception("media channel: handling %r failed", message[:1])
        if not lost_fds:
            _close_fds(fds[used:])  # none, unless a frame was cut short

    def _pause(self, data: bytes, fds: list[int], offset: int, used: int, lost: bool) -> None:
        """Hold the rest of ``data`` and stop reading until ``resume_later`` calls back."""
        assert self._resume_later is not None
        self._held = (data, fds, offset, used, lost)
        self.paused += 1
        self._loop.remove_reader(self._sock.fileno())
        self._resume_later(self._resume)

    def _lost(self) -> None:
        """The other end is gone: close, and say so from the loop (never from inside a
        ``send`` of the caller's)."""
        if self.closed:
            return
        self.close()
        self._loop.call_soon(self._on_closed)

    def close(self) -> None:
        """Close our end now (queued messages are dropped, their descriptors closed); no
        ``on_closed`` for a close of our own."""
        if self.closed:
            return
        self.closed = True
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        if self._writing:
            self._loop.remove_writer(fd)
        for _data, fds in self._queue:
            _close_fds(fds)
        self._queue.clear()
        held, self._held = self._held, None
        if held is not None and not held[4]:  # the descriptors of messages not handed out
            _close_fds(held[1][held[3] :])
        self._sock.close()

    @property
    def pending(self) -> int:
        """Messages waiting for room in the socket buffer."""
        return len(self._queue)


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fds.itemsize
            fds.frombytes(data[:usable])
    return list(fds)


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
