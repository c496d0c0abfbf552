"""What SRTP costs a siproc with many calls: plain RTP and SRTP side by side, same load.

    python bench/srtp_load.py                          # N = 100, 500, 1000; 20 s calls
    python bench/srtp_load.py --calls 1000 --duration 30

Load: a second siproc (the caller, on 127.0.0.2) places N calls to the callee siproc (on
127.0.0.1) at ``--rate`` calls a second; both sides play a tone for the whole call (G.711
PCMU, so the codec costs the same in both modes), and the caller hangs up after ``--duration``
seconds. The run is made twice per N: with SIPROC_SRTP=off, then with SIPROC_SRTP=mandatory
(AES_CM_128_HMAC_SHA1_80, SRTCP too) on both sides. SIPROC_SRTP_INSECURE_SIGNALLING=yes lets
the keys go over UDP: on loopback, in a benchmark, that is what it is for.

Figures for the callee (its main process and media workers; the caller's load is the same in
both modes, so the difference is SRTP's): CPU seconds per call-minute over the window in which
all N calls are up, RTP packets received and lost as the callee counted them (from its
"call ended" lines), packets it dropped as unverifiable (SRTP), and calls that did not connect.
Everything runs on loopback; every wait has a deadline; all processes are stopped on exit.

Measured (2 CPUs, uvloop, ``--calls 100,500 --duration 30``; callee CPU s/call-min, plain /
SRTP, no loss in any run): before SRTP received packets took the inline receive path of
net/rtp_socket.py, N=100 0.076 / 0.111, N=500 0.069 / 0.083; with it, N=100 0.069 / 0.093,
N=500 0.062 / 0.080. Runs differ by about 0.005 from one to the next. For N=1000 with a light
caller (SIPp playing a pre-protected pcap), see ``bench/load.py --srtp``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.load import group_cpu_sample, media_workers_of  # noqa: E402
from tests.audio import make_tone  # noqa: E402

CALLEE_HANDLER = """#!/bin/sh
echo ANSWER
while read -r event rest; do
    [ "$event" = CONNECTED ] && echo "PLAY $BENCH_TONE" && date +%s.%N >> "$BENCH_DIR/up"
done
"""
CALLER_HANDLER = """#!/bin/sh
while read -r event rest; do
    if [ "$event" = CONNECTED ]; then
        echo "PLAY $BENCH_TONE"
        ( sleep "$BENCH_SECONDS"; echo HANGUP ) &
    fi
done
"""
ENDED = re.compile(r"call ended: \d+ .*\(RTP: (\d+) packets sent, (\d+) received\) lost (\d+)")


@dataclass
class Result:
    calls: int
    mode: str
    connected: int
    cpu_per_call_minute: float
    received: int
    lost: int
    ended: int


def start_siproc(workdir: Path, name: str, bind: str, port: int, extra: dict[str, str]) -> tuple[
    subprocess.Popen[bytes], Path
]:  # fmt: skip
    handler = workdir / f"{name}.sh"
    handler.write_text(CALLEE_HANDLER if name == "callee" else CALLER_HANDLER)
    handler.chmod(0o755)
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")}
    env.update(
        SIPROC_BIND_ADDRESS=bind,
        SIPROC_TRANSPORT_PORT=str(port),
        SIPROC_MAX_CALLS="5000",
        SIPROC_CALL_BURST="100000",
        SIPROC_CALL_RATE="100000",
        SIPROC_LOG_LEVEL="3",
        SIPROC_CODEC_PRIORITIES="PCMU:255,PCMA:0,G722:0,opus:0",
        SIPROC_RTP_PORTS="20000-29999" if name == "callee" else "30000-39999",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "siproc", str(handler)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
        cwd=workdir,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while "ready on SIP port" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{name} siproc did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run(n: int, mode: str, args: argparse.Namespace, workdir: Path) -> Result:
    (workdir / "up").unlink(missing_ok=True)
    srtp = {"SIPROC_SRTP": mode, "SIPROC_SRTP_INSECURE_SIGNALLING": "yes"}
    common = {"BENCH_TONE": str(workdir / "tone.wav"), "BENCH_DIR": str(workdir)}
    callee, callee_log = start_siproc(workdir, "callee", "127.0.0.1", 5070, {**srtp, **common})
    caller, _ = start_siproc(
        workdir, "caller", "127.0.0.2", 5072,
        {**srtp, **common, "BENCH_SECONDS": str(args.duration)},
    )  # fmt: skip
    try:
        assert caller.stdin is not None
        for _ in range(n):
            caller.stdin.write(b"CALL sip:bench@127.0.0.1:5070\n")
            caller.stdin.flush()
            time.sleep(1 / args.rate)
        up_file = workdir / "up"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if up_file.exists() and len(up_file.read_text().splitlines()) >= n:
                break
            time.sleep(0.1)
        stamps = [float(x) for x in up_file.read_text().split()] if up_file.exists() else []
        connected = len(stamps)
        # The steady window: from a second after the last call came up to a second before the
        # first one hangs up (the caller hangs up each call --duration s after its CONNECTED).
        start = max(stamps, default=time.time()) + 1
        end = min(stamps, default=start) + args.duration - 1
        print(f"  N={n} {mode}: calls came up over {max(stamps) - min(stamps):.1f} s", flush=True)
        if end - start < 2:
            raise SystemExit(f"N={n}: calls came up too slowly for a steady window; use --rate")
        pids = [callee.pid, *media_workers_of(callee.pid)]
        time.sleep(max(0.0, start - time.time()))
        before = group_cpu_sample(pids)
        time.sleep(max(0.0, end - time.time()))
        after = group_cpu_sample(pids)
        cpu = (after.own - before.own) / (connected * (after.when - before.when) / 60)
        print(f"  N={n} {mode}: steady window {after.when - before.when:.1f} s", flush=True)
        deadline = time.monotonic() + args.duration + 60
        while time.monotonic() < deadline:
            if len(ENDED.findall(callee_log.read_text(errors="replace"))) >= connected:
                break
            time.sleep(0.5)
        ended = ENDED.findall(callee_log.read_text(errors="replace"))
        return Result(
            calls=n,
            mode=mode,
            connected=connected,
            cpu_per_call_minute=cpu,
            received=sum(int(r) for _, r, _ in ended),
            lost=sum(int(lost) for _, _, lost in ended),
            ended=len(ended),
        )
    finally:
        stop(caller)
        stop(callee)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="100,500,1000")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per call")
    parser.add_argument("--rate", type=float, default=200.0, help="calls set up per second")
    parser.add_argument("--modes", default="off,mandatory", help="SIPROC_SRTP values to run")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="siproc-srtp-bench-") as tmp:
        workdir = Path(tmp)
        make_tone(workdir / "tone.wav", 440.0, args.duration + 30, rate=8000)
        for n in (int(x) for x in args.calls.split(",")):
            for mode in args.modes.split(","):
                result = run(n, mode, args, workdir)
                results.append(result)
                print(
                    f"N={n:5d} SRTP {mode:9s}: {result.connected}/{n} connected, "
                    f"CPU {result.cpu_per_call_minute:.3f} s/call-min, "
                    f"received {result.received} lost {result.lost} "
                    f"({result.ended} call-ended lines)",
                    flush=True,
                )
    print("\n| N | SRTP | connected | callee CPU s/call-min | RTP received | lost |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.calls} | {r.mode} | {r.connected}/{r.calls} | {r.cpu_per_call_minute:.3f} "
            f"| {r.received} | {r.lost} |"
        )
    return 0 if all(r.connected == r.calls for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
