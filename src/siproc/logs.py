"""Log lines that name their call: ``[call 0035b96bf422] message`` (DESIGN.md section 1, rule 5).

The call layer, the RTP stream and a media worker's copy of the stream all log through a
:class:`CallLog`, so that with a thousand calls every line can be traced to its call, whichever
process wrote it."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from siproc.escaping import CONTROL_CHARACTERS, escaped

__all__ = ["LOG_LEVELS", "CallLog", "SafeFormatter", "setup_logging", "worth_logging"]

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

# The control characters (siproc/escaping.py) but LF, which starts an indented line, and TAB.
_CONTROL = re.compile(rf"(?![\n\t])[{CONTROL_CHARACTERS}]")


class SafeFormatter(logging.Formatter):
    """A formatter whose messages cannot forge log lines: control characters (a CR, an ESC
    sequence, a NUL from a peer's text) are written as ``\\xNN``/``\\uNNNN``, and every line
    after the first (the SIP trace of level 6 has many) is indented, so that only siproc's
    own lines start at the margin. Tracebacks are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        text = _CONTROL.sub(lambda m: escaped(m.group()), text)
        return text.replace("\n", "\n    ")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """``logger``'s lines prefixed with ``[call <extra["call"]>]``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call'] if self.extra else '?'}] {msg}", kwargs


def worth_logging(count: int, first: int = 5) -> bool:
    """For a warning that may repeat without end (a flood, a handler writing garbage): log the
    first ``first`` of them, then the 10th, 100th, 1000th..."""
    return count <= first or str(count).rstrip("0") == "1"


def setup_logging(level: int, program: str = "siproc") -> None:
    """Log lines to stderr: ``siproc[PID] LEVEL: message`` (``program``: a media worker's
    lines say ``siproc-media``)."""
    handler = logging.StreamHandler(sys.stderr)
    detail = " %(name)s" if level >= 4 else ""
    handler.setFormatter(
        SafeFormatter(f"{program}[%(process)d] %(levelname)s{detail}: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
    if level < 5:  # state machine chatter only from level 5 up
        for name in ("siproc.sip.transaction", "siproc.sip.dialog", "siproc.sip.registration"):
            logging.getLogger(name).setLevel(max(LOG_LEVELS[level], logging.INFO))
