"""bench/load.py --hook-time: the CPU siproc's control process spends in its monitoring hooks.

Put on PYTHONPATH with HOOK_TIME_DIR set, this wraps the entry points of
`siproc.calls.monitoring.Monitoring` (what the phone calls for records and metrics) and
`siproc.calls.metrics.MetricsServer.answer` (building a scrape's answer), adds up the CPU time
of the thread that runs each (``time.thread_time_ns``: CPU time, not wall time, so a busy box
does not count against it), and writes the totals to ``HOOK_TIME_DIR/hooks-PID.json`` when the
process exits. Only the control process: the media workers run without SIPROC_ variables.
A bench aid, never imported by siproc itself.
"""

from __future__ import annotations

import os

if os.environ.get("HOOK_TIME_DIR") and os.environ.get("SIPROC_TRANSPORT_PORT"):
    import atexit
    import functools
    import json
    import time
    from collections.abc import Callable
    from typing import Any

    _totals: dict[str, list[int]] = {}  # hook -> [calls, nanoseconds]
    _depth = [0]

    def _wrap(cls: type, name: str, key: str) -> None:
        function: Callable[..., Any] = getattr(cls, name)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if _depth[0]:  # a hook called from another: counted in the outer one
                return function(*args, **kwargs)
            _depth[0] += 1
            began = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                _depth[0] -= 1
                total = _totals.setdefault(key, [0, 0])
                total[0] += 1
                total[1] += time.thread_time_ns() - began

        setattr(cls, name, timed)

    from siproc.calls import monitoring

    for _name in (
        "opened", "changed", "ringing", "ended", "finished", "refused", "handler_started",
        "registration", "clock_report", "_sample_main_clock", "health",
    ):  # fmt: skip
        _wrap(monitoring.Monitoring, _name, _name)
    if os.environ.get("SIPROC_METRICS"):
        from siproc.calls import metrics

        _wrap(metrics.MetricsServer, "answer", "scrape")

    def _dump() -> None:
        path = os.path.join(os.environ["HOOK_TIME_DIR"], f"hooks-{os.getpid()}.json")
        with open(path, "w") as file:
            json.dump(_totals, file)

    atexit.register(_dump)
