"""Log lines that name their call: ``[call 0035b96bf422] message`` (DESIGN.md section 1, rule 5).

The call layer, the RTP stream and a media worker's copy of the stream all log through a
:class:`CallLog`, so that with a thousand calls every line can be traced to its call, whichever
process wrote it.

Two formats (``SIPROC_LOG_FORMAT``, siproc(1)): ``text``, lines for people
(:class:`SafeFormatter`), and ``json``, one JSON object per line for journald, Loki or ELK
(:class:`JsonFormatter`). A record may carry two extras: ``call`` (set by :class:`CallLog`: the
call's short id) and ``sip`` (the text of a SIP message at log level 6, set by the endpoint's
trace); the text format appends the SIP message as indented lines, the JSON format gives it a
field of its own."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

from siproc.escaping import CONTROL_CHARACTERS, escaped

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "CallLog",
    "JsonFormatter",
    "SafeFormatter",
    "setup_logging",
    "worth_logging",
]

# SIPROC_LOG_LEVEL 0-6 (0 quietest) onto Python logging levels. 5 adds the transaction and
# dialog state machines; 6 adds every SIP message in and out (config.SIP_TRACE_LEVEL).
LOG_LEVELS = {
    0: logging.CRITICAL,
    1: logging.ERROR,
    2: logging.WARNING,
    3: logging.INFO,
    4: logging.DEBUG,
    5: logging.DEBUG,
    6: logging.DEBUG,
}

#: Values of SIPROC_LOG_FORMAT; the first is the default.
LOG_FORMATS = ("text", "json")

# The control characters (siproc/escaping.py) but LF, which starts an indented line, and TAB.
_CONTROL = re.compile(rf"(?![\n\t])[{CONTROL_CHARACTERS}]")


# This process's pid for the log lines (`setup_logging` turns off logging's getpid per record);
# a forked child learns its own.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class SafeFormatter(logging.Formatter):
    """A formatter whose messages cannot forge log lines: control characters (a CR, an ESC
    sequence, a NUL from a peer's text) are written as ``\\xNN``/``\\uNNNN``, and every line
    after the first (the SIP trace of level 6 has many) is indented, so that only siproc's
    own lines start at the margin. Tracebacks are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.process is None:  # (see _pid)
            record.process = _pid
        text = super().formatMessage(record)
        sip = getattr(record, "sip", None)
        if sip:
            text = f"{text}\n{sip}"
        text = _CONTROL.sub(lambda m: escaped(m.group()), text)
        return text.replace("\n", "\n    ")


# Characters json.dumps(ensure_ascii=False) leaves raw that would still break or garble a line:
# DEL, C1 (NEL is a line break to str.splitlines) and the Unicode line and paragraph separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``SIPROC_LOG_FORMAT=json``)::

        {"time": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "siproc.calls.call",
         "program": "siproc", "pid": 4242, "call": "0035b96bf422", "message": "call ended: ..."}

    ``time`` is UTC with milliseconds; ``call`` (the first 12 characters of the Call-ID, as in
    the text format's ``[call ...]`` prefix) is there when the line is about one call, and the
    message then goes without that prefix; ``sip`` holds the SIP message of a level 6 trace
    line (credentials and SRTP keys hidden, as in the text format); ``exception`` a traceback.
    Non-ASCII text is kept; every control character and line separator is escaped, so a peer's
    text cannot break a line."""

    def __init__(self, program: str = "siproc") -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "program": self.program,
            "pid": _pid if record.process is None else record.process,
        }
        call = getattr(record, "call", None)
        if call is not None:
            entry["call"] = str(call)
            message = message.removeprefix(f"[call {call}] ")
        entry["message"] = message
        sip = getattr(record, "sip", None)
        if sip:
            entry["sip"] = str(sip)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def _utc(created: float) -> str:
    """``2024-05-01T12:00:00.123Z``: ISO 8601 in UTC with milliseconds."""
    seconds = int(created)
    millis = min(999, int((created - seconds) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """``logger``'s lines prefixed with ``[call <extra["call"]>]``; the records carry ``call``
    too (for :class:`JsonFormatter`)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        call = self.extra["call"] if self.extra else "?"
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "call": call}
        return f"[call {call}] {msg}", kwargs


def worth_logging(count: int, first: int = 5) -> bool:
    """For a warning that may repeat without end (a flood, a handler writing garbage): log the
    first ``first`` of them, then the 10th, 100th, 1000th..."""
    return count <= first or str(count).rstrip("0") == "1"


def setup_logging(level: int, program: str = "siproc", log_format: str = "text") -> None:
    """Log lines to stderr: ``siproc[PID] LEVEL: message`` (``program``: a media worker's
    lines say ``siproc-media``), or one JSON object per line (``log_format`` json,
    SIPROC_LOG_FORMAT: `JsonFormatter`)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    detail = " %(name)s" if level >= 4 else ""
    formatter: logging.Formatter = (
        JsonFormatter(program)
        if log_format == "json"
        else SafeFormatter(f"{program}[%(process)d] %(levelname)s{detail}: %(message)s")
    )
    handler.setFormatter(formatter)
    # Neither format shows where a line was logged from, the thread or the multiprocessing
    # process name: leave them out of every record (the logging HOWTO's "Optimization"). The
    # caller's file and line were most of a record's cost, a walk up the stack per line. The
    # pid the formatters take from _pid, not from a getpid per record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
    if level < 5:  # state machine chatter only from level 5 up
        for name in ("siproc.sip.transaction", "siproc.sip.dialog", "siproc.sip.registration"):
            logging.getLogger(name).setLevel(max(LOG_LEVELS[level], logging.INFO))
