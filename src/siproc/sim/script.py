"""The simulator's script language (siproc-sim(1)): one step per line, parsed before anything runs.

Theory of operation
-------------------
A script says what the far end of one call does and what the handler is expected to do. It is
read whole and checked first: a mistake is a :class:`ScriptError` naming the file and line
(``ivr.sim:4: unknown step 'dail' ...``), and nothing runs. Steps run in order, in real time::

    # comment; blank lines are ignored
    header X-Ticket: 42                 X- header of the incoming INVITE (before `call from`)
    call from "Alice" <sip:alice@example.com> [to sip:ivr@example.com]
    call to sip:bob@example.com         an outgoing call (as `CALL` on siproc's stdin)
    ringing | progress | answer         the far end of an outgoing call: 180, 183, 200
    reject [STATUS [REASON]]            ... or refuses it (default 486 Busy Here)
    expect VERB [ARGUMENT] [within T]   the handler sends VERB (ARGUMENT: a glob) within T
    expect no VERB [ARGUMENT] [within T]   ... does not send it (the step lasts T)
    expect exit [STATUS] [within T]     the handler exits (with STATUS) within T
    dtmf 1 2 3 | dtmf 123#              the far end presses keys (100 ms apart)
    message TEXT                        the far end sends a SIP MESSAGE
    hold | resume                       the far end puts the call on hold / takes it off
    audio tone 440 3s | audio silence 2s | audio file FILE
                                        the far end speaks for that long (into a RECORD)
    wait T                              nothing happens for T
    hangup                              the far end hangs up (or cancels an unanswered call)

Times are ``2s``, ``1.5s``, ``500ms`` or a bare number of seconds; ``within`` defaults to
:data:`DEFAULT_WITHIN` seconds. The first step (after ``header`` lines) must be a ``call``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from siproc.calls.protocol import DTMF_DIGITS
from siproc.sip.errors import ParseError
from siproc.sip.uri import NameAddr, parse_name_addr

__all__ = [
    "DEFAULT_WITHIN",
    "Audio",
    "CallStep",
    "Expect",
    "ExpectExit",
    "FarEnd",
    "Keys",
    "Script",
    "ScriptError",
    "Step",
    "TextMessage",
    "Wait",
    "parse_script",
]

#: Seconds an ``expect`` waits when it has no ``within``.
DEFAULT_WITHIN = 5.0
#: Longest time a step may name, in seconds (a typo such as ``3000s`` is caught).
MAX_SECONDS = 3600.0
#: The local URI of an incoming call without ``to``.
DEFAULT_LOCAL_URI = "sip:siproc@siproc-sim.invalid"

_TIME_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s)?", re.IGNORECASE)
_VERB_RE = re.compile(r"[A-Za-z]+")
_HEADER_RE = re.compile(r"([Xx]-[A-Za-z0-9.!%*_+`'~-]+)\s*:\s*(.*)")

_FAR_END = ("ringing", "progress", "answer", "reject", "hold", "resume", "hangup")
_STEPS = ("header", "call", "expect", "dtmf", "message", "audio", "wait", *_FAR_END)


class ScriptError(ValueError):
    """A script that cannot run; ``str()`` is one line: ``name:line: problem``."""

    def __init__(self, name: str, line: int, problem: str) -> None:
        super().__init__(f"{name}:{line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CallStep:
    """``call from ...`` (``incoming``) or ``call to ...``: the handler starts."""

    line: int
    text: str
    incoming: bool
    remote: NameAddr
    local_uri: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FarEnd:
    """``ringing``, ``progress``, ``answer``, ``reject``, ``hold``, ``resume`` or ``hangup``."""

    line: int
    text: str
    action: str
    status: int = 486
    reason: str = "Busy Here"


@dataclass(frozen=True, slots=True)
class Keys:
    """``dtmf ...``: the far end presses ``digits``, one after the other."""

    line: int
    text: str
    digits: str


@dataclass(frozen=True, slots=True)
class TextMessage:
    """``message TEXT``: a SIP MESSAGE from the far end."""

    line: int
    text: str
    message: str


@dataclass(frozen=True, slots=True)
class Audio:
    """``audio tone F T`` / ``audio silence T`` / ``audio file FILE``: what the far end says."""

    line: int
    text: str
    kind: str  # tone, silence or file
    seconds: float = 0.0
    frequency: float = 0.0
    file: str = ""


@dataclass(frozen=True, slots=True)
class Wait:
    line: int
    text: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Expect:
    """``expect VERB [PATTERN] [within T]``: a command line of the handler; ``expect no ...``
    (``absent``): no such line, among those not matched yet and for the next T seconds."""

    line: int
    text: str
    verb: str
    pattern: str | None
    within: float
    absent: bool = False


@dataclass(frozen=True, slots=True)
class ExpectExit:
    """``expect exit [STATUS] [within T]``: the handler's end."""

    line: int
    text: str
    status: int | None
    within: float


Step: TypeAlias = CallStep | FarEnd | Keys | TextMessage | Audio | Wait | Expect | ExpectExit


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    steps: tuple[Step, ...]

    @property
    def call(self) -> CallStep:
        first = self.steps[0]
        assert isinstance(first, CallStep)
        return first

    @property
    def expects_exit(self) -> bool:
        return any(isinstance(step, ExpectExit) for step in self.steps)


def _seconds(text: str, what: str) -> float:
    match = _TIME_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{what} must be a time such as 2s, 1.5s or 500ms, not {text!r}")
    value = float(match.group(1)) / (1000 if (match.group(2) or "").lower() == "ms" else 1)
    if value > MAX_SECONDS:
        raise ValueError(f"{what} {text!r} is over {MAX_SECONDS:g} s")
    return value


def _within(words: list[str]) -> tuple[list[str], float]:
    """Split a trailing ``within T`` off ``words``."""
    if len(words) >= 2 and words[-2].lower() == "within":
        return words[:-2], _seconds(words[-1], "within")
    if words and words[-1].lower() == "within":
        raise ValueError("within needs a time, e.g. within 2s")
    if any(word.lower() == "within" for word in words):
        raise ValueError("`within T` must end the line, T in one word such as 2s")
    return words, DEFAULT_WITHIN


def _status(text: str) -> int:
    if not text.isdigit() or not 300 <= int(text) <= 699:
        raise ValueError(f"status must be 300-699, not {text!r}")
    return int(text)


def _name_addr(text: str, what: str) -> NameAddr:
    try:
        return parse_name_addr(text)
    except (ParseError, ValueError) as exc:
        raise ValueError(f"{what} {text!r} is not a SIP URI or name-address ({exc})") from None


def _call(number: int, text: str, rest: str, headers: list[tuple[str, str]]) -> CallStep:
    direction, _, target = rest.partition(" ")
    target = target.strip()
    if direction.lower() == "from" and target:
        remote_text, _, local = target.partition(" to ")
        remote = _name_addr(remote_text.strip(), "caller")
        local_uri = str(_name_addr(local.strip(), "callee").uri) if local else DEFAULT_LOCAL_URI
        return CallStep(number, text, True, remote, local_uri, tuple(headers))
    if direction.lower() == "to" and target:
        if headers:
            raise ValueError("header lines are for incoming calls (call from ...)")
        return CallStep(number, text, False, _name_addr(target, "callee"), DEFAULT_LOCAL_URI)
    raise ValueError("say `call from <uri>` (incoming) or `call to <uri>` (outgoing)")


def _step(number: int, text: str, verb: str, rest: str) -> Step:
    words = rest.split()
    match verb:
        case "expect":
            words, within = _within(words)
            if not words:
                raise ValueError("expect what? e.g. expect ANSWER within 2s")
            if words[0].lower() == "exit":
                if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
                    raise ValueError("say `expect exit [STATUS] [within T]`")
                status = int(words[1]) if len(words) == 2 else None
                return ExpectExit(number, text, status, within)
            absent = words[0].lower() == "no"
            if absent:
                words = words[1:]
                if not words:
                    raise ValueError("expect no what? e.g. expect no HANGUP within 2s")
            if not _VERB_RE.fullmatch(words[0]):
                raise ValueError(f"{words[0]!r} is not a command name such as PLAY")
            pattern = " ".join(words[1:]) or None
            return Expect(number, text, words[0].upper(), pattern, within, absent)
        case "dtmf":
            digits = "".join(words).upper()
            bad = [c for c in digits if c not in DTMF_DIGITS]
            if not digits or bad:
                raise ValueError(f"dtmf takes keys 0-9 * # A-D, not {rest.strip()!r}")
            return Keys(number, text, digits)
        case "message":
            if not rest.strip():
                raise ValueError("message needs a text")
            return TextMessage(number, text, rest.strip())
        case "wait":
            if len(words) != 1:
                raise ValueError("say `wait T`, e.g. wait 2s")
            return Wait(number, text, _seconds(words[0], "wait"))
        case "audio":
            return _audio(number, text, words)
        case "reject":
            if len(words) > 0:
                reason = " ".join(words[1:]) or "Rejected"
                return FarEnd(number, text, verb, _status(words[0]), reason)
            return FarEnd(number, text, verb)
        case _:
            if words:
                raise ValueError(f"{verb} takes nothing after it")
            return FarEnd(number, text, verb)


def _audio(number: int, text: str, words: list[str]) -> Audio:
    kind = words[0].lower() if words else ""
    if kind == "tone" and len(words) == 3:
        try:
            frequency = float(words[1])
        except ValueError:
            frequency = 0.0
        if not 20 <= frequency <= 3900:
            raise ValueError(f"tone frequency must be 20-3900 Hz, not {words[1]!r}")
        return Audio(number, text, "tone", _seconds(words[2], "tone length"), frequency)
    if kind == "silence" and len(words) == 2:
        return Audio(number, text, "silence", _seconds(words[1], "silence length"))
    if kind == "file" and len(words) >= 2:
        return Audio(number, text, "file", file=" ".join(words[1:]))
    raise ValueError("say `audio tone 440 3s`, `audio silence 2s` or `audio file FILE`")


def parse_script(text: str, name: str = "script") -> Script:
    """Parse a whole script; raises :class:`ScriptError` at the first mistake."""
    steps: list[Step] = []
    headers: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        try:
            if verb not in _STEPS:
                raise ValueError(f"unknown step {verb!r} (steps: {', '.join(_STEPS)})")
            if verb == "header":
                if steps:
                    raise ValueError("header lines go before `call from`")
                match = _HEADER_RE.fullmatch(rest.strip())
                if not match:
                    raise ValueError("say `header X-Name: value` (X- headers only)")
                headers.append((match.group(1), match.group(2)))
                continue
            if verb == "call":
                if steps:
                    raise ValueError("one call per script: `call` only as the first step")
                steps.append(_call(number, line, rest.strip(), headers))
                continue
            if not steps:
                raise ValueError("the script must start with `call from <uri>` or `call to <uri>`")
            step = _step(number, line, verb, rest)
            first = steps[0]
            assert isinstance(first, CallStep)
            outgoing_only = ("ringing", "progress", "answer", "reject")
            if isinstance(step, FarEnd) and step.action in outgoing_only and first.incoming:
                raise ValueError(
                    f"{verb} is what the far end of an outgoing call does (`call to <uri>`)"
                )
            steps.append(step)
        except ValueError as exc:
            raise ScriptError(name, number, str(exc)) from None
    if not steps:
        raise ScriptError(name, 1, "empty script: start with `call from <uri>`")
    return Script(name, tuple(steps))
