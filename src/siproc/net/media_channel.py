"""The message channel between siproc's control process and one media worker.

Theory of operation: one ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair per worker. A message is
one datagram (the kernel keeps the boundaries, so there is no framing to get wrong) holding a
pickled tuple whose first item is a verb; file descriptors (a call's RTP and RTCP sockets) ride
along as ``SCM_RIGHTS`` ancillary data. Both ends are siproc's own processes, started together,
so pickle is safe here; nothing from the network crosses the channel unparsed.

Sending never blocks the event loop: when the socket buffer is full the message waits in a
queue (in order) and goes out when the socket is writable again. Descriptors handed to
:meth:`Channel.send` belong to the channel from then on: it closes its copies once they are
sent (the receiving process has its own), or when the channel closes.

Receiving reads every waiting message when the socket is readable and hands each one to
``on_message``; the peer closing its end (exit, crash, kill) calls ``on_closed`` once, from the
loop. Descriptors the kernel had to drop (the receiver at its limit of open files) make the
message arrive without any, which its handler refuses.
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
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["MAX_FDS", "MAX_MESSAGE", "Channel", "Message"]

log = logging.getLogger(__name__)

MAX_MESSAGE: Final = 256 * 1024  # bytes; the largest message (a stream's figures) is ~1 KB
MAX_FDS: Final = 4  # descriptors per message (a stream's RTP and RTCP sockets)
SOCKET_BUFFER: Final = 4 * 1024 * 1024  # bytes; room for bursts of commands and events
_FDS_SPACE: Final = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)

Message = tuple[object, ...]


class Channel:
    """One end of a worker channel, driven by ``loop``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_message: Callable[[Message, list[int]], None],
        on_closed: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._on_closed = on_closed
        self._queue: collections.deque[tuple[bytes, Sequence[int]]] = collections.deque()
        self._writing = False
        self.closed = False
        loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def pair(cls) -> tuple[socket.socket, socket.socket]:
        """A connected socket pair for a new channel (the second end goes to the worker)."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        """Queue ``message`` (with ``fds``, which the channel now owns) and send what can be
        sent. After the channel closed, the message is dropped and ``fds`` closed."""
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} descriptors per message, not {len(fds)}")
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message {message[0]!r} too large ({len(data)} bytes)")
        if self.closed:
            _close_fds(fds)
            return
        self._queue.append((data, fds))
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            data, fds = queue[0]
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    self._sock.sendmsg([data], ancillary)
                else:
                    self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                return
            except OSError as exc:  # the worker is gone (EPIPE, ECONNRESET)
                log.debug("media channel send failed: %s", exc)
                self._lost()
                return
            queue.popleft()
            _close_fds(fds)
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, ancillary, flags, _addr = self._sock.recvmsg(MAX_MESSAGE, _FDS_SPACE)
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
            try:
                message = pickle.loads(data)
            except Exception:  # a bug, not an attack: both ends are ours
                log.exception("media channel: undecodable message dropped")
                _close_fds(fds)
                continue
            try:
                self._on_message(message, fds)
            except Exception:
                log.exception("media channel: handling %r failed", message[:1])

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
