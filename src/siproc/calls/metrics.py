"""Prometheus metrics (``SIPROC_METRICS``): what siproc counts, and the HTTP endpoint.

Theory of operation: `Metrics` holds a private registry of the ``prometheus-client`` package
(imported only when this module is, i.e. only with ``SIPROC_METRICS`` set: it costs memory
an idle phone need not pay). Counters move when something happens (a call ends, a request is
refused, a handler exits); what is a state rather than an event (calls up by direction and
state, the registration, the media clocks) is read when Prometheus scrapes, from a `PhoneView`,
so that the call path does no bookkeeping for it. Media workers send their clock figures to
the main process over their channel once a second (net/media_worker.py); a scrape reads the
last ones and never waits for a worker, so it can never hold up a media tick.

Cost: nothing is labelled per call, and every label set is bounded (directions, status
classes, `EndedBy`, refusal reasons, exit statuses, media clocks), so a scrape's size does not
grow with the load: at 1000 calls up it is built in about 1.3 ms on the event loop (4 ms in the
worst case of all 320 exit statuses seen), counting the calls by (direction, state) included.
The counters' children are looked up once and kept (``labels()`` validates and locks each
time). With all calls up the control process does nothing for the metrics between scrapes
but take the media clocks' figures once a second (bench/load.py --cdr-metrics --hook-time
measures it all: about 0.5 % of siproc's CPU at 1000 calls, nearly all at the calls' ends).

`MetricsServer` is a minimal HTTP/1.0 server on the event loop: ``GET /metrics`` (Prometheus
text format) and ``GET /healthz`` (200 ``ok`` when the SIP transport is up and, with a
registrar, we are registered, and we are not draining; else 503 with the reason:
`Monitoring.health`). Anything else is 404; a request that does not arrive complete within a
few seconds, or is too long, is dropped. It binds to 127.0.0.1 unless ``SIPROC_METRICS`` names
another address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from siproc.calls.records import CallFacts, EndedBy

__all__ = ["ClockFigures", "Metrics", "MetricsServer", "PhoneView", "status_class"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds for a scraper to send its request
MAX_REQUEST = 8192  # octets of request line and headers
MAX_CONNECTIONS = 16  # scrapers served at once; more are closed at once
SPAWN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
REFUSAL_REASONS = ("policy", "rate_limit", "max_calls", "shutdown")


@dataclass(frozen=True, slots=True)
class ClockFigures:
    """The last figures of one media clock (a worker's, or the main process's)."""

    ticks: int  # ticks run since the clock was created
    skipped: int  # ticks skipped because the loop was late (net/clock.py)
    lag_max: float  # seconds: the latest a tick ran in the last report interval
    busy: float  # seconds spent in ticks since the clock was created


class PhoneView(Protocol):
    """What a scrape reads from the phone."""

    def active_calls(self) -> dict[tuple[str, str], int]: ...  # (direction, state) -> count
    def registration(self) -> tuple[str, bool]: ...  # (state, registered); "none": no registrar
    def media_clocks(self) -> dict[str, ClockFigures]: ...  # worker name -> figures


def status_class(status: int) -> str:
    """``2xx`` ... ``6xx`` for a final SIP status."""
    return f"{min(6, max(1, status // 100))}xx"


class Metrics:
    """siproc's metrics; see the module docstring."""

    def __init__(self, view: PhoneView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.view = view
        r = self.registry
        self.calls = Counter(
            "siproc_calls",
            "Calls ended, by direction, final status class and who ended them",
            ["direction", "status_class", "ended_by"],
            registry=r,
        )
        self.refused = Counter(
            "siproc_refused_requests",
            "Requests refused before a handler ran, by reason "
            "(policy: SIPROC_INBOUND; rate_limit: SIPROC_CALL_RATE/SIPROC_SPAWN_RATE; "
            "max_calls: SIPROC_MAX_CALLS; shutdown: siproc is stopping)",
            ["reason"],
            registry=r,
        )
        self._refused = {reason: self.refused.labels(reason) for reason in REFUSAL_REASONS}
        self.registration_failures = Counter(
            "siproc_registration_failures", "REGISTER attempts that failed", registry=r
        )
        self.spawn_latency = Histogram(
            "siproc_handler_spawn_seconds",
            "Time to start a call's handler process",
            buckets=SPAWN_BUCKETS,
            registry=r,
        )
        self.handler_exits = Counter(
            "siproc_handler_exits",
            "Handler processes that ended, by exit status (or the signal that killed them)",
            ["status"],
            registry=r,
        )
        self.rtp_packets = Counter(
            "siproc_rtp_packets",
            "RTP packets of ended calls, by direction (sent, received, lost)",
            ["direction"],
            registry=r,
        )
        self.jitter = Histogram(
            "siproc_rtp_jitter_seconds",
            "Interarrival jitter of the far end's RTP at the end of each call (RFC 3550 A.8)",
            buckets=JITTER_BUCKETS,
            registry=r,
        )
        self._rtp_sent = self.rtp_packets.labels("sent")
        self._rtp_received = self.rtp_packets.labels("received")
        self._rtp_lost = self.rtp_packets.labels("lost")
        # The children of labelled counters, once looked up (``labels()`` validates and locks
        # each time). Every label set is bounded: 2 directions x 6 classes x 7 EndedBy; exit
        # statuses 0-255 and signals; nothing per call, so a scrape's size never grows with
        # the number of calls.
        self._calls: dict[tuple[str, str, EndedBy], Counter] = {}
        self._exits: dict[int, Counter] = {}
        r.register(_StateCollector(view))

    # -- events -----------------------------------------------------------------------------

    def call_ended(self, facts: CallFacts) -> None:
        key = (facts.direction, status_class(facts.status), facts.ended_by)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(key[0], key[1], key[2].value)
        child.inc()
        self._rtp_sent.inc(facts.packets_sent)
        self._rtp_received.inc(facts.packets_received)
        self._rtp_lost.inc(facts.packets_lost)
        if facts.packets_received:
            self.jitter.observe(facts.jitter_ms / 1000)

    def refuse(self, reason: str) -> None:
        """A request refused before any handler ran; ``reason`` is one of REFUSAL_REASONS."""
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = self.refused.labels(reason)
        child.inc()

    def handler_exited(self, returncode: int) -> None:
        child = self._exits.get(returncode)
        if child is None:
            label = str(returncode) if returncode >= 0 else f"signal {-returncode}"
            child = self._exits[returncode] = self.handler_exits.labels(label)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """What is read at scrape time (see the module docstring)."""

    def __init__(self, view: PhoneView) -> None:
        self.view = view

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        view = self.view
        active = GaugeMetricFamily(
            "siproc_calls_active",
            "Calls up now, by direction and state",
            labels=["direction", "state"],
        )
        for (direction, state), count in sorted(view.active_calls().items()):
            active.add_metric([direction, state], count)
        yield active
        state, registered = view.registration()
        reg = GaugeMetricFamily(
            "siproc_registered", "1 when registered at SIPROC_REGISTRAR_URI", labels=["state"]
        )
        reg.add_metric([state], 1.0 if registered else 0.0)
        yield reg
        lag = GaugeMetricFamily(
            "siproc_media_tick_lag_seconds",
            "The latest a media tick ran in the last second, by media clock",
            labels=["worker"],
        )
        skipped = CounterMetricFamily(
            "siproc_media_skipped_ticks",
            "Media ticks skipped because their clock ran late, by media clock",
            labels=["worker"],
        )
        ticks = CounterMetricFamily(
            "siproc_media_ticks", "Media ticks run, by media clock", labels=["worker"]
        )
        busy = CounterMetricFamily(
            "siproc_media_busy_seconds",
            "Time spent in media ticks, by media clock",
            labels=["worker"],
        )
        for name, figures in sorted(view.media_clocks().items()):
            lag.add_metric([name], figures.lag_max)
            skipped.add_metric([name], figures.skipped)
            ticks.add_metric([name], figures.ticks)
            busy.add_metric([name], figures.busy)
        yield from (lag, skipped, ticks, busy)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` (see the module docstring)."""

    def __init__(self, metrics: Metrics, health: HealthCheck) -> None:
        self.metrics = metrics
        self.health = health
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (``port`` 0: a free one). Raises OSError."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            status, content_type, body = self.answer(head)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except ConnectionError:
            pass
        finally:
            self._open -= 1
            writer.close()

    def answer(self, head: bytes) -> tuple[str, str, bytes]:
        """(status line, content type, body) for a request ``head``."""
        words = head.split(b"\r\n", 1)[0].split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = words[0], words[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == b"/metrics":
            body = self.metrics.exposition()
            return "200 OK", CONTENT_TYPE_LATEST, body if method == b"GET" else b""
        if target == b"/healthz":
            problem = self.health()
            if problem is None:
                return "200 OK", "text/plain", b"ok\n"
            return "503 Service Unavailable", "text/plain", problem.encode() + b"\n"
        return "404 Not Found", "text/plain", b"/metrics or /healthz\n"


class HealthCheck(Protocol):
    def __call__(self) -> str | None: ...  # None: healthy; else why not
