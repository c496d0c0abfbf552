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
bot costs one G.711 encode, one base64 and a JSON template (a few us), and the bot's audio is
decoded where it is mixed. (In the main process instead, every frame would be pickled across
the channel twice, and 200 calls' JSON would land on the core that runs SIP.)

Nothing here may block a media tick, and a message costs little (bench/stream_edge.py): the
WebSocket is :class:`~siproc.net.websocket_client.WebSocketClient`, websockets' sans-I/O
protocol on a plain asyncio protocol, with no task, future or lock per message. The tick only
moves bytes: ``write_frame`` encodes one frame, puts it in a
:class:`~siproc.media.media_stream_protocol.SendQueue` and writes what the queue holds at once
(one write per call and tick; it never blocks: the transport buffers). A bot that does not read
fills :data:`WRITE_LIMIT` bytes of that buffer (above a small socket send buffer,
:data:`SEND_BUFFER`, so that it is noticed in seconds, not minutes); writing then pauses and
the queue is bounded: its media frames are dropped and counted, and after
:data:`STALL_SECONDS` of nothing but drops the stream ends with ``ERROR STREAM``.
``read_frame`` takes one frame from the :class:`~siproc.media.media_stream_protocol.PlayoutQueue`
and queues the marks it reached (when the bot's rate is not the call's, a mark waits until the
resampled audio before it has been mixed: the resampler holds ~60 ms back, and is emptied when
the bot's audio runs out). The bot's messages are parsed as they arrive, a batch per loop turn
(a burst does not delay a tick), into the playout queue; while that holds
:data:`MAX_QUEUED_SECONDS` of audio (or the bot does not read our mark echoes) no more are
taken and TCP paces the bot, and a ``clear`` behind that audio is read as soon as it drains.

Events go to ``report(kind, text)``: ``CONNECTED <streamSid>``, ``STOPPED <reason>``,
``ERROR <reason>``; the call turns them into handler lines. The end of the call closes the
taps, which sends ``stop`` and closes the WebSocket; the counters are logged then.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
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
    from siproc.net.websocket_client import WebSocketClient

__all__ = ["BotStream", "StreamSpec"]

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
Int16Array = npt.NDArray[np.int16]

SEND_QUEUE_FRAMES: Final = 50  # media frames waiting for the bot (1 s), then dropped
STALL_SECONDS: Final = 3.0  # nothing but drops for this long: the bot stopped reading
MAX_QUEUED_SECONDS: Final = 60.0  # bot audio queued to play, then we stop reading the bot
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
        self._client: WebSocketClient | None = None
        self._task: asyncio.Task[None] | None = None  # connecting
        self.done: asyncio.Future[None] = loop.create_future()  # the connection is gone
        self._paused = False  # the bot's messages wait: the playout queue is full
        self._attached = False
        self._ended = False
        self._end_reason = ""
        self._end_error = False
        self._to_bot: dict[int, Any] = {}  # stream rate -> resampler to the format's rate
        self._from_bot: Any = None  # (rate, resampler) from the format's rate
        self._pending = np.zeros(0, dtype=np.int16)  # resampled bot audio not yet mixed
        self._pending_out = np.zeros(0, dtype=np.int16)  # resampled far-end audio, < 20 ms
        # Resampled bot audio: the marks wait until the samples before them have been mixed
        # (the resampler holds audio back, and pulls run ahead of the output). Positions are
        # counted in samples at the call's rate: fed in, and handed to the mixer.
        self._due: collections.deque[tuple[float, list[str]]] = collections.deque()
        self._fed = 0.0
        self._emitted = 0
        self._stalled = False
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
        self.log.info(
            "stream %s to %s ended (%s): %d frames to the bot, %d lost to a slow bot, "
            "%d frames from it played, %d still queued, %d malformed messages",
            self.spec.stream_sid,
            self.spec.url,
            reason,
            self.protocol.chunks - self._send_queue.dropped,
            self._send_queue.dropped,
            self.frames_played,
            -(-self._playout.queued_bytes // self._playout.frame_bytes),
            self.bad_messages,
        )
        if not quiet:
            self._report("ERROR" if error else "STOPPED", reason)
        client = self._client
        if client is None:  # still connecting
            if self._task is not None:
                self._task.cancel()
            return
        if not error:  # what is queued, then stop, even past the write limit: it is the end
            self._flush(force=True)
        client.close(1011 if error else 1000, reason[:120])

    # -- the WebSocket ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            client = await self._connect()
        except asyncio.CancelledError:
            self._finish()
            return
        except Exception as exc:  # refused, DNS, TLS, HTTP status, timeout: all the bot's side
            if not self._ended:
                self._end(_connect_problem(exc), error=True)
            self._finish()
            return
        self._client = client
        client.lost.add_done_callback(lambda _: self._finish())
        if self._ended:  # stopped while connecting
            client.close(1000, self._end_reason[:120])
            return
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock = client.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._send_queue.put_control(self.protocol.connected())
        self._send_queue.put_control(self.protocol.start())
        self._attach()
        if not self._ended:  # (_attach ends it quietly when the call's media closed meanwhile)
            self._report("CONNECTED", self.spec.stream_sid)
            self._flush()

    async def _connect(self) -> WebSocketClient:
        from websockets.uri import parse_uri  # (websockets: only when a call streams)

        from siproc.net.websocket_client import WebSocketClient

        uri = parse_uri(self.spec.url)
        ctx = await self._tls_context() if uri.secure else None
        async with asyncio.timeout(OPEN_TIMEOUT):
            return await WebSocketClient.connect(
                self._loop,
                uri,
                ssl=ctx,
                on_message=self._on_frame,
                on_writable=self._flush,
                on_closed=self._on_closed,
                max_size=MAX_MESSAGE,
                write_limit=WRITE_LIMIT,
                close_timeout=CLOSE_TIMEOUT,
                user_agent="siproc",
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

    def _finish(self) -> None:
        """The connection is gone (or was never made)."""
        if not self.done.done():
            self.done.set_result(None)
        client = self._client
        if client is not None and client.aborted:
            self.log.warning(
                "stream %s: the bot let nothing through for %g s after the end; connection dropped",
                self.spec.stream_sid,
                CLOSE_TIMEOUT,
            )

    def _on_closed(self) -> None:
        """The bot closed (a close frame), or the connection was lost."""
        client = self._client
        if not self._ended and client is not None:
            self._end(_close_reason(client), error=not _normal_close(client))

    def _flush(self, force: bool = False) -> None:
        """Everything queued for the bot, in one write: called when a call's tick queued its
        frame or a control message, and when a write pause ends. Nothing while the bot does
        not read (the transport is paused: the queue drops media, counted), unless ``force``."""
        client = self._client
        if client is None or not (client.writable or (force and client.open)):
            return
        queue = self._send_queue
        if not len(queue):
            return
        messages = []
        while (message := queue.get()) is not None:
            messages.append(message)
        client.send(messages)
        self._check_room()

    def _on_frame(self, data: bytes, text: bool) -> None:
        """A message from the bot (websocket_client.py): parsed, then flow control."""
        if text:
            self._on_message(data.decode())
        else:
            self._on_message(data)
        if self._playout.full or self._send_queue.backlogged:  # read on when there is room
            assert self._client is not None
            self._client.pause_receiving()
            self._paused = True

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
                names = [name for _, due in self._due for name in due] + self._playout.clear()
                for name in names:
                    self._send_queue.put_control(self.protocol.mark(name))
                self._pending = self._pending[:0]
                self._from_bot = None  # and what the resampler holds back
                self._due.clear()
                self._fed, self._emitted = 0.0, 0
                self._flush()

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
            self._flush()
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
            if self._due:  # the call's rate changed to the stream's
                self._release_marks(math.inf)
            frame, marks = self._pull()
            self._echo_marks(marks)  # the frame before them goes out in this tick
            return frame
        while len(self._pending) < samples:
            frame, marks = self._pull()
            if frame is not None:
                self._fed += len(frame) * rate / fmt.rate
            if marks:
                self._due.append((self._fed, marks))
            if frame is None:
                if self._from_bot is not None and not len(self._playout):
                    self._flush_from_bot(samples)  # the bot's audio ran out: its last 60 ms
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
            if self._due and not len(self._pending) and self._from_bot is None:
                self._release_marks(math.inf)  # nothing before them is left to play
            return None
        out, self._pending = self._pending[:samples], self._pending[samples:]
        self._emitted += samples
        if self._due:
            self._release_marks(self._emitted)
        return out

    def _release_marks(self, emitted: float) -> None:
        """Echo the marks whose audio has been handed to the mixer (``emitted`` samples)."""
        due = self._due
        while due and due[0][0] <= emitted + 0.5:  # + 0.5: the rate ratio's rounding
            self._echo_marks(due.popleft()[1])

    def _echo_marks(self, names: list[str]) -> None:
        if names:
            for name in names:
                self._send_queue.put_control(self.protocol.mark(name))
            self._flush()

    def _flush_from_bot(self, samples: int) -> None:
        """soxr holds back the last ~60 ms of its input until more comes: when the bot's audio
        runs out, take them out (padded to a whole frame), so that they play now and not glued
        before the bot's next words. The next audio gets a fresh resampler."""
        assert self._from_bot is not None
        tail = self._from_bot[1].resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._from_bot = None
        if len(tail):
            self._pending = np.concatenate([self._pending, tail])
            short = -len(self._pending) % samples
            if short:
                self._pending = np.concatenate([self._pending, np.zeros(short, dtype=np.int16)])

    def _pull(self) -> tuple[Int16Array | None, list[str]]:
        """The next frame of the bot's audio (None: nothing to play) and the marks reached."""
        data, marks = self._playout.pull()
        self._check_room()
        if data is None:
            return None, marks
        self.frames_played += 1
        if self.spec.format is StreamFormat.MULAW_8000:
            return decode_ulaw(data), marks
        return np.frombuffer(data, dtype="<i2").astype(np.int16), marks

    def _check_room(self) -> None:
        """Take the bot's messages again when the playout queue has room and the bot has read
        (in the next loop turn: never inside a tick)."""
        if self._paused and not self._playout.full and not self._send_queue.backlogged:
            self._paused = False
            if self._client is not None:
                self._client.resume_receiving()

    def dtmf(self, digit: str) -> None:
        if not self._ended:
            self._send_queue.put_control(self.protocol.dtmf(digit))
            self._flush()


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


def _normal_close(client: WebSocketClient) -> bool:
    rcvd = client.close_rcvd
    return rcvd is not None and rcvd.code in (1000, 1001)


def _close_reason(client: WebSocketClient) -> str:
    """Why the bot's side closed: ``bot`` for a normal close, else the code and reason."""
    rcvd = client.close_rcvd
    if rcvd is None:
        sent = client.close_sent
        if sent is not None and sent.code not in (1000, 1001):  # we failed it: its fault
            return f"the bot broke the WebSocket protocol: {sent.reason or sent.code}"
        if client.overflowed:
            return "the bot is not reading (it pings, and leaves the pongs unread)"
        return "the connection to the bot was lost"
    if rcvd.code in (1000, 1001):
        return "bot"
    reason = f" {rcvd.reason}" if rcvd.reason else ""
    return f"closed by the bot: code {rcvd.code}{reason}"
