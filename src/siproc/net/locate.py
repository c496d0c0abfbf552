"""Locating SIP servers (RFC 3263 section 4): a URI to a transport, an address and a port.

Theory of operation. :func:`plan` reads the URI the way section 4.1 and 4.2 ask:

* a numeric host, or an explicit port: no SRV; the transport is the URI's ``transport``
  parameter (UDP when there is none) and the port the URI's (5060 when there is none);
* a name without a port: SRV records (RFC 2782) are looked up, ``_sip._udp.<host>`` then
  ``_sip._tcp.<host>`` (only the one of the URI's ``transport`` parameter, when it has one):
  the first name with records gives the transport, and its records give the target hosts and
  ports; NAPTR is not used (section 4.1 allows a client to start at SRV, which is what most
  deployments publish). Without any SRV record, the host's own address is used, on UDP (or the
  parameter's transport) and port 5060.
* TLS: a ``sips:`` URI only ever uses TLS (section 4.1; RFC 5630), whatever its ``transport``
  parameter, and so does ``;transport=tls``: the only SRV name is ``_sips._tcp.<host>`` and the
  default port 5061. Every TLS destination carries the name its server's certificate must show
  (``server_name``): the URI's host, not the SRV target (RFC 5922 section 4), so that a forged
  SRV answer cannot send us to a server that has some other valid certificate. A ``sip:`` URI
  without a transport parameter is not upgraded to TLS by an ``_sips._tcp`` record (it is looked
  up as before): a TLS registrar is configured with ``sips:`` or ``;transport=tls``.

:func:`order_srv` sorts SRV records as RFC 2782 says: by priority, then at random in proportion
to the weights. The first target is used (its address from the :class:`~siproc.net.hosts.HostCache`,
which resolves A/AAAA with the system's resolver, /etc/hosts included).

When a server does not answer a request (a transaction timeout) or answers 503, the phone
calls :meth:`ServerLocator.unreachable`, and the URIs that used it move on to their next SRV
target (section 4.3); a refresh starts again from the first.

:class:`ServerLocator` keeps what it found per URI target for :data:`~siproc.net.hosts.TTL`
seconds and refreshes it in the background as the host cache does, so that signalling never
waits for DNS once a target is known; :meth:`ServerLocator.locate` is the off-the-loop lookup
for the first time (the registrar at start, a CALL target before its INVITE), and
:meth:`ServerLocator.locate_now` the last resort of code that cannot wait: it makes no SRV
query, and resolves a host it has never seen on the spot (logged).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from siproc.net.hosts import TTL, HostCache, ip_literal
from siproc.sip.transaction import Destination
from siproc.sip.uri import SipUri

if TYPE_CHECKING:
    import dns.exception
    import dns.resolver

__all__ = [
    "DEFAULT_PORT",
    "SRV_TRANSPORTS",
    "Plan",
    "ServerLocator",
    "SrvRecord",
    "dns_srv",
    "order_srv",
    "plan",
]

log = logging.getLogger(__name__)

SRV_TIMEOUT: Final = 5.0  # seconds for one SRV query, retries included
DEFAULT_PORT: Final = 5060  # RFC 3261 section 19.1.2, for sip: over UDP and TCP
DEFAULT_TLS_PORT: Final = 5061  # RFC 3261 section 19.1.2, for sips: and TLS
SRV_TRANSPORTS: Final = ("udp", "tcp")  # what siproc speaks, in the order SRV is tried


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV answer (RFC 2782): lower priority first; weight shares load within one."""

    priority: int
    weight: int
    port: int
    target: str

    def __post_init__(self) -> None:
        if not (0 <= self.priority <= 65535 and 0 <= self.weight <= 65535):
            raise ValueError(f"SRV priority and weight are 16-bit, not {self}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"invalid SRV port {self.port}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to look up for a URI: SRV names with their transport, in order (empty: none), and
    the host, port and transport to use without SRV."""

    srv: tuple[tuple[str, str], ...]
    host: str
    port: int
    transport: str
    server_name: str = ""  # TLS: the name the certificate must carry ("" for an IP literal)


def plan(uri: SipUri) -> Plan:
    """The lookups RFC 3263 section 4 asks for ``uri`` (its maddr, else its host)."""
    host = uri.param("maddr") or uri.host
    explicit = (uri.param("transport") or "").lower()
    if uri.scheme == "sips" or explicit == "tls":
        name = "" if ip_literal(uri.host) is not None else uri.host.rstrip(".").lower()
        if uri.port is not None or ip_literal(host) is not None:
            return Plan((), host, uri.port or DEFAULT_TLS_PORT, "tls", name)
        srv_name = f"_sips._tcp.{host.rstrip('.')}"
        return Plan(((srv_name, "tls"),), host, DEFAULT_TLS_PORT, "tls", name)
    transport = explicit if explicit in SRV_TRANSPORTS else "udp"
    if uri.port is not None or ip_literal(host) is not None:
        return Plan((), host, uri.port or DEFAULT_PORT, transport)
    name = host.rstrip(".")
    kinds = (explicit,) if explicit in SRV_TRANSPORTS else SRV_TRANSPORTS
    srv = tuple((f"_sip._{kind}.{name}", kind) for kind in kinds)
    return Plan(srv, host, DEFAULT_PORT, transport)


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within one priority, a weighted random order
    (weight 0 records first in the running sum, as the RFC's algorithm puts them). A single
    record whose target is ``.`` means "no service here": the result is empty."""
    if len(records) == 1 and records[0].target in (".", ""):
        return []
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        pool = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(pool):
                running += record.weight
                if running >= pick:
                    ordered.append(pool.pop(index))
                    break
    return ordered


Target = tuple[str, int, str]  # host, port, transport
SrvQuery = Callable[[str], Awaitable[list[SrvRecord]]]  # a name -> its records ([]: none)


class ServerLocator:
    """Destinations of URIs (see the module docstring). ``srv`` looks up SRV records; it
    returns [] for a name without records (or when DNS fails: see :func:`dns_srv`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hosts: HostCache,
        srv: SrvQuery,
        *,
        rng: random.Random | None = None,
        ttl: float = TTL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self.hosts = hosts
        self._srv = srv
        self._rng = rng if rng is not None else random.SystemRandom()
        self.ttl = ttl
        self._clock = clock if clock is not None else loop.time
        # plan -> the targets (host, port, transport) in RFC 2782 order, and when found
        self._found: dict[Plan, tuple[list[Target], float]] = {}
        self._current: dict[Plan, int] = {}  # index of the target in use (failover)
        self._pending: dict[Plan, asyncio.Future[list[Target]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()  # background work, kept referenced

    def lookup(self, uri: SipUri) -> Destination | None:
        """The destination of ``uri`` if nothing has to be looked up for it; never blocks."""
        p = plan(uri)
        target = self._target(p)
        if target is None:
            return None
        host, port, transport = target
        address = self.hosts.lookup(host)
        return None if address is None else _destination(p, transport, address, port)

    def known_destinations(self, uri: SipUri) -> list[Destination]:
        """Every destination ``uri`` is known to resolve to (all its SRV targets whose address
        is cached); never blocks. The inbound policy accepts requests from these."""
        p = plan(uri)
        found = self._found.get(p)
        targets = found[0] if found is not None else [(p.host, p.port, p.transport)]
        out = []
        for host, port, transport in targets:
            address = self.hosts.lookup(host)
            if address is not None:
                out.append(_destination(p, transport, address, port))
        return out

    async def locate(self, uri: SipUri) -> Destination:
        """The destination of ``uri``, looked up off the loop. Raises OSError naming what could
        not be found."""
        p = plan(uri)
        target = self._target(p)
        if target is None:
            pending = self._pending.get(p)
            if pending is None:
                pending = self._loop.create_task(self._fetch(p))
                self._pending[p] = pending
            await asyncio.shield(pending)
            target = self._target(p)
            assert target is not None
        host, port, transport = target
        try:
            address = await self.hosts.resolve(host)
        except OSError:
            # Nothing usable was found: the SRV answer (perhaps none, from a DNS not up yet)
            # is asked again next time rather than kept for the TTL.
            if p.srv and p not in self._pending:
                self._found.pop(p, None)
                self._current.pop(p, None)
            raise
        return _destination(p, transport, address, port)

    def unreachable(self, destination: Destination) -> None:
        """``destination`` did not answer, or said 503 (RFC 3263 section 4.3): the targets
        that use it move on to their next SRV record, whose address is looked up now, off the
        loop, for the next request."""
        for p, (targets, _at) in self._found.items():
            if len(targets) < 2:
                continue
            index = self._current.get(p, 0) % len(targets)
            host, port, transport = targets[index]
            if (transport, port) != (destination.transport, destination.port):
                continue
            if self.hosts.lookup(host) != destination.host:
                continue
            following = targets[(index + 1) % len(targets)]
            self._current[p] = index + 1
            log.warning(
                "%s did not answer (%s port %d): next, %s port %d over %s",
                p.host,
                host,
                port,
                following[0],
                following[1],
                following[2].upper(),
            )
            self._background(self.hosts.resolve(following[0]))

    def _background(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await work
            except OSError as exc:
                log.warning("%s", exc)

        task: asyncio.Task[object] = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def locate_now(self, uri: SipUri) -> Destination:
        """The destination of ``uri`` for code that cannot wait (a dialog's next hop, a target
        first seen in a REFER): SRV answers already known are used, but no SRV query is made
        (it could block for seconds on a name the peer chose): the host's own address is
        looked up, blocking only if it is not cached (logged by the host cache)."""
        p = plan(uri)
        host, port, transport = self._target(p) or (p.host, p.port, p.transport)
        return _destination(p, transport, self.hosts.resolve_now(host), port)

    def _target(self, p: Plan) -> Target | None:
        if not p.srv:
            return (p.host, p.port, p.transport)
        found = self._found.get(p)
        if found is None:
            return None
        targets, at = found
        if self._clock() - at > self.ttl and p not in self._pending:
            pending = self._loop.create_task(self._fetch(p))
            self._pending[p] = pending
            self._background(pending)
        return targets[self._current.get(p, 0) % len(targets)]

    async def _fetch(self, p: Plan) -> list[Target]:
        try:
            answers = [(name, kind, await self._srv(name)) for name, kind in p.srv]
        finally:
            self._pending.pop(p, None)
        targets = self._choose(p, answers)
        self._found[p] = (targets, self._clock())
        self._current[p] = 0
        return targets

    def _choose(self, p: Plan, answers: list[tuple[str, str, list[SrvRecord]]]) -> list[Target]:
        """The first SRV name with usable records gives the targets, in RFC 2782 order;
        none: the host itself."""
        for name, kind, records in answers:
            ordered = order_srv(records, self._rng)
            if ordered:
                best = ordered[0]
                log.info(
                    "%s: %s port %d over %s (SRV %s, %d record%s)",
                    p.host,
                    best.target.rstrip("."),
                    best.port,
                    kind.upper(),
                    name,
                    len(records),
                    "" if len(records) == 1 else "s",
                )
                return [(r.target.rstrip("."), r.port, kind) for r in ordered]
        return [(p.host, p.port, p.transport)]


def _destination(p: Plan, transport: str, address: str, port: int) -> Destination:
    """A destination; over TLS with the name the server's certificate must carry."""
    name = p.server_name if transport == "tls" else ""
    return Destination(transport, address, port, name)


# -- SRV queries with dnspython (the system's resolv.conf) --------------------------------------


def _records(answer: dns.resolver.Answer) -> list[SrvRecord]:
    return [SrvRecord(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]


def _no_records(name: str, exc: dns.exception.DNSException) -> list[SrvRecord]:
    """A name without SRV records is the common case; a failing DNS is logged and treated the
    same (the host's own address is used), so that a broken resolver does not stop calls."""
    import dns.resolver

    if not isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        log.warning("SRV lookup of %s failed (%s); using the host's address", name, exc)
    return []


async def dns_srv(name: str) -> list[SrvRecord]:
    """The SRV records of ``name`` ([] when there are none or DNS fails), off the loop.
    dnspython is imported here, at the first lookup: a siproc that only ever dials addresses
    never loads it (a few MiB; issue 12)."""
    import dns.asyncresolver
    import dns.exception

    try:
        answer = await dns.asyncresolver.resolve(name, "SRV", lifetime=SRV_TIMEOUT)
    except dns.exception.DNSException as exc:
        return _no_records(name, exc)
    return _records(answer)
