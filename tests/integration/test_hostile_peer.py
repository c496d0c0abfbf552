"""Nothing a peer sends can wedge a call (issue: safe on the open internet, item 1).

A live siproc (SIPROC_MAX_CALLS=5, T1 = 100 ms) in a loopback-only network namespace gets the
hostile INVITEs of `hostile_send.py` all at once: NUL escaped and raw in From/To/X- headers, bare
CR in a header, 5000-digit numbers in headers and SDP, control characters in SDP lines, a Contact
whose host does not resolve (with and without an ACK), and a broken SDP in the ACK. Afterwards
(64*T1 and a little) siproc has no handler, no open RTP socket and every slot free: five ordinary
calls from another siproc are all connected at once. Needs root (`ip netns`); fails, never skips.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.hostile_send import CASES
from tests.netns import loopback_netns
from tests.siproc_proc import Siproc, write_handler

pytestmark = pytest.mark.netns

T1 = 0.1
RTP_PORTS = (21000, 21100)
SENDER = Path(__file__).with_name("hostile_send.py")

CALLEE = r"""
env | grep '^SIPROC_' > "env-$$"
echo ANSWER
while read -r line; do
  echo "$line" >> "events-$$"
  # the hostile callers are hung up at once; the five ordinary ones (user siproc) hang up
  [ "$line" = CONNECTED ] && [ "$SIPROC_REMOTE_USER" != siproc ] && echo HANGUP
done
"""

CALLER = r"""
while read -r line; do
  case "$line" in
    CONNECTED) touch "up-$$"
      for _ in $(seq 100); do [ "$(ls up-* | wc -l)" -ge 5 ] && break; sleep 0.1; done
      echo HANGUP ;;
  esac
done
"""

REFUSED_400 = {
    "from-nul-raw",
    "to-nul-raw",
    "x-header-nul-raw",
    "x-header-bare-cr",
    "huge-cseq",
    "huge-max-forwards",
}
REFUSED_SDP = {
    "sdp-huge-port",
    "sdp-huge-payload-type",
    "sdp-huge-version",
    "sdp-control-in-rtpmap",
    "sdp-cr-in-fmtp",
}


def rtp_sockets(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Huan"], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in out.splitlines()
        if RTP_PORTS[0] <= int(line.split()[3].rsplit(":", 1)[1]) <= RTP_PORTS[1]
    ]


def test_hostile_invites_leave_nothing_behind(tmp_path: Path) -> None:
    callee_dir, caller_dir = tmp_path / "callee", tmp_path / "caller"
    callee_dir.mkdir()
    caller_dir.mkdir()
    write_handler(callee_dir / "h.sh", CALLEE)
    write_handler(caller_dir / "h.sh", CALLER)
    env = {
        "SIPROC_MAX_CALLS": "5",
        "SIPROC_TIMER_T1": str(int(T1 * 1000)),
        "SIPROC_RTP_PORTS": f"{RTP_PORTS[0]}-{RTP_PORTS[1]}",
        "SIPROC_CALL_BURST": "100",
    }
    with loopback_netns("test_hostile_peer", resolv_conf="nameserver 127.0.0.1\n") as ns:
        callee = Siproc(callee_dir / "h.sh", cwd=callee_dir, netns=ns, env=env).wait_ready()
        caller = None
        try:
            sent = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, str(SENDER), str(callee.port)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            results = json.loads(sent.stdout)
            print(json.dumps(results, indent=1))
            for case in REFUSED_400:
                assert results[case]["statuses"][-1:] == [400], case
            for case in REFUSED_SDP:
                assert results[case]["statuses"][-1] in (400, 488), case
            for case in ("from-nul-escaped", "x-header-escaped-nul", "user-dotdot"):
                assert 200 in results[case]["statuses"], case
                assert results[case]["bye"], case  # the handler hung up: a BYE came
            assert 200 in results["ack-bad-sdp"]["statuses"]
            assert results["ack-bad-sdp"]["bye"]  # the call ended with a BYE
            assert 200 in results["contact-unresolvable-no-ack"]["statuses"]

            # 64*T1 after the last INVITE, everything is released.
            deadline = time.monotonic() + 64 * T1 + 10
            while time.monotonic() < deadline:
                if not callee.children() and not rtp_sockets(ns):
                    break
                time.sleep(0.2)
            assert callee.children() == [], callee.stderr()
            assert rtp_sockets(ns) == [], callee.stderr()

            # What the handlers saw: no control character, nothing unsafe for a file name.
            envs = [p.read_text() for p in callee_dir.glob("env-*")]
            users = {
                line.partition("=")[2]
                for text in envs
                for line in text.splitlines()
                if line.startswith("SIPROC_REMOTE_USER=")
            }
            assert "%00" in users and "%2E%2E" in users
            assert "..%2F..%2Fetc%2Fpasswd" in users  # one file name: no / in it
            assert "SIPROC_HEADER_X_NOTE=hello%00world" in "\n".join(envs)
            for text in envs:
                assert all(line.isprintable() for line in text.splitlines()), text
            assert all(name in results for name in CASES)

            # Every slot is free: five calls at once, all connected.
            caller = Siproc(caller_dir / "h.sh", cwd=caller_dir, netns=ns).wait_ready()
            for _ in range(5):
                caller.call(callee.uri())
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(list(caller_dir.glob("up-*"))) < 5:
                time.sleep(0.1)
            assert len(list(caller_dir.glob("up-*"))) == 5, callee.stderr()
            assert "Busy Here" not in callee.stderr()
            assert "Traceback" not in callee.stderr().split("ending the call after")[0]
        finally:
            for proc in (caller, callee):
                if proc is not None:
                    proc.stop()
                    print(f"--- siproc on port {proc.port} ---\n{proc.stderr()}")
