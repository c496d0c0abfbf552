"""The handler line protocol: command parsing, event formatting, escaping."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from siproc.calls.protocol import (
    MAX_LINE_BYTES,
    Answer,
    Aplay,
    Arecord,
    Astop,
    Command,
    CommandError,
    Connected,
    Disconnected,
    Dtmf,
    DtmfReceived,
    ErrorEvent,
    Event,
    Gather,
    Gathered,
    Hangup,
    Hold,
    HoldEvent,
    Message,
    MessageReceived,
    Play,
    Progress,
    ProgressEvent,
    Record,
    Resume,
    ResumeEvent,
    Ringing,
    RingingEvent,
    Say,
    Stop,
    Stopped,
    Transfer,
    escape_text,
    format_command,
    format_event,
    overlong_line_error,
    parse_command,
    parse_event,
    safe_value,
    unescape_text,
)

# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("RINGING", Ringing()),
        ("ANSWER", Answer()),
        ("PROGRESS", Progress()),
        ("HOLD", Hold()),
        ("RESUME", Resume()),
        ("STOP", Stop()),
        ("HANGUP", Hangup()),
        ("HANGUP 486", Hangup(486)),
        ("hangup   603", Hangup(603)),
        ("PLAY message.wav", Play("message.wav")),
        ("PLAY my file.wav", Play("my file.wav")),
        ("PLAY   two  spaces.wav  ", Play("two  spaces.wav")),
        ("PLAY /tmp/a\\b.wav", Play("/tmp/a\\b.wav")),
        ("PLAY héllo wörld.ogg", Play("héllo wörld.ogg")),
        ("TRANSFER sip:bob@example.com", Transfer("sip:bob@example.com")),
        ("DTMF 0123456789*#ABCD", Dtmf("0123456789*#ABCD")),
        ("dtmf abcd", Dtmf("ABCD")),
        ("MESSAGE hello world", Message("hello world")),
        ("MESSAGE line1\\nline2\\r\\\\end\\q", Message("line1\nline2\r\\end\\q")),
        ("RECORD", Record()),
        ("RECORD call.wav", Record("call.wav")),
        ("RECORD call.wav stereo", Record("call.wav", stereo=True)),
        ("RECORD my call.wav STEREO", Record("my call.wav", stereo=True)),
        ("RECORD stereo.wav", Record("stereo.wav")),
        ("RECORD stereo stereo", Record("stereo", stereo=True)),
        ("APLAY default", Aplay("default")),
        ("ARECORD plughw:CARD=PCH,DEV=0", Arecord("plughw:CARD=PCH,DEV=0")),
        ("ASTOP default", Astop("default")),
        ("  answer \r", Answer()),
        ("\tAnSwEr", Answer()),
    ],
)
def test_parse_command(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize("line", ["", "   ", "\t \r", "\r"])
def test_blank_lines_are_ignored(line: str) -> None:
    assert parse_command(line) is None


@pytest.mark.parametrize(
    ("line", "command", "reason"),
    [
        ("FOO", "FOO", "unknown command"),
        ("foo bar baz", "FOO", "unknown command"),
        ("PLAY", "PLAY", "missing file name"),
        ("play   ", "PLAY", "missing file name"),
        ("TRANSFER", "TRANSFER", "missing URI"),
        ("DTMF", "DTMF", "missing digits"),
        ("DTMF 12x4", "DTMF", "invalid DTMF character 'X'"),
        ("DTMF 1 2", "DTMF", "invalid DTMF character ' '"),
        ("MESSAGE", "MESSAGE", "missing text"),
        ("APLAY", "APLAY", "missing device name"),
        ("ARECORD", "ARECORD", "missing device name"),
        ("ASTOP", "ASTOP", "missing device name"),
        ("RECORD stereo", "RECORD", "missing file name"),
        ("ANSWER now", "ANSWER", "unexpected argument 'now'"),
        ("STOP all", "STOP", "unexpected argument 'all'"),
        ("HANGUP busy", "HANGUP", "invalid status 'busy'"),
        ("HANGUP 4860", "HANGUP", "invalid status '4860'"),
        ("HANGUP 200", "HANGUP", "status must be 400-699, not 200"),
        ("HANGUP 700", "HANGUP", "status must be 400-699, not 700"),
        ("PLAY a\x00b", "PLAY", "invalid character in file name"),
        ("PLAY a\rb", "PLAY", "invalid character in file name"),
        # No Unicode case mapping into a verb (long s upper-cases to S); kept as typed.
        ("\u017ftop", "\u017ftop", "unknown command"),
    ],
)
def test_parse_command_errors(line: str, command: str, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(line)
    assert info.value.command == command
    assert info.value.reason == reason
    assert str(info.value) == f"{command}: {reason}"
    assert isinstance(info.value, ValueError)


def test_error_token_is_one_short_printable_word() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("x" * 1000 + "\x01\x7f")
    assert info.value.command == "X" * 32
    with pytest.raises(CommandError) as info:
        parse_command("a\x01b rest")
    assert info.value.command == "A?B"


def test_long_argument_is_quoted_shortened() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("ANSWER " + "y" * 100)
    assert info.value.reason == "unexpected argument " + repr("y" * 32) + "..."


def test_overlong_line_error() -> None:
    error = overlong_line_error("play " + "x" * 9000)
    assert (error.command, error.reason) == ("PLAY", f"line too long (max {MAX_LINE_BYTES} bytes)")
    assert overlong_line_error(" " * 100).command == "?"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Hangup(200), "status must be 400-699, not 200"),
        (lambda: Play(""), "missing file name"),
        (lambda: Play(" a"), "file name has surrounding whitespace"),
        (lambda: Play("a\nb"), "invalid character in file name"),
        (lambda: Transfer(" "), "missing URI"),
        (lambda: Dtmf(""), "missing digits"),
        (lambda: Dtmf("E"), "invalid DTMF character 'E'"),
        (lambda: Message(""), "missing text"),
        (lambda: Record(None, stereo=True), "missing file name"),
        (lambda: Aplay(""), "missing device name"),
        (lambda: Stopped("a\rb"), "invalid character in file name"),
        (lambda: DtmfReceived("12"), "one DTMF digit expected, not '12'"),
        (lambda: DtmfReceived("x"), "invalid DTMF character 'X'"),
        (lambda: ErrorEvent("", "r"), "missing command"),
        (lambda: ErrorEvent("A B", "r"), "invalid command token 'A B'"),
        (lambda: ErrorEvent("A\n", "r"), "invalid command token 'A\\n'"),
        (lambda: ErrorEvent("PLAY", ""), "missing reason"),
        (lambda: Disconnected(99, "x"), "status must be 100-699, not 99"),
    ],
)
def test_invalid_values_cannot_be_built(build: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build()  # type: ignore[operator]
    assert str(info.value) == message


def test_values_are_frozen() -> None:
    dtmf = Dtmf("1a")
    assert dtmf.digits == "1A"
    with pytest.raises(AttributeError):
        dtmf.digits = "2"  # type: ignore[misc]


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Connected(), "CONNECTED"),
        (RingingEvent(), "RINGING"),
        (ProgressEvent(), "PROGRESS"),
        (HoldEvent(), "HOLD"),
        (ResumeEvent(), "RESUME"),
        (Stopped("my file.wav"), "STOPPED my file.wav"),
        (Stopped("a\\b.wav"), "STOPPED a\\b.wav"),  # as given in PLAY, not escaped
        (DtmfReceived("5"), "DTMF 5"),
        (DtmfReceived("a"), "DTMF A"),
        (MessageReceived("hi there"), "MESSAGE hi there"),
        (MessageReceived("a\nb\r\\c"), "MESSAGE a\\nb\\r\\\\c"),
        (MessageReceived(""), "MESSAGE "),
        (ErrorEvent("PLAY", "missing file name"), "ERROR PLAY missing file name"),
        (
            ErrorEvent("PLAY", "cannot open:\nno such file"),
            "ERROR PLAY cannot open:\\nno such file",
        ),
        (Disconnected(200, "BYE received"), "DISCONNECTED 200 BYE received"),
        (Disconnected(486, "Busy Here"), "DISCONNECTED 486 Busy Here"),
        (Disconnected(408), "DISCONNECTED 408"),
    ],
)
def test_format_event(event: Event, line: str) -> None:
    assert format_event(event) == line
    assert parse_event(line) == event
    assert parse_event(line + "\r\n") == event


@pytest.mark.parametrize(
    "line",
    ["", "connected", "CONNECTED now", "FOO", "DTMF", "DTMF 12", "STOPPED", "ERROR", "ERROR X",
     "MESSAGE", "DISCONNECTED", "DISCONNECTED x", "DISCONNECTED 200 ", "DISCONNECTED 99"],
)  # fmt: skip
def test_parse_event_rejects(line: str) -> None:
    with pytest.raises(ValueError):
        parse_event(line)


def test_command_error_always_makes_an_error_event() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("PLAY")
    event = ErrorEvent(info.value.command, info.value.reason)
    assert format_event(event) == "ERROR PLAY missing file name"


# --- escaping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("a\\b", "a\\\\b"),
        ("\\n", "\\\\n"),
        ("\r\n", "\\r\\n"),
        ("a\x00b", "a\\x00b"),
        ("\x1b[31m", "\\x1b[31m"),
        ("\x7f\x85", "\\x7f\\x85"),
        ("\u2028", "\\u2028"),
        ("café", "café"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped
    assert unescape_text(escaped) == raw


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("\\q", "\\q"),  # unknown escapes stay as typed
        ("\\t", "\\t"),
        ("end\\", "end\\"),  # a trailing lone backslash stays
        ("\\\\\\q", "\\\\q"),
        ("\\\\n", "\\n"),
    ],
)
def test_unescape_keeps_unknown_sequences(escaped: str, raw: str) -> None:
    assert unescape_text(escaped) == raw


# --- properties -------------------------------------------------------------------------------


@given(st.text())
def test_escape_round_trip(text: str) -> None:
    escaped = escape_text(text)
    assert len(escaped.splitlines()) <= 1
    assert all(c.isprintable() or c == " " or ord(c) > 0x9F for c in escaped)
    assert unescape_text(escaped) == text


@given(st.text())
def test_safe_value_has_no_control_characters(text: str) -> None:
    value = safe_value(text)
    assert len(value.splitlines()) <= 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    assert safe_value("a\\b\x00") == "a\\b\\x00"  # backslashes stay as they are


@given(st.text())
@example("\\")
@example("PLAY \x85")
@example("HANGUP \u0663\u0663\u0663")  # Arabic-Indic digits are not a status
def test_parse_command_raises_only_command_error(line: str) -> None:
    try:
        command = parse_command(line)
    except CommandError as error:
        # Whatever the line, the error can be reported to the handler.
        event_line = format_event(ErrorEvent(error.command, error.reason))
        assert "\n" not in event_line
        assert "\r" not in event_line
        return
    if command is not None:
        assert parse_command(format_command(command)) == command


_names = st.text(min_size=1).filter(
    lambda s: s == s.strip() and not any(c in s for c in "\r\n\x00")
)
_digits = st.sampled_from(sorted("0123456789*#ABCDabcd"))
_commands: st.SearchStrategy[Command] = st.one_of(
    st.sampled_from([Ringing(), Progress(), Answer(), Stop(), Hold(), Resume(), Hangup()]),
    st.builds(Hangup, st.integers(400, 699)),
    st.builds(Play, _names),
    st.builds(Transfer, _names),
    st.builds(Dtmf, st.lists(_digits, min_size=1).map("".join)),
    # MESSAGE text keeps no surrounding whitespace of its own on the line (escapes aside).
    st.builds(
        Message, st.text(min_size=1).filter(lambda s: escape_text(s).strip() == escape_text(s))
    ),
    st.builds(Record, _names, st.just(True)),
    st.builds(Record, _names.filter(lambda s: not s.lower().endswith("stereo"))),
    st.builds(Aplay, _names),
    st.builds(Arecord, _names),
    st.builds(Astop, _names),
    st.builds(Say, st.text(min_size=1).filter(lambda s: escape_text(s).strip() == escape_text(s))),
    st.builds(
        Gather,
        st.integers(1, 128),
        st.sampled_from([0.1, 0.25, 1.0, 3.0, 5.0, 12.5, 3600.0]),
        st.one_of(st.none(), st.sampled_from([0.1, 2.0, 5.0, 1234.567891])),
        st.one_of(st.none(), _digits),
        st.booleans(),
    ),
)
_events: st.SearchStrategy[Event] = st.one_of(
    st.sampled_from([Connected(), RingingEvent(), ProgressEvent(), HoldEvent(), ResumeEvent()]),
    st.builds(Stopped, _names),
    st.builds(DtmfReceived, _digits),
    st.builds(MessageReceived, st.text()),
    st.builds(
        ErrorEvent,
        st.text(min_size=1).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s)),
        st.text(min_size=1),
    ),
    st.builds(Disconnected, st.integers(100, 699), st.text()),
    st.builds(
        Gathered,
        st.lists(_digits, max_size=8).map("".join),
        st.sampled_from(["max", "finish", "timeout", "cancelled"]),
    ),
)


@given(_commands)
def test_command_round_trip(command: Command) -> None:
    line = format_command(command)
    assert "\n" not in line
    assert parse_command(line) == command


@given(_events)
def test_format_event_is_one_line_and_round_trips(event: Event) -> None:
    line = format_event(event)
    assert "\n" not in line
    assert "\r" not in line
    assert parse_event(line) == event


# --------------------------------------------------------------------------------------------
# SAY and GATHER (issue 10)


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("SAY Hello there", Say("Hello there")),
        ("say  two\\nlines ", Say("two\nlines")),
        ("SAY -rf --help", Say("-rf --help")),  # text, not options: the engine gets it after --
        ("GATHER", Gather()),
        ("GATHER max=4 timeout=3 finish=#", Gather(max_keys=4, timeout=3.0, finish="#")),
        ("gather MAX=1 first=0.5 bargein finish=a", Gather(1, 5.0, 0.5, "A", True)),
        ("GATHER timeout=3600 first=0.1", Gather(timeout=3600.0, first=0.1)),
    ],
)
def test_parse_say_and_gather(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("SAY", "missing text"),
        ("SAY \\x20", "missing text"),  # only a space once unescaped
        ("GATHER max=0", "max must be 1-128, not 0"),
        ("GATHER max=129", "max must be 1-128, not 129"),
        ("GATHER max=-1", "invalid max '-1'"),
        ("GATHER max=1234567", "invalid max '1234567'"),
        ("GATHER timeout=0", "timeout must be 0.1-3600 seconds, not 0"),
        ("GATHER first=1e3", "invalid first '1e3'"),
        ("GATHER timeout=7200", "timeout must be 0.1-3600 seconds, not 7200"),
        ("GATHER finish=##", "finish must be one DTMF key, not '##'"),
        ("GATHER finish=x", "invalid DTMF character 'X'"),
        ("GATHER finish=", "missing finish key"),
        ("GATHER max=2 max=3", "max given twice"),
        ("GATHER bargein=yes", "unknown option 'bargein=yes'"),
        ("GATHER maxkeys=3", "unknown option 'maxkeys=3'"),
        ("GATHER 4", "unknown option '4'"),
    ],
)
def test_say_and_gather_errors(line: str, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(line)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Gathered("123", "finish"), "GATHERED 123 finish"),
        (Gathered("", "timeout"), "GATHERED - timeout"),  # no key: a dash keeps two fields
        (Gathered("1a", "max"), "GATHERED 1A max"),
    ],
)
def test_format_gathered(event: Event, line: str) -> None:
    assert format_event(event) == line
    assert parse_event(line) == event


def test_gathered_refuses_an_unknown_ending() -> None:
    with pytest.raises(ValueError, match="why must be one of max, finish, timeout, cancelled"):
        Gathered("1", "bored")


def test_stream_command_parses_url_format_and_parameters() -> None:
    from siproc.calls.protocol import Stream, StreamEvent

    assert parse_command("stream ws://127.0.0.1:9/bot lang=de id=7") == Stream(
        "ws://127.0.0.1:9/bot", "mulaw/8000", (("lang", "de"), ("id", "7"))
    )
    assert parse_command("STREAM STOP") == Stream(None)
    raw = parse_command("STREAM wss://h/x format=l16/16000")
    assert raw == Stream("wss://h/x", "l16/16000")
    for command in (Stream(None), raw, Stream("ws://h/", parameters=(("a", "b"),))):
        assert parse_command(format_command(command)) == command
    for line, reason in [
        ("STREAM", "missing URL"),
        ("STREAM http://h/", "not a ws:// or wss:// URL"),
        ("STREAM ws://h/ x", "not a name=value parameter"),
        ("STREAM ws://h/ format=gsm", "unknown format"),
    ]:
        with pytest.raises(CommandError) as info:
            parse_command(line)
        assert (info.value.command, info.value.reason[: len(reason)]) == ("STREAM", reason)
    for event in (StreamEvent("CONNECTED", "MZ01"), StreamEvent("STOPPED", "the bot\nleft")):
        line = format_event(event)
        assert "\n" not in line and parse_event(line) == event
    assert format_event(StreamEvent("STOPPED", "handler")) == "STREAM STOPPED handler"
    with pytest.raises(ValueError):
        StreamEvent("STARTED", "x")
