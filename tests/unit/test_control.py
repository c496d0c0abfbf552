"""The main stdin control protocol (siproc.calls.control)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.calls.control import ControlError, Dial, Quit, StartDrain, parse_control_line


@pytest.mark.parametrize("line", ["QUIT", "quit", "  Quit  \n"])
def test_quit(line: str) -> None:
    assert parse_control_line(line) == Quit()


@pytest.mark.parametrize("line", ["DRAIN", "drain", " Drain \n"])
def test_drain(line: str) -> None:
    assert parse_control_line(line) == StartDrain()


def test_blank_lines_are_nothing() -> None:
    assert parse_control_line("   \n") is None


def test_call_bare_uri_keeps_its_parameters() -> None:
    assert parse_control_line("call sip:bob@127.0.0.1:5062;transport=tcp") == Dial(
        "sip:bob@127.0.0.1:5062;transport=tcp"
    )


def test_call_name_addr() -> None:
    assert parse_control_line('CALL "Bob Smith" <sip:bob@pbx>') == Dial('"Bob Smith" <sip:bob@pbx>')


def test_call_with_headers() -> None:
    dial = parse_control_line("CALL sip:bob@pbx X-Alert: disk full on /var Subject: nightly: check")
    assert dial == Dial(
        "sip:bob@pbx", (("X-Alert", "disk full on /var"), ("Subject", "nightly: check"))
    )


def test_call_name_addr_with_header() -> None:
    dial = parse_control_line("CALL Bob <sip:bob@pbx;transport=tcp> X-Id: 42")
    assert dial == Dial("Bob <sip:bob@pbx;transport=tcp>", (("X-Id", "42"),))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DIAL sip:x@y", "expected 'CALL <sip-uri>', 'DRAIN' or 'QUIT'"),
        ("CALL", "CALL needs a SIP URI"),
        ("QUIT now", "QUIT takes no argument"),
        ("DRAIN 30", "DRAIN takes no argument"),
        ("CALL sip:bob@pbx Via: SIP/2.0/UDP x", "siproc writes the Via header itself"),
        ("CALL sip:bob@pbx i: abc", "siproc writes the Call-ID header itself"),
        ("CALL sip:bob@pbx garbage", "expected 'Header: value' after the URI"),
        ("CALL sip:bob@pbx X-Empty:  ", "expected 'Header: value'"),
    ],
)
def test_errors_say_what_to_do(line: str, message: str) -> None:
    with pytest.raises(ControlError, match=message):
        parse_control_line(line)


@given(st.text())
def test_any_text_parses_or_raises_control_error(text: str) -> None:
    with contextlib.suppress(ControlError):
        parse_control_line(text)
