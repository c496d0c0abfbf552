"""Cutting SIP messages out of a byte stream (TCP, TLS), within limits (RFC 3261 section 18.3).

Theory of operation: on a stream, a message is a header section ended by an empty line, then
exactly Content-Length octets of body (Content-Length is mandatory there). `StreamFramer` keeps
the octets received and three facts between `feed()` calls, so that the work is linear in the
octets received however the peer cuts its stream (one octet per segment included):

- where the search for the empty line stopped: the next search starts three octets before the
  old end of the buffer (a CRLFCRLF may straddle two segments), never from the top again;
- the parsed header section and its Content-Length, once found: then only the body's length is
  compared until it is all there;
- the CR/LF octets seen between messages: RFC 3261 section 7.5 says to ignore CRLFs before a
  start line, and RFC 5626 section 3.5.1 makes a CRLFCRLF a keep-alive ping that the edge answers
  with a single CRLF pong. A lone CRLF (a pong, or a stray line end after a message) is no ping.

Limits, in `StreamLimits`, make a connection open to the internet safe:

- a message (header section, empty line and body) larger than `max_message_size` breaks the
  stream with a `ParseError` whose status is 513 (RFC 3261 section 21.5.14) and which carries the
  request's headers when the start line and the complete header lines received parse as a
  request, so that the endpoint can answer 513 before the edge closes the connection; otherwise
  it carries no headers and the edge just closes;
- deadlines, in the caller's clock: a connection the peer opened (`accepted`) must deliver a
  complete message within `first_message_timeout` of its opening, and every message must be
  complete within `message_timeout` of its first octet (a slow drip of headers, "slowloris",
  cannot hold a connection open). `next_deadline()` says when to call `handle_timer(now)`.

The class does no I/O and reads no clock, so that the TCP edge and a TLS edge use it alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from siproc.sip.errors import ParseError
from siproc.sip.message import (
    Headers,
    Message,
    Request,
    _content_length,
    _find_head_end,
    _parse_head,
    _salvaged,
)

DEFAULT_MAX_MESSAGE_SIZE = 65_536  # octets: header section, empty line and body
DEFAULT_MESSAGE_TIMEOUT = 10.0  # seconds
STATUS_MESSAGE_TOO_LARGE = 513  # RFC 3261 section 21.5.14
_CRLFS = re.compile(rb"[\r\n]*")
_PING_OCTETS = 4  # CRLFCRLF, RFC 5626 section 3.5.1


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The limits a stream connection enforces; a timeout of None means no deadline."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    first_message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT
    message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_message_size < 1:
            raise ValueError(f"max_message_size must be positive, not {self.max_message_size}")
        for name in ("first_message_timeout", "message_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, not {value}")


class StreamFramer:
    """Cut SIP messages out of one connection's byte stream; see the module docstring.

    `feed(data, now)` returns the complete messages, and a `ParseError` for what cannot be framed
    or is too large. A framing error makes the rest of the stream unusable, which `broken` then
    says (the edge closes the connection after the endpoint has answered the error, if it can).
    `keepalives` counts the CRLFCRLF pings received; `scanned` counts the octets examined, the
    measure of the framer's work.
    """

    def __init__(
        self, limits: StreamLimits | None = None, *, now: float = 0.0, accepted: bool = False
    ) -> None:
        self.limits = limits if limits is not None else StreamLimits()
        self.broken: str | None = None
        self.keepalives = 0
        self.scanned = 0
        self.messages = 0  # complete messages framed
        self._buffer = bytearray()
        self._scan = 0  # where the search for the empty line resumes
        self._crlf_run = 0  # CR/LF octets since the last message, across feed() calls
        # (message, body offset, Content-Length) once the header section is parsed
        self._head: tuple[Message, int, int] | None = None
        self._started_at: float | None = None  # when the current message's first octet came
        timeout = self.limits.first_message_timeout
        self._first_by = now + timeout if accepted and timeout is not None else None

    # -- receiving -------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> list[Message | ParseError]:
        """Take the octets the connection received at `now`; the messages they complete."""
        if self.broken:
            return []
        buffer = self._buffer
        buffer += data
        out: list[Message | ParseError] = []
        pos = 0  # start of the current message (or of the gap before it) in the buffer
        while True:
            if self._head is None:
                if self._started_at is None:  # between messages
                    pos = self._skip_crlfs(pos)
                    if pos == len(buffer):
                        break
                    self._crlf_run = 0
                    self._started_at = now
                    self._scan = pos
                if not self._find_head(pos, out):
                    break
            assert self._head is not None
            message, body_start, length = self._head
            end = body_start + length
            if len(buffer) < end:
                break
            message.body = bytes(buffer[body_start:end])
            out.append(message)
            self.messages += 1
            self._head = None
            self._started_at = None
            self._first_by = None
            pos = end
        if self.broken:
            buffer.clear()
        elif pos:
            del buffer[:pos]  # once per feed(): what stays is the current message's beginning
            self._scan = max(0, self._scan - pos)
            if self._head is not None:
                message, body_start, length = self._head
                self._head = (message, body_start - pos, length)
        return out

    def _skip_crlfs(self, pos: int) -> int:
        """Step over the CR/LF octets at `pos` and count the pings among them."""
        end = _CRLFS.match(self._buffer, pos).end()  # type: ignore[union-attr]  # always matches
        if end != pos:
            self.scanned += end - pos
            run = self._crlf_run + end - pos
            # A ping may arrive cut over several segments: count it however it was cut.
            self.keepalives += run // _PING_OCTETS - self._crlf_run // _PING_OCTETS
            self._crlf_run = run
        return end

    def _find_head(self, pos: int, out: list[Message | ParseError]) -> bool:
        """Look for the end of the header section from where the last search stopped.

        True when the header section is parsed and `_head` set; False when more octets are
        needed or the stream broke (a ParseError is then in `out`).
        """
        buffer = self._buffer
        start = self._scan
        crlf = buffer.find(b"\r\n\r\n", start)
        # A bare-LF empty line counts as well when it comes first (RFC 3261 section 7.5 is
        # lenient with line ends); search only up to the CRLFCRLF if there is one.
        limit = crlf + 2 if crlf >= 0 else len(buffer)
        lf = buffer.find(b"\n\n", start, limit)
        self.scanned += (crlf + 4 if crlf >= 0 else len(buffer)) - start + limit - start
        if lf >= 0:
            head_end, body_start = lf, lf + 2
        elif crlf >= 0:
            head_end, body_start = crlf, crlf + 4
        else:
            if len(buffer) - pos > self.limits.max_message_size:
                self._too_large(out, pos, None)
                return False
            self._scan = max(pos, len(buffer) - 3)
            return False
        try:
            message = _parse_head(bytes(buffer[pos:head_end]))
            length = _content_length(message)
        except ParseError as exc:
            self._break(out, f"unframeable message: {exc}", exc.headers)
            return False
        if length is None:
            self._break(out, "Content-Length is mandatory on stream transports", _salvaged(message))
            return False
        if body_start - pos + length > self.limits.max_message_size:
            self._too_large(out, pos, message)
            return False
        self._head = (message, body_start, length)
        return True

    def _too_large(
        self, out: list[Message | ParseError], pos: int, message: Message | None
    ) -> None:
        size = self.limits.max_message_size
        error = too_large_error(self._buffer[pos : pos + size], size, message)
        self.broken = str(error)
        out.append(error)

    def _break(
        self,
        out: list[Message | ParseError],
        reason: str,
        headers: Headers | None = None,
        status: int = 400,
    ) -> None:
        self.broken = reason
        out.append(ParseError(reason, headers=headers, status=status))

    # -- deadlines -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timer` must next be called; None while no deadline runs."""
        if self.broken:
            return None
        deadlines = []
        if self._first_by is not None:
            deadlines.append(self._first_by)
        timeout = self.limits.message_timeout
        if self._started_at is not None and timeout is not None:
            deadlines.append(self._started_at + timeout)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> str | None:
        """Check the deadlines at `now`; the reason to close the connection if one has passed."""
        if self.broken:
            return None
        limits = self.limits
        if self._first_by is not None and now >= self._first_by:
            self.broken = (
                f"no complete message within {limits.first_message_timeout:g} s of connecting"
            )
        elif (
            self._started_at is not None
            and limits.message_timeout is not None
            and now >= self._started_at + limits.message_timeout
        ):
            self.broken = f"message not complete within {limits.message_timeout:g} s"
        if self.broken:
            self._buffer.clear()
            self._head = None
        return self.broken

    @property
    def in_message(self) -> bool:
        """Whether part of a message has arrived (the stream is not between messages)."""
        return self._started_at is not None


def too_large_error(
    data: bytes | bytearray, max_size: int, message: Message | None = None
) -> ParseError:
    """The error for a message over `max_size` octets: status 513 (RFC 3261 section 21.5.14).

    It carries a request's headers, so that the endpoint can answer 513, when `message` (the
    parsed header section) is a request or, without it, when the header section at the start of
    `data` (or, if it does not end within `max_size` octets, its complete lines within them)
    parses as a request. The work is bounded by `max_size` whatever the length of `data`.
    """
    if message is None:
        window = bytes(data[:max_size])
        head_end, _ = _find_head_end(window)
        cut = head_end if head_end >= 0 else window.rfind(b"\n")
        if cut > 0:
            try:
                message = _parse_head(window[:cut].rstrip(b"\r"))
            except ParseError:
                message = None
    return ParseError(
        f"message larger than the maximum of {max_size} octets",
        headers=message.headers if isinstance(message, Request) else None,
        status=STATUS_MESSAGE_TOO_LARGE,
    )
