"""What the phone tells its operators: call detail records and metrics.

Theory of operation: the phone holds one `Monitoring` and calls it at a few points (a call
opened, changed state, ended; a request refused; a handler started or exited; the
registration's result). With neither ``SIPROC_CDR`` nor ``SIPROC_METRICS`` set, every one of
those calls returns at once and nothing else is imported. With ``SIPROC_CDR``, the records
file is opened when the phone is built (a path that cannot be opened stops siproc at start-up,
naming the variable), SIGHUP reopens it (logrotate), and the records of calls still up when
siproc stops are written before it exits. With ``SIPROC_METRICS``, `siproc.calls.metrics` (and the
``prometheus-client`` package) is imported and its server started with the SIP transport.
It sees the phone as a `MonitoredPhone` (what the records, the scrapes and /healthz read)
and each call as an `observer.RecordedCall`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from siproc.calls.account import Account
from siproc.calls.drain import Drain
from siproc.calls.observer import CallObserver, RecordedCall
from siproc.calls.records import CallFacts, RecordFile, RecordFileError
from siproc.config import Config, ConfigError
from siproc.net.clock import MediaClock

if TYPE_CHECKING:
    from siproc.calls.metrics import ClockFigures, Metrics, MetricsServer

__all__ = ["MonitoredPhone", "Monitoring"]

log = logging.getLogger(__name__)

CLOCK_SAMPLE_INTERVAL = 1.0  # seconds between samples of the main process's media clock


class MonitoredPhone(Protocol):
    """What the monitoring reads of the phone (`siproc.calls.phone.Phone` provides it)."""

    loop: asyncio.AbstractEventLoop
    config: Config
    clock: MediaClock  # the main process's media clock (its figures in /metrics)
    drain: Drain  # /healthz is 503 while draining
    account: Account  # /healthz and the registration state in /metrics

    @property
    def stopping(self) -> bool: ...
    @property
    def calls(self) -> Collection[RecordedCall]: ...


class Monitoring:
    """See the module docstring."""

    def __init__(self, phone: MonitoredPhone) -> None:
        self.phone = phone
        config = phone.config
        self.records: RecordFile | None = None
        self.metrics: Metrics | None = None
        self._server: MetricsServer | None = None
        self.transport_up = False
        self.registered: bool | None = None  # None: no result yet
        self.worker_clocks: dict[str, ClockFigures] = {}
        sinks = []
        if config.cdr is not None:
            try:
                self.records = RecordFile(config.cdr)
            except RecordFileError as exc:
                raise ConfigError("SIPROC_CDR", str(exc).removeprefix("SIPROC_CDR: ")) from None
            sinks.append(self._write_record)
        if config.metrics is not None:
            from siproc.calls.metrics import Metrics

            self.metrics = Metrics(_View(self))
            sinks.append(self.metrics.call_ended)
        self.observer = CallObserver(sinks, lambda: phone.stopping) if sinks else None

    @property
    def enabled(self) -> bool:
        return self.observer is not None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """The SIP transport is up: listen for scrapes, take SIGHUP."""
        self.transport_up = True
        phone = self.phone
        if self.records is not None:
            phone.loop.add_signal_handler(signal.SIGHUP, self.reopen)
        if self.metrics is not None:
            from siproc.calls.metrics import MetricsServer

            assert phone.config.metrics is not None
            host, port = phone.config.metrics
            self._server = MetricsServer(self.metrics, self.health)
            try:
                port = await self._server.start(host, port)
            except OSError as exc:
                raise OSError(f"SIPROC_METRICS: cannot listen on {host}:{port}: {exc}") from None
            shown = f"[{host}]" if ":" in host else host
            log.info("metrics on http://%s:%d/metrics", shown, port)
            self._sample_main_clock()  # calls run here without workers, or before one is up

    async def stop(self, calls: list[RecordedCall]) -> None:
        """siproc stops: records for the calls still up, then close everything."""
        self.transport_up = False
        if self.observer is not None:
            self.observer.flush(calls)
        if self._server is not None:
            await self._server.close()
        if self.records is not None:
            self.records.close()

    def reopen(self) -> None:
        """SIGHUP: open the records file again (logrotate renamed it)."""
        if self.records is None:
            return
        try:
            self.records.reopen()
        except RecordFileError as exc:
            log.error("SIGHUP: %s; still writing to the file open before", exc)
            return
        log.info("SIGHUP: reopened %s", self.records.path)

    def _write_record(self, facts: CallFacts) -> None:
        assert self.records is not None
        self.records.write(facts)

    def _sample_main_clock(self) -> None:
        if not self.transport_up:
            return
        clock = self.phone.clock
        from siproc.calls.metrics import ClockFigures

        self.worker_clocks["main"] = ClockFigures(
            clock.ticks, clock.skipped_ticks, clock.take_lag_max(), clock.busy
        )
        self.phone.loop.call_later(CLOCK_SAMPLE_INTERVAL, self._sample_main_clock)

    # -- what the phone tells us -------------------------------------------------------------

    def opened(self, call: RecordedCall) -> None:
        if self.observer is not None:
            self.observer.opened(call)

    def changed(self, call: RecordedCall) -> None:
        if self.observer is not None:
            self.observer.changed(call)

    def ringing(self, call: RecordedCall) -> None:
        if self.observer is not None:
            self.observer.ringing(call)

    def ended(self, call: RecordedCall) -> None:
        if self.observer is not None:
            self.observer.ended(call)

    def finished(self, call: RecordedCall) -> None:
        if self.observer is not None:
            self.observer.finished(call)
        if self.metrics is not None and call.handler is not None:
            code = call.handler.returncode
            if code is not None:
                self.metrics.handler_exited(code)

    def refused(self, reason: str) -> None:
        """A request refused before any handler ran (metrics.REFUSAL_REASONS)."""
        if self.metrics is not None:
            self.metrics.refuse(reason)

    def handler_started(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.spawn_latency.observe(seconds)

    def registration(self, ok: bool) -> None:
        self.registered = ok
        if not ok and self.metrics is not None:
            self.metrics.registration_failures.inc()

    def clock_report(self, worker: int, args: list[object]) -> None:
        """A media worker's ``clock`` message (net/media_worker.py): its clock's figures."""
        from siproc.calls.metrics import ClockFigures

        match args:
            case [int() as ticks, int() as skipped, float() as lag, float() as busy]:
                self.worker_clocks[str(worker)] = ClockFigures(ticks, skipped, lag, busy)
            case _:
                log.error("media worker %d: malformed clock report %r dropped", worker, args)

    def health(self) -> str | None:
        """None when healthy (/healthz 200), else why not. A draining phone (DRAIN, SIGUSR1:
        calls/drain.py) is not healthy: a load balancer that checks /healthz sends it no new
        calls, as a dispatcher that probes with OPTIONS does (it gets 503 too)."""
        if not self.transport_up:
            return "the SIP transport is not up"
        if self.phone.drain.draining:
            return "draining: no new calls (DRAIN or SIGUSR1)"
        if self.phone.config.registrar is not None and not self.registered:
            return "not registered" if self.registered is None else "registration failed"
        return None


class _View:
    """The phone as a scrape reads it (siproc.calls.metrics.PhoneView)."""

    def __init__(self, monitoring: Monitoring) -> None:
        self.monitoring = monitoring

    def active_calls(self) -> dict[tuple[str, str], int]:
        # count first, name after: one tuple per call, one label pair per (direction, state)
        counts = Counter((c.outgoing, c.state) for c in self.monitoring.phone.calls)
        return {
            ("out" if outgoing else "in", state.value.replace(" ", "_")): count
            for (outgoing, state), count in counts.items()
        }

    def registration(self) -> tuple[str, bool]:
        reg = self.monitoring.phone.account.registration
        if reg is None:
            return "none", False
        return reg.state.value, bool(self.monitoring.registered)

    def media_clocks(self) -> dict[str, ClockFigures]:
        return dict(self.monitoring.worker_clocks)
