"""The STREAM edge (net/media_stream_edge.py) against a hostile bot on loopback: a bot that stops
reading and never closes must not keep the stream's task and socket forever, whether the call
ends, the handler stops the stream, or the stream ends as stalled. (Real sockets on 127.0.0.1,
with the edge's timeouts cut to fractions of a second.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from siproc.media.media_stream_protocol import StreamFormat
from siproc.net import media_stream_edge
from siproc.net.media_stream_edge import BotStream, StreamSpec


class FakeRtp:
    """The taps API of an RtpStream that a BotStream uses."""

    closed = False
    sample_rate = 8000

    def __init__(self) -> None:
        self.taps: set[object] = set()

    def add_sink(self, sink: object) -> None:
        self.taps.add(("sink", sink))

    def remove_sink(self, sink: object) -> None:
        self.taps.discard(("sink", sink))

    def add_source(self, source: object) -> None:
        self.taps.add(("source", source))

    def remove_source(self, source: object) -> None:
        self.taps.discard(("source", source))

    def add_dtmf_listener(self, listener: Callable[[str], None]) -> None:
        self.taps.add(("dtmf", listener))

    def remove_dtmf_listener(self, listener: Callable[[str], None]) -> None:
        self.taps.discard(("dtmf", listener))


@contextlib.asynccontextmanager
async def deaf_bot() -> AsyncIterator[str]:
    """A bot that accepts the WebSocket, then never reads and never closes: its receive buffer
    is small and its message queue one deep, so that its TCP window closes soon."""
    forever = asyncio.Event()

    async def handle(ws: ServerConnection) -> None:
        await forever.wait()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with serve(
        handle, sock=sock, max_queue=1, compression=None, ping_interval=None, close_timeout=0.1
    ):
        try:
            yield f"ws://127.0.0.1:{port}/bot"
        finally:
            forever.set()


async def started_stream(url: str) -> tuple[BotStream, list[tuple[str, str]]]:
    reports: list[tuple[str, str]] = []
    spec = StreamSpec(url, StreamFormat.MULAW_8000, (), "MZ" + "0" * 32, "call@test")
    stream = BotStream(
        asyncio.get_running_loop(),
        FakeRtp(),  # type: ignore[arg-type]
        spec,
        lambda kind, text: reports.append((kind, text)),
    )
    stream.start()
    await wait_for(lambda: ("CONNECTED", spec.stream_sid) in reports, 5.0)
    return stream, reports


async def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def block_the_writer(stream: BotStream) -> None:
    """Queue far more than the bot's window holds, until writing pauses on a full socket."""
    for _ in range(5000):
        stream.dtmf("1")
    last = -1
    while len(stream._send_queue) != last:
        last = len(stream._send_queue)
        await asyncio.sleep(0.2)
    assert last > 0, "everything was sent: the bot read after all"


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_stream_edge, "CLOSE_TIMEOUT", 0.3)
    monkeypatch.setattr(media_stream_edge, "STALL_SECONDS", 0.3)


@pytest.mark.usefixtures("short_timeouts")
@pytest.mark.parametrize("end", ["call ended", "STREAM STOP", "stalled"])
def test_a_bot_that_neither_reads_nor_closes_does_not_keep_the_stream(end: str) -> None:
    async def main() -> tuple[bool, bool, list[tuple[str, str]]]:
        async with deaf_bot() as url:
            stream, reports = await started_stream(url)
            await block_the_writer(stream)
            if end == "call ended":
                stream.close()
            elif end == "STREAM STOP":
                stream.stop("handler")
            else:  # the media tick goes on: frames are dropped until the stall ends it
                frame = np.zeros(160, dtype=np.int16)
                while not stream._ended:
                    stream.write_frame(frame, 8000)
                    await asyncio.sleep(0.005)
            assert stream._client is not None and stream._client.transport is not None
            transport = stream._client.transport
            ended = await wait_for(stream.done.done, 3.0)
            closed = transport.is_closing()
            if not ended:
                transport.abort()
                await asyncio.wait_for(stream.done, 1.0)
            return ended, closed, reports

    ended, closed, reports = asyncio.run(main())
    assert ended, "the stream's connection is still up 3 s after the stream ended"
    assert closed, "the stream's socket is still open"
    expected = {
        "call ended": [],
        "STREAM STOP": [("STOPPED", "handler")],
        "stalled": [("ERROR", "the bot is not reading")],
    }[end]
    assert [(kind, text[: len(expected[0][1])]) for kind, text in reports[1:]] == [
        (kind, text) for kind, text in expected
    ]


@contextlib.asynccontextmanager
async def marking_deaf_bot() -> AsyncIterator[str]:
    """A bot that never reads and sends, as fast as siproc takes them, 1-byte chunks of audio
    each followed by a mark with a 256-character name."""
    chunk = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff").decode()}})
    mark = json.dumps({"event": "mark", "mark": {"name": "m" * 256}})

    async def handle(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            while True:
                await ws.send(chunk)
                await ws.send(mark)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with serve(
        handle, sock=sock, max_queue=1, compression=None, ping_interval=None, close_timeout=0.1
    ):
        yield f"ws://127.0.0.1:{port}/bot"


@pytest.mark.usefixtures("short_timeouts")
def test_a_bot_flooding_marks_holds_bounded_queues() -> None:
    """Its marks are echoed as their audio plays; it reads none of the echoes. Neither the
    playout queue (items, not only bytes) nor the queue towards the bot may grow with it."""

    async def main() -> tuple[int, int, int]:
        async with marking_deaf_bot() as url:
            stream, _reports = await started_stream(url)
            most_queued = most_to_bot = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # the media tick, four times as fast
                stream.read_frame(160)
                most_queued = max(most_queued, len(stream._playout))
                most_to_bot = max(most_to_bot, len(stream._send_queue))
                await asyncio.sleep(0.005)
            played = stream.frames_played
            stream.close()
            return most_queued, most_to_bot, played

    most_queued, most_to_bot, played = asyncio.run(main())
    assert played > 10  # the flood was read and played
    assert most_queued <= 2 * 3000 + 2  # PlayoutQueue.max_items for 60 s of mu-law
    assert most_to_bot <= 1000 + 2 * 3000 + 50  # backlog + one clear's echoes + media


@pytest.mark.usefixtures("short_timeouts")
def test_a_stream_whose_call_ended_while_it_connected_says_nothing() -> None:
    """The call's media closed while the WebSocket was being opened (the taps are not there
    yet, so nothing closed the stream): it ends quietly once connected, with no CONNECTED for
    a call that is over, and the connection closes."""

    async def handle(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async def main() -> tuple[list[tuple[str, str]], bool]:
        async with serve(handle, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            reports: list[tuple[str, str]] = []
            rtp = FakeRtp()
            spec = StreamSpec(
                f"ws://127.0.0.1:{port}/bot", StreamFormat.MULAW_8000, (), "MZ" + "1" * 32, "c@t"
            )
            stream = BotStream(
                asyncio.get_running_loop(),
                rtp,  # type: ignore[arg-type]
                spec,
                lambda kind, text: reports.append((kind, text)),
            )
            stream.start()
            rtp.closed = True  # the call ended before the bot answered
            ended = await wait_for(stream.done.done, 3.0)
            return reports, ended and not rtp.taps

    reports, ended = asyncio.run(main())
    assert ended
    assert reports == []
