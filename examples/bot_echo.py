#!/usr/bin/env python3
"""A tiny voice bot for siproc's STREAM: it plays back what it hears one second later.

    python3 examples/bot_echo.py --port 8765          # then, in a handler:
    echo "STREAM ws://127.0.0.1:8765/"

It speaks the Twilio Media Streams protocol (siproc(1), VOICE BOTS) as a bot written for Twilio
would: it reads ``connected`` and ``start`` (the ``streamSid``, the format), keeps every
``media`` frame it gets, and from the second second on sends each frame back 50 frames (1 s)
after it arrived. After every second of echo it sends a mark; siproc echoes the mark when
that audio has been played to the caller, and the bot logs it. A key (``dtmf``) is logged; ``*``
clears the echo that is queued (barge-in). ``format=l16/16000`` streams (binary frames) are
echoed the same way. One line per event goes to stdout; the first says where it listens.

Needs the ``websockets`` package (``pip install websockets``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys

from websockets.asyncio.server import ServerConnection, serve

FRAMES_PER_SECOND = 50  # one media frame per 20 ms


def say(*words: object) -> None:
    print(*words, flush=True)


async def echo(ws: ServerConnection, delay_frames: int) -> None:
    sid = ""
    binary = False
    late: collections.deque[str | bytes] = collections.deque()  # frames waiting to go back
    echoed = 0
    async for message in ws:
        if isinstance(message, bytes):  # format=l16/16000: raw audio frames
            late.append(message)
        else:
            data = json.loads(message)
            event = data.get("event")
            if event == "start":
                sid = data["streamSid"]
                binary = data["start"]["mediaFormat"]["encoding"] == "audio/l16"
                say("start", sid, json.dumps(data["start"]["customParameters"]))
                continue
            if event == "media":
                late.append(data["media"]["payload"])
            elif event == "mark":
                say("mark", data["mark"]["name"], "played")
                continue
            elif event == "dtmf":
                digit = data["dtmf"]["digit"]
                say("dtmf", digit)
                if digit == "*":
                    await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
                continue
            elif event == "stop":
                say("stop", sid)
                break
            else:
                continue
        if len(late) <= delay_frames:
            continue
        frame = late.popleft()
        if binary:
            await ws.send(frame)
        else:
            reply = {"event": "media", "streamSid": sid, "media": {"payload": frame}}
            await ws.send(json.dumps(reply))
        echoed += 1
        if echoed % FRAMES_PER_SECOND == 0:
            name = f"echo-{echoed // FRAMES_PER_SECOND}s"
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}}))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds (default 1)")
    args = parser.parse_args()
    delay_frames = round(args.delay * FRAMES_PER_SECOND)

    async def handle(ws: ServerConnection) -> None:
        say("connection from", ws.remote_address[0])
        await echo(ws, delay_frames)

    async with serve(handle, args.host, args.port, compression=None) as server:
        host, port = server.sockets[0].getsockname()[:2]
        say(f"listening on ws://{host}:{port}/")
        await asyncio.Future()  # until killed
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
