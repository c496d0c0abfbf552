"""Log lines that name their call: ``[call 0035b96bf422] message`` (DESIGN.md section 1, rule 5).

The call layer, the RTP stream and a media worker's copy of the stream all log through a
:class:`CallLog`, so that with a thousand calls every line can be traced to its call, whichever
process wrote it."""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["CallLog", "SafeFormatter"]

# Control characters but LF and TAB, DEL, C1, and the Unicode line separators.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class SafeFormatter(logging.Formatter):
    """A formatter whose messages cannot forge log lines: control characters (a CR, an ESC
    sequence, a NUL from a peer's text) are written as ``\\xNN``/``\\uNNNN``, and every line
    after the first (the SIP trace of level 6 has many) is indented, so that only siproc's
    own lines start at the margin. Tracebacks are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        text = _CONTROL.sub(
            lambda m: (
                f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
            ),
            text,
        )
        return text.replace("\n", "\n    ")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """``logger``'s lines prefixed with ``[call <extra["call"]>]``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call'] if self.extra else '?'}] {msg}", kwargs
