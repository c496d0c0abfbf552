"""Abusive handlers must not hurt siproc or the other calls (DESIGN.md 4.4: real processes).

Callee B runs one handler script that picks its behaviour by the user part of the Request-URI
(`$SIPROC_REQUEST_URI`): `flood` answers and then writes garbage to stdout without end (short
junk lines, binary junk, lines far over the length limit) and never reads its stdin; `deaf`
answers, provokes tens of thousands of ERROR events and never reads them (sleeps forever);
`stubborn` answers, ignores SIGTERM and leaves a `sleep 1000` in its process group; `normal`
does the manual page's example (CONNECTED -> PLAY -> STOPPED -> HANGUP). Caller A places the
four calls with a plain handler. While the abuse runs, the normal call completes in normal time
and B answers OPTIONS fast; after A quits, B has no children, zombies or leftovers and still
serves.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio import make_tone
from tests.integration.test_phone import options_ping
from tests.siproc_proc import Siproc, wait_file, write_handler

TONE_SECONDS = 1.0
OPTIONS_LIMIT = 0.5  # seconds: B must answer OPTIONS this fast while the abuse runs
CLEANUP_LIMIT = 10.0  # seconds after A quit for B to be rid of every handler process
# Refused-command warnings B may log in all: a handler writing garbage in a loop must not turn
# into a log flood (handler.py already warns once for over-long lines and for dropped events).
MAX_REFUSED_WARNINGS = 200

CALLEE_HANDLER = r"""
user=${SIPROC_REQUEST_URI#sip:}; user=${user%%@*}
log="b-$user.log"
stamp() { echo "$(date +%s.%N) $*" >> "$log"; }
stamp "START pid=$$"
case "$user" in
  flood)
    echo ANSWER
    long=$(head -c 100000 /dev/zero | tr '\0' L)
    stamp FLOODING
    while :; do
      yes 'garbage !@#$%^&*() junk' | head -n 5000
      printf '%s\n' "$long"
      printf '\001\377\376 binary junk\r\n\n\r\n'
      printf '%s' "$long" "$long" "$long"
      echo
    done ;;
  deaf)
    echo ANSWER
    for i in $(seq 1 40000); do echo "BOGUS-COMMAND number $i"; done
    stamp FLOODED
    exec sleep 100000 ;;
  stubborn)
    trap '' TERM
    echo ANSWER
    sleep 1000 &
    echo $! > stubborn-sleep.pid
    while :; do
      if read -r line; then stamp "EVENT $line"; else sleep 0.2; fi
    done ;;
  normal)
    echo RINGING
    echo ANSWER
    while read -r line; do
      stamp "EVENT $line"
      case "$line" in
        CONNECTED) echo "PLAY tone.wav" ;;
        "STOPPED tone.wav") echo HANGUP ;;
      esac
    done
    stamp EOF ;;
esac
"""

CALLER_HANDLER = r"""
user=${SIPROC_REQUEST_URI#sip:}; user=${user%%@*}
log="a-$user.log"
trap 'echo "$(date +%s.%N) SIGTERM" >> "$log"; exit 0' TERM
while read -r line; do echo "$(date +%s.%N) EVENT $line" >> "$log"; done
echo "$(date +%s.%N) EOF" >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "callee.sh", CALLEE_HANDLER)
    write_handler(tmp_path / "caller.sh", CALLER_HANDLER)
    make_tone(tmp_path / "tone.wav", 440.0, TONE_SECONDS)
    return tmp_path


@pytest.fixture
def phones(workdir: Path) -> Iterator[tuple[Siproc, Siproc]]:
    # Log level 3 (INFO, the default): what a user runs, and debug lines stay out of the count.
    callee = Siproc(workdir / "callee.sh", cwd=workdir, log_level=3).wait_ready()
    caller = Siproc(workdir / "caller.sh", cwd=workdir).wait_ready()
    try:
        yield caller, callee
    finally:
        leftovers = [(pid, state) for pid, state in callee.children()]
        for proc in (caller, callee):
            proc.stop()
        killed = _kill_leftovers(workdir)
        print(f"--- caller A ---\n{caller.stderr()}\n--- callee B ---\n{callee.stderr()}")
        print(f"B's children at teardown: {leftovers}; leftovers killed: {killed}")


def _kill_leftovers(workdir: Path) -> list[int]:
    """Test hygiene if siproc failed: SIGKILL every process still working in `workdir`.

    Only this test's processes have that fresh directory as their working directory (siproc
    runs there, its handlers and their children inherit it).
    """
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != workdir:
                continue
            os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue
        killed.append(int(entry.name))
    return killed


def _sleep_pid(workdir: Path) -> int | None:
    path = workdir / "stubborn-sleep.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _is_our_sleep(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = _stat(pid)[0]
    except OSError:
        return False
    return cmdline[:2] == [b"sleep", b"1000"] and state != "Z"


def _events(log_text: str) -> list[tuple[float, str]]:
    out = []
    for line in log_text.splitlines():
        stamp, _, rest = line.partition(" ")
        out.append((float(stamp), rest))
    return out


def _timed_options(callee: Siproc) -> float:
    start = time.monotonic()
    response = options_ping("127.0.0.1", callee.port, timeout=5.0)
    elapsed = time.monotonic() - start
    assert response.startswith("SIP/2.0 200 OK\r\n"), response
    return elapsed


def test_abusive_handlers_do_not_hurt_siproc_or_other_calls(
    workdir: Path, phones: tuple[Siproc, Siproc]
) -> None:
    caller, callee = phones
    for user in ("flood", "deaf", "stubborn"):
        caller.call(callee.uri(user))
    for user in ("flood", "deaf", "stubborn"):
        wait_file(workdir / f"a-{user}.log", r"EVENT CONNECTED$", timeout=10)
    wait_file(workdir / "b-flood.log", r"FLOODING$")
    wait_file(workdir / "b-deaf.log", r"FLOODED$", timeout=20)
    wait_file(workdir / "b-stubborn.log", r"EVENT CONNECTED$")
    sleep_pid = _sleep_pid(workdir)
    assert sleep_pid is not None and _is_our_sleep(sleep_pid)
    stubborn_pid = int(re.findall(r"START pid=(\d+)", (workdir / "b-stubborn.log").read_text())[0])
    assert int(_stat(sleep_pid)[2]) == stubborn_pid, "the sleep is not in the handler's group"

    # The abuse is under way: garbage refused, over-long lines skipped, unread events dropped.
    callee.wait_for(r"handler command \S+ refused", timeout=10)
    callee.wait_for(r"handler wrote a line over \d+ bytes", timeout=10)
    callee.wait_for(r"handler is not reading its stdin .*dropping events", timeout=20)

    # A fourth, normal call goes through the manual page's flow in normal time.
    started = time.time()
    caller.call(callee.uri("normal"))
    b_log = wait_file(workdir / "b-normal.log", r"EOF$", timeout=15)
    b_events = _events(b_log)
    names = [name for _, name in b_events]
    assert len(names) == 5, b_log
    assert names[1:3] == ["EVENT CONNECTED", "EVENT STOPPED tone.wav"], b_log
    assert names[3].startswith("EVENT DISCONNECTED 200"), b_log
    assert names[4] == "EOF", b_log
    connected_at = b_events[1][0]
    stopped_at = b_events[2][0]
    ended_at = b_events[3][0]
    assert connected_at - started < 3.0, f"answering took {connected_at - started:.2f} s"
    assert TONE_SECONDS - 0.2 < stopped_at - connected_at < TONE_SECONDS + 1.5
    assert ended_at - stopped_at < 1.5, f"HANGUP to DISCONNECTED took {ended_at - stopped_at:.2f} s"
    a_log = wait_file(workdir / "a-normal.log", r"(SIGTERM|EOF)$")
    # The normal handler is reaped; the three abusive ones run on, none a zombie.
    deadline = time.monotonic() + 3.0
    while len(callee.children()) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = callee.children()
    assert len(children) == 3 and all(state != "Z" for _, state in children), children
    a_names = [name for _, name in _events(a_log)]
    assert a_names[:2] == ["EVENT RINGING", "EVENT CONNECTED"], a_log  # the callee's 180
    assert a_names[2].startswith("EVENT DISCONNECTED 200"), a_log

    # B stays responsive while the three abusive handlers keep going.
    delays = [_timed_options(callee) for _ in range(10)]
    assert max(delays) < OPTIONS_LIMIT, f"OPTIONS round trips: {delays}"
    assert _is_our_sleep(sleep_pid), "the stubborn handler's sleep should still be running"
    assert callee.proc.poll() is None

    # The caller quits: BYE for the three calls; B must end every handler and leftover.
    assert caller.quit(timeout=20) == 0
    deadline = time.monotonic() + CLEANUP_LIMIT
    while time.monotonic() < deadline:
        if not callee.children() and not _is_our_sleep(sleep_pid):
            break
        time.sleep(0.1)
    assert callee.children() == [], f"B still has children: {callee.children()}"
    assert not _is_our_sleep(sleep_pid), "the stubborn handler's `sleep 1000` survived"
    assert callee.count(r"call ended: 200 remote hangup") >= 3
    assert callee.proc.poll() is None, "B died"
    assert _timed_options(callee) < OPTIONS_LIMIT
    stderr = "\n".join(callee.lines)
    assert "Traceback" not in stderr
    assert not re.search(r"internal error| raised for |callback failed", stderr)
    refused = callee.count(r"WARNING.*handler command \S+ refused")
    assert refused <= MAX_REFUSED_WARNINGS, (
        f"{refused} 'handler command ... refused' warnings: one per garbage line floods the log"
    )
    assert callee.quit() == 0
