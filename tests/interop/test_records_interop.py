"""Call detail records (SIPROC_CDR) and metrics (SIPROC_METRICS) against real peers (issue 11,
items 1-2): a real Kamailio with its user database (digest auth, record-routed dialogs), baresip
phones and SIPp.

- One siproc (bob, registered at Kamailio) takes and places every kind of call the manual names:
  answered and hung up by the far end, refused, cancelled, transferred (REFER, through
  Kamailio), a handler that crashes, SIPp's calls (one in, one out with early media), and a
  call that is still up when siproc gets SIGTERM. Every call leaves exactly one record, a
  valid JSON line whose fields say what happened (who ended it, the times in order, the
  codec, the packets, the transfer target, the handler's exit); a logrotate-style rename and
  SIGHUP in the middle loses none; /metrics parses with prometheus_client's parser and its
  counters equal what the records add up to.
- Limits: a call still ringing when a limit hits is ended by ``timeout`` both ways.
- /healthz follows the real registrar: 503 while Kamailio is stopped, 200 once it is back,
  and 503 while siproc drains.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_monitoring import get, scrape, total, wait_health
from tests.interop.test_siproc_interop import account_env
from tests.peers import Baresip, Kamailio, Sipp, free_port
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]
MakeSipp = Callable[..., Sipp]
Record = dict[str, Any]

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TIMES = ("created", "ringing", "early_media", "answered", "ended")

# h.sh TARGET: an incoming call does what the file ``mode`` in the working directory says when
# it starts (the test writes it before each call): answer | busy | ring | transfer (to TARGET,
# once CONNECTED) | crash (exit 3 once CONNECTED) | hold; an outgoing call hangs up 0.5 s
# after CONNECTED. Each handler logs "START <call id> <mode>" and, on DISCONNECTED, "SEEN
# <call id> <how many records of its call the SIPROC_CDR file holds then>".
HANDLER = r"""
target=$1
if [ "$SIPROC_OUTGOING" = y ]; then mode=out; else mode=$(cat mode); fi
echo "START $SIPROC_CALL_ID $mode" >> bob.log
case "$mode" in
  answer|transfer|crash|hold) echo RINGING; echo ANSWER ;;
  busy) echo "HANGUP 486" ;;
  ring) echo RINGING ;;
esac
while read -r line; do
  case "$mode:$line" in
    crash:CONNECTED) exit 3 ;;
    transfer:CONNECTED) sleep 1; echo "TRANSFER $target" ;;
    out:CONNECTED) sleep 0.5; echo HANGUP ;;
    *:DISCONNECTED*)
      echo "SEEN $SIPROC_CALL_ID $(grep -c -F "\"$SIPROC_CALL_ID\"" "$SIPROC_CDR")" >> bob.log ;;
  esac
done
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER)


@pytest.fixture
def kam(kamailio: Kamailio) -> Kamailio:
    for user, password in PASSWORDS.items():
        kamailio.add_user(user, password)
    return kamailio


def read_records(*paths: Path) -> list[Record]:
    """Every record of ``paths`` in order; each line must be one whole JSON object."""
    out = []
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                assert isinstance(record, dict), line
                out.append(record)
    return out


def wait_records(path: Path, count: int, timeout: float = 15.0) -> list[Record]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read_records(path)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{path} has {len(read_records(path))} records, not {count}")


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_record(record: Record) -> None:
    """What holds for every record: the documented fields with their types, times in UTC
    with milliseconds and in the order things happen, the duration from them."""
    assert record["direction"] in ("in", "out")
    assert isinstance(record["call_id"], str) and record["call_id"]
    for name in ("local_uri", "remote_uri", "request_uri"):
        assert str(record[name]).startswith("sip:"), (name, record)
    assert 100 <= record["status"] <= 699 and isinstance(record["reason"], str)
    assert record["ended_by"] in (
        "handler", "remote", "timeout", "transfer", "policy", "shutdown", "error",
    )  # fmt: skip
    times = [record[name] for name in TIMES]
    for name, value in zip(TIMES, times, strict=True):
        assert value is None or TIME_RE.match(value), (name, value)
    assert times[0] is not None and times[-1] is not None
    happened = [epoch(value) for value in times if value is not None]
    assert happened == sorted(happened), record
    if record["answered"] is None:
        assert record["duration"] == 0
    else:
        span = epoch(record["ended"]) - epoch(record["answered"])
        assert record["duration"] == pytest.approx(span, abs=0.002)
    for name in ("packets_sent", "packets_received", "packets_lost"):
        assert isinstance(record[name], int) and record[name] >= 0, (name, record)
    assert record["srtp"] is False
    assert record["handler_signal"] is None or record["handler_exit"] is None


def started_calls(log: str) -> dict[str, str]:
    """call id -> mode, from bob.log's START lines."""
    return {
        fields[1]: fields[2]
        for fields in (line.split() for line in log.splitlines())
        if fields[0] == "START"
    }


def test_every_call_with_real_peers_leaves_one_record_and_the_metrics_add_up(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_sipp: MakeSipp,
    make_siproc: Callable[..., Siproc],
    tone_wav: Callable[..., Path],
) -> None:
    cdr = workdir / "cdr.jsonl"
    metrics_port = free_port("tcp")
    bob = make_siproc(
        kam.aor("carol"),
        env=account_env(
            kam,
            "bob",
            PASSWORDS["bob"],
            SIPROC_CDR=str(cdr),
            SIPROC_METRICS=f"127.0.0.1:{metrics_port}",
            SIPROC_MEDIA_WORKERS="1",
            SIPROC_MEDIA_IDLE="0",
        ),
    )
    bob.wait_for(r"registered as sip:bob@", timeout=10)
    alice = make_baresip(
        "alice", kam, password=PASSWORDS["alice"], audio_source=tone_wav(440.0, 60.0)
    )
    carol = make_baresip("carol", kam, password=PASSWORDS["carol"])
    alice.wait_registered()
    carol.wait_registered()
    count = 0

    def next_call(mode: str) -> None:
        (workdir / "mode").write_text(mode)

    def record_of_next_call() -> Record:
        nonlocal count
        count += 1
        record = wait_records(cdr, count - rotated_count)[-1]
        check_record(record)
        return record

    rotated_count = 0

    # 1. answered, hung up by baresip
    next_call("answer")
    alice.dial(kam.aor("bob"))
    call = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.5)
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=5, id=call["id"])
    answered = record_of_next_call()
    assert (answered["direction"], answered["status"], answered["ended_by"]) == (
        "in",
        200,
        "remote",
    )
    assert answered["reason"] == "remote hangup"
    assert answered["ringing"] is not None and answered["answered"] is not None
    assert answered["duration"] >= 1.0
    assert answered["remote_uri"] == kam.aor("alice")
    assert answered["local_uri"] == kam.aor("bob")
    assert answered["codec"] == "PCMU/8000"
    # baresip sent its tone all along, and bob silence (20 ms packets)
    assert answered["packets_received"] > 0.6 * answered["duration"] / 0.02, answered
    assert answered["packets_sent"] > 0.6 * answered["duration"] / 0.02, answered
    assert answered["packets_lost"] <= 5 and answered["jitter_ms"] < 40
    assert answered["handler_exit"] is None and answered["transfer_target"] is None

    # 2. refused by the handler
    next_call("busy")
    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_CLOSED", timeout=10)
    refused = record_of_next_call()
    assert (refused["status"], refused["ended_by"]) == (486, "handler")
    assert refused["answered"] is None and refused["codec"] is None
    assert refused["packets_sent"] == refused["packets_received"] == 0

    # 3. cancelled by baresip while ringing
    next_call("ring")
    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_RINGING", timeout=10)
    time.sleep(0.5)
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=10)
    cancelled = record_of_next_call()
    assert (cancelled["status"], cancelled["ended_by"]) == (487, "remote")
    assert cancelled["ringing"] is not None and cancelled["answered"] is None

    # logrotate: rename the file, SIGHUP; the next records go to a new file at the same path
    rotated = workdir / "cdr.jsonl.1"
    cdr.rename(rotated)
    rotated_count = count
    mark = len(bob.lines)
    bob.signal(signal.SIGHUP)
    bob.wait_for(r"SIGHUP: reopened", start=mark)

    # 4. transferred to carol (REFER relayed by Kamailio)
    next_call("transfer")
    alice.dial(kam.aor("bob"))
    first = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    carol_call = carol.wait_event("CALL_ESTABLISHED", timeout=15)
    alice.wait_event("CALL_CLOSED", timeout=10, id=first["id"])
    transferred = record_of_next_call()
    assert (transferred["status"], transferred["reason"], transferred["ended_by"]) == (
        200,
        "transferred",
        "transfer",
    )
    assert transferred["transfer_target"] == kam.aor("carol")
    assert transferred["answered"] is not None and transferred["packets_received"] > 0
    carol.hangup()
    carol.wait_event("CALL_CLOSED", timeout=5, id=carol_call["id"])
    alice.wait_event("CALL_ESTABLISHED", timeout=5)  # her call to carol: consumed
    alice.wait_event("CALL_CLOSED", timeout=5)

    # 5. the handler crashes once connected
    next_call("crash")
    alice.dial(kam.aor("bob"))
    call = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    alice.wait_event("CALL_CLOSED", timeout=10, id=call["id"])
    crashed = record_of_next_call()
    assert (crashed["status"], crashed["ended_by"], crashed["handler_exit"]) == (
        200,
        "handler",
        3,
    )
    assert crashed["answered"] is not None and crashed["handler_signal"] is None

    # SIPp calls bob straight: only the registrar may (SIPROC_INBOUND), so 403 and no
    # handler, no record; /metrics counts it (below)
    next_call("answer")
    direct = make_sipp(
        SIPP_DIR / "uac_basic.xml", f"127.0.0.1:{bob.port}", extra_args=["-s", "bob"]
    )
    assert direct.wait(timeout=30).returncode != 0
    assert "SIP/2.0 403 Forbidden" in "".join(
        p.read_text() for p in direct.traces() if p.name.endswith("_messages.log")
    )

    # 6. SIPp calls bob through Kamailio and hangs up after 1 s
    uac = make_sipp(SIPP_DIR / "uac_basic.xml", kam.hostport, extra_args=["-s", "bob"])
    result = uac.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]
    sipp_in = record_of_next_call()
    assert (sipp_in["direction"], sipp_in["status"], sipp_in["ended_by"]) == ("in", 200, "remote")
    assert sipp_in["remote_uri"] == f"sip:sipp@127.0.0.1:{uac.local_port}"
    assert sipp_in["remote_name"] == "sipp"
    assert sipp_in["codec"] == "PCMU/8000" and sipp_in["packets_sent"] > 20

    # 7. bob calls SIPp, which answers 183 with audio (early media) and 200 2.5 s later
    uas = make_sipp(SIPP_DIR / "uas_early_media.xml", timeout=15)
    uas.wait_listening()
    bob.call(uas.uri)
    result = uas.wait(timeout=25)
    assert result.returncode == 0, result.stdout[-3000:]
    early = record_of_next_call()
    assert (early["direction"], early["status"], early["ended_by"]) == ("out", 200, "handler")
    assert early["request_uri"] == uas.uri and early["codec"] == "PCMA/8000"
    assert early["early_media"] is not None, "183 with SDP: early media"
    assert epoch(early["answered"]) - epoch(early["early_media"]) > 2.0
    assert early["packets_received"] > 2.0 / 0.02 * 0.8  # the early audio counts

    # 8. a call still up when siproc gets SIGTERM
    next_call("hold")
    alice.dial(kam.aor("bob"))
    held_call = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.0)  # audio flows both ways for a while
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(metrics_port)
        if total(samples, "siproc_calls_active", direction="in", state="connected") == 1:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.1)
    so_far = read_records(rotated, cdr)
    assert len(so_far) == count

    # the counters of /metrics are what the records add up to
    by_kind = Counter((r["direction"], f"{r['status'] // 100}xx", r["ended_by"]) for r in so_far)
    for (direction, status_class, who), n in by_kind.items():
        got = total(
            samples,
            "siproc_calls_total",
            direction=direction,
            status_class=status_class,
            ended_by=who,
        )
        assert got == n, (direction, status_class, who, got, n)
    assert total(samples, "siproc_calls_total") == count
    for name in ("sent", "received", "lost"):
        assert total(samples, "siproc_rtp_packets_total", direction=name) == sum(
            r[f"packets_{name}"] for r in so_far
        ), name
    with_audio = sum(1 for r in so_far if r["packets_received"])
    assert total(samples, "siproc_rtp_jitter_seconds_count") == with_audio
    assert total(samples, "siproc_handler_exits_total", status="3") == 1
    assert total(samples, "siproc_handler_spawn_seconds_count") == count + 1  # and the held one
    assert total(samples, "siproc_registered") == 1
    assert total(samples, "siproc_refused_requests_total", reason="policy") == 1
    assert total(samples, "siproc_refused_requests_total") == 1
    assert total(samples, "siproc_media_ticks_total", worker="0") > 0

    bob.signal(signal.SIGTERM)
    assert bob.proc.wait(15) == 0
    alice.wait_event("CALL_CLOSED", timeout=10, id=held_call["id"])
    held = record_of_next_call()
    assert (held["status"], held["ended_by"]) == (200, "shutdown")
    assert held["answered"] is not None and held["packets_received"] > 0

    # exactly one record per call, across the rotation: the handlers' START lines
    mine = read_records(rotated, cdr)
    assert len(read_records(rotated)) == rotated_count == 3
    log = (workdir / "bob.log").read_text()
    started = started_calls(log)
    assert len(mine) == count == len(started) == 8
    assert len({r["call_id"] for r in mine}) == 8
    assert [started[r["call_id"]] for r in mine] == [
        "answer", "busy", "ring", "transfer", "crash", "answer", "out", "hold",
    ]  # fmt: skip
    # each handler that heard DISCONNECTED found its own record in the file already
    # (all but the crashed one, and the held one: siproc stopping sends SIGTERM to the
    # handlers at once, and this one has no trap to read DISCONNECTED after it)
    seen = {f[1]: f[2] for f in (line.split() for line in log.splitlines()) if f[0] == "SEEN"}
    assert sorted(started[call_id] for call_id in seen) == sorted(
        ["answer", "busy", "ring", "transfer", "answer", "out"]
    ), log
    assert set(seen.values()) == {"1"}, log


def test_calls_still_ringing_at_a_limit_are_ended_by_timeout(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    """baresip calls siproc, whose handler only rings: 480 at SIPROC_RING_TIMEOUT. siproc
    calls a baresip that rings and never answers: CANCEL at SIPROC_MAX_CALL_DURATION, 487.
    Both records say ``timeout``, not ``handler``."""
    cdr = workdir / "cdr.jsonl"
    (workdir / "mode").write_text("ring")
    bob = make_siproc(
        "sip:nobody@127.0.0.1:9",
        env={
            "SIPROC_CDR": str(cdr),
            "SIPROC_RING_TIMEOUT": "1",
            "SIPROC_MAX_CALL_DURATION": "2",
        },
    )
    alice = make_baresip("alice")
    alice.dial(bob.uri("bob"))
    alice.wait_event("CALL_CLOSED", timeout=10)
    [rung] = wait_records(cdr, 1)
    check_record(rung)
    assert (rung["status"], rung["ended_by"], rung["reason"]) == (480, "timeout", "no answer")

    carol = make_baresip("carol", answermode="manual")
    bob.call(carol.direct_uri)
    carol.wait_event("CALL_INCOMING", timeout=10)
    carol.wait_event("CALL_CLOSED", timeout=10)
    out = wait_records(cdr, 2)[-1]
    check_record(out)
    assert (out["direction"], out["status"], out["ended_by"]) == ("out", 487, "timeout")
    assert out["ringing"] is not None and out["answered"] is None
    assert epoch(out["ended"]) - epoch(out["created"]) == pytest.approx(2.0, abs=0.5)


def test_healthz_follows_a_real_registrar_and_the_drain(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    """Registered over TCP at Kamailio: /healthz is 200; Kamailio stopped: the connection
    drops, registering again fails, 503; Kamailio back: 200 again. Then DRAIN with a call up:
    503 while the call lasts (a load balancer stops sending calls), and siproc exits after."""
    metrics_port = free_port("tcp")
    (workdir / "mode").write_text("hold")
    bob = make_siproc(
        "sip:nobody@127.0.0.1:9",
        env={
            "SIPROC_REGISTRAR_URI": f"{kam.uri};transport=tcp",
            "SIPROC_ID_URI": kam.aor("bob"),
            "SIPROC_USERNAME": "bob",
            "SIPROC_PASSWORD": PASSWORDS["bob"],
            "SIPROC_REGISTER_RETRY": "1",
            "SIPROC_METRICS": f"127.0.0.1:{metrics_port}",
        },
    )
    health = f"http://127.0.0.1:{metrics_port}/healthz"
    bob.wait_for(r"registered as sip:bob@", timeout=10)
    assert wait_health(health, 200) == "ok\n"

    kam.stop()
    assert "registration failed" in wait_health(health, 503)
    assert total(scrape(metrics_port), "siproc_registration_failures_total") >= 1
    assert total(scrape(metrics_port), "siproc_registered") == 0
    time.sleep(1.5)
    assert get(health)[0] == 503, "still down: still 503"

    kam.start()  # same port and user database
    assert wait_health(health, 200, timeout=20) == "ok\n"
    assert total(scrape(metrics_port), "siproc_registered") == 1

    alice = make_baresip("alice", kam, password=PASSWORDS["alice"])
    alice.wait_registered()
    alice.dial(kam.aor("bob"))
    call = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    bob.send("DRAIN")
    assert "draining" in wait_health(health, 503)
    time.sleep(0.5)
    assert get(health)[0] == 503
    assert bob.proc.poll() is None  # the call is not cut
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=5, id=call["id"])
    assert bob.proc.wait(15) == 0
    wait_file(workdir / "bob.log", r"^START ")
