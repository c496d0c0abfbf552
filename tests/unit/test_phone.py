"""The pure helpers of calls/phone.py: what a handler's environment gets from the network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.calls.phone import file_safe_user, header_variable


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", "alice"),
        ("%2B4930123", "+4930123"),
        ("caf%C3%A9", "café"),
        ("%00", "%00"),
        ("%0d%0a", "%0D%0A"),
        ("a%2Fb", "a%2Fb"),
        ("a%5cb", "a%5Cb"),
        ("%25", "%25"),
        ("100%", "100%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("%2e%2E", "%2E%2E"),
        ("..%2F..%2Fetc", "..%2F..%2Fetc"),
        ("%C2%85", "%C2%85"),  # U+0085, a C1 control (NEL)
        ("%E2%80%A8", "%E2%80%A8"),  # U+2028 LINE SEPARATOR
    ],
)
def test_file_safe_user(user: str, expected: str) -> None:
    assert file_safe_user(user) == expected


@given(st.text())
def test_file_safe_user_is_a_safe_file_name(user: str) -> None:
    name = file_safe_user(user)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
    assert len(name.splitlines()) <= 1


def test_header_variable() -> None:
    assert header_variable("X-Foo.Bar") == "SIPROC_HEADER_X_FOO_BAR"
