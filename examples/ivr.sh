#!/bin/bash
# An IVR menu in bash (ivr.py beside it is the same with the handler kit): answer, play
# menu.wav; key 1 plays one.wav and hangs up, key 2 transfers the caller to $1 (default
# sip:desk@example.com). Try it offline: siproc-sim --script examples/sim/ivr.sim examples/ivr.sh
desk=${1:-sip:desk@example.com}
[ "$SIPROC_OUTGOING" = y ] && { echo HANGUP; exit 0; }
echo RINGING
echo ANSWER
while read -r line; do
	case "$line" in
		CONNECTED) echo "PLAY menu.wav" ;;
		"DTMF 1") echo STOP; echo "PLAY one.wav" ;;
		"DTMF 2") echo "TRANSFER $desk" ;;
		"STOPPED one.wav") echo HANGUP ;;
	esac
done
