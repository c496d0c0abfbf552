"""Log lines (siproc/logs.py): a peer's text cannot forge a line or send terminal escapes."""

from __future__ import annotations

import logging

import pytest

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


# -- SIPROC_LOG_FORMAT=json --------------------------------------------------------------------


def test_json_line_has_the_fields_and_the_call_without_its_prefix() -> None:
    import json

    from siproc.logs import CallLog, JsonFormatter

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("siproc.test.json")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.DEBUG)
    CallLog(logger, {"call": "0035b96bf422"}).info("handler started (pid %d)", 42)
    entry = json.loads(JsonFormatter("siproc-media").format(seen[0]))
    assert entry["message"] == "handler started (pid 42)"
    assert entry["call"] == "0035b96bf422"
    assert entry["level"] == "INFO" and entry["logger"] == "siproc.test.json"
    assert entry["program"] == "siproc-media" and isinstance(entry["pid"], int)
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2024-05-01T12:00:00.123Z")


def test_json_sip_message_is_a_field_and_text_keeps_it_indented() -> None:
    import json

    from siproc.logs import JsonFormatter

    rec = record("recv from %s:%s", "127.0.0.1", 5060)
    rec.sip = "INVITE sip:bob@x SIP/2.0\nCall-ID: abc"
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["message"] == "recv from 127.0.0.1:5060"
    assert entry["sip"] == "INVITE sip:bob@x SIP/2.0\nCall-ID: abc"
    text = SafeFormatter("%(message)s").format(rec)
    assert text == "recv from 127.0.0.1:5060\n    INVITE sip:bob@x SIP/2.0\n    Call-ID: abc"


def test_json_line_cannot_be_broken_by_a_peer() -> None:
    import json

    from siproc.logs import JsonFormatter

    peer = "bob\r\nforged\x1b[2J\x00\x85\u2028\u2029end é"
    line = JsonFormatter().format(record("refusing call from %s", peer))
    assert len(line.splitlines()) == 1 and "\x1b" not in line
    assert json.loads(line)["message"] == f"refusing call from {peer}"


def test_json_traceback_is_a_field() -> None:
    import json
    import sys

    from siproc.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert len(line.splitlines()) == 1
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_pid_comes_without_a_getpid_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    # setup_logging turns off logging's own getpid per record; both formats still show the pid,
    # and a forked child shows its own.
    import json
    import os

    from siproc import logs

    monkeypatch.setattr(logging, "logProcesses", False)
    assert record("x").process is None
    assert SafeFormatter("[%(process)d] %(message)s").format(record("x")) == f"[{os.getpid()}] x"
    assert json.loads(logs.JsonFormatter().format(record("x")))["pid"] == os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os._exit(0 if logs._pid == os.getpid() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
