"""calls/monitoring.py: what /healthz says, from the whole phone in virtual time
(tests/phone_sim.py)."""

from __future__ import annotations

from siproc.calls.call_state import CallState
from siproc.calls.monitoring import _View
from tests.phone_sim import OFFER, FarEnd, PhoneSim


def test_healthz_is_unhealthy_while_draining() -> None:
    """A load balancer that checks /healthz must stop sending calls to a draining phone, as a
    dispatcher that probes with OPTIONS does (calls/drain.py answers those 503)."""
    with PhoneSim() as sim:
        monitor = sim.phone.monitor
        assert monitor.health() == "the SIP transport is not up"
        monitor.transport_up = True  # as Monitoring.start() does once the transport is up
        assert monitor.health() is None
        FarEnd(sim).connect()  # a call up: the drain waits for it
        sim.command("DRAIN")
        assert sim.phone.drain.draining and len(sim.phone.calls) == 1
        assert monitor.health() == "draining: no new calls (DRAIN or SIGUSR1)"


def test_healthz_without_a_registrar_needs_only_the_transport() -> None:
    with PhoneSim() as sim:
        monitor = sim.phone.monitor
        monitor.transport_up = True
        monitor.registration(False)  # (no registrar: a result cannot matter)
        assert monitor.health() is None


def test_a_scrape_counts_the_calls_up_by_direction_and_state() -> None:
    """What ``siproc_calls_active`` shows is read from the call table at scrape time."""
    with PhoneSim() as sim:
        view = _View(sim.phone.monitor)
        assert view.active_calls() == {}
        FarEnd(sim).connect()
        FarEnd(sim, user="carol").connect()
        FarEnd(sim, user="dave").send("INVITE", OFFER)
        sim.advance(0.1)
        states = {c.state for c in sim.phone.calls}
        assert CallState.CONNECTED in states and len(sim.phone.calls) == 3
        got = view.active_calls()
        assert got[("in", "connected")] == 2
        assert sum(got.values()) == 3
        assert all(d == "in" and " " not in s for d, s in got)
