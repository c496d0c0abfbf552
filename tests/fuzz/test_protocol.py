"""Fuzz calls/protocol.py: handler command lines and event lines.

Lines are decoded as the handler reader does (UTF-8 with replacement). Invariants:
``parse_command`` raises nothing but ``CommandError``, whose fields always build the ERROR event
sent back; a parsed command formats and parses back to itself (except RECORD of a file whose
name ends in the word "stereo", documented); an event line never holds CR or LF and parses back.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siproc.calls import protocol
from tests.fuzz.mutations import mutated
from tests.fuzz.profiles import count, fuzz_settings

COMMANDS = tuple(
    line.encode()
    for line in (
        "RINGING",
        "ANSWER",
        "PROGRESS",
        "HANGUP 486",
        "PLAY /tmp/hello world.wav",
        "STOP",
        "TRANSFER sip:carol@example.net;transport=tcp",
        "DTMF 12#*aD",
        "MESSAGE hello\\nworld \\\\ done",
        "RECORD /tmp/call.wav stereo",
        "RECORD",
        "APLAY default",
        "ARECORD plughw:0,0",
        "ASTOP default",
        "HOLD",
        "RESUME",
        "  hangup  ",
    )
)


@fuzz_settings()
@given(st.one_of(mutated(COMMANDS), st.binary(max_size=64)))
def test_parse_command(data: bytes) -> None:
    count("calls.protocol")
    line = data.decode("utf-8", "replace")
    try:
        command = protocol.parse_command(line)
    except protocol.CommandError as exc:
        event = protocol.ErrorEvent(exc.command, exc.reason)
        assert "\n" not in protocol.format_event(event)
        return
    if command is None:
        return
    mono = isinstance(command, protocol.Record) and not command.stereo and command.file
    if mono and command.file.lower().split()[-1:] == ["stereo"]:  # type: ignore[union-attr]
        return
    assert protocol.parse_command(protocol.format_command(command)) == command


_EVENTS = st.one_of(
    st.builds(protocol.MessageReceived, st.text()),
    st.builds(protocol.Disconnected, st.integers(100, 699), st.text()),
    st.builds(protocol.ErrorEvent, st.sampled_from(["PLAY", "?", "X"]), st.text(min_size=1)),
    st.builds(protocol.DtmfReceived, st.sampled_from(sorted(protocol.DTMF_DIGITS))),
)


@fuzz_settings()
@given(_EVENTS)
def test_event_round_trip(event: protocol.Event) -> None:
    count("calls.protocol")
    line = protocol.format_event(event)
    assert "\n" not in line and "\r" not in line
    assert protocol.parse_event(line) == event
