"""The handler line protocol: commands a handler writes, events siproc writes back.

Theory of operation
-------------------
Every call has a handler process. It prints *commands* on its stdout and reads *events* on its
stdin, one per line (``\\n``; a ``\\r\\n`` ending is tolerated on commands). This module is pure:
it turns one command line into a :data:`Command` value and one :data:`Event` value into a line. The
pipes, the 8192-byte line limit (:data:`MAX_LINE_BYTES`) and the decoding live in
:mod:`siproc.calls.handler`.

Command syntax (compatible with the original siproc manual page, plus extensions)::

    RINGING | ANSWER | PROGRESS | HOLD | RESUME | STOP
    HANGUP [status]                 status 400-699, e.g. "HANGUP 486" (rejects an unanswered call)
    PLAY <file> | TRANSFER <uri> | APLAY <device> | ARECORD <device> | ASTOP <device>
    DTMF <digits>                   0-9 * # A-D, case-insensitive
    MESSAGE <text>                  text with backslash escapes, see unescape_text()
    RECORD [<file> [stereo]]        RECORD alone stops the recording
    SAY <text>                      text to speech (calls/say.py), text unescaped as MESSAGE's
    GATHER [max=N] [timeout=S] [first=S] [finish=KEY] [bargein]   collect DTMF (calls/gather.py)
    STREAM <ws-url> [name=value ...] | STREAM STOP   a voice bot (media/media_stream_protocol.py)

* The verb is case-insensitive (ASCII only); whitespace around the line is ignored.
* The argument is the rest of the line after one run of whitespace, kept as typed: ``PLAY my
  file.wav`` plays ``my file.wav``. Only MESSAGE text is unescaped. For RECORD, a last word
  ``stereo`` (any case) selects stereo, so a file whose name ends in `` stereo`` cannot be recorded
  in mono through the line protocol.
* Blank lines are ignored (:func:`parse_command` returns ``None``).
* Anything else raises :class:`CommandError`, which carries what the ``ERROR`` event needs.

Event lines never contain ``\\n`` or ``\\r``: free text (MESSAGE text, ERROR and DISCONNECTED
reasons) is escaped with :func:`escape_text`; file names are sent exactly as the handler gave them
in PLAY (a command line cannot contain a line break, and :class:`Stopped` refuses one), so a handler
can compare the name it played with the one it gets back.

Commands and events are frozen dataclasses that validate in ``__post_init__`` (DESIGN.md section 1,
rule 2): a value that can be built is legal, and ``ValueError`` says why one cannot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from siproc.escaping import CONTROL_CHARACTERS, escaped
from siproc.media.media_stream_protocol import parse_stream_arguments

__all__ = [
    "DTMF_DIGITS",
    "MAX_LINE_BYTES",
    "Answer",
    "Aplay",
    "Arecord",
    "Astop",
    "Command",
    "CommandError",
    "Connected",
    "Disconnected",
    "Dtmf",
    "DtmfReceived",
    "ErrorEvent",
    "Event",
    "Gather",
    "Gathered",
    "Hangup",
    "Hold",
    "HoldEvent",
    "Message",
    "MessageReceived",
    "Play",
    "Progress",
    "ProgressEvent",
    "Record",
    "Resume",
    "ResumeEvent",
    "Ringing",
    "RingingEvent",
    "Say",
    "Stop",
    "Stopped",
    "Stream",
    "StreamEvent",
    "Transfer",
    "escape_text",
    "format_command",
    "format_event",
    "overlong_line_error",
    "parse_command",
    "parse_event",
    "safe_value",
    "unescape_text",
]

#: Longest command line accepted, in bytes, without its line ending. Enforced by the reader in
#: :mod:`siproc.calls.handler`, which reports longer lines through :func:`overlong_line_error`.
MAX_LINE_BYTES = 8192

#: DTMF events a handler may send or receive (RFC 4733 section 3.2, events 0-15).
DTMF_DIGITS = frozenset("0123456789*#ABCD")

#: Longest command token echoed back in an ERROR event, in characters.
_MAX_TOKEN_CHARS = 32
#: Longest piece of user input quoted in an error reason, in characters.
_MAX_QUOTE_CHARS = 32

#: GATHER limits: keys (also the default of max=), and seconds of timeout= and first=.
GATHER_MAX_KEYS = 128
GATHER_DEFAULT_TIMEOUT = 5.0
GATHER_SECONDS = (0.1, 3600.0)
#: Why a GATHER ended (the last word of GATHERED): its max= keys, its finish= key, a timeout,
#: or a later GATHER that replaced it.
GATHER_ENDINGS = ("max", "finish", "timeout", "cancelled")

#: SIP status range a handler may reject an unanswered call with (RFC 3261 section 21.4-21.6).
_HANGUP_STATUS_MIN = 400
_HANGUP_STATUS_MAX = 699


# --------------------------------------------------------------------------------------------
# Escaping


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
# The backslash and the control characters (siproc/escaping.py).
_ESCAPE_RE = re.compile(rf"[\\{CONTROL_CHARACTERS}]")
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}
_UNESCAPE_RE = re.compile(r"\\(?:([\\nr])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")


def _escape_one(match: re.Match[str]) -> str:
    return _ESCAPES.get(match.group()) or escaped(match.group())


def _unescape_one(match: re.Match[str]) -> str:
    simple, byte, wide = match.groups()
    if simple is not None:
        return _UNESCAPES[simple]
    return chr(int(byte or wide, 16))


def escape_text(text: str) -> str:
    """Escape free text for one event line: ``\\`` -> ``\\\\``, LF -> ``\\n``, CR ->
    ``\\r``, any other control character (C0, DEL, C1) -> ``\\xNN`` and U+2028/U+2029 ->
    ``\\uNNNN``.

    The result contains no control character and no line break of any kind.
    ``unescape_text(escape_text(s)) == s`` for every string.
    """
    return _ESCAPE_RE.sub(_escape_one, text)


def unescape_text(text: str) -> str:
    """Undo :func:`escape_text`: ``\\\\`` -> ``\\``, ``\\n`` -> LF, ``\\r`` -> CR,
    ``\\xNN`` and ``\\uNNNN`` -> that character.

    Sequences are read left to right. Any other backslash is kept literally, so ``\\q`` stays
    ``\\q`` and a trailing lone ``\\`` stays; a handler never gets an error for a stray backslash.
    """
    if "\\" not in text:
        return text
    return _UNESCAPE_RE.sub(_unescape_one, text)


def safe_value(text: str) -> str:
    """A value from the network made safe for a handler's environment: control characters
    (C0 with NUL, LF and CR, DEL, C1) and U+2028/U+2029 as ``\\xNN``/``\\uNNNN``; backslashes
    stay as they are (unlike :func:`escape_text`, this is not meant to be undone)."""
    return _ESCAPE_RE.sub(lambda m: m.group() if m.group() == "\\" else escaped(m.group()), text)


# --------------------------------------------------------------------------------------------
# Validation helpers (the messages are the reasons shown to handlers in ERROR events)


def _check_name(value: str, what: str) -> None:
    """Validate a file name, device name or URI argument."""
    if not value or value.isspace():
        raise ValueError(f"missing {what}")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"invalid character in {what}")
    if value != value.strip():
        raise ValueError(f"{what} has surrounding whitespace")


def _quote(text: str) -> str:
    """Quote a piece of user input for an error reason, shortened."""
    if len(text) > _MAX_QUOTE_CHARS:
        return repr(text[:_MAX_QUOTE_CHARS]) + "..."
    return repr(text)


def _normalise_dtmf(digits: str, what: str) -> str:
    upper = digits.upper()
    for char in upper:
        if char not in DTMF_DIGITS:
            raise ValueError(f"invalid DTMF character {_quote(char)}")
    if not upper:
        raise ValueError(f"missing {what}")
    return upper


def _check_token(value: str) -> None:
    """An ERROR event's command: one printable word."""
    if not value:
        raise ValueError("missing command")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"invalid command token {_quote(value)}")


# --------------------------------------------------------------------------------------------
# Commands (handler -> siproc)


@dataclass(frozen=True, slots=True)
class Ringing:
    """``RINGING``: send 180 Ringing for an incoming call."""


@dataclass(frozen=True, slots=True)
class Progress:
    """``PROGRESS``: send 183 Session Progress (early media) for an incoming call."""


@dataclass(frozen=True, slots=True)
class Answer:
    """``ANSWER``: answer an incoming call with 200 OK."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """``HANGUP [status]``: end the call.

    ``status`` (400-699) is the final response that rejects an unanswered incoming call, e.g. 486
    Busy Here; ``None`` lets the call choose (BYE, CANCEL, or a default rejection).
    """

    status: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not (
            _HANGUP_STATUS_MIN <= self.status <= _HANGUP_STATUS_MAX
        ):
            raise ValueError(
                f"status must be {_HANGUP_STATUS_MIN}-{_HANGUP_STATUS_MAX}, not {self.status}"
            )


@dataclass(frozen=True, slots=True)
class Play:
    """``PLAY <file>``: play a file to the remote end (several may play at once)."""

    file: str

    def __post_init__(self) -> None:
        _check_name(self.file, "file name")


@dataclass(frozen=True, slots=True)
class Stop:
    """``STOP``: stop the file that was started last."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """``TRANSFER <uri>``: transfer the call (REFER) to ``uri``; the call layer parses the URI."""

    uri: str

    def __post_init__(self) -> None:
        _check_name(self.uri, "URI")


@dataclass(frozen=True, slots=True)
class Dtmf:
    """``DTMF <digits>``: send each digit; normalised to upper case (``a`` -> ``A``)."""

    digits: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "digits", _normalise_dtmf(self.digits, "digits"))


@dataclass(frozen=True, slots=True)
class Message:
    """``MESSAGE <text>``: send a SIP MESSAGE; ``text`` is already unescaped."""

    text: str

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("missing text")


@dataclass(frozen=True, slots=True)
class Record:
    """``RECORD [<file> [stereo]]``: record the call to ``file``; ``file=None`` stops recording.

    ``stereo`` puts the remote side (what we receive) on the left channel and the local side
    (what we send) on the right.
    """

    file: str | None = None
    stereo: bool = False

    def __post_init__(self) -> None:
        if self.file is None:
            if self.stereo:
                raise ValueError("missing file name")
        else:
            _check_name(self.file, "file name")


@dataclass(frozen=True, slots=True)
class Aplay:
    """``APLAY <device>``: send what the sound card ``device`` captures to the remote end."""

    device: str

    def __post_init__(self) -> None:
        _check_name(self.device, "device name")


@dataclass(frozen=True, slots=True)
class Arecord:
    """``ARECORD <device>``: play the remote end's audio on the sound card ``device``."""

    device: str

    def __post_init__(self) -> None:
        _check_name(self.device, "device name")


@dataclass(frozen=True, slots=True)
class Astop:
    """``ASTOP <device>``: stop both APLAY and ARECORD on ``device``."""

    device: str

    def __post_init__(self) -> None:
        _check_name(self.device, "device name")


@dataclass(frozen=True, slots=True)
class Hold:
    """``HOLD``: put the call on hold (re-INVITE with a=sendonly, RFC 3264 section 8.4)."""


@dataclass(frozen=True, slots=True)
class Resume:
    """``RESUME``: take the call off hold."""


@dataclass(frozen=True, slots=True)
class Say:
    """``SAY <text>``: speak ``text`` (already unescaped) to the remote end (calls/say.py)."""

    text: str

    def __post_init__(self) -> None:
        if not self.text or self.text.isspace():
            raise ValueError("missing text")


@dataclass(frozen=True, slots=True)
class Gather:
    """``GATHER [max=N] [timeout=S] [first=S] [finish=KEY] [bargein]``: collect DTMF keys
    into one ``GATHERED`` event (calls/gather.py).

    ``max_keys`` ends it when that many keys are in; ``timeout`` is the most seconds between
    two keys, ``first`` the most before the first key (``timeout`` when None); ``finish`` is a
    key that ends it (and is not collected); ``bargein`` stops the prompts at the first key.
    """

    max_keys: int = GATHER_MAX_KEYS
    timeout: float = GATHER_DEFAULT_TIMEOUT
    first: float | None = None
    finish: str | None = None
    bargein: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_keys <= GATHER_MAX_KEYS:
            raise ValueError(f"max must be 1-{GATHER_MAX_KEYS}, not {self.max_keys}")
        low, high = GATHER_SECONDS
        for name, value in (("timeout", self.timeout), ("first", self.first)):
            if value is not None and not low <= value <= high:
                raise ValueError(f"{name} must be {low:g}-{high:g} seconds, not {value:g}")
        if self.finish is not None:
            finish = _normalise_dtmf(self.finish, "finish key")
            if len(finish) != 1:
                raise ValueError(f"finish must be one DTMF key, not {_quote(finish)}")
            object.__setattr__(self, "finish", finish)

    @property
    def first_timeout(self) -> float:
        return self.timeout if self.first is None else self.first


@dataclass(frozen=True, slots=True)
class Stream:
    """``STREAM <ws-or-wss-url> [name=value ...]``: put the call on a voice bot (Twilio Media
    Streams); ``url`` None is ``STREAM STOP``. ``format``: ``mulaw/8000`` or ``l16/16000``."""

    url: str | None
    format: str = "mulaw/8000"
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.url is not None:
            words = [self.url, f"format={self.format}", *(f"{n}={v}" for n, v in self.parameters)]
            parse_stream_arguments(" ".join(words))


Command: TypeAlias = (
    Ringing
    | Progress
    | Answer
    | Hangup
    | Play
    | Stop
    | Transfer
    | Dtmf
    | Message
    | Record
    | Aplay
    | Arecord
    | Astop
    | Hold
    | Resume
    | Say
    | Gather
    | Stream
)


class CommandError(ValueError):
    """A command line that cannot be carried out as written.

    ``command`` is the verb as typed, upper-cased and shortened to one printable word (what the
    ERROR event echoes); ``reason`` is a short human text such as ``"missing file name"``.
    ``ErrorEvent(err.command, err.reason)`` can always be built from it.
    """

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"{command}: {reason}")
        self.command = command
        self.reason = reason


def _error_token(word: str) -> str:
    """The command token for an ERROR event from the start of a line (never empty)."""
    token = word.upper() if word.isascii() else word
    token = "".join(c if c.isprintable() and not c.isspace() else "?" for c in token)
    return token[:_MAX_TOKEN_CHARS] or "?"


def overlong_line_error(head: str) -> CommandError:
    """The error for a line longer than :data:`MAX_LINE_BYTES`; ``head`` is its decoded start."""
    words = head.split(maxsplit=1)
    return CommandError(
        _error_token(words[0]) if words else "?", f"line too long (max {MAX_LINE_BYTES} bytes)"
    )


_NO_ARGUMENT: dict[str, type[Ringing | Progress | Answer | Stop | Hold | Resume]] = {
    "RINGING": Ringing,
    "PROGRESS": Progress,
    "ANSWER": Answer,
    "STOP": Stop,
    "HOLD": Hold,
    "RESUME": Resume,
}
_ONE_ARGUMENT: dict[str, type[Play | Transfer | Dtmf | Aplay | Arecord | Astop]] = {
    "PLAY": Play,
    "TRANSFER": Transfer,
    "DTMF": Dtmf,
    "APLAY": Aplay,
    "ARECORD": Arecord,
    "ASTOP": Astop,
}
_MISSING = {
    "PLAY": "missing file name",
    "TRANSFER": "missing URI",
    "DTMF": "missing digits",
    "APLAY": "missing device name",
    "ARECORD": "missing device name",
    "ASTOP": "missing device name",
    "MESSAGE": "missing text",
}
_STATUS_RE = re.compile(r"[0-9]{3}")
_RECORD_STEREO_RE = re.compile(r"(.*?)\s+stereo", re.IGNORECASE | re.DOTALL)


def _build(verb: str, argument: str | None) -> Command:
    """Build the command for an upper-cased verb; raises ValueError with the reason."""
    if verb in _NO_ARGUMENT:
        if argument is not None:
            raise ValueError(f"unexpected argument {_quote(argument)}")
        return _NO_ARGUMENT[verb]()
    if verb in _ONE_ARGUMENT or verb == "MESSAGE":
        if argument is None:
            raise ValueError(_MISSING[verb])
        if verb == "MESSAGE":
            return Message(unescape_text(argument))
        return _ONE_ARGUMENT[verb](argument)
    if verb == "HANGUP":
        if argument is None:
            return Hangup()
        if not _STATUS_RE.fullmatch(argument):
            raise ValueError(f"invalid status {_quote(argument)}")
        return Hangup(int(argument))
    if verb == "STREAM":
        if argument is None:
            raise ValueError("missing URL")
        if argument.strip().upper() == "STOP":
            return Stream(None)
        url, fmt, params = parse_stream_arguments(argument)
        return Stream(url, fmt.value, tuple(params.items()))
    if verb == "RECORD":
        if argument is None:
            return Record()
        match = _RECORD_STEREO_RE.fullmatch(argument)
        if match:
            return Record(match.group(1), stereo=True)
        if argument.lower() == "stereo":
            raise ValueError("missing file name")
        return Record(argument)
    if verb == "SAY":
        if argument is None:
            raise ValueError("missing text")
        return Say(unescape_text(argument))
    if verb == "GATHER":
        return _gather(argument or "")
    raise ValueError("unknown command")


_MAX_RE = re.compile(r"[0-9]{1,6}")
_SECONDS_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")


def _gather(argument: str) -> Gather:
    """The options of GATHER, each at most once: ``max=N timeout=S first=S finish=KEY bargein``."""
    options: dict[str, str] = {}
    for word in argument.split():
        name, equals, value = word.partition("=")
        name = name.lower()
        if name not in ("max", "timeout", "first", "finish", "bargein") or (
            bool(equals) == (name == "bargein")
        ):
            raise ValueError(f"unknown option {_quote(word)}")
        if name in options:
            raise ValueError(f"{name} given twice")
        options[name] = value
    max_text = options.get("max")
    if max_text is not None and not _MAX_RE.fullmatch(max_text):
        raise ValueError(f"invalid max {_quote(max_text)}")
    seconds: dict[str, float] = {}
    for name in ("timeout", "first"):
        if name in options:
            if not _SECONDS_RE.fullmatch(options[name]):
                raise ValueError(f"invalid {name} {_quote(options[name])}")
            seconds[name] = float(options[name])
    return Gather(
        max_keys=int(max_text) if max_text is not None else GATHER_MAX_KEYS,
        timeout=seconds.get("timeout", GATHER_DEFAULT_TIMEOUT),
        first=seconds.get("first"),
        finish=options.get("finish"),
        bargein="bargein" in options,
    )


def parse_command(line: str) -> Command | None:
    """Parse one command line (without its newline); ``None`` for a blank line.

    Raises :class:`CommandError` (and nothing else) for any line that is not a valid command.
    """
    stripped = line.strip()
    if not stripped:
        return None
    words = stripped.split(maxsplit=1)
    word = words[0]
    argument = words[1] if len(words) > 1 else None
    try:
        if not word.isascii():
            raise ValueError("unknown command")
        return _build(word.upper(), argument)
    except ValueError as exc:
        raise CommandError(_error_token(word), str(exc)) from None


def format_command(command: Command) -> str:
    """The line (without newline) a handler writes for ``command``; the inverse of parsing.

    Used by tests and helper libraries for handlers. A ``Record`` whose file name ends in a word
    ``stereo`` does not survive the round trip in mono (see the module docstring).
    """
    match command:
        case Ringing():
            return "RINGING"
        case Progress():
            return "PROGRESS"
        case Answer():
            return "ANSWER"
        case Hangup(status=None):
            return "HANGUP"
        case Hangup(status=status):
            return f"HANGUP {status}"
        case Play(file=file):
            return f"PLAY {file}"
        case Stop():
            return "STOP"
        case Transfer(uri=uri):
            return f"TRANSFER {uri}"
        case Dtmf(digits=digits):
            return f"DTMF {digits}"
        case Message(text=text):
            return f"MESSAGE {escape_text(text)}"
        case Record(file=None):
            return "RECORD"
        case Record(file=file, stereo=stereo):
            return f"RECORD {file} stereo" if stereo else f"RECORD {file}"
        case Aplay(device=device):
            return f"APLAY {device}"
        case Arecord(device=device):
            return f"ARECORD {device}"
        case Astop(device=device):
            return f"ASTOP {device}"
        case Hold():
            return "HOLD"
        case Resume():
            return "RESUME"
        case Say(text=text):
            return f"SAY {escape_text(text)}"
        case Gather():
            return _format_gather(command)
        case Stream(url=None):
            return "STREAM STOP"
        case Stream(url=str() as url, format=fmt, parameters=params):
            extra = "" if fmt == "mulaw/8000" else f" format={fmt}"
            return f"STREAM {url}{extra}" + "".join(f" {n}={v}" for n, v in params)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover - exhaustive above


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".")


def _format_gather(command: Gather) -> str:
    words = ["GATHER"]
    if command.max_keys != GATHER_MAX_KEYS:
        words.append(f"max={command.max_keys}")
    if command.timeout != GATHER_DEFAULT_TIMEOUT:
        words.append(f"timeout={_seconds_text(command.timeout)}")
    if command.first is not None:
        words.append(f"first={_seconds_text(command.first)}")
    if command.finish is not None:
        words.append(f"finish={command.finish}")
    if command.bargein:
        words.append("bargein")
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# Events (siproc -> handler)


@dataclass(frozen=True, slots=True)
class Connected:
    """``CONNECTED``: the call is established (answered by either side)."""


@dataclass(frozen=True, slots=True)
class RingingEvent:
    """``RINGING``: the remote end is ringing (180 received on an outgoing call)."""


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``PROGRESS``: session progress with early media (183 received on an outgoing call)."""


@dataclass(frozen=True, slots=True)
class HoldEvent:
    """``HOLD``: the remote end put the call on hold."""


@dataclass(frozen=True, slots=True)
class ResumeEvent:
    """``RESUME``: the remote end took the call off hold."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """``STOPPED <file>``: playback of ``file`` ended or was stopped; the name as in PLAY."""

    file: str

    def __post_init__(self) -> None:
        _check_name(self.file, "file name")


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """``DTMF <digit>``: the remote end sent one DTMF digit (upper case)."""

    digit: str

    def __post_init__(self) -> None:
        digit = _normalise_dtmf(self.digit, "digit")
        if len(digit) != 1:
            raise ValueError(f"one DTMF digit expected, not {_quote(digit)}")
        object.__setattr__(self, "digit", digit)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """``MESSAGE <text>``: a SIP MESSAGE arrived; ``text`` is escaped on the line."""

    text: str


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """``ERROR <COMMAND> <reason>``: a command was refused or failed.

    ``command`` is one printable word (see :attr:`CommandError.command`); ``reason`` is non-empty
    free text, escaped on the line.
    """

    command: str
    reason: str

    def __post_init__(self) -> None:
        _check_token(self.command)
        if not self.reason:
            raise ValueError("missing reason")


@dataclass(frozen=True, slots=True)
class Disconnected:
    """``DISCONNECTED <status> <reason>``: the call ended.

    ``status`` is the SIP status (100-699) that describes the end: the final response of a failed
    call, or the convention of RFC 3261 section 8.1.3.1 for local failures (408 timeout, 503
    transport error). ``reason`` is free text (may be empty), escaped on the line.
    """

    status: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise ValueError(f"status must be 100-699, not {self.status}")


@dataclass(frozen=True, slots=True)
class Gathered:
    """``GATHERED <keys> <why>``: a GATHER ended; ``keys`` as pressed (upper case, without
    the finish key; ``-`` on the line when none), ``why`` one of :data:`GATHER_ENDINGS`."""

    keys: str
    why: str

    def __post_init__(self) -> None:
        if self.keys:
            object.__setattr__(self, "keys", _normalise_dtmf(self.keys, "keys"))
        if self.why not in GATHER_ENDINGS:
            raise ValueError(
                f"why must be one of {', '.join(GATHER_ENDINGS)}, not {_quote(self.why)}"
            )


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """``STREAM CONNECTED <streamSid>`` or ``STREAM STOPPED <reason>`` (``handler``: STREAM
    STOP; ``bot``: the bot closed the WebSocket normally); failures are ``ERROR STREAM``."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in ("CONNECTED", "STOPPED"):
            raise ValueError(f"unknown STREAM event {_quote(self.kind)}")
        if not self.value:
            raise ValueError("missing value")


Event: TypeAlias = (
    Connected
    | RingingEvent
    | ProgressEvent
    | HoldEvent
    | ResumeEvent
    | Stopped
    | DtmfReceived
    | MessageReceived
    | ErrorEvent
    | Disconnected
    | Gathered
    | StreamEvent
)


def format_event(event: Event) -> str:
    """The event line, without its newline; never contains CR or LF."""
    match event:
        case Connected():
            return "CONNECTED"
        case RingingEvent():
            return "RINGING"
        case ProgressEvent():
            return "PROGRESS"
        case HoldEvent():
            return "HOLD"
        case ResumeEvent():
            return "RESUME"
        case Stopped(file=file):
            return f"STOPPED {file}"
        case DtmfReceived(digit=digit):
            return f"DTMF {digit}"
        case MessageReceived(text=text):
            return f"MESSAGE {escape_text(text)}"
        case ErrorEvent(command=command, reason=reason):
            return f"ERROR {command} {escape_text(reason)}"
        case StreamEvent(kind=kind, value=value):
            return f"STREAM {kind} {escape_text(value)}"
        case Disconnected(status=status, reason=""):
            return f"DISCONNECTED {status}"
        case Disconnected(status=status, reason=reason):
            return f"DISCONNECTED {status} {escape_text(reason)}"
        case Gathered(keys=keys, why=why):
            return f"GATHERED {keys or '-'} {why}"
    raise TypeError(f"not an event: {event!r}")  # pragma: no cover - exhaustive above


_BARE_EVENTS: dict[str, Event] = {
    "CONNECTED": Connected(),
    "RINGING": RingingEvent(),
    "PROGRESS": ProgressEvent(),
    "HOLD": HoldEvent(),
    "RESUME": ResumeEvent(),
}


def parse_event(line: str) -> Event:
    """Parse an event line as :func:`format_event` writes it (for tests and handler libraries).

    A trailing ``\\n`` or ``\\r\\n`` is removed; fields are separated by exactly one space, so text
    keeps its own spacing. Raises ``ValueError`` for anything else.
    """
    line = line.removesuffix("\n").removesuffix("\r")
    verb, _, rest = line.partition(" ")
    if verb in _BARE_EVENTS and line == verb:
        return _BARE_EVENTS[verb]
    if verb == "STOPPED":
        return Stopped(rest)
    if verb == "DTMF":
        return DtmfReceived(rest)
    if verb == "MESSAGE" and line != verb:
        return MessageReceived(unescape_text(rest))
    if verb == "ERROR":
        command, _, reason = rest.partition(" ")
        return ErrorEvent(command, unescape_text(reason))
    if verb == "GATHERED":
        keys, _, why = rest.partition(" ")
        return Gathered("" if keys == "-" else keys, why)
    if verb == "STREAM":
        kind, _, value = rest.partition(" ")
        return StreamEvent(kind, unescape_text(value))
    if verb == "DISCONNECTED":
        status, _, reason = rest.partition(" ")
        if not _STATUS_RE.fullmatch(status):
            raise ValueError(f"invalid status {_quote(status)}")
        if " " in rest and not reason:
            raise ValueError("empty reason after status")
        return Disconnected(int(status), unescape_text(reason))
    raise ValueError(f"not an event line: {_quote(line)}")
