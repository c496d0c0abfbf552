#!/usr/bin/env python3
"""A chatty handler for the demo (narrate.sh beside it), written with the handler kit: says on
stderr (which siproc passes through) what it receives and what it does. Incoming calls: ring,
answer, play the first argument, wait for the caller to hang up. Outgoing calls: play it once
connected, hang up when it has been played."""

import os
import sys
import time

from siproc.handler import Call, Connected, Stopped, run

ME = os.environ.get("DEMO_NAME", "handler")


def say(text: str) -> None:
    print(f"  [{ME}] {text}", file=sys.stderr, flush=True)


def main(call: Call) -> None:
    info = call.info
    say(f"new call: outgoing={'y' if info.outgoing else 'n'} remote={info.remote_id}")
    if not info.outgoing:
        say("-> RINGING, ANSWER")
        call.ringing()
        time.sleep(0.5)
        call.answer()
    for event in call.events():
        say(f"<- {event}")
        if isinstance(event, Connected):
            say(f"-> PLAY {sys.argv[1]}")
            call.play(sys.argv[1])
        elif isinstance(event, Stopped) and info.outgoing:
            say("-> HANGUP")
            call.hangup()
    say("got SIGTERM: the call is over" if call.terminated else "end of input: the call is over")


run(main)
