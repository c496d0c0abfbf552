#!/bin/bash
# The handler of the original manual page's EXAMPLE, unchanged: answer incoming calls,
# play the file given as $1 once connected, hang up when it has been played.

echo "$SIPROC_REMOTE_URI" >> log

if [ "$SIPROC_OUTGOING" == "n" ]
then
	echo "ANSWER"
fi

while read line
do
	case "$line" in
		"CONNECTED")
			echo "PLAY $1"
		;;
		"STOPPED"*)
			echo "HANGUP"
		;;
	esac
done
