"""net/locate.py: RFC 3263 section 4 plans, RFC 2782 ordering, and the locator's cache."""

from __future__ import annotations

import asyncio
import collections
import random
import socket
from typing import Any

import pytest

from siproc.net.hosts import HostCache
from siproc.net.locate import ServerLocator, SrvRecord, order_srv, plan
from siproc.sip.transaction import Destination
from siproc.sip.uri import parse_sip_uri


def test_plan_follows_rfc_3263_section_4() -> None:
    # A numeric host or an explicit port: no SRV (4.1, 4.2).
    p = plan(parse_sip_uri("sip:10.0.0.1"))
    assert (p.srv, p.host, p.port, p.transport) == ((), "10.0.0.1", 5060, "udp")
    p = plan(parse_sip_uri("sip:pbx.example:5070;transport=tcp"))
    assert (p.srv, p.port, p.transport) == ((), 5070, "tcp")
    # A name without a port: SRV for UDP then TCP, or only for the asked transport.
    p = plan(parse_sip_uri("sip:alice@pbx.example"))
    assert p.srv == (("_sip._udp.pbx.example", "udp"), ("_sip._tcp.pbx.example", "tcp"))
    assert (p.host, p.port, p.transport) == ("pbx.example", 5060, "udp")
    p = plan(parse_sip_uri("sip:pbx.example;transport=TCP"))
    assert p.srv == (("_sip._tcp.pbx.example", "tcp"),) and p.transport == "tcp"
    # maddr overrides the host (4.2... and 19.1.1).
    assert plan(parse_sip_uri("sip:a@pbx.example;maddr=192.0.2.1")).host == "192.0.2.1"


def test_order_srv_by_priority_then_weighted_at_random() -> None:
    records = [
        SrvRecord(20, 0, 5060, "backup.example."),
        SrvRecord(10, 60, 5060, "big.example."),
        SrvRecord(10, 20, 5060, "small.example."),
        SrvRecord(10, 0, 5060, "zero.example."),
    ]
    rng = random.Random(7)
    firsts = collections.Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert set(firsts) <= {"big.example.", "small.example.", "zero.example."}
    assert firsts["big.example."] / 4000 == pytest.approx(60 / 81, abs=0.04)  # weight share
    assert firsts["small.example."] / 4000 == pytest.approx(20 / 81, abs=0.04)
    assert all(order_srv(records, rng)[-1].target == "backup.example." for _ in range(50))
    assert len(order_srv(records, rng)) == 4
    assert order_srv([SrvRecord(0, 0, 0, ".")], rng) == []  # "no service" (RFC 2782)


class FakeDns:
    """SRV answers and A records, counting queries."""

    def __init__(self) -> None:
        self.srv: dict[str, list[SrvRecord]] = {}
        self.a: dict[str, str] = {}
        self.queries: list[str] = []

    async def query(self, name: str) -> list[SrvRecord]:
        self.queries.append(name)
        return self.srv.get(name, [])

    def addresses(self, host: str) -> list[tuple[Any, ...]]:
        if host not in self.a:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (self.a[host], 0))]


def _locator(monkeypatch: pytest.MonkeyPatch, dns: FakeDns, now: list[float]) -> ServerLocator:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return dns.addresses(host)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: dns.addresses(host))
    hosts = HostCache(loop, clock=lambda: now[0])
    return ServerLocator(loop, hosts, dns.query, rng=random.Random(1), clock=lambda: now[0])


def test_srv_gives_the_transport_host_and_port_and_is_then_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        dns = FakeDns()
        dns.srv["_sip._tcp.pbx.example"] = [SrvRecord(10, 0, 5080, "sip1.pbx.example.")]
        dns.a["sip1.pbx.example"] = "192.0.2.10"
        now = [0.0]
        locator = _locator(monkeypatch, dns, now)
        uri = parse_sip_uri("sip:alice@pbx.example")
        assert locator.lookup(uri) is None  # not known yet: never blocks
        assert await locator.locate(uri) == Destination("tcp", "192.0.2.10", 5080)
        assert dns.queries == ["_sip._udp.pbx.example", "_sip._tcp.pbx.example"]
        assert locator.lookup(uri) == Destination("tcp", "192.0.2.10", 5080)
        now[0] = 400.0  # past the TTL: served, refreshed in the background
        dns.srv["_sip._tcp.pbx.example"] = [SrvRecord(10, 0, 5090, "sip1.pbx.example.")]
        assert locator.lookup(uri) == Destination("tcp", "192.0.2.10", 5080)
        await asyncio.sleep(0.01)
        assert locator.lookup(uri) == Destination("tcp", "192.0.2.10", 5090)

    asyncio.run(main())


def test_without_srv_the_host_itself_on_5060_and_literals_need_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        dns = FakeDns()
        dns.a["plain.example"] = "198.51.100.5"
        locator = _locator(monkeypatch, dns, [0.0])
        literal = parse_sip_uri("sip:127.0.0.1:5099;transport=tcp")
        assert locator.lookup(literal) == Destination("tcp", "127.0.0.1", 5099)
        plain = parse_sip_uri("sip:bob@plain.example")
        assert await locator.locate(plain) == Destination("udp", "198.51.100.5", 5060)
        assert locator.locate_now(parse_sip_uri("sip:plain.example:5062")).port == 5062
        with pytest.raises(OSError, match=r"cannot resolve 'gone\.example'"):
            await locator.locate(parse_sip_uri("sip:gone.example"))

    asyncio.run(main())


def test_locate_now_makes_no_srv_query_but_uses_what_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        dns = FakeDns()
        dns.srv["_sip._udp.hop.example"] = [SrvRecord(1, 1, 5070, "edge.hop.example.")]
        dns.a.update({"edge.hop.example": "203.0.113.9", "hop.example": "203.0.113.1"})
        locator = _locator(monkeypatch, dns, [0.0])
        uri = parse_sip_uri("sip:hop.example;lr")
        # A dialog's hop never seen: the host's own address, no SRV query (it could block).
        assert locator.locate_now(uri) == Destination("udp", "203.0.113.1", 5060)
        assert dns.queries == [] and locator.hosts.blocking_lookups == 1
        # Once located off the loop, the SRV answer serves the blocking path too.
        await locator.locate(uri)
        assert locator.locate_now(uri) == Destination("udp", "203.0.113.9", 5070)

    asyncio.run(main())


def test_an_unreachable_server_moves_its_targets_to_the_next_srv_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        dns = FakeDns()
        dns.srv["_sip._udp.pbx.example"] = [
            SrvRecord(10, 0, 5060, "primary.pbx.example."),
            SrvRecord(20, 0, 5070, "backup.pbx.example."),
        ]
        dns.a.update({"primary.pbx.example": "192.0.2.1", "backup.pbx.example": "192.0.2.2"})
        now = [0.0]
        locator = _locator(monkeypatch, dns, now)
        uri = parse_sip_uri("sip:pbx.example")
        primary = await locator.locate(uri)
        assert primary == Destination("udp", "192.0.2.1", 5060)
        locator.unreachable(Destination("udp", "192.0.2.99", 5060))  # someone else: no change
        assert locator.lookup(uri) == primary
        locator.unreachable(primary)
        await asyncio.sleep(0.01)  # the backup's address is looked up off the loop
        assert locator.lookup(uri) == Destination("udp", "192.0.2.2", 5070)
        assert locator.hosts.blocking_lookups == 0
        locator.unreachable(Destination("udp", "192.0.2.2", 5070))  # round again
        assert locator.lookup(uri) == primary
        locator.unreachable(primary)
        await asyncio.sleep(0.01)
        now[0] = 400.0  # a refresh starts from the first record again
        locator.lookup(uri)
        await asyncio.sleep(0.01)
        assert locator.lookup(uri) == primary

    asyncio.run(main())


def test_plan_of_sips_and_transport_tls_is_tls_only() -> None:
    """RFC 3263 section 4.1: a sips: URI only ever uses TLS, SRV _sips._tcp, port 5061; the
    certificate must name the URI's host (RFC 5922 section 4), an IP literal needs no name."""
    p = plan(parse_sip_uri("sips:alice@pbx.example"))
    assert p.srv == (("_sips._tcp.pbx.example", "tls"),)
    assert (p.host, p.port, p.transport, p.server_name) == (
        "pbx.example",
        5061,
        "tls",
        "pbx.example",
    )
    p = plan(parse_sip_uri("sip:PBX.example.;transport=TLS"))
    assert p.srv == (("_sips._tcp.PBX.example", "tls"),) and p.server_name == "pbx.example"
    p = plan(parse_sip_uri("sips:pbx.example;transport=tcp"))  # still TLS (RFC 5630)
    assert p.transport == "tls" and p.srv
    p = plan(parse_sip_uri("sips:10.0.0.1"))
    assert (p.srv, p.port, p.transport, p.server_name) == ((), 5061, "tls", "")
    p = plan(parse_sip_uri("sips:pbx.example:5071"))
    assert (p.srv, p.port, p.server_name) == ((), 5071, "pbx.example")


def test_sips_srv_target_keeps_the_uri_host_as_the_name_to_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        dns = FakeDns()
        dns.srv["_sips._tcp.pbx.example"] = [SrvRecord(10, 0, 5071, "edge.provider.example.")]
        dns.a["edge.provider.example"] = "192.0.2.20"
        locator = _locator(monkeypatch, dns, [0.0])
        uri = parse_sip_uri("sips:alice@pbx.example")
        found = await locator.locate(uri)
        assert found == Destination("tls", "192.0.2.20", 5071)
        assert found.server_name == "pbx.example"  # not the SRV target
        assert dns.queries == ["_sips._tcp.pbx.example"]  # no _sip._udp/_tcp for sips:
        known = locator.lookup(uri)
        assert known is not None and known.server_name == "pbx.example"
        assert locator.locate_now(uri).server_name == "pbx.example"
        udp = await locator.locate(parse_sip_uri("sip:192.0.2.20:5071"))
        assert udp.server_name == ""  # only TLS destinations carry one

    asyncio.run(main())
