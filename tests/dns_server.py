"""A tiny DNS server for tests: `python tests/dns_server.py ZONE_JSON`, in a test's network
namespace, answers on 127.0.0.1:53 (UDP) from the zone and says NXDOMAIN to anything else.

ZONE_JSON: {"srv": {"_sip._udp.example.test.": [[priority, weight, port, "target."]]},
            "a": {"target.": "127.0.0.1"}}. AAAA questions for a name with an A record get an
empty answer (NOERROR), as a real zone without IPv6 would. Prints `ready` once it listens and
one line per question to stdout."""

from __future__ import annotations

import json
import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def main() -> int:
    zone = json.loads(sys.argv[1])
    srv = {name.lower(): records for name, records in zone.get("srv", {}).items()}
    a = {name.lower(): address for name, address in zone.get("a", {}).items()}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:  # not DNS: ignore
            continue
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().lower()
        kind = question.rdtype
        print(f"{dns.rdatatype.to_text(kind)} {name}", flush=True)
        if kind == dns.rdatatype.SRV and name in srv:
            rdatas = [f"{p} {w} {port} {target}" for p, w, port, target in srv[name]]
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "SRV", *rdatas))
        elif kind == dns.rdatatype.A and name in a:
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", a[name]))
        elif not (kind == dns.rdatatype.AAAA and name in a):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(reply.to_wire(), peer)


if __name__ == "__main__":
    sys.exit(main())
