"""SIPROC_AUDIO_FDS between two real siproc processes on loopback.

* bob's handler is a Python echo (reads fd 3, writes it back to fd 4); alice plays a probe
  (silence, a 440 Hz burst, silence) and records the call in stereo. Her recording holds her
  own burst, delayed by the round trip, as loud as she sent it; bob's handler got 16 kHz PCM in
  real time. After each call no descriptor of the handler's pipes is left in bob's siproc or its
  media worker, and their descriptor counts are back where they were (two calls in a row, with
  and without media workers).
* bob's handler writes 4 s of tone at once and never reads: its write blocks about 3 s (read
  20 ms per tick), alice hears all 4 s, fd 3's frames are dropped and counted, no RTP gap.
* The handler exiting mid-call, and the media worker killed mid-call: every descriptor closes.
"""

from __future__ import annotations

import os
import signal
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

# ROLE [MODE]: "echo" runs echo.py MODE; "caller" RECORDs in stereo and PLAYs probe.wav on
# CONNECTED, and hangs up when it has played; "listener" RECORDs and hangs up after 6 s.
HANDLER = rf"""
role=$1
[ "$role" = echo ] && exec {sys.executable} echo.py "$2"
log="$role.log"
on_term() {{
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$role:$line" in
    caller:CONNECTED) echo "RECORD $role.wav stereo"; echo "PLAY probe.wav" ;;
    caller:STOPPED*) echo HANGUP ;;
    listener:CONNECTED) echo "RECORD $role.wav stereo"; (sleep 6; echo HANGUP) & ;;
  esac
done
echo EOF >> "$log"
"""

# MODE "echo": what fd 3 gives goes back to fd 4 at once. "quit": echo for 1 s, then exit.
# "flood": never read fd 3; write 4 s of 440 Hz to fd 4 in one write, and log how long it
# blocked. Every mode logs its descriptors' pipe inodes, the rate siproc announced, and (while
# it reads fd 3) how many bytes came over how long.
ECHO = r"""
import os, sys, threading, time

mode = sys.argv[1]
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
        if mode == "quit" and time.monotonic() - first > 1.0:
            log.write("QUIT\n")
            os._exit(0)
    last = time.monotonic()
    log.write(f"FD3 EOF {total} {0 if first is None else last - first:.3f}\n")


def flood():
    n = __import__("numpy")
    t = n.arange(4 * 16000) / 16000
    tone = (0.5 * 32767 * n.sin(2 * n.pi * 440 * t)).astype("<i2").tobytes()
    start = time.monotonic()
    os.write(4, tone)
    log.write(f"WROTE {len(tone)} {time.monotonic() - start:.3f}\n")


thread = threading.Thread(target=flood if mode == "flood" else echo)
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


def pipe_links(bob: Siproc) -> set[str]:
    """The pipes bob's siproc and its media workers hold."""
    return {link for fds in siproc_fds(bob).values() for link in fds.values() if "pipe:" in link}


def main_pipes(bob: Siproc) -> set[str]:
    """The pipes bob's siproc itself holds (its stdin, stdout, stderr, and handlers' pipes)."""
    return {link for link in descriptors(bob.proc.pid).values() if "pipe:" in link}


def handler_pipes(workdir: Path) -> list[str]:
    """The pipes the handler had as fd 3 and fd 4, as /proc names them."""
    text = wait_file(workdir / "echo.log", r"^FDS ")
    line = next(line for line in text.splitlines() if line.startswith("FDS "))
    return [f"pipe:[{inode}]" for inode in line.split()[1:3]]


ENV = {"SIPROC_MEDIA_IDLE": "0", "SIPROC_CODEC_PRIORITIES": "PCMU:200"}


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
    bob = phones("echo", "echo", env={**env, "SIPROC_AUDIO_FDS": "yes"})
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


def test_a_handler_that_writes_ahead_is_throttled_and_one_that_does_not_read_loses_audio(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    """bob's handler writes 4 s of tone to fd 4 at once and never reads fd 3: its write takes
    about 3 s (siproc takes 20 ms per tick; the pipe holds 1 s), alice hears 4 s of tone, and
    what bob's handler did not read of fd 3 is dropped, counted, with the call going on."""
    bob = phones("echo", "flood", env={**ENV, "SIPROC_AUDIO_FDS": "yes"})
    alice = phones("listener", env=ENV)
    alice.call(bob.uri("bob"))
    wait_file(workdir / "listener.log", ENDED, timeout=20)
    text = wait_file(workdir / "echo.log", r"^EOF$", timeout=10)
    wrote = next(line for line in text.splitlines() if line.startswith("WROTE "))
    size, seconds = int(wrote.split()[1]), float(wrote.split()[2])
    assert size == 4 * 32000
    assert 2.5 < seconds < 4.0, seconds  # blocked while siproc played it, 20 ms per 20 ms
    match = bob.wait_for(r"audio fds closed: (\d+) frames to the handler, (\d+) dropped")
    written, dropped = int(match.group(1)), int(match.group(2))
    assert 40 <= written <= 60, written  # 1 s of pipe, then nothing more fits
    assert dropped > 200, dropped  # the rest of the 6 s call, dropped and counted
    match = bob.wait_for(r"call ended: 200 .*RTP: (\d+) packets sent, (\d+) received\) (.*)")
    assert int(match.group(2)) > 250 and match.group(3).startswith("lost 0 ")  # no gap
    rec, rate = soundfile.read(str(workdir / "listener.wav"), always_2d=True)
    heard = rec[:, 0]
    block = rate // 50
    tone = sum(
        goertzel_share(heard[i : i + block], 440, rate) > 0.8
        and np.sqrt(np.mean(heard[i : i + block] ** 2)) > 0.1
        for i in range(0, len(heard) - block, block)
    )
    assert tone == pytest.approx(200, abs=8), tone  # all of the 4 s, none lost


@pytest.mark.parametrize("ending", ["handler exits", "worker dies"])
def test_every_descriptor_closes_when_the_handler_exits_or_the_worker_dies(
    workdir: Path, phones: Callable[..., Siproc], ending: str
) -> None:
    """During the call only the worker holds siproc's ends (the main process kept no copy);
    after it, whether the handler exited first (siproc hangs up) or the worker was killed
    (the handler reads end of file; siproc hangs up), nobody holds them, and the main
    process has the pipes it had before."""
    mode = "quit" if ending == "handler exits" else "echo"
    env = {**ENV, "SIPROC_MEDIA_WORKERS": "1"}
    bob = phones("echo", mode, env={**env, "SIPROC_AUDIO_FDS": "yes"})
    alice = phones("listener", env=env)
    main_before = main_pipes(bob)
    alice.call(bob.uri("bob"))
    theirs = set(handler_pipes(workdir))
    wait_file(workdir / "listener.log", r"CONNECTED", timeout=10)
    [(worker, _)] = bob.children(media_workers=True)
    assert theirs <= set(descriptors(worker).values())  # the worker has siproc's ends
    assert not theirs & main_pipes(bob)  # and the main process none
    if ending == "worker dies":
        time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
    text = wait_file(workdir / "echo.log", r"^(EOF|QUIT)$", timeout=10)
    assert ("FD3 EOF" if ending == "worker dies" else "QUIT") in text
    wait_file(workdir / "listener.log", ENDED, timeout=10)  # bob hung up
    settle(bob, 1)
    assert not theirs & pipe_links(bob)
    assert main_pipes(bob) == main_before
