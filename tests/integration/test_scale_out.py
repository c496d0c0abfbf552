"""Two siproc instances behind Kamailio's dispatcher (docs/scale-out.md, issue 12): SIPp places
600 calls at 50 a second through the balancer; they spread over both instances; one instance is
SIGKILLed mid-run: the calls it had end (SIPp counts them failed), and no call placed more
than 3 s after the kill fails; the other is drained (SIGUSR1) once the last call is placed:
none of its calls is cut, Kamailio's OPTIONS probes take it out while its calls still run, and
it exits 0 when they have ended.

Everything runs in a loopback-only network namespace, so the ports are fixed: Kamailio on
127.0.0.1:5060 with tests/kamailio-dispatcher.cfg (the file docs/scale-out.md shows), the
instances on 5071 and 5072 (each its own RTP range and one media worker), SIPp on 5080.
Needs root, kamailio, kamcmd and sipp. Runs in about 30 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import loopback_netns
from tests.peers import _Process, require_binary
from tests.siproc_proc import Siproc, children_of

pytestmark = pytest.mark.netns

HERE = Path(__file__).parent
CONFIG = HERE.parent / "kamailio-dispatcher.cfg"
SCENARIO = HERE / "sipp" / "uac_scale_out.xml"
CALLS, RATE = 600, 50  # calls, new calls a second
KILL_AFTER = 150  # calls placed when instance A is killed (3 s in)
GRACE = 3.0  # seconds after the kill within which a new call may still fail
INSTANCES = {"a": (5071, "20000-24999"), "b": (5072, "25000-29999")}

# A handler per call (sh, not bash: 50 start a second): answer, log how the call ended.
HANDLER = """#!/bin/sh
echo "$SIPROC_CALL_ID" >> started.log
echo ANSWER
while read -r line; do
  case "$line" in
    DISCONNECTED*) echo "$SIPROC_CALL_ID $line" >> ended.log ;;
  esac
done
"""


def dispatcher_flags(ctl: str) -> dict[str, str]:
    """URI -> FLAGS of every destination (AP: active and probed; IP: inactive...)."""
    out = subprocess.run(
        ["kamcmd", "-s", ctl, "dispatcher.list"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout
    return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out))


def wait_until(what: str, predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


@pytest.fixture
def netns() -> Iterator[str]:
    for binary in ("kamailio", "kamcmd", "sipp"):
        require_binary(binary)
    with loopback_netns("test_scale_out") as name:
        yield name


def test_calls_spread_fail_over_and_drain_behind_kamailio(tmp_path: Path, netns: str) -> None:
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text("".join(f"1 sip:127.0.0.1:{port}\n" for port, _ in INSTANCES.values()))
    ctl = f"unix:{tmp_path / 'kamailio_ctl'}"
    (tmp_path / "run").mkdir()
    kamailio = _Process(
        "kamailio",
        [
            *("ip", "netns", "exec", netns, require_binary("kamailio")),
            *("-f", str(CONFIG), "-DD", "-E", "-m", "64", "-M", "8"),
            *("-Y", str(tmp_path / "run"), "-w", str(tmp_path)),
            *("-A", f'DSLIST="{ds_list}"', "-A", f'CTLSOCK="{ctl}"'),
        ],
        tmp_path / "kamailio.log",
        tmp_path,
    )
    phones: dict[str, Siproc] = {}
    leftovers: list[tuple[int, bytes]] = []
    sipp: subprocess.Popen[bytes] | None = None
    sipp_out = open(tmp_path / "sipp.out", "wb")  # noqa: SIM115 (closed in finally)
    try:
        for name, (port, rtp) in INSTANCES.items():
            workdir = tmp_path / name
            workdir.mkdir()
            handler = workdir / "h.sh"
            handler.write_text(HANDLER)
            handler.chmod(0o755)
            env = {
                "SIPROC_TRANSPORT_PORT": str(port),
                "SIPROC_RTP_PORTS": rtp,
                "SIPROC_MEDIA_WORKERS": "1",
                "SIPROC_LOG_LEVEL": "3",
                # every call comes from the balancer's one address (docs/scale-out.md)
                "SIPROC_INBOUND": "127.0.0.1/32",
                "SIPROC_CALL_RATE": "1000",
                "SIPROC_CALL_BURST": "1000",
            }
            phones[name] = Siproc(handler, cwd=workdir, netns=netns, env=env)
        for phone in phones.values():
            phone.wait_ready()
        a, b = phones["a"], phones["b"]
        wait_until(
            "both instances active in Kamailio's dispatcher",
            lambda: sorted(dispatcher_flags(ctl).values()) == ["AP", "AP"],
            15,
        )

        scenario = tmp_path / SCENARIO.name
        shutil.copy(SCENARIO, scenario)
        sipp_log = tmp_path / "sipp-calls.log"
        sipp = subprocess.Popen(
            [
                *("ip", "netns", "exec", netns, require_binary("sipp"), "127.0.0.1:5060"),
                *("-sf", str(scenario), "-s", "service"),
                *("-i", "127.0.0.1", "-p", "5080", "-mi", "127.0.0.1", "-mp", "6000"),
                *("-r", str(RATE), "-rp", "1000", "-m", str(CALLS), "-l", "1000"),
                *("-timeout", "60s", "-timeout_error", "-nostdin"),
                *("-trace_logs", "-log_file", str(sipp_log), "-trace_err", "-trace_stat"),
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sipp_out,
            stderr=subprocess.STDOUT,
        )

        def started() -> int:
            return sum(1 for line in lines(sipp_log) if line.startswith("START "))

        # Instance A dies mid-run, with calls up.
        wait_until(f"{KILL_AFTER} calls placed", lambda: started() >= KILL_AFTER, 20)
        leftovers = [(pid, cmd) for pid, _, cmd in children_of(a.proc.pid)]  # handlers, worker
        a.proc.send_signal(signal.SIGKILL)
        killed_at = started()
        a.proc.wait(5)
        # B alone from now on; once the last call is placed, B is drained.
        wait_until("every call placed", lambda: started() >= CALLS, 30)
        up_on_b = len(lines(tmp_path / "b" / "started.log")) - len(
            lines(tmp_path / "b" / "ended.log")
        )
        assert up_on_b > 0, "B should still have calls up when it is drained"
        b.signal(signal.SIGUSR1)
        b.wait_for(r"SIGUSR1: draining, taking no new calls")
        # Kamailio's probes get 503: B is out while its calls still run (and A is out: dead).
        wait_until(
            "Kamailio marking the draining instance inactive",
            lambda: dispatcher_flags(ctl).get("sip:127.0.0.1:5072", "").startswith("I"),
            5,
        )
        assert b.proc.poll() is None, "B was marked inactive only after it had exited"
        assert dispatcher_flags(ctl)["sip:127.0.0.1:5071"].startswith("I")
        assert b.proc.wait(15) == 0
        b.wait_for(r"shutting down \(DRAIN: the last call has ended\)")

        sipp.wait(40)
        log = lines(sipp_log)
        starts = {int(x.split()[1]) for x in log if x.startswith("START ")}
        oks = {int(x.split()[1]) for x in log if x.startswith("OK ")}
        failed = sorted(starts - oks)
        report = (
            f"{len(failed)} failed: {failed[:40]}; killed after call {killed_at}\n"
            f"--- kamailio ---\n{(tmp_path / 'kamailio.log').read_text()[-3000:]}\n"
            f"--- sipp ---\n{(tmp_path / 'sipp.out').read_text(errors='replace')[-2000:]}"
        )
        assert len(starts) == CALLS, report
        # The calls that were up on A ended (as failures: its BYEs got 408 from Kamailio)...
        assert failed, report
        # ...and none placed more than GRACE seconds after the kill failed.
        assert max(failed) <= killed_at + GRACE * RATE, report

        # The calls spread over both instances; every call on B ended as SIPp hung it up.
        on_a = lines(tmp_path / "a" / "started.log")
        on_b = lines(tmp_path / "b" / "started.log")
        assert len(on_a) >= KILL_AFTER // 4 and len(on_b) >= KILL_AFTER // 4, (len(on_a), len(on_b))
        ended_b = lines(tmp_path / "b" / "ended.log")
        assert len(ended_b) == len(on_b), f"{len(on_b)} calls on B, {len(ended_b)} ended"
        cut = [line for line in ended_b if not line.endswith("DISCONNECTED 200 remote hangup")]
        assert not cut, cut[:10]
        # Kamailio took A out (a call to it timed out and failed over, or a probe did) and
        # its probes took B out.
        kam_log = (tmp_path / "kamailio.log").read_text(errors="replace")
        assert re.search(r"5071 failed \(408\)|down: .*sip:127\.0\.0\.1:5071", kam_log), report
        assert "dispatcher: down: OPTIONS sip:127.0.0.1:5072" in kam_log, report
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait(5)
        for phone in phones.values():
            phone.stop()
        for pid, cmdline in leftovers:  # A's orphans (handlers, media worker) still running
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:  # not a reused pid
                    os.kill(pid, signal.SIGKILL)
        kamailio.stop()
        sipp_out.close()
        for name, phone in phones.items():
            print(f"--- siproc {name} ---\n{phone.stderr()}")
