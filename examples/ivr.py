#!/usr/bin/env python3
"""An IVR menu written with the handler kit (ivr.sh beside it is the same in bash).

Answers, plays menu.wav and GATHERs one key; bargein: the first key stops the menu, so a
caller who knows it need not listen. 1 plays one.wav and hangs up, 2 transfers the caller to
the first argument (default sip:desk@example.com). Any other key, or none within 8 seconds:
SAY so and play the menu again; after the third time, SAY goodbye and hang up. Without a
text-to-speech engine (ERROR SAY), it goes on without the spoken words.

Try it offline: siproc-sim --script examples/sim/ivr.sim examples/ivr.py"""

import sys

from siproc.handler import Call, CommandFailed, run

DESK = sys.argv[1] if len(sys.argv) > 1 else "sip:desk@example.com"
TRIES = 3


def say(call: Call, text: str) -> None:
    """Speak and wait until it has been said; without speech, go on (the error on stderr)."""
    try:
        call.say(text, wait=True)
    except CommandFailed as exc:
        print(f"ivr: {exc}", file=sys.stderr)


def main(call: Call) -> None:
    if call.info.outgoing:  # an IVR answers; it does not call
        call.hangup()
        return
    call.ringing()
    call.answer()
    call.wait_connected()
    for attempt in range(1, TRIES + 1):
        call.play("menu.wav")
        key = call.gather(max_digits=1, finish="", first=8, bargein=True)
        if key == "1":
            call.play("one.wav", wait=True)
            call.hangup()
            return
        if key == "2":
            call.transfer(DESK)
            for _ in call.events():  # until the transfer ends the call
                pass
            return
        sorry = f"Sorry, there is no option {key}." if key else "Sorry, I did not get that."
        say(call, sorry if attempt < TRIES else f"{sorry} Goodbye.")
    call.hangup()


run(main)
