#!/bin/sh
# An IVR menu spoken with SAY (ivr.sh plays recorded prompts instead): GATHER with bargein.
#   1: the opening hours, then goodbye;  2: the menu again;
#   no key within 8 s, or another key: "sorry" and the menu once more, then goodbye.
# The caller need not listen to the whole menu: GATHER bargein stops it at the first key.
# Speech comes from SIPROC_TTS_COMMAND (espeak-ng by default); the menu is rendered once
# and then played from siproc's cache.
MENU="Welcome to siproc. For our opening hours, press 1. To hear this menu again, press 2."
HOURS="We are open from Monday to Friday, nine to five. Goodbye."

says=0          # SAYs so far: the n-th ends with "STOPPED say:n"
hangup_after=0  # hang up when this SAY has been said
tries=0
say() { says=$((says + 1)); echo "SAY $1"; }
menu() { say "$MENU"; echo "GATHER max=1 first=8 bargein"; }

echo ANSWER
while read -r event rest; do
  case "$event" in
    CONNECTED) menu ;;
    GATHERED)
      case "$rest" in
        "1 max") say "$HOURS"; hangup_after=$says ;;
        "2 max") tries=0; menu ;;
        *)
          tries=$((tries + 1))
          if [ "$tries" -lt 2 ]; then say "Sorry, I did not get that."; menu
          else say "Goodbye."; hangup_after=$says; fi ;;
      esac ;;
    STOPPED) [ "$rest" = "say:$hangup_after" ] && echo HANGUP ;;
    ERROR) echo "ivr: $event $rest" >&2; case "$rest" in SAY*) echo HANGUP ;; esac ;;
  esac
done
