#!/bin/sh
# A voicemail box with SAY and RECORD: a siproc handler (siproc(1), SPEECH AND KEYS).
# Greets the caller, then records until the caller presses # (then thanks and hangs up) or
# hangs up, at most $VOICEMAIL_MAX seconds (default 120).
# Messages go to $VOICEMAIL_DIR (default ./voicemail, relative to siproc's working directory)
# as <date>-<time>-<caller>.wav, mono 16-bit at the call's codec rate.
dir=${VOICEMAIL_DIR:-voicemail}
max=${VOICEMAIL_MAX:-120}
mkdir -p "$dir" || exit 1
# SIPROC_REMOTE_USER is safe as a file name (siproc escapes / \ % and control characters)
file="$dir/$(date +%Y%m%d-%H%M%S)-${SIPROC_REMOTE_USER:-anonymous}.wav"

echo ANSWER
while read -r event rest; do
  case "$event $rest" in
    "CONNECTED ")
      echo "SAY Please leave your message now. Press the pound key when you are done." ;;
    "STOPPED say:1")  # the greeting has been said: record (we send only silence from now on)
      echo "RECORD $file"
      echo "GATHER first=$max timeout=$max finish=#" ;;
    "GATHERED "*)  # pound, or nothing for $max seconds
      echo RECORD  # stops the recording: the file is complete
      echo "voicemail: a message from $SIPROC_REMOTE_URI in $file" >&2
      echo "SAY Thank you. Goodbye." ;;
    "STOPPED say:2") echo HANGUP ;;
    "ERROR SAY"*) echo "voicemail: $event $rest" >&2; echo HANGUP ;;
  esac
done
