"""The Twilio Media Streams protocol (``STREAM``), sans I/O: messages, counters and queues.

Theory of operation
-------------------
``STREAM <url>`` puts a call on a voice bot over one WebSocket, in the protocol of Twilio Media
Streams (bidirectional, the ``<Connect><Stream>`` flavour), which Telnyx, SignalWire and bot
frameworks such as Pipecat speak too. The message shapes follow Twilio's reference,
https://www.twilio.com/docs/voice/media-streams/websocket-messages :

* to the bot (text frames, one JSON object each): ``connected`` first (``protocol`` "Call",
  ``version`` "1.0.0"); ``start`` (``start``: ``accountSid``, ``streamSid``, ``callSid``,
  ``tracks`` ["inbound"], ``customParameters``, ``mediaFormat`` {``encoding``
  "audio/x-mulaw", ``sampleRate`` 8000, ``channels`` 1}); one ``media`` per 20 ms (``media``:
  ``track`` "inbound", ``chunk`` and ``timestamp`` as decimal strings, ``payload`` base64
  mu-law); ``dtmf`` (``dtmf``: ``track`` "inbound_track", ``digit``); ``mark`` (``mark``:
  ``name``) when the bot audio queued before the bot's mark has been played, or dropped by a
  ``clear``; ``stop`` (``stop``: ``accountSid``, ``callSid``) last. Every message but
  ``connected`` carries ``streamSid`` and a ``sequenceNumber`` that counts from "1".
* from the bot: ``media`` (``media.payload``: base64 mu-law to play, any length), ``mark``
  (``mark.name``) and ``clear`` (drop the queued audio at once, for barge-in). ``streamSid``
  is not required (bots copy it from ``start``); one that differs is refused.

:class:`MediaStreamProtocol` builds and parses these; it never sees a socket or a clock. Timing
comes from the frames themselves: ``timestamp`` is ``20 ms * (chunk - 1)``, so the bot's
timeline is the call's even when the media tick skipped (the taps supply a frame per skipped
tick). :class:`PlayoutQueue` holds the bot's audio and marks in order and hands out one frame
per tick; :class:`SendQueue` is the bounded queue towards the bot, which drops media frames
(never control messages) when the bot does not read, and says how long it has been dropping.

The raw format (``format=l16/16000``, as jambonz and FreeSWITCH's audio fork do): media goes
both ways as *binary* frames of 16-bit little-endian mono PCM at 16 kHz, 640 bytes per 20 ms to
the bot, any length from it; everything else stays JSON as above (``start.mediaFormat`` says
``audio/l16``, 16000).
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "FRAME_MS",
    "BotClear",
    "BotMark",
    "BotMedia",
    "BotMessage",
    "BotMessageError",
    "MediaStreamProtocol",
    "PlayoutQueue",
    "SendQueue",
    "StreamFormat",
    "parse_stream_arguments",
]

FRAME_MS: Final = 20  # one media tick; Twilio sends 20 ms of audio per media message
PROTOCOL_VERSION: Final = "1.0.0"  # Twilio's connected.version
ACCOUNT_SID: Final = "siproc"  # start.accountSid / stop.accountSid (no account here)
MAX_NAME: Final = 256  # characters of a mark name we accept from a bot
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class StreamFormat(enum.Enum):
    """The audio format of a stream: Twilio's mu-law, or raw 16 kHz linear in binary frames."""

    MULAW_8000 = "mulaw/8000"
    L16_16000 = "l16/16000"

    @property
    def rate(self) -> int:
        return 8000 if self is StreamFormat.MULAW_8000 else 16000

    @property
    def frame_bytes(self) -> int:
        """Bytes of one 20 ms frame (mu-law: 1 per sample; L16: 2)."""
        samples = self.rate * FRAME_MS // 1000
        return samples if self is StreamFormat.MULAW_8000 else 2 * samples

    @property
    def silence(self) -> bytes:
        """One byte of silence (mu-law 0xFF is zero; L16 is padded in whole samples of 0)."""
        return b"\xff" if self is StreamFormat.MULAW_8000 else b"\x00"

    @property
    def binary(self) -> bool:
        return self is StreamFormat.L16_16000

    @property
    def encoding(self) -> str:
        return "audio/x-mulaw" if self is StreamFormat.MULAW_8000 else "audio/l16"


class BotMessageError(ValueError):
    """The bot sent a message we cannot use (its fault); ``str()`` is the one-line reason."""


@dataclass(frozen=True, slots=True)
class BotMedia:
    """Audio from the bot to play, in the stream's format (any length)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class BotMark:
    """A mark the bot put after its queued audio; echoed when that audio has played."""

    name: str

    def __post_init__(self) -> None:
        if len(self.name) > MAX_NAME:
            raise ValueError(f"mark name longer than {MAX_NAME} characters")


@dataclass(frozen=True, slots=True)
class BotClear:
    """Drop every queued bot audio frame now (barge-in); its marks are echoed."""


BotMessage: TypeAlias = BotMedia | BotMark | BotClear


def parse_stream_arguments(argument: str) -> tuple[str, StreamFormat, dict[str, str]]:
    """``<ws-or-wss-url> [name=value ...]`` of ``STREAM``: the URL, the format (the parameter
    ``format=l16/16000``; not passed on) and the custom parameters, in order. Raises
    ValueError with the reason (the handler's fault)."""
    words = argument.split()
    if not words:
        raise ValueError("missing URL")
    url, *pairs = words
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss") or not rest or rest.startswith("/"):
        raise ValueError(f"not a ws:// or wss:// URL: {url[:64]!r}")
    fmt = StreamFormat.MULAW_8000
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _PARAMETER_NAME.fullmatch(name):
            raise ValueError(f"not a name=value parameter: {pair[:64]!r}")
        if name == "format":
            try:
                fmt = StreamFormat(value.lower())
            except ValueError:
                raise ValueError(f"unknown format {value[:32]!r} (mulaw/8000, l16/16000)") from None
            continue
        params[name] = value
    return url, fmt, params


class MediaStreamProtocol:
    """The messages of one stream (module doc): builds what siproc sends, parses what the bot
    sends. Pure: no I/O, no clock."""

    def __init__(
        self,
        stream_sid: str,
        call_sid: str,
        custom_parameters: Mapping[str, str],
        fmt: StreamFormat = StreamFormat.MULAW_8000,
    ) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.custom_parameters = dict(custom_parameters)
        self.format = fmt
        self._sequence = 0
        self.chunks = 0  # media frames built so far
        # ``media`` is 50 a second per call: its JSON from a template, exactly what
        # _message would build (the only free text, the streamSid, is encoded once)
        self._media_template = (
            '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
            '"timestamp":"%d","payload":"%s"},"streamSid":'
            + json.dumps(stream_sid).replace("%", "%%")
            + "}"
        )

    def _message(self, event: str, **body: object) -> str:
        self._sequence += 1
        message: dict[str, object] = {
            "event": event,
            "sequenceNumber": str(self._sequence),
            **body,
            "streamSid": self.stream_sid,
        }
        return json.dumps(message, separators=(",", ":"))

    def connected(self) -> str:
        return json.dumps(
            {"event": "connected", "protocol": "Call", "version": PROTOCOL_VERSION},
            separators=(",", ":"),
        )

    def start(self) -> str:
        return self._message(
            "start",
            start={
                "accountSid": ACCOUNT_SID,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {
                    "encoding": self.format.encoding,
                    "sampleRate": self.format.rate,
                    "channels": 1,
                },
            },
        )

    def media(self, payload: bytes) -> str | bytes:
        """One 20 ms frame of the far end's audio: a JSON ``media`` message, or in the raw
        format the payload itself (a binary frame)."""
        self.chunks += 1
        if self.format is StreamFormat.L16_16000:
            return payload
        self._sequence += 1
        chunks = self.chunks  # base64 and decimal digits need no JSON escaping
        encoded = binascii.b2a_base64(payload, newline=False).decode("ascii")
        return self._media_template % (self._sequence, chunks, (chunks - 1) * FRAME_MS, encoded)

    def dtmf(self, digit: str) -> str:
        return self._message("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def stop(self) -> str:
        return self._message("stop", stop={"accountSid": ACCOUNT_SID, "callSid": self.call_sid})

    def parse(self, message: str | bytes) -> BotMessage | None:
        """One message from the bot; None for one we ignore (an event we do not know, as
        Twilio does). Raises :class:`BotMessageError` for a malformed one."""
        if isinstance(message, bytes):
            if not self.format.binary:
                raise BotMessageError("binary frame on a mu-law stream (JSON expected)")
            return BotMedia(message)
        try:
            data = json.loads(message)
        except ValueError:
            raise BotMessageError(f"not JSON: {message[:40]!r}") from None
        except RecursionError:  # json's C scanner: '[' * 100000 fits in one message
            raise BotMessageError("not JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise BotMessageError("not a JSON object")
        event = data.get("event")
        sid = data.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            raise BotMessageError(f"streamSid {str(sid)[:40]!r} is not this stream's")
        match event:
            case "media":
                media = data.get("media")
                payload = media.get("payload") if isinstance(media, dict) else None
                if not isinstance(payload, str):
                    raise BotMessageError("media without media.payload")
                try:
                    return BotMedia(base64.b64decode(payload, validate=True))
                except (binascii.Error, ValueError):
                    raise BotMessageError("media.payload is not base64") from None
            case "mark":
                mark = data.get("mark")
                name = mark.get("name") if isinstance(mark, dict) else None
                if not isinstance(name, str):
                    raise BotMessageError("mark without mark.name")
                try:
                    return BotMark(name)
                except ValueError as exc:
                    raise BotMessageError(str(exc)) from None
            case "clear":
                return BotClear()
            case str():
                return None
            case _:
                raise BotMessageError("message without an event")


class PlayoutQueue:
    """The bot's audio and marks, in the order sent; one frame out per media tick.

    ``pull`` returns the next frame (exactly ``frame_bytes``) and the marks reached: those
    with no audio queued before them any more. A partial frame at the end waits one tick for
    more (bots send chunks of any size), then plays padded with silence. ``clear`` drops all
    audio and returns the marks (Twilio echoes them). ``full`` says that more than
    ``max_bytes`` are queued, or more than ``max_items`` chunks and marks (by default two
    per frame of ``max_bytes``: a bot that sends marks between tiny chunks must not hold
    hundreds of megabytes within the audio bound): the edge then stops reading the bot
    (flow control, not loss).
    """

    def __init__(
        self,
        frame_bytes: int,
        max_bytes: int,
        silence: bytes = b"\xff",
        max_items: int | None = None,
    ) -> None:
        if frame_bytes <= 0 or max_bytes < frame_bytes:
            raise ValueError(f"invalid queue sizes {frame_bytes}, {max_bytes}")
        self.frame_bytes = frame_bytes
        self.max_bytes = max_bytes
        self.max_items = 2 * (max_bytes // frame_bytes) if max_items is None else max_items
        self._silence = silence
        self._items: collections.deque[bytes | BotMark] = collections.deque()
        self._head = 0  # bytes of the first item already played
        self.queued_bytes = 0
        self._waited = False  # a partial frame waited one tick already

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return self.queued_bytes >= self.max_bytes or len(self._items) >= self.max_items

    def push_audio(self, data: bytes) -> None:
        if data:
            self._items.append(data)
            self.queued_bytes += len(data)

    def push_mark(self, name: str) -> None:
        self._items.append(BotMark(name))

    def clear(self) -> list[str]:
        """Drop all queued audio; the marks in the queue, in order."""
        marks = [item.name for item in self._items if isinstance(item, BotMark)]
        self._items.clear()
        self._head = self.queued_bytes = 0
        self._waited = False
        return marks

    def pull(self) -> tuple[bytes | None, list[str]]:
        """One frame (or None: nothing to play) and the marks reached (module doc)."""
        items, marks = self._items, []
        while items and isinstance(items[0], BotMark):
            marks.append(items.popleft().name)  # type: ignore[union-attr]
        if not items:
            return None, marks
        size = self.frame_bytes
        if self.queued_bytes < size and not self._waited and not self._ends_before_mark():
            self._waited = True
            return None, marks
        self._waited = False
        parts: list[bytes] = []
        need = size
        while need and items and not isinstance(items[0], BotMark):
            chunk = items[0]
            assert isinstance(chunk, bytes)
            take = chunk[self._head : self._head + need]
            parts.append(take)
            need -= len(take)
            self._head += len(take)
            if self._head >= len(chunk):
                items.popleft()
                self._head = 0
        self.queued_bytes -= size - need
        frame = b"".join(parts)
        if need:  # a partial frame: pad it with silence
            frame += self._silence * (need // len(self._silence))
        while items and isinstance(items[0], BotMark):
            marks.append(items.popleft().name)  # type: ignore[union-attr]
        return frame, marks

    def _ends_before_mark(self) -> bool:
        """The queued audio is followed by a mark: play it now rather than wait for more."""
        return any(isinstance(item, BotMark) for item in self._items)


class SendQueue:
    """Messages waiting to go to the bot: media frames are dropped (and counted) when
    ``max_media`` are waiting; control messages (start, dtmf, mark, stop) always queue, and
    ``backlogged`` says that ``max_control`` of them wait (the edge then stops reading the
    bot, whose marks and clears most of them echo, until it reads)."""

    def __init__(self, max_media: int, max_control: int = 1000) -> None:
        if max_media < 1 or max_control < 1:
            raise ValueError(f"invalid queue sizes {max_media}, {max_control}")
        self.max_media = max_media
        self.max_control = max_control
        self._items: collections.deque[tuple[bool, str | bytes]] = collections.deque()
        self._media = 0
        self.dropped = 0  # media frames lost to a bot that does not read
        self.sent = 0
        self.dropping_since: float | None = None  # when the current run of drops began

    def __len__(self) -> int:
        return len(self._items)

    def put_media(self, message: str | bytes, now: float) -> bool:
        """Queue a media frame; False (dropped, counted) when the queue is full."""
        if self._media >= self.max_media:
            self.dropped += 1
            if self.dropping_since is None:
                self.dropping_since = now
            return False
        self._items.append((True, message))
        self._media += 1
        return True

    def put_control(self, message: str) -> None:
        self._items.append((False, message))

    @property
    def backlogged(self) -> bool:
        return len(self._items) - self._media >= self.max_control

    def get(self) -> str | bytes | None:
        """The oldest message, or None; taking one ends a run of drops (the bot reads)."""
        if not self._items:
            return None
        media, message = self._items.popleft()
        if media:
            self._media -= 1
        self.sent += 1
        self.dropping_since = None
        return message

    def stalled(self, now: float, seconds: float) -> bool:
        """Frames have been dropped for ``seconds`` with nothing taken: the bot stopped."""
        return self.dropping_since is not None and now - self.dropping_since >= seconds
