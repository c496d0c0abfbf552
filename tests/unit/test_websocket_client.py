"""The WebSocket client of STREAM (net/websocket_client.py) against websockets' own sans-I/O
server protocol, joined by a fake transport: the opening handshake, one write per batch,
fragments joined, pings answered, invalid UTF-8 failing the connection, flow control (a paused
receiver stops the transport reading; a burst is handed over a batch per loop turn), the
write pause, and the close handshake with its timeout. No sockets; the loop only runs its
ready callbacks (no time passes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from siproc.net import websocket_client
from siproc.net.websocket_client import WebSocketClient


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.eof = False
        self.reading = True
        self.aborted = False
        self.closing = False
        self.buffered = 0  # what get_write_buffer_size says

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Peer:
    """A client connected to a websockets ServerProtocol through a FakeTransport."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.got: list[tuple[bytes, bool]] = []
        self.writable_calls = 0
        self.closed_calls = 0
        self.client = WebSocketClient(
            loop,
            parse_uri("ws://127.0.0.1:9/bot"),
            on_message=lambda data, text: self.got.append((data, text)),
            on_writable=self._writable,
            on_closed=self._closed,
            max_size=1 << 20,
            write_limit=16384,
            close_timeout=2.0,
            user_agent="siproc-test",
        )
        self.transport = FakeTransport()
        self.server = ServerProtocol()
        self.client.connection_made(self.transport)  # type: ignore[arg-type]
        (request,) = self.transport.writes
        self.transport.writes.clear()
        self.server.receive_data(request)
        (handshake,) = self.server.events_received()
        self.user_agent = handshake.headers["User-Agent"]  # type: ignore[union-attr]
        self.server.send_response(self.server.accept(handshake))  # type: ignore[arg-type]
        self.to_client()
        assert self.client.opened.done() and self.client.opened.exception() is None

    def _writable(self) -> None:
        self.writable_calls += 1

    def _closed(self) -> None:
        self.closed_calls += 1

    def to_server(self) -> list[Frame]:
        """What the client wrote, into the server; the frames the server got."""
        for data in self.transport.writes:
            self.server.receive_data(data)
        self.transport.writes.clear()
        return [e for e in self.server.events_received() if isinstance(e, Frame)]

    def to_client(self, chunk: int | None = None) -> None:
        """What the server wrote, into the client (in pieces of ``chunk`` bytes)."""
        data = b"".join(d for d in self.server.data_to_send() if d)
        if chunk is None:
            self.client.data_received(data)
            return
        for i in range(0, len(data), chunk):
            self.client.data_received(data[i : i + chunk])

    def turn(self) -> None:
        """Run the loop's ready callbacks (call_soon), no time passes."""
        self.loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture
def peer() -> Iterator[Peer]:
    loop = asyncio.new_event_loop()
    yield Peer(loop)
    loop.close()


def test_the_opening_handshake_names_the_user_agent(peer: Peer) -> None:
    assert peer.client.open
    assert peer.user_agent == "siproc-test"
    assert peer.transport.high == 16384


def test_a_batch_of_messages_is_one_write_of_masked_frames(peer: Peer) -> None:
    peer.client.send(["one", b"\x01\x02", "three"])
    assert len(peer.transport.writes) == 1
    frames = peer.to_server()
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.TEXT, b"one"),
        (Opcode.BINARY, b"\x01\x02"),
        (Opcode.TEXT, b"three"),
    ]


def test_messages_in_any_pieces_and_fragments_arrive_whole(peer: Peer) -> None:
    peer.server.send_text(b'{"event":"media"}')
    peer.server.send_text(b"par", fin=False)
    peer.server.send_continuation(b"ts \xc3", fin=False)
    peer.server.send_continuation(b"\xa9", fin=True)  # UTF-8 split across fragments
    peer.server.send_binary(b"\x00\xff")
    peer.to_client(chunk=3)
    assert peer.got == [
        (b'{"event":"media"}', True),
        ("parts é".encode(), True),
        (b"\x00\xff", False),
    ]


def test_a_ping_is_answered_with_a_pong(peer: Peer) -> None:
    peer.server.send_ping(b"are you there")
    peer.to_client()
    frames = peer.to_server()
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.PONG, b"are you there")]
    assert peer.got == []


def test_a_bot_that_pings_without_reading_is_dropped(peer: Peer) -> None:
    """Pongs are written past the write pause; a bot that never reads them is cut off at
    BACKLOG_FACTOR write limits of unread bytes instead of growing the buffer without end."""
    peer.client.pause_writing()
    peer.transport.buffered = websocket_client.BACKLOG_FACTOR * 16384  # at the cap: kept
    peer.server.send_ping(b"1")
    peer.to_client()
    assert not peer.transport.aborted and not peer.client.overflowed
    peer.transport.buffered += 1
    peer.server.send_ping(b"2")
    peer.to_client()
    assert peer.transport.aborted and peer.client.overflowed


def test_invalid_utf8_fails_the_connection_with_1007(peer: Peer) -> None:
    peer.server.send_text(b"\xff\xfe")
    peer.server.send_text(b"after")
    peer.to_client()
    assert peer.got == []
    frames = peer.to_server()
    assert frames[-1].opcode is Opcode.CLOSE
    assert peer.client.close_sent is not None
    assert peer.client.close_sent.code == CloseCode.INVALID_DATA


def test_a_paused_receiver_stops_the_transport_and_gets_the_rest_later(peer: Peer) -> None:
    def take(data: bytes, text: bool) -> None:
        peer.got.append((data, text))
        if len(peer.got) == 2:
            peer.client.pause_receiving()  # e.g. the playout queue is full

    peer.client._on_message = take
    for i in range(5):
        peer.server.send_text(str(i).encode())
    peer.to_client()
    assert [d for d, _ in peer.got] == [b"0", b"1"]
    assert not peer.transport.reading  # TCP paces the bot
    peer.client.resume_receiving()
    assert len(peer.got) == 2  # never inside the caller: in the next loop turn
    peer.turn()
    assert [d for d, _ in peer.got] == [b"0", b"1", b"2", b"3", b"4"]
    assert peer.transport.reading


def test_a_burst_is_handed_over_a_batch_per_loop_turn(peer: Peer) -> None:
    n = 3 * websocket_client.READ_BATCH + 5
    for i in range(n):
        peer.server.send_text(str(i).encode())
    peer.to_client()
    assert websocket_client.READ_BATCH // 2 < len(peer.got) <= websocket_client.READ_BATCH
    assert not peer.transport.reading
    for _ in range(3):
        peer.turn()
    assert [int(d) for d, _ in peer.got] == list(range(n))
    assert peer.transport.reading


def test_a_large_burst_is_parsed_in_slices(peer: Peer) -> None:
    """One read of many bytes is not parsed in one go: slices and their messages share the
    batch of a loop turn."""
    payload = b"x" * 1000
    n = 2 * websocket_client.READ_SLICE // len(payload)
    for _ in range(n):
        peer.server.send_text(payload)
    peer.to_client()
    assert 0 < len(peer.got) < websocket_client.READ_BATCH
    assert peer.client._raw or peer.client._messages  # the rest waits, transport paused
    assert not peer.transport.reading
    for _ in range(n):
        peer.turn()
    assert len(peer.got) == n


def test_writing_pauses_and_resumes(peer: Peer) -> None:
    peer.client.pause_writing()
    assert not peer.client.writable and peer.client.open
    peer.client.resume_writing()
    assert peer.client.writable and peer.writable_calls == 1


def test_the_bot_closing_is_answered_and_reported_once(peer: Peer) -> None:
    peer.server.send_close(CloseCode.GOING_AWAY, "bye")
    peer.to_client()
    assert peer.closed_calls == 1
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1001
    frames = peer.to_server()
    assert [f.opcode for f in frames] == [Opcode.CLOSE]  # echoed
    assert peer.client._close_timer is not None  # the server closes TCP, or we abort
    peer.client.connection_lost(None)
    assert peer.closed_calls == 1 and peer.client.lost.done()
    assert peer.client._close_timer is None


def test_our_close_waits_for_the_server_then_aborts(peer: Peer) -> None:
    peer.client.close(1000, "call ended")
    frames = peer.to_server()
    assert frames[-1].opcode is Opcode.CLOSE
    assert peer.client.ws.state is State.CLOSING
    peer.client.send(["late"])  # nothing after the close frame
    assert peer.transport.writes == []
    timer = peer.client._close_timer
    assert timer is not None
    assert timer.when() - peer.loop.time() == pytest.approx(2.0, abs=0.1)
    peer.client._timed_out()  # (what the timer does) the bot never closed
    assert peer.transport.aborted and peer.client.aborted


def test_a_refused_handshake_fails_the_opening() -> None:
    loop = asyncio.new_event_loop()
    try:
        client = WebSocketClient(
            loop,
            parse_uri("ws://127.0.0.1:9/"),
            on_message=lambda data, text: None,
            on_writable=lambda: None,
            on_closed=lambda: pytest.fail("on_closed for a connection that never opened"),
            max_size=1 << 20,
            write_limit=16384,
            close_timeout=2.0,
            user_agent="siproc-test",
        )
        transport = FakeTransport()
        client.connection_made(transport)  # type: ignore[arg-type]
        client.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        client.connection_lost(None)
        with pytest.raises(Exception, match="403"):
            client.opened.result()
    finally:
        loop.close()


def test_our_close_while_paused_still_reads_the_servers_close(peer: Peer) -> None:
    """The caller paused (its playout queue is full), then closes (the call ended): the
    messages still waiting are not handed over, and the server's close frame behind them is
    read, so the close handshake completes instead of timing out into an abort."""
    peer.client.pause_receiving()
    for i in range(3):
        peer.server.send_text(str(i).encode())
    peer.to_client()
    assert not peer.transport.reading
    peer.client.close(1000, "call ended")
    peer.turn()
    assert peer.transport.reading  # the server's answer can come in
    assert [f.opcode for f in peer.to_server()] == [Opcode.CLOSE]
    peer.to_client()  # the server's close frame
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1000
    assert peer.got == []  # nothing after our close
    peer.client.resume_receiving()
    peer.turn()
    assert peer.got == []


def test_messages_and_a_close_before_the_end_of_stream_are_all_read(peer: Peer) -> None:
    """TLS hands over the last data and the end of the stream in one go, whether reading is
    paused or not: what came before the end is parsed first, the close frame included."""
    n = 3 * websocket_client.READ_SLICE // 1000  # more than a loop turn parses
    for _ in range(n):
        peer.server.send_text(b"x" * 1000)
    peer.server.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    peer.to_client()
    assert peer.client._raw  # (the point: bytes not parsed yet when the end comes)
    peer.client.eof_received()  # right behind the data, as asyncio's SSL transport does
    peer.client.connection_lost(None)
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1000
    assert peer.closed_calls == 1
