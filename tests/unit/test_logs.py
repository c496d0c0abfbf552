"""Log lines (siproc/logs.py): a peer's text cannot forge a line or send terminal escapes."""

from __future__ import annotations

import logging

from siproc.logs import SafeFormatter


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("siproc.test", logging.WARNING, __file__, 1, msg, args, None)


def test_control_characters_are_escaped_and_continuation_lines_indented() -> None:
    formatter = SafeFormatter("siproc[1] %(levelname)s: %(message)s")
    peer = "bob\r\nsiproc[1] ERROR: forged\x1b[2J\x00\u2028end"
    line = formatter.format(record("refusing call from %s", peer))
    assert line.splitlines()[0] == "siproc[1] WARNING: refusing call from bob\\x0d"
    assert line.splitlines()[1] == "    siproc[1] ERROR: forged\\x1b[2J\\x00\\u2028end"
    assert "\r" not in line and "\x1b" not in line


def test_tracebacks_stay_readable() -> None:
    formatter = SafeFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(rec)
    assert text.startswith("failed\nTraceback (most recent call last):\n")
