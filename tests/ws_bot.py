"""A voice bot for tests: a ``websockets`` server on 127.0.0.1 speaking the Twilio Media Streams
protocol (siproc's ``STREAM``), run in a thread with its own event loop.

Each connection gets a :class:`BotSession` that records every message with its arrival time;
the test gives a ``script`` coroutine that drives the bot's side (sends audio, marks, clear).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from siproc.media.codecs.g711 import decode_ulaw, encode_ulaw


def ulaw_tone(freq: float, seconds: float, amplitude: float = 0.4, rate: int = 8000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return encode_ulaw((amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def goertzel_share(pcm: np.ndarray, freq: float, rate: int = 8000) -> float:  # type: ignore[type-arg]
    """The share of ``pcm``'s energy at ``freq`` (0..1): a single-bin DFT (Goertzel)."""
    x = pcm.astype(np.float64)
    if not len(x) or not np.any(x):
        return 0.0
    n = np.arange(len(x))
    bin_ = np.abs(np.sum(x * np.exp(-2j * np.pi * freq * n / rate))) ** 2
    return float(2 * bin_ / (len(x) * np.sum(x * x)))


@dataclass
class BotSession:
    path: str
    ws: ServerConnection
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    new_message: asyncio.Event = field(default_factory=asyncio.Event)
    notes: dict[str, float] = field(default_factory=dict)  # times the script noted

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("event") == kind]

    def times(self, kind: str) -> list[float]:
        return [t for t, m in self.messages if m.get("event") == kind]

    def inbound_pcm(self) -> np.ndarray:  # type: ignore[type-arg]
        return np.concatenate(
            [decode_ulaw(base64.b64decode(m["media"]["payload"])) for m in self.events("media")]
        )

    async def wait(self, kind: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events(kind)) < count:
            self.new_message.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"bot: fewer than {count} {kind} messages")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new_message.wait(), remaining)

    async def send(self, event: str, **body: Any) -> None:
        sid = self.events("start")[0]["streamSid"] if self.events("start") else None
        await self.ws.send(json.dumps({"event": event, "streamSid": sid, **body}))

    async def send_audio(self, ulaw: bytes, chunk: int = 800) -> None:
        for i in range(0, len(ulaw), chunk):
            payload = base64.b64encode(ulaw[i : i + chunk]).decode()
            await self.send("media", media={"payload": payload})


Script = Callable[[BotSession], Awaitable[None]]


class BotServer:
    """``BotServer(script).url`` is where siproc connects; ``sessions`` fill as it does.
    ``read=False``: the bot accepts and never reads (a stalled bot); the server's receive
    buffer is kept small so that siproc notices soon."""

    def __init__(self, script: Script | None = None, *, read: bool = True) -> None:
        self.script = script
        self.read = read
        self.sessions: list[BotSession] = []
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the test bot did not start"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/bot"

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not self.read:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        max_queue = 1 if not self.read else 1000
        async with serve(self._handle, sock=sock, max_queue=max_queue, compression=None):
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        session = BotSession(ws.request.path if ws.request else "", ws)
        self.sessions.append(session)
        self.connected.set()
        if not self.read:
            await asyncio.sleep(60)
            return
        task = asyncio.create_task(self.script(session)) if self.script else None
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    session.messages.append((time.monotonic(), json.loads(raw)))
                    session.new_message.set()
        except Exception:
            pass
        finally:
            session.closed.set()
            if task is not None:
                await asyncio.sleep(0.1)
                task.cancel()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def free_refused_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
