"""The call limits of siproc(1) LIMITS between two real siprocs: an incoming call that rings
too long gets 480 (SIPROC_RING_TIMEOUT), a call that lasts too long is hung up
(SIPROC_MAX_CALL_DURATION), and a connected call whose far end stops sending RTP is hung up
(SIPROC_RTP_TIMEOUT: the far end's processes are stopped with SIGSTOP). The handlers see why."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.siproc_proc import MakePhone, handler_dir, wait_file

HANDLER = r"""
role=$1 mode=$2
log="$role.log"
echo "START $SIPROC_OUTGOING" >> "$log"
[ "$mode" = answer ] && echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER)


def test_an_unanswered_call_gets_480_after_the_ring_timeout(
    workdir: Path, phones: MakePhone
) -> None:
    bob = phones("bob", "ring", env={"SIPROC_RING_TIMEOUT": "1"})
    alice = phones("alice", "wait")
    started = time.monotonic()
    alice.call(bob.uri("bob"))
    alice_log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED", timeout=10)
    assert "EVENT DISCONNECTED 480" in alice_log
    assert 0.9 < time.monotonic() - started < 5
    assert "EVENT DISCONNECTED 480 no answer" in wait_file(workdir / "bob.log", r"^EOF")


def test_a_call_is_hung_up_at_its_maximum_duration(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer", env={"SIPROC_MAX_CALL_DURATION": "2"})
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "alice.log", r"EVENT CONNECTED")
    bob_log = wait_file(workdir / "bob.log", r"EVENT DISCONNECTED", timeout=10)
    assert "EVENT DISCONNECTED 200 maximum call duration" in bob_log
    assert "EVENT DISCONNECTED 200" in wait_file(workdir / "alice.log", r"EVENT DISCONNECTED")


def test_a_call_without_rtp_is_hung_up(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob", "answer", env={"SIPROC_RTP_TIMEOUT": "2"})
    alice = phones("alice", "wait")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "alice.log", r"EVENT CONNECTED")
    time.sleep(3)  # RTP flows both ways: no timeout
    assert "DISCONNECTED" not in (workdir / "bob.log").read_text()
    stopped = [alice.proc.pid] + [pid for pid, _ in alice.children(media_workers=True)]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        bob.wait_for(r"no RTP for [23] s", timeout=10)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    # Bob's BYE is answered once Alice runs again (a far end that is gone for good would end
    # Bob's BYE transaction after 64*T1 instead).
    bob_log = wait_file(workdir / "bob.log", r"EVENT DISCONNECTED", timeout=10)
    assert "EVENT DISCONNECTED 200 no RTP from the far end" in bob_log
