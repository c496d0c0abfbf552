#!/usr/bin/env python3
"""The handler of the original manual page's EXAMPLE (handle.sh beside it), written with the
handler kit: answer incoming calls, play the file given as the first argument once connected,
hang up when it has been played."""

import sys

from siproc.handler import Call, run


def main(call: Call) -> None:
    with open("log", "a") as log:
        print(call.info.remote_uri, file=log)
    if not call.info.outgoing:
        call.answer()
    call.wait_connected()
    call.play(sys.argv[1], wait=True)
    call.hangup()


run(main)
