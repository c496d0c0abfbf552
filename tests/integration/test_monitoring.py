"""SIPROC_CDR and SIPROC_METRICS with real siproc processes (calls/monitoring.py).

Two phones on loopback: bob's handler behaves by the user it is called as (answer, busy,
ring, crash, hold), alice's by the user it calls. Every call leaves exactly one record in each
phone's CDR file, with the fields the manual documents; bob's handler checks on DISCONNECTED
that its record is there already; a logrotate-style rename and SIGHUP loses no record; /metrics
parses with the Prometheus text parser and its counters match the records.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.audio import make_tone
from tests.integration.test_registrar_faults import account_env, registrar
from tests.peers import free_port
from tests.siproc_proc import MakePhone, Siproc, write_handler

prometheus_parser = pytest.importorskip("prometheus_client.parser")

BOB = r"""
log="bob.log"
echo "START $SIPROC_CALL_ID $SIPROC_REQUEST_URI" >> "$log"
case "$SIPROC_REQUEST_URI" in
  sip:answer@*|sip:crash@*|sip:hold@*) echo ANSWER ;;
  sip:busy@*) echo "HANGUP 486" ;;
  sip:ring@*) echo RINGING ;;
esac
while read -r line; do
  case "$line" in
    CONNECTED) case "$SIPROC_REQUEST_URI" in sip:crash@*) exit 3 ;; esac ;;
    DISCONNECTED*)
      echo "SEEN $SIPROC_CALL_ID $(grep -c -F "\"$SIPROC_CALL_ID\"" "$SIPROC_CDR")" >> "$log" ;;
  esac
done
"""

ALICE = r"""
case "$SIPROC_REMOTE_URI" in
  sip:answer@*) mode=play ;;
  sip:ring@*) mode=cancel ;;
  *) mode=wait ;;
esac
while read -r line; do
  case "$line" in
    CONNECTED) [ $mode = play ] && echo "PLAY tone.wav" ;;
    STOPPED*) echo HANGUP ;;
    RINGING) [ $mode = cancel ] && echo HANGUP ;;
  esac
done
"""

SCRAPE_TIMEOUT = 5.0


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", BOB)
    write_handler(tmp_path / "alice.sh", ALICE)
    make_tone(tmp_path / "tone.wav", 440.0, 0.5)
    return tmp_path


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_records(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = records(path)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{path} has {len(records(path))} records, not {count}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client's own text parser."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def call_and_wait(
    alice: Siproc, bob: Siproc, user: str, workdir: Path, bob_cdr: Path, n: int
) -> dict[str, object]:
    alice.call(bob.uri(user))
    wait_records(workdir / "alice.jsonl", n)
    return wait_records(bob_cdr, n)[-1]


def test_records_and_metrics_of_answered_refused_cancelled_crashed_and_shutdown_calls(
    workdir: Path, phones: MakePhone
) -> None:
    metrics_port = free_port("tcp")
    bob_cdr = workdir / "bob.jsonl"
    bob = phones(
        env={
            "SIPROC_CDR": str(bob_cdr),
            "SIPROC_METRICS": f"127.0.0.1:{metrics_port}",
            "SIPROC_MEDIA_WORKERS": "1",
            "SIPROC_MEDIA_IDLE": "0",  # the worker up from the start: its clock in /metrics
            "SIPROC_MAX_CALLS": "1",
        }
    )
    alice = Siproc(
        workdir / "alice.sh",
        cwd=workdir,
        env={"SIPROC_CDR": str(workdir / "alice.jsonl"), "SIPROC_MEDIA_WORKERS": "0"},
    ).wait_ready()
    try:
        assert get(f"http://127.0.0.1:{metrics_port}/healthz") == (200, "ok\n")

        answered = call_and_wait(alice, bob, "answer", workdir, bob_cdr, 1)
        assert answered["direction"] == "in" and answered["status"] == 200
        assert answered["ended_by"] == "remote" and answered["reason"] == "remote hangup"
        assert answered["answered"] is not None and answered["duration"] > 0.3
        assert str(answered["codec"]).startswith(("opus/", "PCMU/", "G722/"))
        assert answered["srtp"] is False
        assert answered["packets_received"] > 10 and answered["request_uri"] == bob.uri("answer")
        assert answered["remote_uri"].startswith("sip:")
        assert answered["handler_exit"] is None  # still running when the call ended
        out = records(workdir / "alice.jsonl")[-1]
        assert out["direction"] == "out" and out["ended_by"] == "handler"
        assert out["call_id"] == answered["call_id"] and out["packets_sent"] > 10

        refused = call_and_wait(alice, bob, "busy", workdir, bob_cdr, 2)
        assert (refused["status"], refused["ended_by"], refused["answered"]) == (
            486,
            "handler",
            None,
        )
        assert records(workdir / "alice.jsonl")[-1]["ended_by"] == "remote"

        # logrotate: rename, SIGHUP; the next records go to a new file
        rotated = workdir / "bob.jsonl.1"
        bob_cdr.rename(rotated)
        mark = len(bob.lines)
        bob.signal(signal.SIGHUP)
        bob.wait_for(r"SIGHUP: reopened", start=mark)

        cancelled = call_and_wait(alice, bob, "ring", workdir, bob_cdr, 1)
        assert cancelled["status"] == 487 and cancelled["ended_by"] == "remote"
        assert cancelled["ringing"] is not None and cancelled["answered"] is None
        alice_cancel = records(workdir / "alice.jsonl")[-1]
        assert (alice_cancel["status"], alice_cancel["ended_by"]) == (487, "handler")

        crashed = call_and_wait(alice, bob, "crash", workdir, bob_cdr, 2)
        assert crashed["ended_by"] == "handler" and crashed["handler_exit"] == 3

        # a call that stays up: counted as active; a second one is refused (SIPROC_MAX_CALLS)
        alice.call(bob.uri("hold"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            during = scrape(metrics_port)
            if total(during, "siproc_calls_active", direction="in", state="connected") == 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no connected call in /metrics: {during}")
        alice.call(bob.uri("answer"))
        wait_records(workdir / "alice.jsonl", 5)
        assert records(workdir / "alice.jsonl")[-1]["status"] == 486
        after = scrape(metrics_port)
        assert total(after, "siproc_refused_requests_total", reason="max_calls") == 1
        assert total(after, "siproc_handler_spawn_seconds_count") == 5
        # the worker started with bob's first call and reports once a second: the call on
        # hold keeps its clock ticking until a report shows it
        deadline = time.monotonic() + 5
        while total(after, "siproc_media_ticks_total", worker="0") < 10:
            assert time.monotonic() < deadline, {k: v for k, v in after.items() if "media" in k[0]}
            time.sleep(0.2)
            after = scrape(metrics_port)
        media = {k: v for k, v in after.items() if "media" in k[0]}
        assert ("siproc_media_tick_lag_seconds", (("worker", "0"),)) in media
        assert (
            total(after, "siproc_rtp_packets_total", direction="received")
            >= (answered["packets_received"])
        )

        # SIGTERM to siproc: the call still up gets its record before siproc exits
        bob.signal(signal.SIGTERM)
        assert bob.proc.wait(15) == 0
        held = wait_records(bob_cdr, 3)[-1]
        assert held["ended_by"] == "shutdown" and held["request_uri"] == bob.uri("hold")
    finally:
        alice.stop()
        print(alice.stderr())

    # exactly one record per call, across the rotation
    mine = records(rotated) + records(bob_cdr)
    assert [r["request_uri"].split("@")[0] for r in mine] == [
        "sip:answer", "sip:busy", "sip:ring", "sip:crash", "sip:hold",
    ]  # fmt: skip
    assert len({r["call_id"] for r in mine}) == 5
    # each handler that heard DISCONNECTED found its own record in the file already
    seen = [line.split() for line in (workdir / "bob.log").read_text().splitlines()]
    seen = [fields for fields in seen if fields[0] == "SEEN"]
    assert seen and all(fields[2] == "1" for fields in seen), seen
    # the metrics' call counts match the records, by status class
    by_class: dict[str, int] = {}
    for record in mine[:-1]:  # the last one ended after the final scrape
        key = f"{record['status'] // 100}xx"
        by_class[key] = by_class.get(key, 0) + 1
    for status_class, count in by_class.items():
        assert total(after, "siproc_calls_total", status_class=status_class) == count
    assert total(after, "siproc_calls_total") == 4


def test_healthz_is_503_until_registered_and_again_while_the_registrar_is_down(
    workdir: Path,
) -> None:
    port, metrics_port = free_port("sip"), free_port("tcp")
    env = account_env(
        f"sip:127.0.0.1:{port}",
        SIPROC_REGISTER_RETRY="1",
        SIPROC_TIMER_T1="50",  # an unanswered REGISTER fails after 64*T1 = 3.2 s
        SIPROC_METRICS=str(metrics_port),
    )
    phone = Siproc(workdir / "h.sh", cwd=workdir, env=env).wait_ready()
    health = f"http://127.0.0.1:{metrics_port}/healthz"
    try:
        assert get(health)[0] == 503  # nobody answers the REGISTER yet
        with registrar(port, "--expires", "2") as server:  # a refresh every second
            server.wait_line(r"^REGISTERED udp ", 10)
            assert wait_health(health, 200) == "ok\n"
            server.stop()
            assert "registration failed" in wait_health(health, 503)
            samples = scrape(metrics_port)
            assert total(samples, "siproc_registration_failures_total") >= 1
        with registrar(port, "--expires", "2") as again:
            again.wait_line(r"^REGISTERED udp ", 10)
            assert wait_health(health, 200) == "ok\n"
            assert total(scrape(metrics_port), "siproc_registered") == 1
    finally:
        phone.stop()
        print(phone.stderr())


def wait_health(url: str, status: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    got = (0, "")
    while time.monotonic() < deadline:
        got = get(url)
        if got[0] == status:
            return got[1]
        time.sleep(0.1)
    raise AssertionError(f"/healthz never said {status}; last {got}")


def test_a_records_file_that_cannot_be_opened_stops_siproc_at_start(workdir: Path) -> None:
    phone = Siproc(workdir / "h.sh", cwd=workdir, env={"SIPROC_CDR": "/nonexistent/dir/cdr"})
    assert phone.proc.wait(15) == 1
    phone.stop()
    assert "SIPROC_CDR: cannot open '/nonexistent/dir/cdr' for appending" in phone.stderr()


def test_a_bad_metrics_address_stops_siproc_at_start(workdir: Path) -> None:
    phone = Siproc(workdir / "h.sh", cwd=workdir, env={"SIPROC_METRICS": "example.com:9100"})
    assert phone.proc.wait(15) == 1
    phone.stop()
    assert "SIPROC_METRICS: must be PORT or ADDRESS:PORT" in phone.stderr()
