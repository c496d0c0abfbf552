#!/usr/bin/env bash
# A real call on this machine with no external SIP server: two siproc phones on 127.0.0.1.
# "bob" answers every call and plays a melody; "alice" calls bob, plays a tone, hangs up.
# Both run examples/narrate.sh as their handler, which tells on stderr what happens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
work=$(mktemp -d /tmp/siproc-demo.XXXXXX)
trap 'kill $bob_pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import sys, numpy as np, soundfile as sf
rate = 8000
t = np.arange(int(rate * 0.3)) / rate
notes = [523.25, 659.25, 783.99, 1046.5]
melody = np.concatenate([0.4 * np.sin(2 * np.pi * f * t) for f in notes])
sf.write(f"{sys.argv[1]}/melody.wav", melody, rate)
tone = 0.4 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
sf.write(f"{sys.argv[1]}/tone.wav", tone, rate)
PY
export SIPROC_BIND_ADDRESS=127.0.0.1 SIPROC_LOG_LEVEL=${SIPROC_LOG_LEVEL:-3}
echo "== bob: a siproc on 127.0.0.1:5082 that answers and plays a melody"
DEMO_NAME=bob SIPROC_TRANSPORT_PORT=5082 \
	python3 -m siproc examples/narrate.sh "$work/melody.wav" </dev/null &
bob_pid=$!
sleep 1.5
echo "== alice: a siproc on 127.0.0.1:5081; its stdin says: CALL sip:bob@127.0.0.1:5082"
{ echo "CALL sip:bob@127.0.0.1:5082"; sleep 5; echo QUIT; } |
	DEMO_NAME=alice SIPROC_TRANSPORT_PORT=5081 python3 -m siproc examples/narrate.sh "$work/tone.wav"
kill -TERM $bob_pid; wait $bob_pid || true
echo "== done: that was a real SIP call over loopback: INVITE, 200, ACK, RTP both ways, BYE"
