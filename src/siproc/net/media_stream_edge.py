"""``STREAM``: one call's audio to and from a voice bot over a WebSocket (the asyncio edge of
:mod:`siproc.media.media_stream_protocol`).

Theory of operation
-------------------
A :class:`BotStream` runs where the call's :class:`~siproc.net.rtp_socket.RtpStream` runs: in
its media worker (``SIPROC_MEDIA_WORKERS`` > 0, the usual case) or in the main process. It is a
tap of the stream (:mod:`siproc.net.media_taps`): a *sink* that gets the far end's decoded
audio each tick (after the jitter buffer, whatever the codec), a *live source* mixed with
``PLAY`` files into what we send, and a DTMF listener. The WebSocket lives in the same process
and event loop as the media clock, so audio never crosses the worker channel: a frame to the
bot costs one G.711 encode, one base64 and one small JSON (~15 us), and the bot's audio is
decoded where it is mixed. (In the main process instead, every frame would be pickled across
the channel twice, and 200 calls' JSON would land on the core that runs SIP.)

Nothing here may block a media tick. The tick only moves bytes: ``write_frame`` encodes one
frame and puts it in a :class:`~siproc.media.media_stream_protocol.SendQueue` (bounded: frames
for a bot that does not read are dropped and counted; after :data:`STALL_SECONDS` of nothing but
drops the stream ends with ``ERROR STREAM``); ``read_frame`` takes one frame from the
:class:`~siproc.media.media_stream_protocol.PlayoutQueue` and queues the marks it reached.
A writer task sends the queue in order (websockets applies TCP back-pressure to it, never to
the tick); a reader task parses the bot's messages into the playout queue and stops reading
while that holds :data:`MAX_QUEUED_SECONDS` of audio (a bot that sends faster than real time
is paced by TCP, and a ``clear`` behind that audio is read as soon as the queue drains). The
reader gives the loop a turn every :data:`READ_BATCH` messages, so that a burst from the bot
does not delay the next tick. The socket's send buffer is kept small
(:data:`SEND_BUFFER`), so that a bot that stops reading is noticed in seconds, not minutes.

Events go to ``report(kind, text)``: ``CONNECTED <streamSid>``, ``STOPPED <reason>``,
``ERROR <reason>``; the call turns them into handler lines. The end of the call closes the
taps, which sends ``stop`` and closes the WebSocket; the counters are logged then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import soxr

from siproc.media.codecs.g711 import decode_ulaw, encode_ulaw
from siproc.media.media_stream_protocol import (
    FRAME_MS,
    BotClear,
    BotMark,
    BotMedia,
    BotMessageError,
    MediaStreamProtocol,
    PlayoutQueue,
    SendQueue,
    StreamFormat,
)
from siproc.net.tls import TlsFileError, client_context

if TYPE_CHECKING:
    from siproc.net.rtp_socket import RtpStream

__all__ = ["BotStream", "StreamSpec"]

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
Int16Array = npt.NDArray[np.int16]

SEND_QUEUE_FRAMES: Final = 50  # media frames waiting for the bot (1 s), then dropped
STALL_SECONDS: Final = 3.0  # nothing but drops for this long: the bot stopped reading
MAX_QUEUED_SECONDS: Final = 60.0  # bot audio queued to play, then we stop reading the bot
READ_BATCH: Final = 20  # bot messages handled before the loop gets a turn
SEND_BUFFER: Final = 16 * 1024  # bytes of socket send buffer (~1 s of JSON media)
WRITE_LIMIT: Final = 16 * 1024  # bytes websockets buffers above the socket before it waits
OPEN_TIMEOUT: Final = 10.0  # seconds to connect, TLS and the WebSocket handshake included
CLOSE_TIMEOUT: Final = 2.0  # seconds for the bot to answer our close
MAX_MESSAGE: Final = 1 << 20  # bytes of one message from the bot
WARN_BAD_MESSAGES: Final = 3  # malformed bot messages logged, then only counted

_ws_log = logging.getLogger("siproc.net.websocket")
_ws_log.setLevel(logging.INFO)  # websockets logs every frame at debug: 50 lines/s per call
_contexts: dict[tuple[str | None, bool], ssl.SSLContext] = {}


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a stream needs to start (picklable: it crosses the media worker channel)."""

    url: str
    format: StreamFormat
    parameters: tuple[tuple[str, str], ...]
    stream_sid: str
    call_sid: str
    ca_file: str | None = None  # wss: None is the system's CA store
    verify: bool = True  # SIPROC_TLS_VERIFY


class BotStream:
    """One call's stream to a bot (module doc). ``start`` connects; ``stop`` ends it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rtp: RtpStream,
        spec: StreamSpec,
        report: Callable[[str, str], None],
        logger: Logger | None = None,
    ) -> None:
        self._loop = loop
        self._rtp = rtp
        self.spec = spec
        self._report = report
        self.log: Logger = logger if logger is not None else log
        fmt = spec.format
        self.protocol = MediaStreamProtocol(
            spec.stream_sid, spec.call_sid, dict(spec.parameters), fmt
        )
        self._send_queue = SendQueue(SEND_QUEUE_FRAMES)
        max_bytes = int(MAX_QUEUED_SECONDS * 1000 / FRAME_MS) * fmt.frame_bytes
        self._playout = PlayoutQueue(fmt.frame_bytes, max_bytes, fmt.silence)
        self._wake_writer = asyncio.Event()
        self._room = asyncio.Event()  # the playout queue has room again
        self._room.set()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._attached = False
        self._ended = False
        self._end_reason = ""
        self._end_error = False
        self._to_bot: dict[int, Any] = {}  # stream rate -> resampler to the format's rate
        self._from_bot: Any = None  # (rate, resampler) from the format's rate
        self._pending = np.zeros(0, dtype=np.int16)  # resampled bot audio not yet mixed
        self._pending_out = np.zeros(0, dtype=np.int16)  # resampled far-end audio, < 20 ms
        self._stalled = False
        self._closing: asyncio.Task[None] | None = None
        self.bad_messages = 0
        self.frames_played = 0

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

    def stop(self, reason: str = "handler") -> None:
        """End the stream: ``stop`` to the bot, close, ``STOPPED <reason>``. Idempotent."""
        self._end(reason, error=False)

    def close(self) -> None:
        """The call's media is closing (the tap is removed): end without an event."""
        self._end("call ended", error=False, quiet=True)

    def _end(self, reason: str, *, error: bool, quiet: bool = False) -> None:
        if self._ended:
            return
        self._ended = True
        self._end_reason, self._end_error = reason, error
        self._detach()
        if not error:
            self._send_queue.put_control(self.protocol.stop())
        self._wake_writer.set()
        self._room.set()
        self.log.info(
            "stream %s to %s ended (%s): %d frames to the bot, %d lost to a slow bot, "
            "%d frames from it played, %d malformed messages",
            self.spec.stream_sid,
            self.spec.url,
            reason,
            self.protocol.chunks - self._send_queue.dropped,
            self._send_queue.dropped,
            self.frames_played,
            self.bad_messages,
        )
        if not quiet:
            self._report("ERROR" if error else "STOPPED", reason)
        if self._ws is None and self._task is not None:  # still connecting
            self._task.cancel()
        elif error and self._ws is not None:  # the writer may be stuck on a full socket
            self._closing = self._loop.create_task(self._close_ws(1011, reason))
        if self._ws is not None:  # a bot that neither reads nor closes: see _abort
            self._loop.call_later(2 * CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        """The stream ended a while ago and its connection is still up: the bot reads
        nothing (so neither what is queued, nor ``stop``, nor a close frame gets out: the
        writer and websockets' close wait on a full socket for ever) and closes nothing.
        Drop the connection, so that the task and its socket go."""
        if self._task is None or self._task.done() or self._ws is None:
            return
        self.log.warning(
            "stream %s: the bot let nothing through for %g s after the end; connection dropped",
            self.spec.stream_sid,
            2 * CLOSE_TIMEOUT,
        )
        with contextlib.suppress(Exception):
            self._ws.transport.abort()

    # -- the WebSocket ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            ws = await self._connect()
        except asyncio.CancelledError:
            return
        except Exception as exc:  # refused, DNS, TLS, HTTP status, timeout: all the bot's side
            if not self._ended:
                self._end(_connect_problem(exc), error=True)
            return
        self._ws = ws
        if self._ended:  # stopped while connecting
            await self._close_ws(1000, self._end_reason)
            return
        with contextlib.suppress(OSError, AttributeError):
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._send_queue.put_control(self.protocol.connected())
        self._send_queue.put_control(self.protocol.start())
        self._attach()
        if not self._ended:  # (_attach ends it quietly when the call's media closed meanwhile)
            self._report("CONNECTED", self.spec.stream_sid)
        writer = self._loop.create_task(self._write(ws))
        try:
            await self._read(ws)
        finally:
            if not self._ended:
                self._end(_close_reason(ws), error=not _normal_close(ws))
            self._wake_writer.set()
            try:
                await asyncio.wait_for(writer, CLOSE_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
            await self._close_ws(1000 if not self._end_error else 1011, self._end_reason)

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect  # only when a call streams

        ctx = None
        if self.spec.url.lower().startswith("wss:"):
            ctx = await self._tls_context()
        return await connect(
            self.spec.url,
            ssl=ctx,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            max_size=MAX_MESSAGE,
            write_limit=WRITE_LIMIT,
            compression=None,  # media does not compress; deflate would cost CPU per frame
            proxy=None,
            user_agent_header="siproc",
            logger=_ws_log,
        )

    async def _tls_context(self) -> ssl.SSLContext:
        """The client context, made once per CA file in an executor thread (reading the
        system CA store takes tens of milliseconds: never in the middle of a tick)."""
        key = (self.spec.ca_file, self.spec.verify)
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = await self._loop.run_in_executor(
                None, lambda: client_context(self.spec.ca_file, verify=self.spec.verify)
            )
            _contexts[key] = ctx
        return ctx

    async def _write(self, ws: Any) -> None:
        queue = self._send_queue
        try:
            while True:
                message = queue.get()
                self._check_room()
                if message is None:
                    if self._ended:  # stop sent: close; the reader then ends
                        await self._close_ws(1000, self._end_reason)
                        return
                    self._wake_writer.clear()
                    await self._wake_writer.wait()
                    continue
                await ws.send(message)
        except Exception as exc:  # the connection closed under us: the reader says why
            self.log.debug("stream %s: send failed: %s", self.spec.stream_sid, exc)

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        handled = 0
        try:
            while not self._ended:
                if self._playout.full or self._send_queue.backlogged:  # flow control: read
                    self._room.clear()  # on when the audio has played, the bot has read
                    await self._room.wait()
                    continue
                message = await ws.recv()
                self._on_message(message)
                handled += 1
                if handled % READ_BATCH == 0:
                    await asyncio.sleep(0)  # a burst from the bot must not delay a tick
        except ConnectionClosed:
            return

    def _on_message(self, message: str | bytes) -> None:
        try:
            parsed = self.protocol.parse(message)
        except BotMessageError as exc:
            self.bad_messages += 1
            if self.bad_messages <= WARN_BAD_MESSAGES:
                self.log.warning("stream %s: bot message ignored: %s", self.spec.stream_sid, exc)
            return
        match parsed:
            case BotMedia(payload=payload):
                self._playout.push_audio(payload)
            case BotMark(name=name):
                self._playout.push_mark(name)
            case BotClear():
                for name in self._playout.clear():
                    self._send_queue.put_control(self.protocol.mark(name))
                self._pending = self._pending[:0]
                self._wake_writer.set()

    async def _close_ws(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(Exception):
            await ws.close(code, reason[:120])

    # -- the taps (called by the media tick: no waiting, no I/O) ------------------------------

    def _attach(self) -> None:
        rtp = self._rtp
        if rtp.closed:
            self._end("call ended", error=False, quiet=True)
            return
        rtp.add_sink(self)
        rtp.add_source(self)
        rtp.add_dtmf_listener(self.dtmf)
        self._attached = True

    def _detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        rtp = self._rtp
        rtp.remove_sink(self)
        rtp.remove_source(self)
        rtp.remove_dtmf_listener(self.dtmf)

    def write_frame(self, frame: Int16Array, rate: int) -> None:
        """One tick of the far end's audio: to the format, into the send queue."""
        if self._ended:
            return
        fmt = self.spec.format
        if rate != fmt.rate:
            resampler = self._to_bot.get(rate)
            if resampler is None:
                resampler = soxr.ResampleStream(rate, fmt.rate, 1, dtype="int16", quality="LQ")
                self._to_bot[rate] = resampler
            frame = resampler.resample_chunk(frame)
            # soxr releases output in blocks: frames of exactly 20 ms are cut out below
            self._pending_out = np.concatenate([self._pending_out, frame])
            samples = fmt.rate * FRAME_MS // 1000
            while len(self._pending_out) >= samples:
                self._queue_media(self._pending_out[:samples])
                self._pending_out = self._pending_out[samples:]
            return
        self._queue_media(frame)

    def _queue_media(self, frame: Int16Array) -> None:
        fmt = self.spec.format
        payload = encode_ulaw(frame) if fmt is StreamFormat.MULAW_8000 else frame.tobytes()
        now = self._loop.time()
        queue = self._send_queue
        if queue.put_media(self.protocol.media(payload), now):
            self._wake_writer.set()
        elif not self._stalled and queue.stalled(now, STALL_SECONDS):
            self._stalled = True  # ended after the tick, not inside it
            reason = f"the bot is not reading ({queue.dropped} frames lost)"
            self._loop.call_soon(lambda: self._end(reason, error=True))

    def read_frame(self, samples: int) -> Int16Array | None:
        """One tick of the bot's audio at the stream's rate (None: nothing to play), and the
        marks it reached go back to the bot."""
        if self._ended:
            return None
        rate = self._rtp.sample_rate
        fmt = self.spec.format
        if rate == fmt.rate and not len(self._pending):
            return self._pull()
        while len(self._pending) < samples:
            frame = self._pull()
            if frame is None:
                break
            if rate != fmt.rate:
                if self._from_bot is None or self._from_bot[0] != rate:
                    self._from_bot = (
                        rate,
                        soxr.ResampleStream(fmt.rate, rate, 1, dtype="int16", quality="LQ"),
                    )
                frame = self._from_bot[1].resample_chunk(frame)
            self._pending = np.concatenate([self._pending, frame])
        if len(self._pending) < samples:
            return None
        out, self._pending = self._pending[:samples], self._pending[samples:]
        return out

    def _pull(self) -> Int16Array | None:
        data, marks = self._playout.pull()
        if marks:
            for name in marks:
                self._send_queue.put_control(self.protocol.mark(name))
            self._wake_writer.set()
        self._check_room()
        if data is None:
            return None
        self.frames_played += 1
        if self.spec.format is StreamFormat.MULAW_8000:
            return decode_ulaw(data)
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def _check_room(self) -> None:
        """Let the reader go on when the playout queue has room and the bot has read."""
        room = not self._playout.full and not self._send_queue.backlogged
        if room and not self._room.is_set():
            self._room.set()

    def dtmf(self, digit: str) -> None:
        if not self._ended:
            self._send_queue.put_control(self.protocol.dtmf(digit))
            self._wake_writer.set()


def _connect_problem(exc: BaseException) -> str:
    """One line for a connection that failed, naming the side at fault."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    match exc:
        case TimeoutError():
            return f"no answer from the bot within {OPEN_TIMEOUT:g} s"
        case TlsFileError():
            return str(exc)
        case ssl.SSLCertVerificationError():
            return f"TLS: the bot's certificate is not trusted: {exc.verify_message}"
        case ssl.SSLError():
            return f"TLS error: {exc.reason or exc}"
        case ConnectionRefusedError():
            return "connection refused by the bot"
        case InvalidStatus():
            return f"the bot refused the WebSocket: HTTP {exc.response.status_code}"
        case InvalidURI():
            return f"invalid URL: {exc.msg}"
        case InvalidHandshake():
            return f"WebSocket handshake failed: {exc}"
        case socket.gaierror():
            return f"cannot resolve the bot's host: {exc.strerror}"
        case OSError():
            return f"cannot connect to the bot: {exc.strerror or exc}"
    return f"cannot connect to the bot: {type(exc).__name__}: {exc}"


def _normal_close(ws: Any) -> bool:
    rcvd = getattr(ws, "close_rcvd", None)
    return rcvd is not None and rcvd.code in (1000, 1001)


def _close_reason(ws: Any) -> str:
    """Why the bot's side closed: ``bot`` for a normal close, else the code and reason."""
    rcvd = getattr(ws, "close_rcvd", None)
    if rcvd is None:
        return "the connection to the bot was lost"
    if rcvd.code in (1000, 1001):
        return "bot"
    reason = f" {rcvd.reason}" if rcvd.reason else ""
    return f"closed by the bot: code {rcvd.code}{reason}"
