"""STREAM under load: N concurrent calls, each streaming both ways to one local bot (issue 10).

    python bench/media_stream.py                      # smoke: 10 calls, 10 s
    python bench/media_stream.py --calls 200 --duration 30    # the issue's figure (2 CPUs)

Two siproc processes on 127.0.0.1: alice places N calls to bob (G.711 u-law), each playing a
440 Hz tone for ``--duration`` seconds; bob's handler answers and runs ``STREAM`` to a bot in
this script (a ``websockets`` server in its own process, so that its CPU is not bob's) that
sends every frame it gets straight back (an echo: the bot's audio is then mixed into what bob
sends). Then the same N calls without STREAM, for the baseline.

Printed per run: CPU seconds of bob (siproc and its media workers) per call-minute; frames the
bot got per call against the frames of the call (loss towards the bot: gaps in ``chunk``, and
what bob logs as lost to a slow bot); frames of the bot played by bob (loss back: bob's count
of played bot frames against what the bot sent); the jitter of the media messages' arrival at
the bot (deviation from 20 ms, p50/p99/max), which is what a speech model sees.

Keep N and the duration bounded on a shared machine; everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.audio import make_tone  # noqa: E402
from tests.siproc_proc import Siproc, write_handler  # noqa: E402

HANDLER = r"""
mode=$1; url=$2
[ "$mode" = caller ] || echo ANSWER
while read -r line; do
  case "$mode:$line" in
    caller:CONNECTED) echo "PLAY tone.wav" ;;
    caller:STOPPED*) echo HANGUP ;;
    stream:CONNECTED) [ -n "$url" ] && echo "STREAM $url" ;;
  esac
done
"""


Queue = multiprocessing.Queue  # (one type name for the annotations below)


def bot_process(port_out: Queue, asks: Queue, results: Queue) -> None:  # type: ignore[type-arg]
    """The echo bot: every media frame straight back; per stream, what it got and when."""
    from websockets.asyncio.server import ServerConnection, serve

    streams: list[dict[str, object]] = []

    async def handle(ws: ServerConnection) -> None:
        record: dict[str, object] = {"chunks": [], "times": [], "sent": 0}
        streams.append(record)
        sid = None
        async for raw in ws:
            message = json.loads(raw)
            if message["event"] == "start":
                sid = message["streamSid"]
            elif message["event"] == "media":
                record["chunks"].append(int(message["media"]["chunk"]))  # type: ignore[attr-defined]
                record["times"].append(time.monotonic())  # type: ignore[attr-defined]
                payload = message["media"]["payload"]
                reply = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
                await ws.send(json.dumps(reply))
                record["sent"] = int(record["sent"]) + 1  # type: ignore[call-overload]
            elif message["event"] == "stop":
                break

    async def main() -> None:
        async with serve(handle, "127.0.0.1", 0, compression=None) as server:
            port_out.put(server.sockets[0].getsockname()[1])
            while True:
                await asyncio.sleep(0.5)
                if not asks.empty():  # the parent asks for the figures
                    asks.get()
                    results.put(streams[:])
                    streams.clear()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (the media workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(calls: int, duration: float, url: str, work: Path, bot: tuple[Queue, Queue]) -> None:  # type: ignore[type-arg]
    env = {"SIPROC_CODEC_PRIORITIES": "PCMU:200", "SIPROC_MAX_CALLS": str(calls + 10)}
    bob = Siproc(work / "h.sh", "stream", url, env=env, cwd=work, log_level=3).wait_ready()
    alice = Siproc(work / "h.sh", "caller", env=env, cwd=work, log_level=3).wait_ready()
    try:
        cpu0, t0 = cpu_seconds(bob.proc.pid), time.monotonic()
        for _ in range(calls):
            alice.call(bob.uri("bob"))
        deadline = time.monotonic() + duration + 60
        while bob.count(r"call ended: 200") < calls and time.monotonic() < deadline:
            time.sleep(0.2)
        cpu = cpu_seconds(bob.proc.pid) - cpu0
        wall = time.monotonic() - t0
        label = "STREAM" if url else "plain "
        print(
            f"{label} N={calls}: {cpu:.1f} CPU s in {wall:.1f} s, "
            f"{cpu / (calls * duration / 60):.3f} CPU s per call-minute"
        )
        if not url:
            return
        lost_slow = sum(
            int(m.group(1))
            for m in (re.search(r"(\d+) lost to a slow bot", line) for line in bob.lines)
            if m
        )
        played = sum(
            int(m.group(1))
            for m in (re.search(r"(\d+) frames from it played", line) for line in bob.lines)
            if m
        )
        asks, results = bot
        asks.put("figures")
        streams = results.get(timeout=10)
        gaps = 0
        jitter: list[float] = []
        got = sent = 0
        for record in streams:
            chunks = record["chunks"]
            got += len(chunks)
            sent += record["sent"]
            gaps += (chunks[-1] - chunks[0] + 1 - len(chunks)) if chunks else 0
            times = record["times"]
            jitter += [abs((b - a) - 0.020) * 1000 for a, b in itertools.pairwise(times)]
        jitter.sort()

        def pct(p: float) -> float:
            return jitter[min(len(jitter) - 1, int(p * len(jitter)))] if jitter else 0.0

        print(
            f"  to the bot: {len(streams)} streams, {got} frames, {gaps} missing chunks, "
            f"{lost_slow} lost to a slow bot; back: {sent} sent by the bot, {played} played "
            f"({sent - played} not played: queued at hang-up)"
        )
        print(
            f"  arrival jitter at the bot: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
            f"max {jitter[-1] if jitter else 0:.2f} ms"
        )
    finally:
        alice.quit()
        bob.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if args.calls > 500 or args.duration > 120:
        parser.error("keep it bounded: at most 500 calls of at most 120 s")
    ports: Queue[int] = Queue()
    asks: Queue[str] = Queue()
    results: Queue[object] = Queue()
    bot = multiprocessing.Process(target=bot_process, args=(ports, asks, results), daemon=True)
    bot.start()
    port = ports.get(timeout=20)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            write_handler(work / "h.sh", HANDLER)
            make_tone(work / "tone.wav", 440.0, args.duration)
            run(args.calls, args.duration, f"ws://127.0.0.1:{port}/", work, (asks, results))
            run(args.calls, args.duration, "", work, (asks, results))
    finally:
        bot.terminate()
        bot.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
