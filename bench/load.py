"""siproc under SIPp load, side by side with baresip under the same load (issue 3, item 7).

    python bench/load.py                                  # quick: N = 10, 50; 10 s calls
    python bench/load.py --calls 10,100,500,1000 --duration 30
    python bench/load.py --calls 100 --peers siproc --profile /tmp/prof   # + py-spy profile
    python bench/load.py --calls 100,1000 --duration 20 --setup-rates "" --peers siproc --srtp

Load: SIPp is the caller (``bench/sipp/uac_rtp.xml``): N calls set up at ``--rate`` calls per
second (default: all up within a third of the talk time), each sending G.711 u-law RTP for
``--duration`` seconds (``rtp_stream`` of a sox-made tone, played once; every call's RTP comes
from SIPp's one media socket), then BYE. The callee is, in turn:

* siproc: one process on 127.0.0.1 with its media workers (``--media-workers``, default one
  per CPU; ``--media-priority``, default real-time where allowed), a /bin/sh handler per call
  that answers, plays a WAV for the whole call and, when this siproc supports it (a one-call
  probe decides), RECORDs the call;
* baresip (Debian ``baresip-core``) answering automatically with a WAV file source (``aufile``),
  recording with ``sndfile`` when siproc records too; two accounts when N > 250 (baresip takes
  at most 255 calls per account). One baresip process cannot go much further: its main loop
  takes at most 1024 file descriptors, so N above ~200 (recording) or ~300 is shown as n/a.

With ``--cdr-metrics`` (siproc only; issue 11) each N runs siproc twice, one run after the
other: plain, then writing a call detail record per call (``SIPROC_CDR``) and serving
``SIPROC_METRICS``, which a thread scrapes every ``--scrape-interval`` seconds (``--repeat K``:
K such pairs, every other one in reverse order; the table shows the means). A last table puts
their CPU s per call-minute side by side (the target: under 3 % more at N=1000), for all of
siproc and for its control process alone. Records and metrics live in the control process; the
media workers get no SIPROC_ variable and run the same code either way, so the control
process's difference, as a share of all of siproc's CPU, is their cost ("cost"), while the
difference of all of siproc ("more") carries the workers' run-to-run noise:

    python bench/load.py --calls 1000 --duration 20 --setup-rates "" --peers siproc --cdr-metrics \\
        --repeat 2 --hook-time

``--hook-time`` also adds up, in siproc's control process, the CPU time (thread time) of the
monitoring hooks themselves (bench/hook_time/sitecustomize.py wraps them): the one figure here
that the box's noise does not move. Measured so (2 CPUs shared with other work, load average
1-15 during the runs: the lead retakes on a quiet box), before and after the per-call savings
of calls/records.py and calls/metrics.py (CPU s per call-minute, means of 2 pairs):

    before  steady: all 0.0655 -> 0.0661 (+0.8 %), control 0.0003 -> 0.0001, cost -0.34 %
            total:  all 0.0816 -> 0.0837 (+2.6 %), control 0.0076 -> 0.0086, cost +1.16 %
            hooks: 178 and 166 ms of CPU, 0.67 and 0.57 % of all of siproc's CPU; a call's
            end (record + counters) 119-132 us, a scrape 1.42-1.49 ms
    after   steady: all 0.0687 -> 0.0729 (+6.1 %), control 0.0000 -> 0.0001, cost +0.08 %
            total:  all 0.0862 -> 0.0860 (-0.3 %), control 0.0079 -> 0.0084, cost +0.59 %
            hooks: 131 and 131 ms of CPU, 0.47 and 0.44 % of all of siproc's CPU; a call's
            end 87 us, a scrape 1.33 ms

So records and metrics cost about 0.5 % of siproc's CPU per call-minute at N=1000, nearly all
of it once per call at its end; with all calls up the control process does about 0.4 ms of
their work a second (a scrape every 5 s, the media clocks' figures once a second), 0.03 % of
siproc's CPU. The whole-siproc difference ("more") swung from -20 % to +21 % between pairs of
identical runs here, in both directions, from the media workers, which run the same code
either way: on a shared box it cannot show a 3 % effect. A scrape in the steady window answers
this script's client in 3-30 ms (160-190 ms once, at load average 15; the server builds it in
1.3 ms of CPU); during the ramp it waits for a loop busy starting 150 handlers a second
(0.3-2 s), which is the scrape being delayed, not delaying anything.

With ``--srtp`` (siproc only) the calls are SRTP both ways (SDES, RFC 4568; issue 8, item 6):
siproc runs with SIPROC_SRTP=mandatory (SIPROC_SRTP_INSECURE_SIGNALLING=yes: keys over UDP on
loopback); SIPp's INVITE offers RTP/SAVP with an ``a=crypto`` AES_CM_128_HMAC_SHA1_80 line of a
fixed key, and instead of ``rtp_stream`` it plays (``play_pcap_audio``) a pcap of the same tone
as SRTP packets that this script protects with that key beforehand (pylibsrtp). SIPp keeps the
pcap's RTP headers, and each siproc stream has its own crypto context and replay window, so one
pcap serves every call, and SIPp spends no CPU on crypto: siproc's cost is what is measured.
siproc counts as received only packets that authenticated (a failure is packets_invalid), so
the loss below is also the share of SIPp's packets that did not verify. The jitter is read the
same way: SRTP leaves the RTP header in clear.

Measured with ``--calls 100,1000 --duration 20 --setup-rates "" --peers siproc`` with and
without ``--srtp`` (2 CPUs, uvloop, RECORD on, 0 failed calls; CPU s/call-min steady (total);
jitter p50/p99/max over the whole run, then p99 in the steady window), two runs at N=1000:

    N=100  plain 0.100 (0.127), loss 0,      jitter 0.37/1.27/8.75 ms,    steady p99 1.24 ms
    N=100  SRTP  0.118 (0.140), loss 0,      jitter 0.29/1.03/16.51 ms,   steady p99 1.00 ms
    N=1000 plain 0.090 (0.104), loss 0,      jitter 0.35/6.34/46.05 ms,   steady p99 1.25 ms
                 0.093 (0.114), loss 0,      jitter 0.41/8.83/64.70 ms,   steady p99 1.54 ms
    N=1000 SRTP  0.085 (0.144), loss 0,      jitter 0.36/9.85/124.60 ms,  steady p99 2.63 ms
                 0.088 (0.168), loss 0.034%, jitter 0.38/12.63/183.24 ms, steady p99 2.57 ms

With all calls up SRTP costs about what plain RTP does and stays well inside 5 ms p99; the
whole-run p99 (the ramp: 150 calls/s each spawning a handler and, with SRTP, two libsrtp
sessions) is over 5 ms for both, and SRTP's second run lost 341 packets (kernel receive
drops) and skipped 34 media-clock ticks there.

Issue 8, item 6, looked into (2 CPUs shared, the other sessions' load off, ``--calls 1000
--duration 20 --setup-rates "" --peers siproc``): the libsrtp sessions were not it (20 us per
stream's two). Two things were. (1) SIPp's pcap player, which --srtp needs, runs a thread per
call (rtp_stream does not): 1000 threads waking 50 times a second take half a core and make
the callee's own figures worse, SRTP or not; ``--pcap`` is the control run that shows it.
(2) The skipped ticks came at the end of the calls, not the ramp: the busy control process sent
a worker 150-200 ``close`` commands in one datagram, and the worker, finishing a recording per
close with an ``fsync``, spent 150-200 ms on them in one go (its clock then skips). Now a
worker takes no command when its next tick is under 2 ms away (net/media_channel.py pacing),
recordings close without the ``fsync``, and the SRTP hot paths call libsrtp directly
(bench/srtp.py: protect 1.16 -> 0.80 us, unprotect 1.20 -> 0.91 us in place). N=1000, CPU
s/call-min steady (total), loss, jitter p50/p99/max (whole run), steady p99, skipped ticks:

    before  SRTP           0.081 (0.103), 0.062%, 0.37/8.82/157.27 ms, 7.77 ms, 20 skipped
                           0.082 (0.117), 0,      0.36/7.58/206.82 ms, 2.32 ms, 23 skipped
    before  --pcap plain   0.078 (0.115), 0,      0.34/8.30/225.44 ms, 7.20 ms, 30 skipped
    before  plain          0.056 (0.070), 0,      0.32/2.38/20.96 ms,  1.40 ms, 0
    after   SRTP           0.078 (0.100), 0,      0.35/1.78/6.47 ms,   1.93 ms, 0
                           0.078 (0.106), 0,      0.34/1.46/7.73 ms,   1.42 ms, 0
    after   --pcap plain   0.074 (0.114), 0,      0.35/2.22/100.83 ms, 7.85 ms, 0
    after   plain          0.073 (0.088), 0,      0.38/1.78/14.14 ms,  1.88 ms, 0

The box was shared (another session's load between runs moves CPU s/call-min by 0.01-0.02:
the plain runs before and after run the same code but for the recorder). One run of each;
the --pcap run after had one 100 ms stall in its steady window (no tick skipped), not seen in
the SRTP runs: not explained yet.
Left: SRTP runs see 400-800 kernel drops on the control process's SIP socket during the ramp
(SIPp retransmits; no call failed); plain runs see none.

Figures, per N and callee:

* CPU seconds per call-minute of the callee process, siproc's media workers included
  (``/proc/PID/stat`` utime+stime): "steady" over the window in which all N calls are up,
  "total" from before the first INVITE to after the last BYE (setup and teardown included).
  Handlers (reaped children of siproc: cutime+cstime) are reported apart, in CPU s per call.
* RSS per call: (VmRSS with all calls up - VmRSS idle) / N.
* loss: 1 - (RTP packets the callee counted as received) / (packets SIPp sent it, counted in the
  capture); kernel receive-buffer drops on the callee's own sockets (``/proc/net/udp``) are
  shown too.
* send-interval jitter: |inter-arrival - 20 ms| of every RTP stream the callee sends to SIPp,
  captured with dumpcap on loopback (UDP to/from SIPp's media port only) and read with the small
  pcap reader below; p50/p99/max over all streams.
* failed calls: SIPp's FailedCall counter (plus calls that never finished).

Then the call setup rate: SIPp short calls (``bench/sipp/uac_short.xml``) at increasing rates
for ``--setup-seconds`` each against siproc, whose handler answers, waits a second and hangs up;
for each: failed calls, SIPp's retransmissions (a request sent again because its answer was
late), the INVITE -> 200 p50/p99 (SIPp's response-time buckets), the CPU per call of siproc's main
process, its handlers, its media workers and SIPp, and how busy the whole machine was. The
highest clean rate is reported: zero failed calls, zero retransmissions, p99 at most 200 ms.

Everything runs on 127.0.0.1 (DESIGN.md section 5); every wait has a deadline; every process this
script starts runs in its own process group and is stopped on exit, Ctrl-C included. Needs sipp,
baresip, sox and dumpcap (``apt-get install -y sip-tester baresip-core sox tshark``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SIPP_DIR = BENCH_DIR / "sipp"
sys.path.insert(0, str(REPO_ROOT))

from tests.peers import Baresip, free_port  # noqa: E402
from tests.siproc_proc import children_of  # noqa: E402

LOOPBACK = "127.0.0.1"
PTIME = 0.020  # seconds: 20 ms G.711 frames on both sides
PACKETS_PER_SECOND = 50
BARESIP_CALLS_PER_ACCOUNT = 250  # baresip's hard limit is 255 calls per account (PEERS.md)
# baresip 1.0.0's main loop (libre) handles at most 1024 file descriptors ("fd_listen: ... Max
# 1024 fds", then "call_alloc: Too many open files"): measured, 203 calls fit with recording
# (sndfile: 2 files per call), about 330 without. Larger N is reported as n/a.
BARESIP_MAX_CALLS = {True: 200, False: 300}
SIPROC_RTP_PORTS = "20000-39999"
CAPTURE_SNAPLEN = 64  # link + IPv4 + UDP + RTP fixed header fit in 54 bytes
CLK_TCK = os.sysconf("SC_CLK_TCK")
TAIL_SLACK = 1.0  # seconds SIPp waits after its RTP file ends before BYE
# --srtp: SIPp's fixed SDES master key and salt (RFC 4568 section 6.1: 16 + 14 octets). A bench
# key on loopback, not a secret: the pcap SIPp plays is protected with it ahead of the run.
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_MASTER = bytes(range(1, 31))
SRTP_SSRC = 0x5EC0DE01

SIPROC_HANDLER = """#!/bin/sh
# bench/load.py: answer, then on CONNECTED play a file and (when supported) record; exit at EOF.
echo ANSWER
while read -r event rest; do
    if [ "$event" = CONNECTED ]; then
        echo "PLAY $BENCH_PLAY"
        if [ -n "$BENCH_RECORD_DIR" ]; then echo "RECORD $BENCH_RECORD_DIR/$$.wav"; fi
    fi
done
"""

SETUP_HANDLER = """#!/bin/sh
# bench/load.py setup rate: answer, hang up a second later, exit at EOF.
echo ANSWER
sleep 1
echo HANGUP
while read -r event rest; do :; done
"""


# --------------------------------------------------------------------------------------------
# Processes: every one in its own process group, all stopped on exit


class Processes:
    """The processes this script started; ``stop_all`` ends each by its own process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        stderr: IO[bytes] | int | None = subprocess.STDOUT,
        stdin: int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Signal the process group, wait, then SIGKILL the group if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        else:  # the leader is gone; no forked child may outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            for child, _, _ in children_of(proc.pid):  # siproc's handlers lead their own groups
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child, signal.SIGKILL)
            self.stop(proc, timeout=5)
        self._procs.clear()


PROCS = Processes()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# /proc readings


@dataclass
class CpuSample:
    when: float
    own: float  # utime + stime, seconds
    children: float  # cutime + cstime of reaped children, seconds
    control: float = 0.0  # group samples: the first process's own (siproc without its workers)


def cpu_sample(pid: int) -> CpuSample:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return CpuSample(time.monotonic(), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


def box_cpu_sample() -> tuple[int, int]:
    """(all CPU ticks, idle + iowait ticks) of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def media_workers_of(pid: int) -> list[int]:
    """siproc's media worker processes (SIPROC_MEDIA_WORKERS): they are part of siproc."""
    return [child for child, _, cmdline in children_of(pid) if b"media_worker" in cmdline]


def group_cpu_sample(pids: Sequence[int]) -> CpuSample:
    """CPU of a process and its media workers: own time summed, reaped children of the first."""
    first = cpu_sample(pids[0])
    own = first.own
    for pid in pids[1:]:
        with contextlib.suppress(OSError):
            own += cpu_sample(pid).own
    return CpuSample(first.when, own, first.children, first.own)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


class DropWatch:
    """Kernel receive drops (last column of /proc/net/udp) of one process's UDP sockets.

    Sockets vanish when calls end, so the counters are sampled during the run and the highest
    value seen per socket is kept, with the process that held it (``by_pid``): the first pid is
    the control process (its SIP sockets), the others are media workers (RTP/RTCP)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = pids
        self.max_drops: dict[int, int] = {}
        self.owner: dict[int, int] = {}

    def sample(self) -> None:
        owner = {inode: pid for pid in reversed(self.pids) for inode in socket_inodes(pid)}
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with contextlib.suppress(OSError), open(table) as lines:
                next(lines, None)
                for line in lines:
                    parts = line.split()
                    if len(parts) < 13:
                        continue
                    inode, drops = int(parts[9]), int(parts[12])
                    if inode in owner and drops > self.max_drops.get(inode, 0):
                        self.max_drops[inode] = drops
                        self.owner.setdefault(inode, owner[inode])

    @property
    def total(self) -> int:
        return sum(self.max_drops.values())

    def by_pid(self) -> dict[int, int]:
        """Drops per owning process, and the number of sockets that dropped, in pid order."""
        found: dict[int, int] = {}
        for inode, drops in self.max_drops.items():
            pid = self.owner[inode]
            found[pid] = found.get(pid, 0) + drops
        return {pid: found[pid] for pid in self.pids if pid in found}


# --------------------------------------------------------------------------------------------
# Capture: dumpcap on lo, and a small pcap reader


class Capture:
    """dumpcap on the loopback, UDP to and from one port only (never all of lo: PEERS.md)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.path = workdir / f"rtp-{port}.pcap"
        self.log_path = workdir / f"dumpcap-{port}.log"
        self.port = port
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = PROCS.start(
            [
                require("dumpcap"),
                "-i", "lo",
                "-f", f"udp port {port}",
                "-s", str(CAPTURE_SNAPLEN),
                "-B", "256",  # MiB of kernel buffer: 100k packets/s must not overflow it
                "-P",  # classic pcap, for the reader below
                "-q",
                "-w", str(self.path),
            ],
            stdout=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while b"Capturing on" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dumpcap did not start: {self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Stop capturing; return the packets dumpcap says were dropped (None: unknown)."""
        Processes.stop(self.proc, signal.SIGINT, timeout=15)
        self._log.close()
        match = re.search(
            r"received/dropped on interface.*?: (\d+)/(\d+)", self.log_path.read_text()
        )
        return int(match.group(2)) if match else None


def read_pcap(path: Path) -> Iterator[tuple[float, int, int, bytes]]:
    """(timestamp, UDP source port, UDP destination port, first 12 UDP payload bytes) of every
    IPv4 UDP packet in a classic pcap file (Ethernet, Linux cooked v1/v2, raw or BSD loopback)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file (pcapng? use dumpcap -P)")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    link_len = {1: 14, 113: 16, 276: 20, 101: 0, 0: 4, 12: 0}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: unsupported link type {linktype}")
    record = struct.Struct(endian + "IIII")
    ports = struct.Struct("!HH")
    scale = 1e-9 if nanos else 1e-6
    offset = 24
    end = len(data)
    while offset + 16 <= end:
        sec, frac, incl, _ = record.unpack_from(data, offset)
        offset += 16
        ip = offset + link_len
        offset += incl
        if incl < link_len + 28 or data[ip] >> 4 != 4 or data[ip + 9] != 17:
            continue
        udp = ip + (data[ip] & 0x0F) * 4
        src, dst = ports.unpack_from(data, udp)
        yield sec + frac * scale, src, dst, data[udp + 8 : min(udp + 20, offset)]


@dataclass
class CaptureStats:
    peer_streams: int = 0  # distinct SSRCs the callee sent to SIPp
    peer_packets: int = 0
    sipp_packets: int = 0  # RTP SIPp sent (to any port)
    jitter_ms: tuple[float, float, float] | None = None  # p50, p99, max of |delta - 20 ms|
    steady_jitter_ms: tuple[float, float, float] | None = None  # the same, steady window only
    dropped: int | None = None  # by dumpcap


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _quantiles_ms(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    values.sort()
    return percentile(values, 0.50) * 1000, percentile(values, 0.99) * 1000, values[-1] * 1000


def analyse_capture(
    path: Path, media_port: int, steady: tuple[float, float] = (math.inf, -math.inf)
) -> CaptureStats:
    """Count SIPp's and the callee's packets; jitter of the callee's streams over the whole
    capture and over ``steady`` (wall-clock start and end: all calls up, none being set up)."""
    stats = CaptureStats()
    last: dict[int, float] = {}
    deviations: list[float] = []
    steady_deviations: list[float] = []
    steady_start, steady_end = steady
    for ts, src, dst, rtp in read_pcap(path):
        if src == media_port:
            stats.sipp_packets += 1
            continue
        if dst != media_port or len(rtp) < 12 or rtp[0] >> 6 != 2 or 72 <= rtp[1] & 0x7F <= 76:
            continue  # not RTP (RTCP PTs 200-204 show as 72-76 without the marker bit)
        ssrc = int.from_bytes(rtp[8:12], "big")
        stats.peer_packets += 1
        previous = last.get(ssrc)
        if previous is not None:
            deviation = abs(ts - previous - PTIME)
            deviations.append(deviation)
            if steady_start <= previous and ts <= steady_end:
                steady_deviations.append(deviation)
        last[ssrc] = ts
    stats.peer_streams = len(last)
    stats.jitter_ms = _quantiles_ms(deviations)
    stats.steady_jitter_ms = _quantiles_ms(steady_deviations)
    return stats


# --------------------------------------------------------------------------------------------
# Helpers


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(
            f"load.py: {binary} is missing (apt-get install -y sip-tester baresip-core sox tshark)"
        )
    return path


def make_audio(workdir: Path, seconds: float) -> tuple[Path, Path]:
    """tone.ul: raw u-law of exactly ``seconds`` (SIPp's RTP); play.wav: 8 kHz mono 16-bit,
    10 s longer (what siproc plays and baresip sends: baresip hangs up when its file ends)."""
    sox = require("sox")
    wav = workdir / "tone.wav"
    subprocess.run(
        [sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(wav), "synth", f"{seconds:g}",
         "sine", "440", "vol", "0.5"],
        check=True,
    )  # fmt: skip
    ulaw = workdir / "tone.ul"
    subprocess.run([sox, str(wav), "-t", "ul", str(ulaw)], check=True)
    play = workdir / "play.wav"
    subprocess.run(
        [sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(play), "synth",
         f"{seconds + 10:g}", "sine", "1000", "vol", "0.3"],
        check=True,
    )  # fmt: skip
    return ulaw, play


def make_srtp_load(workdir: Path, ulaw: Path, *, protect: bool = True) -> Path:
    """--srtp: ``srtp.pcap``, the u-law file as 20 ms PCMU packets protected with SIPp's fixed
    key (one SSRC; sequence numbers from 1, timestamps from 0), and ``uac_srtp.xml``, the
    scenario of ``uac_rtp.xml`` offering RTP/SAVP with that key and playing the pcap instead of
    the raw file. SIPp keeps the pcap's RTP headers (PEERS.md), and every siproc stream has its
    own SRTP receive context and replay window, so one pcap serves every call. Returns the
    scenario.

    --pcap (``protect=False``): the same pcap player with the packets in the clear and the
    scenario's plain RTP/AVP offer: the control run for --srtp. SIPp's pcap player runs a
    thread per call (``rtp_stream`` runs in its main loop), so it loads the box differently;
    only the pcap control tells what SRTP itself costs siproc."""
    import pylibsrtp

    policy = pylibsrtp.Policy(
        key=SRTP_MASTER,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    session = pylibsrtp.Session(policy)
    audio = ulaw.read_bytes()
    frame = round(8000 * PTIME)
    records = []
    for index in range(len(audio) // frame):
        rtp = struct.pack(
            "!BBHII", 0x80, 0x80 if index == 0 else 0, (index + 1) & 0xFFFF, index * frame,
            SRTP_SSRC,
        ) + audio[index * frame : (index + 1) * frame]  # fmt: skip
        records.append(_pcap_udp_record(index * PTIME, session.protect(rtp) if protect else rtp))
    pcap = workdir / "srtp.pcap"
    # classic pcap, microseconds, Ethernet (SIPp's pcap player takes Ethernet or Linux cooked)
    pcap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))
    template = (SIPP_DIR / "uac_rtp.xml").read_text()
    edits = [] if not protect else [
        ("m=audio [media_port] RTP/AVP 0 101\n",
         f"m=audio [media_port] RTP/SAVP 0 101\n      a=crypto:1 {SRTP_SUITE} inline:"
         f"{base64.b64encode(SRTP_MASTER).decode()}\n"),
    ]  # fmt: skip
    edits.append(('<exec rtp_stream="tone.ul,1,0"/>', f'<exec play_pcap_audio="{pcap}"/>'))
    for old, new in edits:
        if template.count(old) != 1:
            raise SystemExit(f"load.py --srtp: {old.strip()!r} is not once in uac_rtp.xml")
        template = template.replace(old, new)
    scenario = workdir / "uac_srtp.xml"
    scenario.write_text(template)
    return scenario


def _pcap_udp_record(when: float, payload: bytes) -> bytes:
    """One pcap record: Ethernet, IPv4 and UDP (127.0.0.1, ports 40000 -> 40002; SIPp puts its
    own media address and ports in) around ``payload``, ``when`` seconds after the start."""
    udp = struct.pack("!HHHH", 40000, 40002, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )  # fmt: skip
    checksum = sum(struct.unpack("!10H", ip))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    ip = ip[:10] + struct.pack("!H", checksum) + ip[12:]
    frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
    micros = round(when * 1e6)
    return (
        struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        + frame
    )


def wait_until(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def sipp_stats(csv_path: Path) -> dict[str, str]:
    """The last row of SIPp's -trace_stat CSV as {column: value}."""
    try:
        lines = [line for line in csv_path.read_text().splitlines() if line.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def response_time_bucket(stats: dict[str, str], q: float) -> str:
    """The ResponseTimeRepartition1 bucket (INVITE -> 200) that holds the q-quantile."""
    buckets = [(k.split("_", 1)[1], int(v or 0)) for k, v in stats.items()
               if k.startswith("ResponseTimeRepartition1_")]  # fmt: skip
    total = sum(count for _, count in buckets)
    if not total:
        return "?"
    running = 0
    for label, count in buckets:
        running += count
        if running >= q * total:
            return label + " ms"
    return buckets[-1][0] + " ms"


def start_sipp(
    workdir: Path,
    scenario: Path,
    target_port: int,
    *,
    calls: int,
    rate: float,
    limit: int,
    pause_ms: int,
    media_port: int,
    timeout: float,
    users: Path | None = None,
    name: str,
) -> tuple[subprocess.Popen[bytes], Path]:
    stats = workdir / f"sipp-{name}.csv"
    log = open(workdir / f"sipp-{name}.log", "wb")  # noqa: SIM115 (inherited, then closed)
    argv = [
        require("sipp"), f"{LOOPBACK}:{target_port}",
        "-sf", str(scenario),
        "-s", "siproc",
        "-i", LOOPBACK, "-p", str(free_port("sip")),
        "-mi", LOOPBACK, "-mp", str(media_port),
        "-m", str(calls), "-l", str(limit), "-r", f"{rate:g}", "-rp", "1000",
        "-d", str(pause_ms),
        "-timeout", f"{timeout:.0f}s", "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_err",
    ]  # fmt: skip
    if users is not None:
        argv += ["-inf", str(users)]
    proc = PROCS.start(argv, cwd=workdir, stdout=log)
    log.close()
    return proc, stats


def sipp_watchdog_trips(workdir: Path) -> list[int]:
    """How late (ms) SIPp's main loop ran each time its own watchdog tripped (its -trace_err
    file): SIPp overloaded sends late, and an RTP tail not sent before its BYE is not loss."""
    found: list[int] = []
    for log in workdir.glob("*_errors.log"):
        found += [
            int(ms) for ms in re.findall(r"timer \d+ms has been tripped \((\d+)\)", log.read_text())
        ]
    return found


def siproc_env(port: int, max_calls: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")}
    env.update(
        SIPROC_BIND_ADDRESS=LOOPBACK,
        SIPROC_TRANSPORT_PORT=str(port),
        SIPROC_MAX_CALLS=str(max_calls),
        SIPROC_RTP_PORTS=SIPROC_RTP_PORTS,
        # SIPp is one source address: the per-source flood limit (10/s, burst 20) would refuse
        # all but the first calls of a load with 503 (issue 8, item 4)
        SIPROC_CALL_RATE="100000",
        SIPROC_CALL_BURST="100000",
        SIPROC_LOG_LEVEL="3",
        # every media worker up before the load and for all of it: the CPU figures add up the
        # workers found at the start (bench/footprint.py measures the start-on-demand default)
        SIPROC_MEDIA_IDLE="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class SiprocProcess:
    """``python -m siproc HANDLER`` with stderr (its log) in a file."""

    READY = re.compile(r"ready on SIP port (\d+)")
    ENDED = re.compile(r"call ended: .*\(RTP: (\d+) packets sent, (\d+) received\)")
    SKIPPED = re.compile(r"media clock (\d+) ms late: skipped (\d+) ticks")

    def __init__(
        self, python: str, workdir: Path, handler: Path, max_calls: int, env: dict[str, str]
    ) -> None:
        self.port = free_port("sip")
        self.log_path = workdir / f"siproc-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = PROCS.start(
            [python, "-m", "siproc", str(handler)],
            env=siproc_env(self.port, max_calls, env),
            stdin=subprocess.PIPE,
            stdout=self._log,
        )
        if not wait_until(
            lambda: self.READY.search(self.log()) or self.proc.poll() is not None, 20
        ):
            raise RuntimeError(f"siproc did not start; log:\n{self.log()[-3000:]}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"siproc exited; log:\n{self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, text: str) -> int:
        return self.log().count(text)

    def rtp_counters(self) -> tuple[int, int, int]:
        """(calls ended, RTP packets sent, RTP packets received) from the call-end log lines."""
        ended = sent = received = 0
        for match in self.ENDED.finditer(self.log()):
            ended += 1
            sent += int(match.group(1))
            received += int(match.group(2))
        return ended, sent, received

    LOST = re.compile(r"call ended: .*\(RTP: \d+ packets sent, (\d+) received\) lost (\d+)")

    def short_calls(self, expected: int) -> tuple[int, int]:
        """(calls with sequence gaps, calls short of `expected` packets without a gap): the
        second kind got every packet the peer sent up to its BYE, in order; what is missing
        is the tail the peer had not sent yet (an overloaded SIPp's pcap player)."""
        gaps = tail = 0
        for match in self.LOST.finditer(self.log()):
            if int(match.group(2)):
                gaps += 1
            elif int(match.group(1)) < expected:
                tail += 1
        return gaps, tail

    def skipped_ticks(self) -> tuple[int, int]:
        """(warnings, ticks) of 'media clock ... late: skipped' in the log."""
        found = self.SKIPPED.findall(self.log())
        return len(found), sum(int(ticks) for _, ticks in found)

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"QUIT\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        Processes.stop(self.proc)
        self._log.close()


# --------------------------------------------------------------------------------------------
# One load run


@dataclass
class LoadResult:
    peer: str
    calls: int
    duration: float
    record: bool
    cpu_steady: float = math.nan  # CPU s per call-minute, all calls up
    cpu_total: float = math.nan  # CPU s per call-minute, whole run
    handler_cpu: float = math.nan  # CPU s per call (siproc's handlers)
    rss_idle_kib: int = 0
    rss_per_call_kib: float = math.nan
    received: int = 0
    sent_by_sipp: int = 0
    expected: int = 0
    loss: float = math.nan
    sock_drops: int = 0
    capture: CaptureStats | None = None
    failed: int = 0
    successful: int = 0
    sipp_cpu_pct: float = math.nan
    window: float = 0.0
    notes: list[str] = field(default_factory=list)
    cdr_metrics: bool = False  # SIPROC_CDR and SIPROC_METRICS on, /metrics scraped
    control_steady: float = math.nan  # CPU s per call-minute of siproc's control process alone
    control_total: float = math.nan
    hook_cpu: float = math.nan  # --hook-time: CPU s in the monitoring hooks, whole run

    @property
    def label(self) -> str:
        return f"{self.peer}+cdr" if self.cdr_metrics else self.peer


class Scraper:
    """--cdr-metrics: GET /metrics every ``interval`` seconds in a thread, as Prometheus would
    (its default is 15 s; a shorter interval makes the cost easier to see)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.count = 0
        self.failures = 0
        self.seconds = 0.0
        self.scrapes: list[tuple[float, float]] = []  # (monotonic start, seconds) of each
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.count if self.count else math.nan

    def summary(self, window: tuple[float, float]) -> str:
        """Scrape times, all and in the steady ``window`` apart: a scrape during the ramp
        waits for a loop busy starting handlers (that is what a scrape then measures)."""

        def median_max(times: list[float]) -> str:
            if not times:
                return "-"
            times = sorted(times)
            return f"{1000 * times[len(times) // 2]:.1f}/{1000 * times[-1]:.1f}"

        steady = [s for began, s in self.scrapes if window[0] <= began <= window[1]]
        return (
            f"/metrics scraped {self.count} times ({self.failures} failed), median/max "
            f"{median_max([s for _, s in self.scrapes])} ms, in the steady window "
            f"{median_max(steady)} ms ({len(steady)} scrapes)"
        )

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval):
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
            except OSError:
                self.failures += 1
                continue
            took = time.monotonic() - began
            self.count += 1
            self.seconds += took
            self.scrapes.append((began, took))


def run_load(
    args: argparse.Namespace,
    workdir: Path,
    peer: str,
    calls: int,
    record: bool,
    play: Path,
    cdr_metrics: bool = False,
) -> LoadResult:
    duration = args.duration
    result = LoadResult(peer, calls, duration, record, cdr_metrics=cdr_metrics)
    rate = args.rate or min(200.0, max(5.0, calls / (duration / 3)))
    ramp = calls / rate
    run_dir = workdir / f"{result.label}-{calls}"
    for n in range(2, 100):  # --repeat: a directory per run
        if not run_dir.exists():
            break
        run_dir = workdir / f"{result.label}-{calls}-{n}"
    run_dir.mkdir()
    shutil.copy(workdir / "tone.ul", run_dir / "tone.ul")
    rec_dir = run_dir / "rec"
    rec_dir.mkdir()
    accounts = max(1, math.ceil(calls / BARESIP_CALLS_PER_ACCOUNT))
    users = run_dir / "users.csv"
    names = [f"u{i % accounts}" if peer == "baresip" else "siproc" for i in range(calls)]
    users.write_text("SEQUENTIAL\n" + "".join(f"{name};\n" for name in names))
    media_port = free_port("udp", span=4)

    baresip: Baresip | None = None
    siproc: SiprocProcess | None = None
    scraper: Scraper | None = None
    if peer == "siproc":
        handler = run_dir / "handler.sh"
        handler.write_text(SIPROC_HANDLER)
        handler.chmod(0o755)
        env = {"BENCH_PLAY": str(play), "BENCH_RECORD_DIR": str(rec_dir) if record else ""}
        if args.media_workers is not None:
            env["SIPROC_MEDIA_WORKERS"] = str(args.media_workers)
        if args.media_priority is not None:
            env["SIPROC_MEDIA_PRIORITY"] = args.media_priority
        if args.srtp:  # SDES keys over UDP: on loopback, in a bench, that is what it is for
            env.update(SIPROC_SRTP="mandatory", SIPROC_SRTP_INSECURE_SIGNALLING="yes")
        if cdr_metrics:  # issue 11: a record per call, /metrics scraped as Prometheus does
            metrics_port = free_port("tcp")
            env.update(
                SIPROC_CDR=str(run_dir / "cdr.jsonl"), SIPROC_METRICS=f"127.0.0.1:{metrics_port}"
            )
            scraper = Scraper(f"http://127.0.0.1:{metrics_port}/metrics", args.scrape_interval)
        if args.hook_time:  # bench/hook_time/sitecustomize.py: CPU in the monitoring hooks
            path = os.environ.get("PYTHONPATH", "")
            env.update(
                HOOK_TIME_DIR=str(run_dir),
                PYTHONPATH=f"{BENCH_DIR / 'hook_time'}{os.pathsep + path if path else ''}",
            )
        siproc = SiprocProcess(args.python, run_dir, handler, max(calls * 2, 100), env)
        pid, target = siproc.pid, siproc.port
    else:
        baresip = Baresip(
            run_dir / "baresip",
            "u0",
            audio_source=play,
            record=record,
            extra_config={"call_max_calls": str(min(calls + 5, 255)), "rtp_stats": "yes"},
        )
        baresip.start()
        for i in range(1, accounts):
            response = baresip.command(
                "uanew",
                f"<sip:u{i}@{LOOPBACK}:{baresip.sip_port}>;answermode=auto;"
                "audio_codecs=PCMU,PCMA;regint=0;mwi=no",
            )
            if not response.get("ok"):
                raise RuntimeError(f"baresip uanew u{i} failed: {response}")
        assert baresip.pid is not None
        pid, target = baresip.pid, baresip.sip_port

    capture = None if args.no_capture else Capture(run_dir, media_port)
    pids = [pid, *(media_workers_of(pid) if siproc is not None else [])]
    if siproc is not None:
        result.notes.append(f"{len(pids) - 1} media workers")
    drops = DropWatch(pids)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(0.5)
        idle_rss = sum(status_kib(p, "VmRSS") for p in pids)
        start_cpu = group_cpu_sample(pids)
        pause_ms = round((duration + TAIL_SLACK) * 1000)
        sipp, stats_csv = start_sipp(
            run_dir,
            workdir / "uac_srtp.xml" if args.srtp or args.pcap else SIPP_DIR / "uac_rtp.xml",
            target,
            calls=calls,
            rate=rate,
            limit=calls,
            pause_ms=pause_ms,
            media_port=media_port,
            timeout=ramp + duration + 60,
            users=users,
            name=f"{peer}-{calls}",
        )
        t0 = time.monotonic()
        if scraper is not None:
            scraper.start()
        window_start = t0 + min(ramp + 2.0, duration - 1.0)
        window_end = t0 + duration - 0.5
        steady_window = (window_start, window_end)
        if window_end - window_start < 3:
            result.notes.append(
                f"steady window only {window_end - window_start:.1f} s: raise --duration"
            )
        samples: dict[str, CpuSample] = {}
        sipp_cpu: dict[str, CpuSample] = {}
        rss: list[int] = []
        next_drop_sample = t0 + 1
        hard_deadline = t0 + ramp + duration + 90
        while sipp.poll() is None and time.monotonic() < hard_deadline:
            now = time.monotonic()
            if "a" not in samples and now >= window_start:
                samples["a"] = group_cpu_sample(pids)
                sipp_cpu["a"] = cpu_sample(sipp.pid)
                if args.profile is not None and peer == "siproc":
                    profiler = start_profiler(args.profile, pids, calls, window_end - now - 0.5)
            if "a" in samples and "b" not in samples and now < window_end:
                rss.append(sum(status_kib(p, "VmRSS") for p in pids))
            if "b" not in samples and now >= window_end:
                samples["b"] = group_cpu_sample(pids)
                sipp_cpu["b"] = cpu_sample(sipp.pid)
            if now >= next_drop_sample:
                drops.sample()
                next_drop_sample = now + 1.0
            time.sleep(0.1)
        if sipp.poll() is None:
            result.notes.append("SIPp did not finish in time: stopped")
        Processes.stop(sipp)
        # After the last BYE: wait (bounded) for the callee to end every call.
        if siproc is not None:
            wait_until(
                lambda: siproc.count("handler exited") >= siproc.count("handler started"), 20
            )
        else:
            assert baresip is not None
            wait_until(lambda: baresip.log().count("Receive:") >= calls, 10)
        time.sleep(0.3)
        end_cpu = group_cpu_sample(pids)
        if capture is not None:
            dropped = capture.stop()
            wall = time.time() - time.monotonic()  # pcap times are wall-clock times
            steady = (window_start + wall, window_end + wall)
            result.capture = analyse_capture(capture.path, media_port, steady)
            result.capture.dropped = dropped
            if not args.keep:
                capture.path.unlink()
    finally:
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
            Processes.stop(profiler)
        if capture is not None and capture.proc.poll() is None:
            capture.stop()
        if scraper is not None:
            scraper.stop()
        if siproc is not None:
            siproc.stop()
        if baresip is not None:
            baresip.stop()

    minutes = calls * duration / 60
    if "a" in samples and "b" in samples:
        a, b = samples["a"], samples["b"]
        result.window = b.when - a.when
        result.cpu_steady = (b.own - a.own) / (calls * result.window / 60)
        result.control_steady = (b.control - a.control) / (calls * result.window / 60)
        sa, sb = sipp_cpu["a"], sipp_cpu["b"]
        result.sipp_cpu_pct = 100 * (sb.own - sa.own) / (sb.when - sa.when)
    result.cpu_total = (end_cpu.own - start_cpu.own) / minutes
    result.control_total = (end_cpu.control - start_cpu.control) / minutes
    result.handler_cpu = (end_cpu.children - start_cpu.children) / calls
    result.rss_idle_kib = idle_rss
    if rss:
        rss.sort()
        result.rss_per_call_kib = (rss[len(rss) // 2] - idle_rss) / calls
    stats = sipp_stats(stats_csv)
    result.successful = int(stats.get("SuccessfulCall(C)", 0) or 0)
    result.failed = int(stats.get("FailedCall(C)", 0) or 0)
    unfinished = calls - result.successful - result.failed
    if unfinished > 0:
        result.notes.append(f"{unfinished} calls never finished (counted as failed)")
        result.failed += unfinished
    result.expected = calls * round(duration * PACKETS_PER_SECOND)
    result.sock_drops = drops.total
    if drops.total:
        where = drops.by_pid()
        result.notes.append(
            "socket drops by process: "
            + ", ".join(
                f"{'control' if pid == pids[0] else 'worker'} {pid}: {n}"
                for pid, n in where.items()
            )
            + f" ({sum(1 for d in drops.max_drops.values() if d)} sockets)"
        )
    if siproc is not None:
        ended, _, received = siproc.rtp_counters()
        result.received = received
        got = re.findall(r"media worker \(pid \d+\) runs at (\w+) priority", siproc.log())
        if got:
            result.notes.append(f"workers at {'/'.join(sorted(set(got)))} priority")
        if "leaving real-time priority" in siproc.log():
            result.notes.append("a worker left real-time priority (overload)")
        warnings, ticks = siproc.skipped_ticks()
        if ticks:
            result.notes.append(f"media clock skipped {ticks} ticks ({warnings} warnings)")
        refused = siproc.count("RECORD refused")
        if refused:
            result.notes.append(f"RECORD refused {refused} times")
        if ended < calls:
            result.notes.append(f"only {ended} call-end lines in siproc's log")
        short = siproc.short_calls(round(duration * PACKETS_PER_SECOND))
        if short[0] or short[1]:
            result.notes.append(
                f"calls short of packets: {short[0]} with gaps in their sequence numbers, "
                f"{short[1]} short only at the end (the last packets not sent before the BYE)"
            )
        trips = sipp_watchdog_trips(run_dir)
        if trips:
            result.notes.append(
                f"SIPp overloaded: its watchdog tripped {len(trips)} times (late by up to "
                f"{max(trips)} ms), so it sent late or not at all"
            )
        hooks = run_dir / f"hooks-{siproc.pid}.json"
        if args.hook_time and hooks.exists():
            import json

            totals: dict[str, list[int]] = json.loads(hooks.read_text())
            result.hook_cpu = sum(ns for _, ns in totals.values()) / 1e9
            per = ", ".join(
                f"{name} {ns / count / 1000:.1f} us x {count}"
                for name, (count, ns) in sorted(totals.items(), key=lambda kv: -kv[1][1])
            )
            result.notes.append(f"monitoring hooks {1000 * result.hook_cpu:.1f} ms CPU ({per})")
        if scraper is not None:
            cdr = run_dir / "cdr.jsonl"
            lines = len(cdr.read_text().splitlines()) if cdr.exists() else 0
            result.notes.append(
                f"CDR: {lines} records for {calls} calls; {scraper.summary(steady_window)}"
            )
        if args.srtp:  # received counts only packets that authenticated (else packets_invalid)
            keyed = siproc.count("SRTP on (")
            result.notes.append(f"SRTP on in {keyed} streams; {received} packets authenticated")
        if record:
            recorded = [p for p in rec_dir.glob("*.wav") if p.stat().st_size > 44]
            result.notes.append(f"{len(recorded)} non-empty recordings")
    else:
        assert baresip is not None
        received_counts = re.findall(r"^packets:\s+(\d+)\s+(\d+)", baresip.log(), re.M)
        result.received = sum(int(r) for _, r in received_counts)
        if len(received_counts) < calls:
            result.notes.append(f"only {len(received_counts)} RTP summaries in baresip's log")
    if result.capture is not None and result.capture.peer_packets:
        # what the callee should send: its whole call, talk time plus SIPp's slack before BYE
        due = calls * (duration + TAIL_SLACK) * PACKETS_PER_SECOND
        share = result.capture.peer_packets / due
        if share < 0.95:
            result.notes.append(
                f"OVERLOADED: the callee sent only {100 * share:.0f}% of its RTP packets, so "
                "its CPU figures understate the cost of the full load"
            )
    sent = result.capture.sipp_packets if result.capture and result.capture.dropped == 0 else 0
    result.sent_by_sipp = sent
    base = sent or result.expected
    if base:
        result.loss = max(0.0, 1 - result.received / base)
    if not args.keep:
        for wav in rec_dir.glob("*.wav"):
            wav.unlink()
        for wav in (run_dir / "baresip" / "recordings").glob("*.wav"):
            wav.unlink()
    return result


def start_profiler(
    directory: Path, pids: Sequence[int], calls: int, seconds: float
) -> subprocess.Popen[bytes] | None:
    """py-spy on siproc; with media workers, on the first worker (they share the media load
    evenly, and the control process then does only signalling)."""
    pid = pids[1] if len(pids) > 1 else pids[0]
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("load.py: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return None
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"siproc-{calls}.txt"
    return PROCS.start(
        [py_spy, "record", "--nonblocking", "-r", "100", "-f", "raw", "-o", str(out),
         "--pid", str(pid), "--duration", str(max(2, int(seconds)))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def summarise_profile(path: Path, top: int = 15) -> list[str]:
    """Self and inclusive share of the samples per function, from py-spy's raw (collapsed)
    output."""
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "func (path/file.py:123)" -> "func (file.py)": one entry per function
        frames = [re.sub(r" \((?:.*/)?([^/:]+)(?::\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
        own[frames[-1].strip() or "(no Python frame: native code, GC)"] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples (busy only; 100 per second of one core); self time:"]
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("inclusive (without the frames every busy sample falls under):")
    top_count = max(inclusive.values())
    common = [kv for kv in inclusive.items() if kv[1] < top_count and kv[0].strip()]
    for name, count in sorted(common, key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return lines


# --------------------------------------------------------------------------------------------
# RECORD probe and setup rate


def probe_record(args: argparse.Namespace, workdir: Path, play: Path) -> tuple[bool, str]:
    """One 2-second call whose handler RECORDs: is the file there, with audio, and no ERROR?"""
    probe_dir = workdir / "probe"
    probe_dir.mkdir()
    (probe_dir / "tone.ul").write_bytes((workdir / "tone.ul").read_bytes()[: 8000 * 2])
    handler = probe_dir / "handler.sh"
    handler.write_text(SIPROC_HANDLER)
    handler.chmod(0o755)
    rec_dir = probe_dir / "rec"
    rec_dir.mkdir()
    env = {"BENCH_PLAY": str(play), "BENCH_RECORD_DIR": str(rec_dir)}
    siproc = SiprocProcess(args.python, probe_dir, handler, 10, env)
    try:
        users = probe_dir / "users.csv"
        users.write_text("SEQUENTIAL\nsiproc;\n")
        sipp, _ = start_sipp(
            probe_dir,
            SIPP_DIR / "uac_rtp.xml",
            siproc.port,
            calls=1,
            rate=1,
            limit=1,
            pause_ms=2500,
            media_port=free_port("udp", span=4),
            timeout=20,
            users=users,
            name="probe",
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            sipp.wait(30)
        Processes.stop(sipp)
        wait_until(lambda: siproc.count("handler exited") >= 1, 10)
    finally:
        siproc.stop()
    if siproc.count("RECORD refused"):
        match = re.search(r"RECORD refused: (.*)", siproc.log())
        return False, f"refused ({match.group(1) if match else '?'})"
    files = [p for p in rec_dir.glob("*.wav") if p.stat().st_size > 44]
    if not files:
        return False, "no recording was written"
    return True, f"{files[0].name}: {files[0].stat().st_size} bytes"


@dataclass
class SetupResult:
    rate: int
    calls: int
    successful: int
    failed: int
    cpu_per_call_ms: float
    handler_cpu_per_call_ms: float
    rtt_p50: str
    rtt_p99: str
    retransmissions: int = 0  # SIPp's: requests it had to send again (a late answer)
    workers_cpu_per_call_ms: float = math.nan  # siproc's media workers together
    sipp_cpu_per_call_ms: float = math.nan
    box_busy: float = math.nan  # share of all CPUs busy (any process) while SIPp ran
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Zero failed calls, zero retransmissions, INVITE -> 200 p99 under 200 ms (issue 12)."""
        return (
            self.failed == 0
            and self.successful == self.calls
            and self.retransmissions == 0
            and self.rtt_p99.startswith("<")
            and int(self.rtt_p99[1:].split()[0]) <= 200
        )


def run_setup_rates(args: argparse.Namespace, workdir: Path) -> list[SetupResult]:
    run_dir = workdir / "setup"
    run_dir.mkdir()
    handler = run_dir / "handler.sh"
    handler.write_text(SETUP_HANDLER)
    handler.chmod(0o755)
    top = max(args.setup_rates)
    siproc = SiprocProcess(args.python, run_dir, handler, top * 10, {})
    results = []
    try:
        for rate in args.setup_rates:
            calls = round(rate * args.setup_seconds)
            started_before = siproc.count("handler started")
            workers = media_workers_of(siproc.pid)
            before = cpu_sample(siproc.pid)
            workers_before = group_cpu_sample([siproc.pid, *workers]).own - before.own
            box_before = box_cpu_sample()
            sipp, stats_csv = start_sipp(
                run_dir,
                SIPP_DIR / "uac_short.xml",
                siproc.port,
                calls=calls,
                rate=rate,
                limit=rate * 5,
                pause_ms=0,
                media_port=free_port("udp", span=4),
                timeout=args.setup_seconds + 40,
                name=f"setup-{rate}",
            )
            sipp_cpu = 0.0  # read while it runs: once it has exited it cannot be read
            deadline = time.monotonic() + args.setup_seconds + 60
            while sipp.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    sipp_cpu = cpu_sample(sipp.pid).own
                time.sleep(0.1)
            box_after = box_cpu_sample()
            Processes.stop(sipp)
            wait_until(
                lambda: siproc.count("handler exited") >= siproc.count("handler started"), 20
            )
            after = cpu_sample(siproc.pid)
            workers_after = group_cpu_sample([siproc.pid, *workers]).own - after.own
            stats = sipp_stats(stats_csv)
            successful = int(stats.get("SuccessfulCall(C)", 0) or 0)
            failed = int(stats.get("FailedCall(C)", 0) or 0)
            result = SetupResult(
                rate,
                calls,
                successful,
                failed + max(0, calls - successful - failed),
                1000 * (after.own - before.own) / calls,
                1000 * (after.children - before.children) / calls,
                response_time_bucket(stats, 0.5),
                response_time_bucket(stats, 0.99),
                int(stats.get("Retransmissions(C)", 0) or 0),
                1000 * (workers_after - workers_before) / calls,
                1000 * sipp_cpu / calls,
                1 - (box_after[1] - box_before[1]) / max(1, box_after[0] - box_before[0]),
            )
            spawned = siproc.count("handler started") - started_before
            if spawned != calls:
                result.notes.append(f"{spawned} handlers started")
            results.append(result)
            print(
                f"  setup {rate:4d} cps: {successful}/{calls} ok, {result.failed} failed",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1)
    finally:
        siproc.stop()
    return results


# --------------------------------------------------------------------------------------------
# Output


def fmt(value: float, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def print_table(results: list[LoadResult], skipped: list[tuple[int, str, str]]) -> None:
    header = (
        f"{'N':>5}  {'callee':<10} {'rec':<3}  {'CPU s/call-min':>14}  {'(total)':>7}  "
        f"{'handler s/call':>14}  {'RSS KiB/call':>12}  {'loss %':>7}  "
        f"{'jitter p50/p99/max ms':>22}  {'failed':>9}"
    )
    print(header)
    print("-" * len(header))
    rows: list[tuple[int, str, str]] = []
    for r in results:
        jitter = "-"
        if r.capture is not None and r.capture.jitter_ms is not None:
            jitter = "/".join(f"{x:.2f}" for x in r.capture.jitter_ms)
        rows.append(
            (
                r.calls,
                r.label,
                f"{r.calls:>5}  {r.label:<10} {'on' if r.record else 'off':<3}  "
                f"{fmt(r.cpu_steady, '.3f'):>14}  {fmt(r.cpu_total, '.3f'):>7}  "
                f"{fmt(r.handler_cpu if r.peer == 'siproc' else math.nan, '.4f'):>14}  "
                f"{fmt(r.rss_per_call_kib, '.0f'):>12}  {fmt(100 * r.loss, '.3f'):>7}  "
                f"{jitter:>22}  {f'{r.failed}/{r.calls}':>9}",
            )
        )
    for calls, peer, why in skipped:
        rows.append((calls, peer, f"{calls:>5}  {peer:<10} {'':<3}  n/a ({why})"))
    for _, _, line in sorted(rows, key=lambda row: (row[0], row[1] != "siproc", row[1])):
        print(line)


def more(without: float, with_: float) -> float:
    """Per cent more CPU ``with_`` than ``without`` (nan when there is nothing to compare)."""
    return 100 * (with_ / without - 1) if without > 0 else math.nan


def print_cdr_comparison(results: list[LoadResult]) -> None:
    """--cdr-metrics: siproc's CPU per call-minute without and with records and metrics, the
    mean of the --repeat runs; all of siproc, and its control process alone. The media workers
    get no SIPROC_ variable (net/media_pool.py, worker_environment) and run the same code either
    way: what they add to the difference is run-to-run noise. Records and metrics live in the
    control process, so its difference, taken as a share of all of siproc's CPU, is their cost.
    """
    header = (
        f"{'N':>5}  {'window':>6}  {'runs':>4}  {'all: without':>12}  {'with':>7}  {'more':>7}  "
        f"{'control: without':>16}  {'with':>7}  {'cost':>7}"
    )
    print(header)
    print("-" * len(header))

    def mean(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    for calls in sorted({r.calls for r in results if r.peer == "siproc"}):
        runs = [r for r in results if r.peer == "siproc" and r.calls == calls]
        plain = [r for r in runs if not r.cdr_metrics]
        cdr = [r for r in runs if r.cdr_metrics]
        if not plain or not cdr:
            continue
        for window in ("steady", "total"):
            all_without = mean([getattr(r, f"cpu_{window}") for r in plain])
            all_with = mean([getattr(r, f"cpu_{window}") for r in cdr])
            control_without = mean([getattr(r, f"control_{window}") for r in plain])
            control_with = mean([getattr(r, f"control_{window}") for r in cdr])
            cost = 100 * (control_with - control_without) / all_without if all_without else math.nan
            print(
                f"{calls:>5}  {window:>6}  {min(len(plain), len(cdr)):>4}  "
                f"{fmt(all_without, '.4f'):>12}  {fmt(all_with, '.4f'):>7}  "
                f"{fmt(more(all_without, all_with), '+.1f'):>6}%  "
                f"{fmt(control_without, '.4f'):>16}  {fmt(control_with, '.4f'):>7}  "
                f"{fmt(cost, '+.2f'):>6}%"
            )
    print(
        "(more: all of siproc, media workers included, whose share is run-to-run noise; "
        "cost: the control process's difference as a share of all of siproc's CPU)"
    )
    for r in results:
        if r.cdr_metrics and not math.isnan(r.hook_cpu):
            share = 100 * r.hook_cpu / (r.cpu_total * r.calls * r.duration / 60)
            print(
                f"N={r.calls} with CDR+metrics: their hooks took {1000 * r.hook_cpu:.0f} ms of "
                f"CPU, {share:.2f} % of all of siproc's CPU over the run (--hook-time)"
            )


def print_details(results: list[LoadResult]) -> None:
    for r in results:
        cap = r.capture
        parts = [
            f"N={r.calls} {r.label}: window {r.window:.1f} s",
            f"idle RSS {r.rss_idle_kib / 1024:.1f} MiB",
            f"RTP received {r.received}",
            f"SIPp sent {r.sent_by_sipp or '?'} (file: {r.expected})",
            f"kernel socket drops {r.sock_drops}",
            f"calls ok {r.successful}",
            f"SIPp CPU {fmt(r.sipp_cpu_pct, '.0f')}% of a core",
        ]
        if cap is not None:
            steady = "-"
            if cap.steady_jitter_ms is not None:
                steady = "/".join(f"{x:.2f}" for x in cap.steady_jitter_ms)
            parts.append(
                f"capture: {cap.peer_streams} streams, {cap.peer_packets} packets from the "
                f"callee, dumpcap dropped {cap.dropped}; jitter in the steady window "
                f"p50/p99/max {steady} ms"
            )
        print("  " + "; ".join(parts + r.notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="10,50", help="comma-separated N (default 10,50)")
    parser.add_argument("--duration", type=float, default=10.0, help="talk seconds per call")
    parser.add_argument("--rate", type=float, default=0, help="calls/s for the load (0: auto)")
    parser.add_argument("--peers", default="siproc,baresip", help="callees to measure")
    parser.add_argument("--setup-rates", default="25,50,100,150", help="cps steps ('' skips)")
    parser.add_argument("--setup-seconds", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--record", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-capture", action="store_true", help="no dumpcap, no jitter")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run siproc")
    parser.add_argument(
        "--media-workers", type=int, help="SIPROC_MEDIA_WORKERS for siproc (default: its own)"
    )
    parser.add_argument(
        "--media-priority",
        choices=("realtime", "high", "normal"),
        help="SIPROC_MEDIA_PRIORITY for siproc (default: its own, realtime where allowed)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy siproc's steady window into DIR")
    parser.add_argument(
        "--cdr-metrics",
        action="store_true",
        help="each N twice: siproc plain, then with SIPROC_CDR and SIPROC_METRICS (/metrics "
        "scraped); their CPU per call-minute side by side (siproc only)",
    )
    parser.add_argument(
        "--scrape-interval", type=float, default=5.0, help="seconds between scrapes (5)"
    )
    parser.add_argument(
        "--hook-time",
        action="store_true",
        help="siproc's control process adds up the CPU time of its monitoring hooks "
        "(bench/hook_time/sitecustomize.py): the cost of --cdr-metrics without the noise",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="--cdr-metrics: run each pair this many times, every other one in reverse order; "
        "the comparison shows the means (1)",
    )
    parser.add_argument(
        "--srtp", action="store_true", help="SRTP both ways (siproc only; SIPp plays a pcap)"
    )
    parser.add_argument(
        "--pcap",
        action="store_true",
        help="plain RTP, but SIPp plays it as --srtp does (pcap, a thread per call): the "
        "control run for --srtp",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.srtp and args.pcap:
        parser.error("--pcap is the plain control of --srtp: one or the other")
    calls_list = [int(x) for x in args.calls.split(",") if x.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not set(peers) <= {"siproc", "baresip"}:
        parser.error("--peers takes siproc and/or baresip")
    args.setup_rates = [int(x) for x in args.setup_rates.split(",") if x.strip()]
    if args.duration < 4:
        parser.error("--duration must be at least 4 s")
    for binary in ("sipp", "sox", *(["dumpcap"] if not args.no_capture else [])):
        require(binary)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="siproc-load-"))
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the callees
        ulaw, play = make_audio(workdir, args.duration)
        if args.srtp or args.pcap:
            make_srtp_load(workdir, ulaw, protect=args.srtp)
        loop = subprocess.run(
            [args.python, "-c", "import uvloop"], capture_output=True, check=False
        ).returncode
        print(
            f"siproc load bench: {os.cpu_count()} CPUs, {args.python} "
            f"({'uvloop' if loop == 0 else 'asyncio'} loop), talk {args.duration:g} s, "
            f"work dir {workdir}",
            flush=True,
        )
        if args.record == "auto" and "siproc" in peers:
            record, why = probe_record(args, workdir, play)
        else:
            record, why = args.record == "on", f"--record {args.record}"
        print(f"RECORD: {'on' if record else 'off'} ({why})", flush=True)
        results: list[LoadResult] = []
        skipped: list[tuple[int, str, str]] = []
        for calls in calls_list:
            for peer in peers:
                if peer == "baresip" and (args.srtp or args.pcap or args.cdr_metrics):
                    skipped.append((calls, peer, "--srtp/--pcap/--cdr-metrics: siproc only"))
                    continue
                if peer == "baresip" and calls > BARESIP_MAX_CALLS[record]:
                    limit = BARESIP_MAX_CALLS[record]
                    skipped.append((calls, peer, f"libre's 1024-fd limit: ~{limit} calls"))
                    continue
                # --cdr-metrics: plain, then with records and metrics, for the comparison;
                # --repeat: again, the other way round every second time (drift cancels)
                order: list[bool] = [False]
                if args.cdr_metrics:
                    order = []
                    for n in range(args.repeat):
                        order += [False, True] if n % 2 == 0 else [True, False]
                for cdr_metrics in order:
                    label = f"{peer}{' with CDR+metrics' if cdr_metrics else ''}"
                    print(f"  running N={calls} against {label} ...", file=sys.stderr, flush=True)
                    started = time.monotonic()
                    result = run_load(args, workdir, peer, calls, record, play, cdr_metrics)
                    results.append(result)
                    print(
                        f"  ... {time.monotonic() - started:.0f} s: failed {result.failed}, "
                        f"loss {fmt(100 * result.loss, '.3f')} %",
                        file=sys.stderr,
                        flush=True,
                    )
        print()
        srtp = (
            f", SRTP ({SRTP_SUITE}, SDES)"
            if args.srtp
            else ", SIPp pcap player"
            if args.pcap
            else ""
        )
        print(f"Load: SIPp UAC, G.711 u-law both ways{srtp}, {args.duration:g} s talk per call")
        print_table(results, skipped)
        print_details(results)
        if args.cdr_metrics:
            print(
                f"\nCost of SIPROC_CDR + SIPROC_METRICS (/metrics scraped every "
                f"{args.scrape_interval:g} s), siproc's CPU per call-minute:"
            )
            print_cdr_comparison(results)
        if args.profile is not None:
            for path in sorted(args.profile.glob("siproc-*.txt")):
                print(f"\nprofile {path}:")
                print("\n".join(summarise_profile(path)))
        if args.setup_rates and "siproc" in peers:
            print(
                f"\nCall setup rate: {args.setup_seconds:g} s per step, handler answers, "
                "hangs up after 1 s",
                flush=True,
            )
            setup = run_setup_rates(args, workdir)
            print(
                f"{'cps':>5}  {'calls':>6}  {'ok':>6}  {'failed':>6}  {'siproc CPU ms/call':>18}"
                f"  {'handler CPU ms/call':>19}  {'INVITE->200 p50/p99':>20}  {'retrans':>7}"
                f"  {'workers/SIPp ms/call':>20}  {'box busy':>8}"
            )
            for s in setup:
                others = f"{fmt(s.workers_cpu_per_call_ms, '.2f')} / "
                others += fmt(s.sipp_cpu_per_call_ms, ".2f")
                print(
                    f"{s.rate:>5}  {s.calls:>6}  {s.successful:>6}  {s.failed:>6}  "
                    f"{s.cpu_per_call_ms:>18.2f}  {s.handler_cpu_per_call_ms:>19.2f}  "
                    f"{s.rtt_p50 + ' / ' + s.rtt_p99:>20}  {s.retransmissions:>7}  "
                    f"{others:>20}"
                    f"  {fmt(100 * s.box_busy, '.0f') + ' %':>8}  {'; '.join(s.notes)}"
                )
            clean = [s.rate for s in setup if s.clean]
            print(
                "highest clean rate (0 failed, 0 retransmissions, p99 <= 200 ms): "
                f"{max(clean) if clean else 'none'} cps"
            )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        PROCS.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
