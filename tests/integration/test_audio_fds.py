"""SIPROC_AUDIO_FDS between two real siproc processes on loopback: bob's handler is a Python
echo (reads fd 3, writes it back to fd 4); alice plays a probe (silence, a 440 Hz burst,
silence) and records the call in stereo. Her recording holds her own burst, delayed by the
round trip, as loud as she sent it; bob's handler got 16 kHz PCM in real time. After each
call no descriptor of the handler's pipes is left in bob's siproc or its media worker, and
their descriptor counts are back where they were (two calls in a row, with and without media
workers)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.siproc_proc import Siproc, wait_file, write_handler
from tests.ws_bot import goertzel_share

ENDED = r"^(SIGTERM|EOF)$"
RATE = 8000
LEAD, BURST, TAIL = 1.0, 0.5, 1.5  # seconds of the probe: silence, 440 Hz, silence

# ROLE: "echo" runs the Python echo; "caller" RECORDs in stereo and PLAYs probe.wav on
# CONNECTED, and hangs up when it has played.
HANDLER = rf"""
role=$1
[ "$role" = echo ] && exec {sys.executable} echo.py
log="$role.log"
on_term() {{
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) echo "RECORD $role.wav stereo"; echo "PLAY probe.wav" ;;
    STOPPED*) echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""

# The echo: what fd 3 gives goes back to fd 4 at once; it logs its descriptors' pipe inodes,
# the rate siproc announced, and how many bytes it echoed and when the first and last came.
ECHO = r"""
import os, sys, threading, time

log = open("echo.log", "a", buffering=1)
log.write(f"FDS {os.fstat(3).st_ino} {os.fstat(4).st_ino} {os.environ['SIPROC_AUDIO_RATE']}\n")


def echo():
    total, first = 0, None
    while True:
        data = os.read(3, 4096)
        if not data:
            break
        if first is None:
            first = time.monotonic()
        total += len(data)
        try:
            os.write(4, data)
        except BrokenPipeError:
            break
    last = time.monotonic()
    log.write(f"FD3 EOF {total} {0 if first is None else last - first:.3f}\n")


thread = threading.Thread(target=echo)
thread.start()
print("ANSWER", flush=True)
for line in sys.stdin:
    log.write("EVENT " + line)
thread.join(5)
log.write("EOF\n")
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", HANDLER)
    (tmp_path / "echo.py").write_text(ECHO)
    t = np.arange(int(BURST * RATE)) / RATE
    burst = 0.5 * np.sin(2 * np.pi * 440 * t)
    probe = np.concatenate([np.zeros(int(LEAD * RATE)), burst, np.zeros(int(TAIL * RATE))])
    soundfile.write(str(tmp_path / "probe.wav"), probe, RATE, subtype="PCM_16")
    return tmp_path


def onset(channel: np.ndarray, rate: int) -> float:  # type: ignore[type-arg]
    """When ``channel`` first gets loud (10 ms blocks), in seconds."""
    block = rate // 100
    for i in range(0, len(channel) - block, block):
        if np.sqrt(np.mean(channel[i : i + block] ** 2)) > 0.1:
            return i / rate
    raise AssertionError("the channel stays silent")


def descriptors(pid: int) -> dict[int, str]:
    """fd -> what it points to, from /proc/PID/fd."""
    out = {}
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out[int(entry.name)] = os.readlink(entry)
        except OSError:
            continue
    return out


def siproc_fds(bob: Siproc) -> dict[int, dict[int, str]]:
    """The descriptors of bob's siproc and of each of its media workers."""
    pids = [bob.proc.pid] + [pid for pid, _ in bob.children(media_workers=True)]
    return {pid: descriptors(pid) for pid in pids}


def settle(bob: Siproc, calls: int) -> dict[int, dict[int, str]]:
    """bob's descriptors once its ``calls``-th call and handler are over (the handler's pipes
    and pidfd close when it is reaped, just after it exits)."""
    bob.wait_for(r"handler exited with status", timeout=10)
    deadline = time.monotonic() + 5
    while bob.count(r"handler exited with status") < calls and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return siproc_fds(bob)


@pytest.mark.parametrize("media_workers", ["1", "0"])  # the pipes in a worker, or in siproc
def test_echo_handler_returns_the_far_end_audio_delayed_and_no_fd_leaks(
    workdir: Path, phones: Callable[..., Siproc], media_workers: str
) -> None:
    env = {
        "SIPROC_MEDIA_WORKERS": media_workers,
        "SIPROC_MEDIA_IDLE": "0",  # the worker is ready before the call, even under load
        "SIPROC_CODEC_PRIORITIES": "PCMU:200",
    }
    bob = phones("echo", env={**env, "SIPROC_AUDIO_FDS": "yes"})
    alice = phones("caller", env=env)
    snapshots = []
    for n in (1, 2):
        (workdir / "caller.log").unlink(missing_ok=True)
        alice.call(bob.uri("bob"))
        wait_file(workdir / "caller.log", ENDED, timeout=20)
        wait_file(workdir / "echo.log", r"^EOF$", timeout=10)
        bob.wait_for(r"audio fds closed: \d+ frames to the handler", timeout=5)
        snapshots.append(settle(bob, n))
        if n == 1:
            rec, rate = soundfile.read(str(workdir / "caller.wav"), always_2d=True)
            heard, sent = rec[:, 0], rec[:, 1]
            delay = onset(heard, rate) - onset(sent, rate)
            print(f"echo delay {delay * 1000:.0f} ms")
            assert 0.02 < delay < 0.4, delay  # the round trip, two jitter buffers and the pipes
            start = int((onset(heard, rate) + 0.05) * rate)
            echoed = heard[start : start + int((BURST - 0.1) * rate)]
            assert goertzel_share(echoed, 440, rate) > 0.8  # her own tone
            level = np.sqrt(np.mean(echoed**2)) / np.sqrt(np.mean(sent[sent != 0] ** 2))
            assert 0.7 < level < 1.3, level  # twice through G.711 and the 16 kHz resampling
            (workdir / "echo.log").rename(workdir / "echo1.log")

    # 16 kHz, 16-bit, in real time: the bytes over the time they took (~3 s of call)
    text = (workdir / "echo1.log").read_text()
    fds_line = next(line for line in text.splitlines() if line.startswith("FDS "))
    inodes, announced = fds_line.split()[1:3], fds_line.split()[3]
    assert announced == "16000"
    eof = next(line for line in text.splitlines() if line.startswith("FD3 EOF "))
    total, seconds = int(eof.split()[2]), float(eof.split()[3])
    assert total % 2 == 0 and seconds > 2.0
    assert total / seconds == pytest.approx(32000, rel=0.06), (total, seconds)

    # no leak: the handler's pipes are nowhere in siproc, and two calls leave what one did
    first, second = snapshots
    for snapshot in (first, second):
        links = {link for fds in snapshot.values() for link in fds.values()}
        for inode in inodes:
            assert f"pipe:[{inode}]" not in links
    assert {pid: len(fds) for pid, fds in second.items()} == {
        pid: len(fds) for pid, fds in first.items()
    }, (first, second)
    bob.wait_for(r"audio fds closed: \d+ frames to the handler, 0 dropped", timeout=1)
