"""A WebSocket client for the media tick: ``websockets``' sans-I/O protocol on a plain
:class:`asyncio.Protocol`, without tasks, futures or locks per message.

Theory of operation
-------------------
``STREAM`` (:mod:`siproc.net.media_stream_edge`) sends one message per call every 20 ms and
gets one back; with the ``websockets`` asyncio connection each of them went through a task
step, an async context manager, a lock and a drain on the way out and a message assembler with
futures on the way in: about 20 us per message of the worker's core, for 200 calls more than
half a core. Here the same sans-I/O :class:`websockets.client.ClientProtocol` (RFC 6455
framing, masking, the opening and closing handshakes, pongs to pings) is driven directly:

* out: :meth:`WebSocketClient.send` frames a batch of messages (the ones a call queued in one
  tick) and writes them with one ``transport.write``, which never blocks: the transport buffers
  what the kernel does not take. Above ``write_limit`` buffered bytes the transport calls
  ``pause_writing``; :attr:`writable` is then False and the caller keeps its messages (and
  drops media, counted) until ``resume_writing`` calls ``on_writable``.
* in: ``data_received`` only buffers the bytes; :meth:`_deliver` feeds them to the protocol in
  slices of :data:`READ_SLICE` bytes and hands whole messages (fragments joined) to
  ``on_message``, at most :data:`READ_BATCH` per loop turn, so that a burst from the bot does
  not delay a media tick. The caller may :meth:`pause_receiving` (its playout queue is full);
  while anything is buffered the transport stops reading, so the bot is paced by TCP.
* close: :meth:`close` sends a close frame (RFC 6455 section 5.5.1) and waits
  ``close_timeout`` for the server to close TCP (section 7.1.1: the server closes first), then
  aborts; so does a close the server starts. ``on_closed`` runs once, at the first close frame
  received or at the loss of the connection.

TLS (``wss:``) is the loop's, under the protocol: :meth:`connect` passes the SSL context to
``create_connection``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from ssl import SSLContext
from typing import Final, cast

from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI

__all__ = ["READ_BATCH", "READ_SLICE", "WebSocketClient"]

READ_BATCH: Final = 20  # messages handed over before the loop gets a turn
READ_SLICE: Final = 16 * 1024  # bytes parsed at once (a burst is parsed in steps too)
BACKLOG_FACTOR: Final = 8  # write limits of unread pongs before a bot is dropped

log = logging.getLogger(__name__)


class WebSocketClient(asyncio.Protocol):
    """One client connection (module doc). Made by :meth:`connect`; ``on_message(data,
    text)`` gets each message (``text``: a text frame, ``data`` its UTF-8 bytes),
    ``on_writable()`` the end of a write pause, ``on_closed()`` the end (once)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        uri: WebSocketURI,
        *,
        on_message: Callable[[bytes, bool], None],
        on_writable: Callable[[], None],
        on_closed: Callable[[], None],
        max_size: int,
        write_limit: int,
        close_timeout: float,
        user_agent: str,
        logger: logging.Logger | None = None,
    ) -> None:
        self._loop = loop
        self.ws = ClientProtocol(uri, max_size=max_size, logger=logger or log)
        self._on_message = on_message
        self._on_writable = on_writable
        self._on_closed: Callable[[], None] | None = on_closed
        self._write_limit = write_limit
        self._close_timeout = close_timeout
        self._user_agent = user_agent
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()  # the connection is gone
        self._paused_writing = False
        self._receiving = True  # the caller takes messages
        self._reading = True  # the transport reads
        self._raw: collections.deque[bytes] = collections.deque()  # received, not parsed
        self._messages: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._delivering: asyncio.Handle | None = None  # a delivery waits for a loop turn
        self._close_timer: asyncio.TimerHandle | None = None
        self.aborted = False  # the close handshake timed out
        self.overflowed = False  # the bot read nothing while asking for pongs: dropped
        self._failed = False  # we failed the connection (invalid UTF-8)
        self._closing = False  # close() was called: no more messages are handed over

    @classmethod
    async def connect(
        cls,
        loop: asyncio.AbstractEventLoop,
        uri: WebSocketURI,
        ssl: SSLContext | None,
        *,
        on_message: Callable[[bytes, bool], None],
        on_writable: Callable[[], None],
        on_closed: Callable[[], None],
        max_size: int,
        write_limit: int,
        close_timeout: float,
        user_agent: str,
        logger: logging.Logger | None = None,
    ) -> WebSocketClient:
        """TCP (and TLS with an SSL context), then the opening handshake (RFC 6455 section
        4.1). Raises what the connection or the handshake raised (OSError, ssl.SSLError,
        websockets' InvalidHandshake); the caller times it out."""
        client = cls(
            loop,
            uri,
            on_message=on_message,
            on_writable=on_writable,
            on_closed=on_closed,
            max_size=max_size,
            write_limit=write_limit,
            close_timeout=close_timeout,
            user_agent=user_agent,
            logger=logger,
        )
        try:
            await loop.create_connection(
                lambda: client,
                uri.host,
                uri.port,
                ssl=ssl,
                server_hostname=uri.host if ssl is not None else None,
            )
            await client.opened
        except BaseException:
            client.abort()
            if not client.opened.done():
                client.opened.cancel()
            raise
        return client

    # -- state -------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.ws.state is State.OPEN

    @property
    def writable(self) -> bool:
        """Open, and the transport takes more now (not paused by a bot that does not read)."""
        return self.ws.state is State.OPEN and not self._paused_writing

    @property
    def close_rcvd(self) -> Close | None:
        return self.ws.close_rcvd

    @property
    def close_sent(self) -> Close | None:
        return self.ws.close_sent

    # -- sending -----------------------------------------------------------------------------

    def send(self, messages: Sequence[str | bytes]) -> None:
        """Frame ``messages`` (str: text, bytes: binary) and write them at once. Only while
        :attr:`open`; ignores :attr:`writable` (the caller decides when to hold back)."""
        ws = self.ws
        if ws.state is not State.OPEN:
            return
        for message in messages:
            if isinstance(message, str):
                ws.send_text(message.encode())
            else:
                ws.send_binary(message)
        self._flush()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (once) and give the server ``close_timeout`` to close TCP.
        From now on no message is handed over, and what the server sends is read whether the
        caller had paused or not: its close frame answers ours."""
        if self.transport is None:
            return
        self._closing = True
        self._messages.clear()
        self.resume_receiving()
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        elif self.ws.state is State.CONNECTING:
            self.abort()
            return
        self._expect_close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        writes = self.ws.data_to_send()
        if not writes:
            return
        if writes[-1]:
            transport.write(writes[0] if len(writes) == 1 else b"".join(writes))
            self._check_backlog(transport)
            return
        data = b"".join(writes)  # SEND_EOF (b"") last: half-close after the data
        if data:
            transport.write(data)
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS
            transport.close()

    def _check_backlog(self, transport: asyncio.Transport) -> None:
        """Media stops at the write pause, but pongs (and our close) are written whatever the
        bot reads: a bot that pings without reading would grow the buffer without end. Past
        :data:`BACKLOG_FACTOR` times the write limit the connection is dropped (its fault)."""
        if transport.get_write_buffer_size() > BACKLOG_FACTOR * self._write_limit:
            log.warning(
                "the bot does not read what it asks for (%d bytes unread, pings unanswered): "
                "connection dropped",
                transport.get_write_buffer_size(),
            )
            self.overflowed = True
            transport.abort()

    def _expect_close(self) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self._loop.call_later(self._close_timeout, self._timed_out)

    def _timed_out(self) -> None:
        """The close handshake did not finish in time (a bot that neither reads nor closes):
        drop the connection."""
        self._close_timer = None
        if self.transport is not None and not self.lost.done():
            self.aborted = True
            self.transport.abort()

    # -- receiving ---------------------------------------------------------------------------

    def pause_receiving(self) -> None:
        """Hand over no more messages until :meth:`resume_receiving` (flow control)."""
        self._receiving = False

    def resume_receiving(self) -> None:
        """Hand over messages again, in the next loop turn (never inside the caller)."""
        if not self._receiving:
            self._receiving = True
            self._schedule_delivery()

    def _schedule_delivery(self) -> None:
        if self._delivering is None:
            self._delivering = self._loop.call_soon(self._deliver_later)

    def _deliver_later(self) -> None:
        self._delivering = None
        self._deliver()

    def _deliver(self) -> None:
        """Parse what is buffered and hand messages over, within the batch (module doc)."""
        budget = READ_BATCH
        messages, raw, ws = self._messages, self._raw, self.ws
        while self._receiving:
            if messages:
                if not budget:
                    self._schedule_delivery()
                    break
                budget -= 1
                data, text = messages.popleft()
                self._on_message(data, text)
                continue
            if not raw or ws.state is State.CLOSED:
                break
            if not budget:  # (a slice counts as a message: a big one is parsed in turns too)
                self._schedule_delivery()
                break
            budget -= 1
            chunk = raw.popleft()
            if len(chunk) > READ_SLICE:
                raw.appendleft(chunk[READ_SLICE:])
                chunk = chunk[:READ_SLICE]
            ws.receive_data(chunk)
            self._take_events()
        self._update_reading()

    def _update_reading(self) -> None:
        """The transport reads while nothing waits here to be parsed or handed over."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        backlog = bool(self._raw or self._messages)
        if backlog and self._reading:
            self._reading = False
            transport.pause_reading()
        elif not backlog and not self._reading:
            self._reading = True
            transport.resume_reading()

    def _take_events(self) -> None:
        for event in self.ws.events_received():
            if self._failed:
                break  # we failed the connection (section 7.1.7): nothing more is taken
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):  # the handshake's answer
                self._handshake_done()
        self._flush()  # pongs, the close frame echoed, a failure's close
        if self.ws.close_expected():
            self._expect_close()
            self._closed()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(data, opcode is Opcode.TEXT)
            else:
                self._fragments = [data]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._message(data, self._fragment_text)

    def _message(self, data: bytes, text: bool) -> None:
        if self._closing:
            return
        if text:
            try:
                data.decode()
            except UnicodeDecodeError as exc:  # RFC 6455 section 8.1: fail the connection
                self.ws.fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at position {exc.start}")
                self._failed = True
                return
        self._messages.append((data, text))

    def _handshake_done(self) -> None:
        if self.opened.done():
            return
        if self.ws.handshake_exc is not None:
            self.opened.set_exception(self.ws.handshake_exc)
        else:
            self.opened.set_result(None)

    def _closed(self) -> None:
        """``on_closed``, once, and only for a connection that opened (a failed opening is
        :meth:`connect`'s exception)."""
        callback, self._on_closed = self._on_closed, None
        opened = self.opened
        if callback is None or not opened.done() or opened.cancelled():
            return
        if opened.exception() is None:
            callback()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # (uvloop's: no subclass)
        transport.set_write_buffer_limits(high=self._write_limit)
        request = self.ws.connect()
        request.headers["User-Agent"] = self._user_agent
        self.ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.ws.state is State.CONNECTING:  # the handshake: parsed at once
            self.ws.receive_data(data)
            self._take_events()
            if self._messages:  # frames that came with the response: after the opening
                self._schedule_delivery()
                self._update_reading()
            return
        self._raw.append(data)
        if self._receiving and self._delivering is None:
            self._deliver()
        else:
            self._update_reading()

    def _parse_all(self) -> None:
        """The end of the stream came: parse what came before it first, whatever the batch or
        a pause (asyncio's TLS transport hands over the last data and the end at once), so
        that a close frame among it counts. Messages not handed over yet are dropped."""
        raw, ws = self._raw, self.ws
        while raw and ws.state is not State.CLOSED:
            ws.receive_data(raw.popleft())
            self._take_events()
        raw.clear()

    def eof_received(self) -> bool | None:
        self._parse_all()
        self.ws.receive_eof()
        self._take_events()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # nothing more is written (the writes are dropped)
        self._parse_all()
        self.ws.receive_eof()  # (idempotent) the state is CLOSED now
        self._flush_nothing()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if not self.opened.done():
            self.opened.set_exception(
                self.ws.handshake_exc or exc or ConnectionError("connection closed by the bot")
            )
        self._messages.clear()
        self._raw.clear()
        self.lost.set_result(None)
        self._closed()

    def _flush_nothing(self) -> None:
        """After the connection is gone nothing more is written: drop what the protocol
        queued (an EOF for a closed transport)."""
        self.ws.data_to_send()
        with contextlib.suppress(Exception):
            self.ws.events_received()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._on_writable()
