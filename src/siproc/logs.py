"""Log lines that name their call: ``[call 0035b96bf422] message`` (DESIGN.md section 1, rule 5).

The call layer, the RTP stream and a media worker's copy of the stream all log through a
:class:`CallLog`, so that with a thousand calls every line can be traced to its call, whichever
process wrote it."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["CallLog"]


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """``logger``'s lines prefixed with ``[call <extra["call"]>]``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call'] if self.extra else '?'}] {msg}", kwargs
