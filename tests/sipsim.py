"""Virtual-time harness for sans-I/O SIP tests (DESIGN.md section 4, style 3).

Nodes (anything with `receive`, `handle_timer` and `next_deadline`, e.g. a sans-I/O endpoint or
a small transaction driver in a test) are attached to a `LossyLink` at a transport address. The
link carries datagrams between them with a fixed delay, dropping each with probability `loss`
(from a seeded `random.Random`, so a run is reproducible). `Simulation.run_until()` never
sleeps: it jumps the `VirtualClock` to the earliest of the nodes' deadlines and the link's next
delivery, delivers, fires due timers, and stops when the predicate holds or at `max_time`.

Nodes send with `link.send(send, source, now)`, where `send` is a transaction layer `Send`
output and `source` the node's own address; the receiving node gets `(data, source, now)`,
as the edge would hand it the datagram and the address it came from.

`EndpointNode` puts a whole sans-I/O `Endpoint` on the link, as the network edge would drive
it: its `Send`s go onto the link, every other output is recorded and handed to a scripted TU
callback, and the TU can arm timers of its own with `call_at()`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from siproc.sip.endpoint import Endpoint, Output
from siproc.sip.message import Request, Response
from siproc.sip.transaction import ClientTransaction, Destination, Send, ServerTransaction


class Node(Protocol):
    def receive(self, data: bytes, source: Destination, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...


class VirtualClock:
    """Seconds of simulated time; only ever moves forward."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance_to(self, when: float) -> None:
        if when < self.now:
            raise ValueError(f"virtual time cannot go back from {self.now} to {when}")
        self.now = when


@dataclass(order=True)
class _InFlight:
    at: float
    seq: int
    data: bytes = field(compare=False)
    source: Destination = field(compare=False)
    destination: Destination = field(compare=False)


@dataclass(frozen=True)
class LinkRecord:
    """One datagram the link was given: when, from where, to where, first line, fate."""

    time: float
    source: Destination
    destination: Destination
    first_line: str
    dropped: bool


class LossyLink:
    """Carries datagrams between attached nodes with random loss and a fixed delay."""

    def __init__(
        self,
        loss: float,
        rng: random.Random,
        delay: float = 0.01,
        *,
        drop: Callable[[bytes], bool] | None = None,
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be within [0, 1], got {loss}")
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.loss = loss
        self.rng = rng
        self.delay = delay
        self.drop = drop  # optionally drop chosen datagrams on top of the random loss
        self.nodes: dict[Destination, Node] = {}
        self.records: list[LinkRecord] = []
        self._in_flight: list[_InFlight] = []
        self._seq = 0

    def attach(self, address: Destination, node: Node) -> None:
        if address in self.nodes:
            raise ValueError(f"address {address} already attached")
        self.nodes[address] = node

    def send(self, send: Send, source: Destination, now: float) -> None:
        # The random draw happens for every datagram, so the pattern depends only on the seed.
        lost = self.rng.random() < self.loss
        if self.drop is not None and self.drop(send.data):
            lost = True
        first_line = send.data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        self.records.append(LinkRecord(now, source, send.destination, first_line, lost))
        if lost:
            return
        self._seq += 1
        heapq.heappush(
            self._in_flight,
            _InFlight(now + self.delay, self._seq, send.data, source, send.destination),
        )

    def next_delivery(self) -> float | None:
        return self._in_flight[0].at if self._in_flight else None

    def deliver_due(self, now: float) -> int:
        """Hand every datagram due by `now` to its node, in send order; return how many."""
        count = 0
        while self._in_flight and self._in_flight[0].at <= now:
            packet = heapq.heappop(self._in_flight)
            node = self.nodes.get(packet.destination)
            if node is not None:  # nobody listening there: the datagram vanishes
                node.receive(packet.data, packet.source, now)
                count += 1
        return count

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def dropped(self) -> int:
        return sum(record.dropped for record in self.records)

    def sent_lines(self, source: Destination | None = None) -> list[tuple[float, str]]:
        """(time, first line) of what was handed to the link, from `source` if given."""
        return [
            (r.time, r.first_line) for r in self.records if source is None or r.source == source
        ]


class SimulationStalled(RuntimeError):
    """The simulation kept running without virtual time moving forward."""


class Simulation:
    """A virtual clock, a link and the nodes on it."""

    def __init__(self, link: LossyLink, clock: VirtualClock | None = None) -> None:
        self.link = link
        self.clock = clock or VirtualClock()
        self.nodes: list[Node] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def add(self, address: Destination, node: Node) -> Node:
        self.link.attach(address, node)
        self.nodes.append(node)
        return node

    def next_event(self) -> float | None:
        times = [d for node in self.nodes if (d := node.next_deadline()) is not None]
        delivery = self.link.next_delivery()
        if delivery is not None:
            times.append(delivery)
        return min(times, default=None)

    def step(self) -> None:
        """Deliver what is due now, then fire the nodes' due timers."""
        now = self.clock.now
        self.link.deliver_due(now)
        for node in self.nodes:
            deadline = node.next_deadline()
            if deadline is not None and deadline <= now:
                node.handle_timer(now)

    def run_until(
        self, predicate: Callable[[], bool], max_time: float, *, max_steps_per_instant: int = 1000
    ) -> bool:
        """Advance until `predicate()` holds (True) or nothing is left before `max_time` (False).

        Time always jumps to the earliest pending event; when the next one lies beyond
        `max_time` the clock stops at `max_time`.
        """
        steps_here = 0
        while not predicate():
            when = self.next_event()
            if when is None or when > max_time:
                self.clock.advance_to(max(self.clock.now, max_time))
                return predicate()
            if when > self.clock.now:
                self.clock.advance_to(when)
                steps_here = 0
            steps_here += 1
            if steps_here > max_steps_per_instant:
                raise SimulationStalled(f"no progress at t={self.clock.now}")
            self.step()
        return True

    def run_for(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass, processing everything due."""
        self.run_until(lambda: False, self.clock.now + seconds)


TuCallback = Callable[["EndpointNode", Output, float], None]


class EndpointNode:
    """A sans-I/O `Endpoint` attached to a `LossyLink` at `address`, driven like the edge does.

    `Send` outputs go onto the link from `address`; every other output is appended to `events`
    as (time, output) and passed to `on_event(node, output, now)`, the test's scripted TU, which
    answers through `respond()`, starts transactions with `send_request()` and may arm its own
    timers with `call_at()` (fired in time order before the endpoint's own timers).
    """

    def __init__(
        self,
        link: LossyLink,
        address: Destination,
        endpoint: Endpoint,
        on_event: TuCallback | None = None,
    ) -> None:
        self.link = link
        self.address = address
        self.endpoint = endpoint
        self.on_event = on_event
        self.events: list[tuple[float, Output]] = []
        self._tu_timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0

    # -- the Node protocol ----------------------------------------------------------------------

    def receive(self, data: bytes, source: Destination, now: float) -> None:
        self.process(self.endpoint.receive(data, source, self.address.host, now), now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.endpoint.next_deadline(),) if d is not None]
        if self._tu_timers:
            deadlines.append(self._tu_timers[0][0])
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        while self._tu_timers and self._tu_timers[0][0] <= now:
            _, _, action = heapq.heappop(self._tu_timers)
            action(now)
        self.process(self.endpoint.handle_timer(now), now)

    # -- what the TU uses -----------------------------------------------------------------------

    def send_request(
        self, request: Request, destination: Destination, now: float
    ) -> ClientTransaction:
        """Stamp our Via (`add_via`) and start a client transaction (`send_request`)."""
        self.endpoint.add_via(request, destination, self.address.host, self.address.port)
        tx, outputs = self.endpoint.send_request(request, destination, now)
        self.process(outputs, now)
        return tx

    def send_ack(self, ack: Request, destination: Destination, now: float) -> None:
        """The ACK of a 2xx, outside any transaction (RFC 3261 section 13.2.2.4)."""
        self.endpoint.add_via(ack, destination, self.address.host, self.address.port)
        self.link.send(self.endpoint.send_stateless(ack, destination), self.address, now)

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        self.process(self.endpoint.respond(tx, response, now), now)

    def call_at(self, at: float, action: Callable[[float], None]) -> None:
        """Run `action(now)` at virtual time `at` (a TU timer)."""
        self._seq += 1
        heapq.heappush(self._tu_timers, (at, self._seq, action))

    def process(self, outputs: list[Output], now: float) -> None:
        for item in outputs:
            if isinstance(item, Send):
                self.link.send(item, self.address, now)
                continue
            self.events.append((now, item))
            if self.on_event is not None:
                self.on_event(self, item, now)

    def of_type(self, kind: type[object]) -> list[tuple[float, Output]]:
        """The recorded (time, event) pairs whose event is a `kind`."""
        return [(t, e) for t, e in self.events if isinstance(e, kind)]
