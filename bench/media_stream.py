"""STREAM under load: N concurrent calls, each streaming both ways to one local bot (issue 10).

    python bench/media_stream.py                      # smoke: 10 calls, 10 s
    python bench/media_stream.py --calls 200 --duration 30    # the issue's figure (2 CPUs)

Two siproc processes on 127.0.0.1: alice places N calls to bob (G.711 u-law), each playing a
440 Hz tone for ``--duration`` seconds; bob's handler answers and runs ``STREAM`` to a bot in
this script (a ``websockets`` server in its own process, so that its CPU is not bob's) that
sends every frame it gets straight back (an echo: the bot's audio is then mixed into what bob
sends). Then the same N calls without STREAM, for the baseline.

Printed, STREAM and plain side by side: CPU seconds of bob (siproc and its media workers) per
call-minute; the send jitter of bob's RTP as in bench/load.py (|send interval - 20 ms| of every
stream bob sends alice, captured with dumpcap on lo, filtered to bob's and alice's RTP port
ranges: p50/p99/max); RTP lost each way (the "call ended" counts of bob and alice). For STREAM
also the loss towards the bot (frames bob sent against frames the bot got, gaps in ``chunk``,
what bob logs as lost to a slow bot) and back (frames the bot sent against what bob played;
bob never drops the bot's audio, a full playout queue stops it reading the socket, so what is
not played was cut by the hang-up: queued in bob, or still on its way), a ``loss:`` verdict,
the bot process's CPU, and the jitter of the media messages' arrival at the bot (what a speech
model sees).
``--no-capture`` skips dumpcap (no send jitter).

Measured on the shared 2-CPU box (bob's CPU from /proc; before: the websockets asyncio client,
after: net/websocket_client.py, websockets' sans-I/O protocol on a plain asyncio protocol).
``--calls 20 --duration 20``, load average ~4 (before) and ~2 (after), same lock hold:

                     N  CPU s/call-min   RTP send jitter p50/p99/max ms  RTP lost to bob  to alice
    before  STREAM  20           0.415                  0.19/1.00/15.37                0         0
            plain   20           0.132                   0.38/0.73/7.98                0         0
    after   STREAM  20           0.369                  0.40/1.62/15.79                0         0
            plain   20           0.121                   0.33/0.79/5.09                0         0

    (both: 0 missing chunks, 0 lost to a slow bot, 1.0 frame per stream in flight at hang-up)

``--calls 200 --duration 30`` (after, with the review's fixes and the bot reading to the end;
load average 59 at the start from another job's fuzz run, 21 at the end):

               N  CPU s/call-min   RTP send jitter p50/p99/max ms  RTP lost to bob  to alice
    STREAM   200           0.219                  0.30/4.14/22.34                0         0
    plain    200           0.061                   0.37/1.37/7.23                0         0
      STREAM: 21.9 CPU s in 32.5 s, 200/200 calls ended 200; the bot process: 14.3 CPU s
      STREAM: to the bot: 200 streams, 302921 media frames sent by bob, 302921 received by the
              bot, 0 missing chunks, 0 lost to a slow bot
      STREAM: back: 302055 frames sent by the bot, 300935 played; cut by the hang-up: 529
              queued in bob, 591 on their way (5.6 frames per stream)
      STREAM: media arrival jitter at the bot: p50 10.61 ms, p99 51.16 ms, max 252.71 ms
      STREAM: loss: none either way

(The arrival jitter at the bot is mostly the bot's: one Python process handling 20000
messages a second on the same two cores.)

Bob spends ~21 us of CPU per WebSocket message at 200 calls (0.124 CPU s per call-minute over
plain, 6000 messages), ~41 us at 20 (fewer messages per wake-up); bench/stream_edge.py
measures the edge alone (13-20 us per message at 50 streams, load-dependent). Not yet broken
down: its cProfile puts the largest share in transport.write (one send per call and tick),
but getrusage shows little system time; perf on a quiet box would settle it.

Keep N and the duration bounded on a shared machine; everything binds to 127.0.0.1. Needs
dumpcap (``apt-get install -y tshark``) unless ``--no-capture``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import percentile, read_pcap  # noqa: E402
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
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

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
                if ws.state is State.OPEN:  # bob's close came: read the rest, send no more
                    with contextlib.suppress(ConnectionClosed):
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


@dataclass
class Figures:
    """One run's figures (STREAM or plain)."""

    label: str
    calls: int
    cpu_per_call_minute: float = math.nan
    jitter_ms: tuple[float, float, float] | None = None  # bob's RTP sends: p50, p99, max
    rtp_lost_to_bob: int = 0  # alice -> bob, as bob's calls count them
    rtp_lost_to_alice: int = 0  # bob -> alice
    rtp_sent_by_bob: int = 0
    ended: int = 0  # bob's calls that ended 200
    lines: list[str] = field(default_factory=list)


class SendCapture:
    """dumpcap on lo: UDP from bob's RTP ports to alice's only (never all of lo: PEERS.md)."""

    def __init__(self, work: Path, bob_ports: tuple[int, int], alice_ports: tuple[int, int]):
        self.path = work / "bob-rtp.pcap"
        self.log = work / "dumpcap.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("dumpcap") or "dumpcap",
                    "-i", "lo",
                    "-f", f"udp src portrange {bob_ports[0]}-{bob_ports[1]} "
                          f"and dst portrange {alice_ports[0]}-{alice_ports[1]}",
                    "-s", "64", "-B", "64", "-P", "-q", "-w", str(self.path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while b"Capturing on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dumpcap did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def jitter(self) -> tuple[float, float, float] | None:
        """Stop; |send interval - 20 ms| of every RTP stream bob sent: p50, p99, max (ms)."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(15)
        last: dict[int, float] = {}
        deviations: list[float] = []
        for ts, _, _, rtp in read_pcap(self.path):
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or 72 <= rtp[1] & 0x7F <= 76:
                continue  # not RTP (RTCP)
            ssrc = int.from_bytes(rtp[8:12], "big")
            if ssrc in last:
                deviations.append(abs(ts - last[ssrc] - 0.020) * 1000)
            last[ssrc] = ts
        if not deviations:
            return None
        deviations.sort()
        return percentile(deviations, 0.5), percentile(deviations, 0.99), deviations[-1]


def port_ranges(calls: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two RTP port ranges (bob's, alice's) of room for the calls, away from the defaults."""
    size = 4 * calls + 40
    base = random.randrange(40000, 60000 - 2 * size, 2)
    return (base, base + size - 1), (base + size, base + 2 * size - 1)


def rtp_figures(siproc: Siproc) -> tuple[int, int, int]:
    """Sent, received and lost RTP packets over the calls siproc logged as ended."""
    sent = received = lost = 0
    for line in siproc.lines:
        m = re.search(
            r"call ended: 200 .*RTP: (\d+) packets sent, (\d+) received\) lost (\d+)", line
        )
        if m:
            sent += int(m.group(1))
            received += int(m.group(2))
            lost += int(m.group(3))
    return sent, received, lost


def run(
    calls: int,
    duration: float,
    url: str,
    work: Path,
    bot: tuple[Queue, Queue],  # type: ignore[type-arg]
    capture: bool,
    bot_pid: int,
) -> Figures:
    figures = Figures("STREAM" if url else "plain", calls)
    bob_ports, alice_ports = port_ranges(calls)
    common = {"SIPROC_CODEC_PRIORITIES": "PCMU:200", "SIPROC_MAX_CALLS": str(calls + 10)}
    bob_env = {
        **common,
        "SIPROC_RTP_PORTS": f"{bob_ports[0]}-{bob_ports[1]}",
        "SIPROC_CALL_RATE": str(calls + 10),  # alice places all calls at once
        "SIPROC_CALL_BURST": str(calls + 10),
    }
    alice_env = {**common, "SIPROC_RTP_PORTS": f"{alice_ports[0]}-{alice_ports[1]}"}
    bob = Siproc(work / "h.sh", "stream", url, env=bob_env, cwd=work, log_level=3).wait_ready()
    alice = Siproc(work / "h.sh", "caller", env=alice_env, cwd=work, log_level=3).wait_ready()
    cap = SendCapture(work, bob_ports, alice_ports) if capture else None
    try:
        cpu0, t0 = cpu_seconds(bob.proc.pid), time.monotonic()
        bot_cpu0 = cpu_seconds(bot_pid)
        for _ in range(calls):
            alice.call(bob.uri("bob"))
        deadline = time.monotonic() + duration + 60
        while bob.count(r"call ended: 200") < calls and time.monotonic() < deadline:
            time.sleep(0.2)
        cpu = cpu_seconds(bob.proc.pid) - cpu0
        wall = time.monotonic() - t0
        bot_cpu = cpu_seconds(bot_pid) - bot_cpu0
        figures.cpu_per_call_minute = cpu / (calls * duration / 60)
        figures.ended = bob.count(r"call ended: 200")
        figures.lines.append(
            f"{cpu:.1f} CPU s in {wall:.1f} s, {figures.ended}/{calls} calls ended 200"
            + (f"; the bot process: {bot_cpu:.1f} CPU s" if url else "")
        )
        deadline = time.monotonic() + 10
        while alice.count(r"call ended: 200") < figures.ended and time.monotonic() < deadline:
            time.sleep(0.2)
        figures.rtp_sent_by_bob, _, figures.rtp_lost_to_bob = rtp_figures(bob)
        figures.rtp_lost_to_alice = rtp_figures(alice)[2]
        if cap is not None:
            figures.jitter_ms = cap.jitter()
            cap = None
        if not url:
            return figures
        to_bot = sum(
            int(m.group(1))
            for m in (re.search(r"(\d+) frames to the bot", line) for line in bob.lines)
            if m
        )
        lost_slow = sum(
            int(m.group(1))
            for m in (re.search(r"(\d+) lost to a slow bot", line) for line in bob.lines)
            if m
        )
        played = [
            int(m.group(1))
            for m in (re.search(r"(\d+) frames from it played", line) for line in bob.lines)
            if m
        ]
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
            return percentile(jitter, p) if jitter else math.nan

        queued = sum(
            int(m.group(1))
            for m in (re.search(r"(\d+) still queued", line) for line in bob.lines)
            if m
        )
        # Bob never drops the bot's audio (a full playout queue stops reading the socket:
        # flow control), so what was not played was cut by the hang-up: queued in bob, or
        # still on its way (in the bot or in TCP) when the stream ended.
        in_transit = sent - sum(played) - queued
        figures.lines += [
            f"to the bot: {len(streams)} streams, {to_bot} media frames sent by bob, {got} "
            f"received by the bot, {gaps} missing chunks, {lost_slow} lost to a slow bot",
            f"back: {sent} frames sent by the bot, {sum(played)} played; cut by the hang-up: "
            f"{queued} queued in bob, {in_transit} on their way "
            f"({(queued + in_transit) / max(1, len(streams)):.1f} frames per stream)",
            f"media arrival jitter at the bot: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
            f"max {jitter[-1] if jitter else math.nan:.2f} ms",
        ]
        figures.lines.append(
            "loss: "
            + (
                "none either way"
                if gaps == lost_slow == figures.rtp_lost_to_bob == figures.rtp_lost_to_alice == 0
                and got == to_bot
                and in_transit >= 0
                else "SEE ABOVE"
            )
        )
        return figures
    finally:
        if cap is not None:
            cap.jitter()
        alice.quit()
        bob.quit()


def report(runs: list[Figures]) -> None:
    print(
        f"{'':8}{'N':>5} {'CPU s/call-min':>15} {'RTP send jitter p50/p99/max ms':>32} "
        f"{'RTP lost to bob':>16} {'to alice':>9}"
    )
    for f in runs:
        jitter = "/".join(f"{x:.2f}" for x in f.jitter_ms) if f.jitter_ms else "-"
        print(
            f"{f.label:8}{f.calls:>5} {f.cpu_per_call_minute:>15.3f} {jitter:>32} "
            f"{f.rtp_lost_to_bob:>16} {f.rtp_lost_to_alice:>9}"
        )
    for f in runs:
        for line in f.lines:
            print(f"  {f.label}: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--no-capture", action="store_true", help="no dumpcap: no send jitter")
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
            url = f"ws://127.0.0.1:{port}/"
            capture, pid = not args.no_capture, bot.pid or 0
            runs = [
                run(args.calls, args.duration, url, work, (asks, results), capture, pid),
                run(args.calls, args.duration, "", work, (asks, results), capture, pid),
            ]
            report(runs)
    finally:
        bot.terminate()
        bot.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
