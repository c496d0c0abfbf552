"""calls/metrics.py: the exposition, the scrape-time figures and the HTTP answers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from siproc.calls.metrics import ClockFigures, Metrics, MetricsServer, status_class
from siproc.calls.records import CallFacts, EndedBy


class View:
    def __init__(self) -> None:
        self.calls = {("in", "connected"): 2, ("out", "early"): 1}

    def active_calls(self) -> dict[tuple[str, str], int]:
        return self.calls

    def registration(self) -> tuple[str, bool]:
        return "registered", True

    def media_clocks(self) -> dict[str, ClockFigures]:
        return {"0": ClockFigures(ticks=500, skipped=3, lag_max=0.004, busy=0.25)}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


FACTS = CallFacts(
    call_id="x",
    direction="out",
    local_uri="sip:a@h",
    local_name="",
    remote_uri="sip:b@h",
    remote_name="",
    request_uri="sip:b@h",
    created=0.0,
    ringing=None,
    early_media=None,
    answered=1.0,
    ended=2.0,
    status=200,
    reason="hung up",
    ended_by=EndedBy.HANDLER,
    packets_sent=50,
    packets_received=49,
    packets_lost=1,
    jitter_ms=2.0,
)


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 486, 503, 603, 180)] == [
        "2xx",
        "4xx",
        "5xx",
        "6xx",
        "1xx",
    ]


def test_call_counters_and_rtp_figures_move_when_a_call_ends() -> None:
    metrics = Metrics(View())
    metrics.call_ended(FACTS)
    metrics.call_ended(FACTS)
    got = samples(metrics)
    key = (("direction", "out"), ("ended_by", "handler"), ("status_class", "2xx"))
    assert got[("siproc_calls_total", key)] == 2
    assert got[("siproc_rtp_packets_total", (("direction", "lost"),))] == 2
    assert got[("siproc_rtp_packets_total", (("direction", "received"),))] == 98
    assert got[("siproc_rtp_jitter_seconds_count", ())] == 2


def test_each_ending_counts_in_its_own_series_only() -> None:
    """The counters' children are looked up once per label set and kept: a later call with
    other labels must still get a series of its own, and the first one must not move."""
    metrics = Metrics(View())
    metrics.call_ended(FACTS)
    metrics.call_ended(replace(FACTS, status=486, ended_by=EndedBy.REMOTE, direction="in"))
    metrics.call_ended(replace(FACTS, ended_by=EndedBy.REMOTE))
    metrics.call_ended(FACTS)
    got = samples(metrics)
    calls = {labels: v for (name, labels), v in got.items() if name == "siproc_calls_total"}
    assert calls == {
        (("direction", "out"), ("ended_by", "handler"), ("status_class", "2xx")): 2,
        (("direction", "in"), ("ended_by", "remote"), ("status_class", "4xx")): 1,
        (("direction", "out"), ("ended_by", "remote"), ("status_class", "2xx")): 1,
    }
    assert got[("siproc_rtp_packets_total", (("direction", "sent"),))] == 200


def test_states_are_read_at_scrape_time() -> None:
    view = View()
    metrics = Metrics(view)
    got = samples(metrics)
    assert got[("siproc_calls_active", (("direction", "in"), ("state", "connected")))] == 2
    assert got[("siproc_registered", (("state", "registered"),))] == 1
    assert got[("siproc_media_skipped_ticks_total", (("worker", "0"),))] == 3
    assert got[("siproc_media_tick_lag_seconds", (("worker", "0"),))] == 0.004
    view.calls = {}
    assert ("siproc_calls_active", (("direction", "in"), ("state", "connected"))) not in samples(
        metrics
    )


def test_every_refusal_reason_and_handler_exit_is_counted() -> None:
    metrics = Metrics(View())
    metrics.refuse("rate_limit")
    metrics.refuse("rate_limit")
    metrics.refuse("max_calls")
    metrics.handler_exited(0)
    metrics.handler_exited(-9)
    metrics.handler_exited(0)
    metrics.handler_exited(9)
    got = samples(metrics)
    assert got[("siproc_refused_requests_total", (("reason", "rate_limit"),))] == 2
    assert got[("siproc_refused_requests_total", (("reason", "max_calls"),))] == 1
    assert got[("siproc_refused_requests_total", (("reason", "policy"),))] == 0  # shown at 0
    assert got[("siproc_handler_exits_total", (("status", "signal 9"),))] == 1
    assert got[("siproc_handler_exits_total", (("status", "9"),))] == 1
    assert got[("siproc_handler_exits_total", (("status", "0"),))] == 2


def test_http_answers() -> None:
    problem: list[str | None] = [None]
    server = MetricsServer(Metrics(View()), lambda: problem[0])
    assert server.answer(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == (
        "200 OK",
        "text/plain",
        b"ok\n",
    )
    problem[0] = "not registered"
    status, _, body = server.answer(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (status, body) == ("503 Service Unavailable", b"not registered\n")
    status, kind, body = server.answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
    assert status == "200 OK" and kind.startswith("text/plain") and b"siproc_calls_active" in body
    assert server.answer(b"GET /other HTTP/1.1\r\n\r\n")[0] == "404 Not Found"
    assert server.answer(b"POST /metrics HTTP/1.1\r\n\r\n")[0] == "405 Method Not Allowed"
    assert server.answer(b"\x00garbage\r\n\r\n")[0] == "400 Bad Request"


def test_prometheus_client_is_imported_only_with_siproc_metrics() -> None:
    code = (
        "import sys, siproc.cli, siproc.calls.phone, siproc.calls.monitoring\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_scrape_does_not_grow_with_the_number_of_calls() -> None:
    """Nothing is labelled per call: after 1000 calls the exposition has the lines it had
    after 10 of the same kinds (a scrape's cost is bounded by the label sets, not the load)."""
    metrics = Metrics(View())
    endings = [EndedBy.HANDLER, EndedBy.REMOTE, EndedBy.TIMEOUT]
    for n in range(1000):
        metrics.call_ended(replace(FACTS, call_id=f"c{n}", ended_by=endings[n % 3]))
        metrics.handler_exited(n % 2)
        if n == 9:
            after_ten = metrics.exposition().decode().splitlines()
    after_all = metrics.exposition().decode().splitlines()
    assert len(after_all) == len(after_ten)
    assert not any("c999" in line for line in after_all)
