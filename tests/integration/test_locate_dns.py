"""RFC 3263 server location over real DNS: two siprocs and a DNS server in a loopback-only
network namespace whose resolv.conf points at that server. `CALL sip:bob@example.test` (a
domain, no port) must follow the domain's SRV record to bob's host name and port.

Needs root (`ip netns`). It fails, never skips, when it cannot have that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import loopback_netns
from tests.siproc_proc import Siproc, wait_file, write_handler

pytestmark = pytest.mark.netns

HANDLER = r"""
role=$1
log="$role.log"
trap 'echo SIGTERM >> "$log"; exit 0' TERM
[ "$role" = bob ] && echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$role:$line" in
    alice:CONNECTED) echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""
DNS_SERVER = Path(__file__).resolve().parents[1] / "dns_server.py"


def test_a_call_to_a_domain_follows_its_srv_record(tmp_path: Path) -> None:
    write_handler(tmp_path / "h.sh", HANDLER)
    with loopback_netns("test_locate_dns", resolv_conf="nameserver 127.0.0.1\n") as ns:
        bob = Siproc(tmp_path / "h.sh", "bob", cwd=tmp_path, netns=ns).wait_ready()
        zone = {
            "srv": {"_sip._tcp.example.test.": [[10, 0, bob.port, "edge.example.test."]]},
            "a": {"edge.example.test.": "127.0.0.1"},
        }
        dns = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(DNS_SERVER), json.dumps(zone)],
            stdout=subprocess.PIPE,
            text=True,
        )
        alice = None
        try:
            assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
            alice = Siproc(tmp_path / "h.sh", "alice", cwd=tmp_path, netns=ns).wait_ready()
            alice.call("sip:bob@example.test")
            alice_log = wait_file(tmp_path / "alice.log", r"EVENT DISCONNECTED 200", timeout=20)
            assert "EVENT CONNECTED" in alice_log
            wait_file(tmp_path / "bob.log", r"EVENT DISCONNECTED 200")
            # No UDP record: the TCP one gave the transport, the host and the port.
            alice.wait_for(
                rf"example\.test: edge\.example\.test port {bob.port} over TCP "
                r"\(SRV _sip\._tcp\.example\.test, 1 record\)"
            )
            assert "resolving" not in alice.stderr() and "on the event loop" not in alice.stderr()
        finally:
            dns.kill()
            dns.wait(5)
            questions = dns.stdout.read() if dns.stdout else ""
            for proc in (alice, bob):
                if proc is not None:
                    proc.stop()
                    print(f"--- siproc on port {proc.port} ---\n{proc.stderr()}")
            print(f"--- DNS questions ---\n{questions}")
        assert "SRV _sip._udp.example.test." in questions
        assert "SRV _sip._tcp.example.test." in questions
