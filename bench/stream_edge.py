"""CPU per WebSocket message of the STREAM edge alone (net/media_stream_edge.py), without SIP/RTP.

    python bench/stream_edge.py [--streams 50] [--seconds 10] [--profile FILE]

N :class:`~siproc.net.media_stream_edge.BotStream` objects in this process (on uvloop when it
is installed, as in a media worker), each fed one 20 ms frame of a tone per tick of a paced
20 ms loop and asked for one frame of the bot's audio (what a call's media tick does with its
taps), against an echo bot in another process (its CPU is not counted) that sends every media
frame straight back. Printed: CPU microseconds of this process per message (both directions,
the tick loop included; user and system), frames each way, and the share of a core per
stream. ``--profile`` writes cProfile statistics of the measured seconds (``python -m pstats
FILE``).

This isolates the per-message cost that bench/media_stream.py measures with whole calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import json
import multiprocessing
import resource
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from siproc.media.media_stream_protocol import StreamFormat  # noqa: E402
from siproc.net.media_stream_edge import BotStream, StreamSpec  # noqa: E402


class Taps:
    """The taps API of an RtpStream that a BotStream uses."""

    closed = False
    sample_rate = 8000

    def __init__(self) -> None:
        self.sink: object = None

    def add_sink(self, sink: object) -> None:
        self.sink = sink

    def remove_sink(self, sink: object) -> None:
        self.sink = None

    def add_source(self, source: object) -> None:
        pass

    def remove_source(self, source: object) -> None:
        pass

    def add_dtmf_listener(self, listener: object) -> None:
        pass

    def remove_dtmf_listener(self, listener: object) -> None:
        pass


def echo_bot(port_out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Every media frame straight back, as bench/media_stream.py's bot does."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def handle(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await echo(ws)

    async def echo(ws: ServerConnection) -> None:
        sid = None
        async for raw in ws:
            message = json.loads(raw)
            if message["event"] == "start":
                sid = message["streamSid"]
            elif message["event"] == "media":
                payload = message["media"]["payload"]
                reply = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
                await ws.send(json.dumps(reply))
            elif message["event"] == "stop":
                break

    async def main() -> None:
        async with serve(handle, "127.0.0.1", 0, compression=None) as server:
            port_out.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


async def measure(port: int, streams: int, seconds: float, profile: str | None) -> None:
    loop = asyncio.get_running_loop()
    t = np.arange(160) / 8000
    frame = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    reports: list[tuple[str, str]] = []
    bots = []
    for i in range(streams):
        spec = StreamSpec(
            f"ws://127.0.0.1:{port}/", StreamFormat.MULAW_8000, (), f"MZ{i:032x}", f"call{i}"
        )
        bot = BotStream(loop, Taps(), spec, lambda k, x: reports.append((k, x)))  # type: ignore[arg-type]
        bot.start()
        bots.append(bot)
    while sum(kind == "CONNECTED" for kind, _ in reports) < streams:
        await asyncio.sleep(0.05)
    done = loop.create_future()
    ticks = round(seconds / 0.020)
    warmup = 50
    state = {"n": 0, "user": 0.0, "system": 0.0, "sent": 0, "played": 0}
    profiler = cProfile.Profile() if profile else None
    start = loop.time()

    def tick() -> None:
        n = state["n"] = state["n"] + 1
        if n == warmup:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            state["user"], state["system"] = usage.ru_utime, usage.ru_stime
            state["sent"] = sum(b.protocol.chunks for b in bots)
            state["played"] = sum(b.frames_played for b in bots)
            if profiler:
                profiler.enable()
        for bot in bots:
            bot.write_frame(frame, 8000)
            bot.read_frame(160)
        if n == warmup + ticks:
            if profiler:
                profiler.disable()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            user, system = usage.ru_utime - state["user"], usage.ru_stime - state["system"]
            sent = sum(b.protocol.chunks for b in bots) - state["sent"]
            played = sum(b.frames_played for b in bots) - state["played"]
            done.set_result((user, system, sent, played))
            return
        loop.call_at(start + (n + 1) * 0.020, tick)

    loop.call_at(start + 0.020, tick)
    user, system, sent, played = await done
    cpu = user + system
    for bot in bots:
        bot.close()
    await asyncio.sleep(0.5)
    messages = sent + played
    print(
        f"{streams} streams, {ticks * 0.020:.0f} s: {cpu:.2f} CPU s ({user:.2f} user, "
        f"{system:.2f} system), {sent} frames to the bot, {played} played from it: "
        f"{cpu / messages * 1e6:.1f} us per message ({system / messages * 1e6:.1f} system), "
        f"{cpu / (ticks * 0.020) / streams:.2%} of a core per stream"
    )
    lost = [b.protocol.chunks - b._send_queue.dropped for b in bots]
    if sum(b._send_queue.dropped for b in bots):
        print(f"  lost to the bot: {sum(b._send_queue.dropped for b in bots)} ({lost[:3]})")
    if profiler and profile:
        profiler.dump_stats(profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", help="write cProfile statistics here")
    args = parser.parse_args()
    if args.streams > 500 or args.seconds > 120:
        parser.error("keep it bounded: at most 500 streams for at most 120 s")
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    bot = multiprocessing.Process(target=echo_bot, args=(ports,), daemon=True)
    bot.start()
    try:
        port = ports.get(timeout=20)
        run = measure(port, args.streams, args.seconds, args.profile)
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop

            uvloop.run(run)
        else:
            asyncio.run(run)
    finally:
        bot.terminate()
        bot.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
