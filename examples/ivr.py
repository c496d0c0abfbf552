#!/usr/bin/env python3
"""An IVR menu written with the handler kit (ivr.sh beside it is the same in bash).

Answers, plays menu.wav and waits for one key (a key stops the menu): 1 plays one.wav and
hangs up, 2 transfers the caller to the first argument (default sip:desk@example.com); no key
three times plays bye.wav and hangs up.

Try it offline: siproc-sim --script examples/sim/ivr.sim examples/ivr.py"""

import sys

from siproc.handler import Call, run

DESK = sys.argv[1] if len(sys.argv) > 1 else "sip:desk@example.com"


def main(call: Call) -> None:
    if call.info.outgoing:  # an IVR answers; it does not call
        call.hangup()
        return
    call.ringing()
    call.answer()
    call.wait_connected()
    for _ in range(3):
        call.play("menu.wav")
        key = call.gather(max_digits=1, timeout=5)
        if key and "menu.wav" in call.playing:
            call.stop()  # the caller knows what to do: no more of the menu
        if key == "1":
            call.play("one.wav", wait=True)
            call.hangup()
            return
        if key == "2":
            call.transfer(DESK)
            for _ in call.events():  # until the transfer ends the call
                pass
            return
    call.play("bye.wav", wait=True)
    call.hangup()


run(main)
