#!/bin/bash
# A chatty handler for the demo: says on stderr (which siproc passes through) what it
# receives and what it does. Incoming calls: ring, answer, play $1, wait for the caller to
# hang up. Outgoing calls: play $1 once connected, hang up when it has been played.
me=${DEMO_NAME:-handler}
say() { echo "  [$me] $*" >&2; }
say "new call: outgoing=$SIPROC_OUTGOING remote=$SIPROC_REMOTE_ID"
if [ "$SIPROC_OUTGOING" = n ]; then
	say "-> RINGING, ANSWER"; echo RINGING; sleep 0.5; echo ANSWER
fi
trap 'say "got SIGTERM: the call is over"; exit 0' TERM
while read -r line; do
	say "<- $line"
	case "$line" in
		CONNECTED) say "-> PLAY $1"; echo "PLAY $1" ;;
		STOPPED*) [ "$SIPROC_OUTGOING" = y ] && { say "-> HANGUP"; echo HANGUP; } ;;
	esac
done
say "end of input: the call is over"
