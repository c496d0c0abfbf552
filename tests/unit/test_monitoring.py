"""calls/monitoring.py: what /healthz says, from the whole phone in virtual time
(tests/phone_sim.py)."""

from __future__ import annotations

from tests.phone_sim import FarEnd, PhoneSim


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
