#!/bin/bash
# An IVR menu in bash (ivr.py beside it is the same with the handler kit): answer, play
# menu.wav and GATHER one key (bargein: the first key stops the menu). 1 plays one.wav and
# hangs up, 2 transfers the caller to $1 (default sip:desk@example.com); another key, or none
# within 8 s: SAY so and play the menu again; after the third time, SAY goodbye and hang up.
# Try it offline: siproc-sim --script examples/sim/ivr.sim examples/ivr.sh
desk=${1:-sip:desk@example.com}
[ "$SIPROC_OUTGOING" = y ] && { echo HANGUP; exit 0; }
tries=0
menu() {
	tries=$((tries + 1))
	echo "PLAY menu.wav"
	echo "GATHER max=1 first=8 bargein"
}
echo RINGING
echo ANSWER
while read -r event rest; do
	case "$event $rest" in
		"CONNECTED ") menu ;;
		"GATHERED 1 max") echo "PLAY one.wav" ;;
		"GATHERED 2 max") echo "TRANSFER $desk" ;;
		"GATHERED "*)
			keys=${rest%% *}
			sorry="Sorry, there is no option $keys."
			[ "$keys" = - ] && sorry="Sorry, I did not get that."
			if [ "$tries" -lt 3 ]; then
				next=menu
			else
				sorry="$sorry Goodbye."
				next="echo HANGUP"
			fi
			echo "SAY $sorry"
			;;
		"STOPPED say:"* | "ERROR SAY "*) $next ;; # said (or no speech engine): go on
		"STOPPED one.wav") echo HANGUP ;;
	esac
done
