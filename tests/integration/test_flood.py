"""A flood of INVITEs from one address starts no more handlers than the per-source limit allows,
while ordinary calls from another address all succeed and OPTIONS from a third is answered
fast; afterwards every resource is back to idle (issue: safe on the open internet, item 4).

Everything runs in a loopback-only network namespace: the callee siproc on 127.0.0.1 with the
default limits (10 new calls a second per source address, a burst of 20), the flood from
127.0.0.2 (3000 INVITEs in 3 s, `flood_send.py`), a caller siproc on 127.0.0.3 placing ten
ordinary calls during the flood, and OPTIONS pings from 127.0.0.4. The flood's calls are never
answered: they ring until SIPROC_RING_TIMEOUT (5 s here) gives them 480. Needs root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_hostile_peer import rtp_sockets
from tests.netns import loopback_netns
from tests.siproc_proc import Siproc, write_handler

pytestmark = pytest.mark.netns

FLOOD_COUNT, FLOOD_SECONDS = 3000, 3.0
ORDINARY_CALLS = 10
RATE, BURST = 10, 20  # the defaults
OPTIONS_P99_MS = 200
SENDER = Path(__file__).with_name("flood_send.py")

CALLEE = r"""
echo "$SIPROC_REMOTE_USER" > "started-$$"
[ "$SIPROC_REMOTE_USER" = siproc ] && echo ANSWER
while read -r line; do
  [ "$line" = CONNECTED ] && echo HANGUP
done
"""

CALLER = r"""
while read -r line; do
  case "$line" in
    CONNECTED) touch "up-$$" ;;
    DISCONNECTED*) echo "$line" > "end-$$" ;;
  esac
done
"""


def test_an_invite_flood_is_held_to_the_per_source_limit(tmp_path: Path) -> None:
    callee_dir, caller_dir = tmp_path / "callee", tmp_path / "caller"
    callee_dir.mkdir()
    caller_dir.mkdir()
    write_handler(callee_dir / "h.sh", CALLEE)
    write_handler(caller_dir / "h.sh", CALLER)
    env = {"SIPROC_RING_TIMEOUT": "5", "SIPROC_RTP_PORTS": "21000-21999", "SIPROC_LOG_LEVEL": "3"}
    with loopback_netns("test_flood") as ns:
        callee = Siproc(callee_dir / "h.sh", cwd=callee_dir, netns=ns, env=env).wait_ready()
        caller = Siproc(
            caller_dir / "h.sh", cwd=caller_dir, netns=ns, bind="127.0.0.3"
        ).wait_ready()
        try:
            flood = subprocess.Popen(
                [
                    *("ip", "netns", "exec", ns, sys.executable, str(SENDER)),
                    *(str(callee.port), str(FLOOD_COUNT), str(FLOOD_SECONDS)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)  # the flood is on
            for _ in range(ORDINARY_CALLS):
                caller.call(f"sip:siproc@127.0.0.1:{callee.port}")
                time.sleep(0.2)
            out, _ = flood.communicate(timeout=60)
            result = json.loads(out)
            rtts = sorted(result["options_ms"])
            p99 = rtts[int(len(rtts) * 0.99) - 1]
            print(
                f"flood: {result['sent']} INVITEs in {result['seconds']:.2f} s, final responses "
                f"{result['statuses']}; OPTIONS: {len(rtts)} pings, p50 "
                f"{rtts[len(rtts) // 2]:.1f} ms, p99 {p99:.1f} ms, max {rtts[-1]:.1f} ms"
            )
            flood_handlers = [
                p for p in callee_dir.glob("started-*") if p.read_text().strip() == "flood"
            ]
            allowed = BURST + RATE * result["seconds"] + 1
            assert 0 < len(flood_handlers) <= allowed, (len(flood_handlers), allowed)
            assert result["statuses"].get("503", 0) >= FLOOD_COUNT - allowed - 1
            assert all(int(value) >= 1 for value in result["retry_after"])
            assert p99 < OPTIONS_P99_MS, rtts[-20:]

            # The ordinary calls from another address all succeed.
            deadline = time.monotonic() + 20
            while (
                time.monotonic() < deadline and len(list(caller_dir.glob("end-*"))) < ORDINARY_CALLS
            ):
                time.sleep(0.2)
            assert len(list(caller_dir.glob("up-*"))) == ORDINARY_CALLS, caller.stderr()
            ends = [p.read_text().strip() for p in caller_dir.glob("end-*")]
            assert ends == ["DISCONNECTED 200 remote hangup"] * ORDINARY_CALLS, ends

            # Within a minute everything is idle again: the ringing flood calls got 480.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (callee.children() or rtp_sockets(ns)):
                time.sleep(0.5)
            assert callee.children() == [] and rtp_sockets(ns) == [], callee.stderr()
            assert callee.count(r"not answered in time: 480") == len(flood_handlers)
        finally:
            for proc in (caller, callee):
                proc.stop()
                print(f"--- siproc on port {proc.port} ---\n{proc.stderr()}")
