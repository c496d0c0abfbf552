"""bench/footprint.py --probe: when siproc's memory trim runs, and what stays after it.

Put on PYTHONPATH with FOOTPRINT_PROBE_DIR set, this wraps `siproc.net.memory_trim.MemoryTrim`
in siproc's control process (the media workers run without SIPROC_ variables) and appends to
``FOOTPRINT_PROBE_DIR/probe-PID.log`` one line per step: the step (prime, swap, collect), its
``time.monotonic()`` (the same clock as the bench's, so the bench can tell whether the trim ran
before it read the memory) and VmRSS in KiB. With FOOTPRINT_PROBE_TRACE=N (frames), it also
starts tracemalloc at start-up and dumps a snapshot after `prime` (idle) and after each trim
(``idle-PID.snap``, ``trim-PID-K.snap``) for the bench to compare. A bench aid, never
imported by siproc itself.
"""

from __future__ import annotations

import os

if os.environ.get("FOOTPRINT_PROBE_DIR") and os.environ.get("SIPROC_TRANSPORT_PORT"):
    import functools
    import time
    import tracemalloc
    from collections.abc import Callable
    from typing import Any

    _DIR = os.environ["FOOTPRINT_PROBE_DIR"]
    _FRAMES = int(os.environ.get("FOOTPRINT_PROBE_TRACE") or 0)
    if _FRAMES:
        tracemalloc.start(_FRAMES)

    def _rss_kib() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _note(step: str) -> None:
        with open(os.path.join(_DIR, f"probe-{os.getpid()}.log"), "a") as file:
            file.write(f"{step} {time.monotonic():.3f} {_rss_kib()}\n")

    def _dump_state(name: str) -> None:
        """The modules imported, and VmRSS by mapping (/proc/self/smaps: file, [heap], anon)."""
        import json
        import sys

        rss: dict[str, int] = {}
        where = ""
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if "-" in fields[0] and not fields[0].endswith(":"):
                    where = fields[5] if len(fields) > 5 else "[anon]"
                elif fields[0] == "Rss:":
                    rss[where] = rss.get(where, 0) + int(fields[1])
        path = os.path.join(_DIR, f"{name}-{os.getpid()}.mallocstats")
        saved = os.dup(2)
        with open(path, "w") as out:
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        threads = len(os.listdir("/proc/self/task"))
        if name == "collect":
            _dump_survivors()
        state = {"modules": sorted(sys.modules), "rss": rss, "threads": threads}
        with open(os.path.join(_DIR, f"{name}-{os.getpid()}.json"), "w") as file:
            json.dump(state, file)

    def _dump_survivors() -> None:
        """Calls and RTP streams still alive after the trim, and what holds the first of each
        (three levels of referrers)."""
        import gc

        gc.collect()
        lines = []
        for kind in ("Call", "RtpStream", "HandlerProcess", "MediaStreamProxy"):
            alive = [o for o in gc.get_objects() if type(o).__name__ == kind]
            lines.append(f"{kind}: {len(alive)} alive")
            if not alive:
                continue
            frontier: list[object] = [alive[0]]
            seen = {id(alive), id(frontier), id(lines)}
            for depth in range(4):
                nxt = []
                for obj in frontier:
                    seen.add(id(obj))
                    for ref in gc.get_referrers(obj):
                        if id(ref) in seen or ref is frontier or ref is nxt:
                            continue
                        seen.add(id(ref))
                        text = (
                            repr(ref)[:150]
                            if not isinstance(ref, dict)
                            else ("dict keys " + repr(list(ref)[:8])[:150])
                        )
                        lines.append(f"  {'  ' * depth}{type(ref).__qualname__}: {text}")
                        nxt.append(ref)
                frontier = nxt[:6]
        with open(os.path.join(_DIR, f"survivors-{os.getpid()}.txt"), "w") as file:
            file.write("\n".join(lines) + "\n")

    _trims = [0]
    _last = [""]

    def _wrap(cls: type, name: str, step: str) -> None:
        function: Callable[..., Any] = getattr(cls, name)

        @functools.wraps(function)
        def noted(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            if step == "busy" and _last[0] == "busy":
                return result  # the first call of a busy spell only
            _last[0] = step
            _note(step)
            if step in ("prime", "collect"):
                _dump_state(step)
            if _FRAMES and step in ("prime", "collect"):
                if step == "prime":
                    name = f"idle-{os.getpid()}.snap"
                else:
                    _trims[0] += 1
                    name = f"trim-{os.getpid()}-{_trims[0]}.snap"
                tracemalloc.take_snapshot().dump(os.path.join(_DIR, name))
            return result

        setattr(cls, name, noted)

    from siproc.net import memory_trim

    _wrap(memory_trim.MemoryTrim, "prime", "prime")
    _wrap(memory_trim.MemoryTrim, "busy", "busy")
    _wrap(memory_trim.MemoryTrim, "quiet", "quiet")
    _wrap(memory_trim.MemoryTrim, "_swap", "swap")
    _wrap(memory_trim.MemoryTrim, "_collect", "collect")
