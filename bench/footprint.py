"""siproc's footprint: time to ready, idle memory, and idle memory again after a load (issue 12,
item 3).

    python bench/footprint.py                    # 5 starts; idle; 1000 calls of 10 s; idle again
    python bench/footprint.py --calls 0          # start-up and idle figures only
    python bench/footprint.py --calls 200 --duration 5 --media-workers 1

Figures:

* ready: seconds from ``exec`` of ``python -m siproc`` to its "ready on SIP port" log line
  (polled every 2 ms), the median and the worst of ``--starts`` starts, no registrar.
* idle RSS: VmRSS of siproc and of its media workers (its children running
  ``siproc.net.media_worker``; handlers are not siproc) summed, ``--settle`` seconds after ready.
* after load: SIPp places ``--calls`` calls (G.711 RTP both ways for ``--duration`` seconds, the
  handler of ``bench/load.py`` playing and recording); when every handler has exited, the idle
  figure again after ``--quiet`` seconds (media workers stop after SIPROC_MEDIA_IDLE seconds
  without calls; the main process trims its memory 64*T1 + 1 = 33 s after the last call,
  net/memory_trim.py), and the peak (VmHWM) of each process.

Targets (issue 12): all siproc processes together under 60 MiB idle, ready in under 0.4 s, and
after 1000 calls back within 20% of the first idle figure. The same figures for baresip idle are
printed next to it (``--no-baresip`` leaves them out).

Everything runs on 127.0.0.1; every wait has a deadline; the processes started here are stopped
on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from load import (  # noqa: E402
    PROCS,
    SIPP_DIR,
    SIPROC_HANDLER,
    Baresip,
    Processes,
    _raise_interrupt,
    children_of,
    make_audio,
    siproc_env,
    start_sipp,
    status_kib,
    wait_until,
)
from load import free_port as load_free_port  # noqa: E402

READY = b"ready on SIP port"
TRIM_AFTER = 64 * 0.5 + 1  # net/memory_trim.py: 64*T1 + 1 s after the last call (T1 = 500 ms)


@dataclass
class Memory:
    """VmRSS per process (KiB): siproc first, then its media workers."""

    rss: list[int]
    peak: list[int]

    @property
    def total(self) -> int:
        return sum(self.rss)

    def describe(self) -> str:
        parts = [f"main {self.rss[0] / 1024:.1f}"]
        parts += [f"worker {kib / 1024:.1f}" for kib in self.rss[1:]]
        return f"{self.total / 1024:.1f} MiB ({', '.join(parts)})"


def workers_of(pid: int) -> list[int]:
    return [child for child, _, cmd in children_of(pid) if b"siproc.net.media_worker" in cmd]


def memory_of(pid: int) -> Memory:
    pids = [pid, *workers_of(pid)]
    rss, peak = [], []
    for p in pids:
        with contextlib.suppress(OSError):
            rss.append(status_kib(p, "VmRSS"))
            peak.append(status_kib(p, "VmHWM"))
    return Memory(rss, peak)


class Siproc:
    """``python -m siproc HANDLER`` timed from exec to its ready line."""

    def __init__(self, python: str, workdir: Path, handler: Path, env: dict[str, str]) -> None:
        self.port = load_free_port("sip")
        self.log_path = workdir / f"siproc-{self.port}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 (inherited, then closed)
        started = time.monotonic()
        self.proc = PROCS.start(
            [python, "-m", "siproc", str(handler)],
            env=siproc_env(self.port, 2000, env),
            stdin=subprocess.PIPE,
            stdout=log,
        )
        log.close()
        deadline = started + 20
        while READY not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"siproc did not start:\n{self.log()[-3000:]}")
            time.sleep(0.002)
        self.ready_after = time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, text: str) -> int:
        return self.log().count(text)

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"QUIT\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        Processes.stop(self.proc)


def baresip_idle(workdir: Path, play: Path) -> tuple[float, int]:
    """(seconds to ready, idle VmRSS KiB) of baresip answering with a WAV source."""
    started = time.monotonic()
    baresip = Baresip(workdir / "baresip", "u0", audio_source=play, record=False)
    baresip.start()
    try:
        ready = time.monotonic() - started
        time.sleep(1.0)
        assert baresip.pid is not None
        return ready, status_kib(baresip.pid, "VmRSS")
    finally:
        baresip.stop()


def run_calls(args: argparse.Namespace, workdir: Path, siproc: Siproc) -> tuple[int, int]:
    """Place ``--calls`` SIPp calls to ``siproc``; (successful, failed)."""
    from load import sipp_stats

    users = workdir / "users.csv"
    users.write_text("SEQUENTIAL\n" + "siproc;\n" * args.calls)
    rate = min(150.0, max(5.0, args.calls / (args.duration / 3)))
    sipp, stats_csv = start_sipp(
        workdir,
        SIPP_DIR / "uac_rtp.xml",
        siproc.port,
        calls=args.calls,
        rate=rate,
        limit=args.calls,
        pause_ms=round((args.duration + 1) * 1000),
        media_port=load_free_port("udp", span=4),
        timeout=args.calls / rate + args.duration + 60,
        users=users,
        name="footprint",
    )
    sipp.wait(args.calls / rate + args.duration + 90)
    wait_until(lambda: siproc.count("handler exited") >= siproc.count("handler started"), 30)
    stats = sipp_stats(stats_csv)
    return int(stats.get("SuccessfulCall(C)", 0) or 0), int(stats.get("FailedCall(C)", 0) or 0)


def report_probe(probe_dir: Path, pid: int, reads: list[tuple[str, float, int]]) -> None:
    """The trim's steps (bench/footprint_probe/sitecustomize.py) and the bench's reads in time
    order, seconds after the idle read; with --trace, what the trim left alive."""
    steps = []
    log = probe_dir / f"probe-{pid}.log"
    if log.exists():
        for line in log.read_text().splitlines():
            step, at, kib = line.split()
            steps.append((f"siproc {step}", float(at), int(kib)))
    start = reads[0][1]
    print("probe: (main process VmRSS for siproc's steps, all processes for the bench's reads)")
    for what, at, kib in sorted(steps + reads, key=lambda item: item[1]):
        print(f"  {at - start:8.3f} s  {what:<16} {kib / 1024:7.1f} MiB")
    primed, collected = probe_dir / f"prime-{pid}.json", probe_dir / f"collect-{pid}.json"
    if primed.exists() and collected.exists():
        import json

        before, after = json.loads(primed.read_text()), json.loads(collected.read_text())
        new = sorted(set(after["modules"]) - set(before["modules"]))
        tops = sorted({name.split(".")[0] for name in new})
        print(f"modules imported during the load: {len(new)} ({', '.join(tops)})")
        print(f"threads: {before['threads']} -> {after['threads']}")
        for name in ("prime", "collect"):
            stats = (probe_dir / f"{name}-{pid}.mallocstats").read_text().splitlines()
            keep = [line for line in stats if line.startswith(("# arenas", "# bytes", "Total"))]
            print(f"pymalloc at {name}: " + "; ".join(" ".join(k.split()) for k in keep))
        print("main process VmRSS by mapping, idle -> after the trim (KiB, changes over 256):")
        for where in sorted(set(before["rss"]) | set(after["rss"])):
            was, now = before["rss"].get(where, 0), after["rss"].get(where, 0)
            if abs(now - was) > 256:
                print(f"  {was:8d} -> {now:8d}  {where}")
    survivors = probe_dir / f"survivors-{pid}.txt"
    if survivors.exists():
        print("alive after the trim (bench/footprint_probe/sitecustomize.py):")
        print(survivors.read_text(), end="")
    idle_snap = probe_dir / f"idle-{pid}.snap"
    trims = sorted(probe_dir.glob(f"trim-{pid}-*.snap"))
    if idle_snap.exists() and trims:
        import tracemalloc

        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        idle = tracemalloc.Snapshot.load(str(idle_snap)).filter_traces(ignore)
        after = tracemalloc.Snapshot.load(str(trims[-1])).filter_traces(ignore)
        print(f"traced: idle {sum(s.size for s in idle.statistics('filename')) / 1024:.0f} KiB, "
              f"after the trim {sum(s.size for s in after.statistics('filename')) / 1024:.0f} KiB; "
              "the largest differences by traceback:")  # fmt: skip
        grown = [s for s in after.compare_to(idle, "lineno") if s.count_diff > 0]
        grown.sort(key=lambda s: -s.count_diff)
        print("  blocks more than at idle, by line (small objects pin pymalloc's arenas):")
        for stat in grown[:25]:
            frame = stat.traceback[0]
            print(f"  {stat.count_diff:+7d} blocks {stat.size_diff / 1024:+9.1f} KiB "
                  f"{frame.filename}:{frame.lineno}")  # fmt: skip
        print("  by traceback, the largest:")
        for stat in after.compare_to(idle, "traceback")[:10]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            for line in stat.traceback.format(limit=8):
                print(f"      {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="starts timed (default 5)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading")
    parser.add_argument("--calls", type=int, default=1000, help="calls of the load (0: none)")
    parser.add_argument("--duration", type=float, default=10.0, help="talk seconds per call")
    parser.add_argument("--quiet", type=float, default=0, help="seconds idle after the load "
                        "before reading (default: 2 s after the later of SIPROC_MEDIA_IDLE and "
                        "the memory trim)")  # fmt: skip
    parser.add_argument("--media-workers", type=int, help="SIPROC_MEDIA_WORKERS")
    parser.add_argument("--media-idle", type=float, default=5.0, help="SIPROC_MEDIA_IDLE")
    parser.add_argument("--no-baresip", action="store_true", help="skip baresip's figures")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="log when the memory trim runs "
        "(bench/footprint_probe/sitecustomize.py) against when RSS is read",
    )
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="FRAMES",
        help="with --probe: "
        "tracemalloc in the main process; the allocations alive after the trim "
        "and not at idle, by traceback (slows the load)",
    )
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    env = {"SIPROC_MEDIA_IDLE": f"{args.media_idle:g}"}
    if args.media_workers is not None:
        env["SIPROC_MEDIA_WORKERS"] = str(args.media_workers)
    with tempfile.TemporaryDirectory(prefix="siproc-footprint-") as tmp:
        workdir = Path(tmp)
        probe_dir = workdir / "probe"
        if args.probe or args.trace:
            probe_dir.mkdir()
            path = os.environ.get("PYTHONPATH", "")
            env.update(
                FOOTPRINT_PROBE_DIR=str(probe_dir),
                FOOTPRINT_PROBE_TRACE=str(args.trace),
                PYTHONPATH=f"{BENCH_DIR / 'footprint_probe'}{os.pathsep + path if path else ''}",
            )
        _, play = make_audio(workdir, args.duration)
        handler = workdir / "handler.sh"
        handler.write_text(SIPROC_HANDLER)
        handler.chmod(0o755)
        rec_dir = workdir / "rec"
        rec_dir.mkdir()
        env.update(BENCH_PLAY=str(play), BENCH_RECORD_DIR=str(rec_dir))
        try:
            times = []
            for _ in range(max(1, args.starts) - 1):
                probe = Siproc(args.python, workdir, handler, env)
                times.append(probe.ready_after)
                probe.stop()
            siproc = Siproc(args.python, workdir, handler, env)
            times.append(siproc.ready_after)
            time.sleep(args.settle)
            idle = memory_of(siproc.proc.pid)
            reads = [("idle read", time.monotonic(), idle.total)]
            median, worst = statistics.median(times), max(times)
            print(f"ready: median {median:.3f} s, worst {worst:.3f} s ({len(times)} starts)")
            print(f"idle:  {idle.describe()}")
            if args.calls:
                ok, failed = run_calls(args, workdir, siproc)
                loaded = memory_of(siproc.proc.pid)
                reads.append(("handlers gone", time.monotonic(), loaded.total))
                quiet = args.quiet or max(args.media_idle, TRIM_AFTER) + 2
                time.sleep(quiet)
                after = memory_of(siproc.proc.pid)
                reads.append(("after read", time.monotonic(), after.total))
                growth = 100 * (after.total / idle.total - 1)
                peaks = ", ".join(f"{kib / 1024:.1f}" for kib in loaded.peak[1:]) or "-"
                print(
                    f"load:  {args.calls} calls of {args.duration:g} s: {ok} successful, "
                    f"{failed} failed; peak (VmHWM) main {loaded.peak[0] / 1024:.1f} MiB, "
                    f"workers {peaks}"
                )
                print(
                    f"after: {after.describe()} {quiet:g} s after the last call: "
                    f"{growth:+.1f}% on the first idle figure"
                )
            if args.probe or args.trace:
                report_probe(probe_dir, siproc.proc.pid, reads)
            siproc.stop()
            if not args.no_baresip:
                ready, rss = baresip_idle(workdir, play)
                print(f"baresip: ready {ready:.3f} s, idle {rss / 1024:.1f} MiB")
        finally:
            PROCS.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
