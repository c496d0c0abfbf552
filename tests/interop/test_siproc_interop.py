"""siproc against real third-party SIP software: Kamailio, baresip and SIPp (DESIGN.md 4.5).

Every test runs real processes on 127.0.0.1: a Kamailio registrar/proxy with digest auth, baresip
phones driven over ctrl_tcp (recording what they hear), SIPp scenarios, and siproc itself with bash
handler scripts. A siproc handler here (``EVENT_HANDLER``) writes its SIPROC_* environment and
every event it reads to a file, so the tests check what a handler really sees.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.audio import dominant_frequency, make_tone, rms
from tests.peers import Baresip, Kamailio, Sipp
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]
MakeSipp = Callable[..., Sipp]

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ALICE_PASSWORD = "alice-secret"
BOB_PASSWORD = "bob-secret"
SKIP_SECONDS = 0.2  # call setup and jitter buffer fill at the start of a recording
ENDED = r"^(SIGTERM|EOF)$"  # the last line an EVENT_HANDLER writes

# The manual page's EXAMPLE, verbatim (siproc-original-manpage.txt, "PARENT PROCESS" and
# "HANDLER"); only the account settings differ (the addresses of the test's Kamailio).
MANUAL_PARENT = """\
export SIPROC_USERNAME="alice"
export SIPROC_PASSWORD="{password}"
export SIPROC_ID_URI='Alice <sip:alice@{hostport}>'
export SIPROC_REGISTRAR_URI='sip:{hostport}'

while read uri
do
\techo "CALL $uri"
done | siproc ./handle.sh message.wav
"""

MANUAL_HANDLER = """\
#!/bin/bash

echo "$SIPROC_REMOTE_URI" >> log

if [ "$SIPROC_OUTGOING" == "n" ]
then
\techo "ANSWER"
fi

while read line
do
\tcase "$line" in
\t\t"CONNECTED")
\t\t\techo "PLAY $1"
\t\t;;
\t\t"STOPPED"*)
\t\t\techo "HANGUP"
\t\t;;
\tesac
done
"""

# EVENT_HANDLER LOGFILE MODE [FILE]: logs "ENV NAME=value" for each SIPROC_* variable, then
# "EVENT <line>" for every event, and "EOF" or "SIGTERM" as its last line. MODE:
#   answer      RINGING, ANSWER; PLAY FILE on CONNECTED
#   ring        RINGING only
#   exit        exits at once, before answering
#   play        (outgoing) PLAY FILE on CONNECTED, HANGUP on STOPPED
#   hangup      (outgoing) HANGUP on CONNECTED
EVENT_HANDLER = r"""
log=$1; mode=$2; file=$3
# On SIGTERM, log what is left on stdin (the DISCONNECTED line) before leaving.
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
env | grep '^SIPROC_' | sort | sed 's/^/ENV /' >> "$log"
case "$mode" in
  answer) echo RINGING; echo ANSWER ;;
  ring) echo RINGING ;;
  exit) echo EXIT >> "$log"; exit 0 ;;
esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    answer:CONNECTED|play:CONNECTED) [ -n "$file" ] && echo "PLAY $file" ;;
    play:STOPPED*) echo HANGUP ;;
    hangup:CONNECTED) echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""


# --------------------------------------------------------------------------------------------
# Helpers


def handler_env(text: str) -> dict[str, str]:
    """The SIPROC_* variables an EVENT_HANDLER logged."""
    pairs = (line[4:].partition("=") for line in text.splitlines() if line.startswith("ENV "))
    return {name: value for name, _, value in pairs}


def handler_events(text: str) -> list[str]:
    """The event lines an EVENT_HANDLER logged, in order."""
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def assert_heard(phone: Baresip, freq_hz: float) -> None:
    """The phone's one recording of what it heard holds a loud tone of ``freq_hz``."""
    [heard] = phone.recordings("dec")
    assert dominant_frequency(heard, skip_seconds=SKIP_SECONDS) == pytest.approx(freq_hz, abs=10)
    assert rms(heard, skip_seconds=SKIP_SECONDS) > 0.05


def account_env(kamailio: Kamailio, user: str, password: str, **extra: str) -> dict[str, str]:
    """siproc's SIPROC_* account settings for ``user`` at ``kamailio``."""
    return {
        "SIPROC_REGISTRAR_URI": kamailio.uri,
        "SIPROC_ID_URI": kamailio.aor(user),
        "SIPROC_USERNAME": user,
        "SIPROC_PASSWORD": password,
        **extra,
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """siproc's working directory, with the EVENT_HANDLER as ``h.sh``."""
    return handler_dir(tmp_path / "siproc", EVENT_HANDLER)


# --------------------------------------------------------------------------------------------
# 1. The manual page's example


def _siproc_shim(bin_dir: Path) -> Path:
    """A ``siproc`` command for PATH that runs this checkout's siproc with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "siproc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m siproc "$@"\n')
    shim.chmod(0o755)
    return shim


def _wait_log(path: Path, pattern: str, timeout: float, proc: subprocess.Popen[bytes]) -> str:
    """Wait for a line matching ``pattern`` in the log file of ``proc``; return the match."""
    regex = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(path.read_text(errors="replace"))
        if match:
            return match.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"never logged {pattern!r}; log:\n{path.read_text(errors='replace')}")


def test_manual_page_example_calls_baresip_through_kamailio(
    tmp_path: Path, kamailio: Kamailio, make_baresip: MakeBaresip
) -> None:
    """The manual's parent loop and handle.sh, verbatim: bob hears message.wav, log has bob."""
    kamailio.add_user("alice", ALICE_PASSWORD)
    kamailio.add_user("bob", BOB_PASSWORD)
    bob = make_baresip("bob", kamailio, password=BOB_PASSWORD, record=True)
    bob.wait_registered()

    work = tmp_path / "manual"
    work.mkdir()
    (work / "parent.sh").write_text(
        MANUAL_PARENT.format(password=ALICE_PASSWORD, hostport=kamailio.hostport)
    )
    (work / "handle.sh").write_text(MANUAL_HANDLER)
    (work / "handle.sh").chmod(0o755)
    make_tone(work / "message.wav", 440.0, 2.0)
    bin_dir = _siproc_shim(tmp_path / "bin").parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        SIPROC_BIND_ADDRESS="127.0.0.1",
        SIPROC_TRANSPORT_PORT="0",
        SIPROC_LOG_LEVEL="4",
        PYTHONUNBUFFERED="1",
    )
    stderr_path = work / "siproc.log"
    with open(stderr_path, "wb") as stderr:
        parent = subprocess.Popen(
            ["bash", "parent.sh"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=work,
            env=env,
            start_new_session=True,
        )
    assert parent.stdin is not None
    try:
        ready = _wait_log(stderr_path, r"siproc\[(\d+)\].*ready on SIP port \d+", 15, parent)
        siproc_pid = int(re.search(r"siproc\[(\d+)\]", ready).group(1))  # type: ignore[union-attr]
        _wait_log(stderr_path, r"registered as sip:alice@", 10, parent)

        parent.stdin.write(f"{kamailio.aor('bob')}\n".encode())
        parent.stdin.flush()
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        # message.wav lasts 2 s; then handle.sh says HANGUP.
        bob.wait_event("CALL_CLOSED", timeout=10)
        _wait_log(stderr_path, r"call ended: 200", 5, parent)

        assert (work / "log").read_text() == f"{kamailio.aor('bob')}\n"
        assert_heard(bob, 440.0)
        assert "REQ INVITE sip:bob@" in kamailio.log()

        # End of the URI list is not QUIT; SIGTERM is a graceful shutdown, and the pipeline's
        # status is siproc's.
        parent.stdin.close()
        _wait_log(stderr_path, r"end of standard input", 5, parent)
        os.kill(siproc_pid, signal.SIGTERM)
        assert parent.wait(15) == 0
    finally:
        if parent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(5)
        print(f"--- manual example siproc ---\n{stderr_path.read_text(errors='replace')}")


# --------------------------------------------------------------------------------------------
# 2. baresip calls siproc through Kamailio


def test_baresip_calls_siproc_through_kamailio_and_hangs_up(
    workdir: Path,
    kamailio: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    kamailio.add_user("alice", ALICE_PASSWORD)
    kamailio.add_user("bob", BOB_PASSWORD)
    make_tone(workdir / "tone.wav", 660.0, 6.0)
    alice = make_siproc(
        "alice.log", "answer", "tone.wav", env=account_env(kamailio, "alice", ALICE_PASSWORD)
    )
    alice.wait_for(r"registered as sip:alice@", timeout=10)
    bob = make_baresip("bob", kamailio, password=BOB_PASSWORD, record=True)
    bob.wait_registered()

    bob.dial(kamailio.aor("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "alice.log", r"^EVENT CONNECTED$")
    time.sleep(2.0)
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)

    text = wait_file(workdir / "alice.log", ENDED)
    env = handler_env(text)
    assert env["SIPROC_OUTGOING"] == "n"
    assert env["SIPROC_REMOTE_URI"] == kamailio.aor("bob")
    assert env["SIPROC_REQUEST_URI"].startswith("sip:alice@127.0.0.1:")
    assert env["SIPROC_CALL_ID"]
    assert "SIPROC_PASSWORD" not in env
    events = handler_events(text)
    assert events[0] == "CONNECTED"
    assert events[-1].startswith("DISCONNECTED 200"), events
    assert not any(e.startswith("ERROR") for e in events), events
    alice.wait_for(r"call ended: 200 remote hangup")
    assert "REQ BYE" in kamailio.log(), "baresip's BYE must follow the Record-Route"
    assert_heard(bob, 660.0)


# --------------------------------------------------------------------------------------------
# 3. Unanswered calls: CANCEL, and a handler that exits before answering


def test_baresip_cancels_before_siproc_answers(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "ring")
    bob = make_baresip("bob")
    bob.dial(alice.uri("alice"))
    bob.wait_event("CALL_RINGING", timeout=5)
    time.sleep(1.0)
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    assert "CONNECTED" not in events
    assert events[-1].startswith("DISCONNECTED 487"), events
    assert handler_env(text)["SIPROC_OUTGOING"] == "n"
    alice.wait_for(r"call ended: 487 cancelled by the caller")


def test_handler_exit_before_answer_gives_baresip_480(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "exit")
    bob = make_baresip("bob")
    bob.dial(alice.uri("alice"))
    closed = bob.wait_event("CALL_CLOSED", timeout=5)
    assert "480 Temporarily Unavailable" in closed.get("param", ""), closed
    assert "CALL_ESTABLISHED" not in bob.event_types()
    assert wait_file(workdir / "alice.log", r"^EXIT$")


# --------------------------------------------------------------------------------------------
# 4. A wrong password


def test_wrong_password_is_one_clear_error_and_no_retry_storm(
    kamailio: Kamailio, make_siproc: Callable[..., Siproc]
) -> None:
    kamailio.add_user("alice", ALICE_PASSWORD)
    alice = make_siproc(
        "alice.log",
        "answer",
        env=account_env(kamailio, "alice", "not-the-password"),
        log_level=6,  # every SIP message in the log: count the REGISTERs sent
    )
    failure = alice.wait_for(r"registration failed: .*", timeout=5).group(0)
    assert "wrong username or password" in failure, failure
    assert "next try in 30 s" in failure, failure
    time.sleep(3.0)  # a retry storm would show up well within this

    assert alice.proc.poll() is None, "a wrong password must not stop siproc"
    assert alice.count(r"registration failed:") == 1, alice.stderr()
    sent = alice.count(r"^\s*REGISTER sip:")
    received = kamailio.log().count("REQ REGISTER")
    assert 1 <= sent <= 3, alice.stderr()
    assert received == sent, kamailio.log()
    assert "not-the-password" not in alice.stderr(), "the password must never be logged"
    assert alice.count(r" (ERROR|WARNING|CRITICAL) ") == 1, alice.stderr()


# --------------------------------------------------------------------------------------------
# 5. SIPp as caller and as callee


def _sipp_successful_calls(sipp: Sipp) -> int:
    """The SuccessfulCall(C) counter of the last line of sipp's -trace_stat CSV."""
    [stats] = [p for p in sipp.workdir.glob("*.csv") if "rtt" not in p.name]
    rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";"))
    column = rows[0].index("SuccessfulCall(C)")
    return int(rows[-1][column])


def test_sipp_uac_calls_siproc_directly(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "answer")
    uac = make_sipp(
        SIPP_DIR / "uac_basic.xml",
        f"127.0.0.1:{alice.port}",
        timeout=15,
        extra_args=["-s", "alice"],
    )
    result = uac.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:]
    assert _sipp_successful_calls(uac) == 1

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    assert events[0] == "CONNECTED"
    assert events[-1].startswith("DISCONNECTED 200"), events
    assert handler_env(text)["SIPROC_REMOTE_URI"].startswith("sip:sipp@127.0.0.1:")


def test_siproc_calls_sipp_uas_and_hangs_up(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    uas = make_sipp("uas", timeout=15)
    uas.wait_listening()
    alice = make_siproc("alice.log", "hangup")
    alice.call(uas.uri)

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    assert events[:2] == ["RINGING", "CONNECTED"], events  # SIPp's 180, then its 200
    assert events[-1].startswith("DISCONNECTED 200"), events
    env = handler_env(text)
    assert env["SIPROC_OUTGOING"] == "y"
    assert env["SIPROC_REMOTE_URI"] == uas.uri
    result = uas.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:]
    assert _sipp_successful_calls(uas) == 1


# --------------------------------------------------------------------------------------------
# 6. siproc over TCP


def test_siproc_over_tcp_registers_and_calls_baresip(
    workdir: Path,
    kamailio: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    kamailio.add_user("alice", ALICE_PASSWORD)
    kamailio.add_user("bob", BOB_PASSWORD)
    bob = make_baresip("bob", kamailio, password=BOB_PASSWORD, record=True)
    make_tone(workdir / "tone.wav", 550.0, 2.0)
    alice = make_siproc(
        "alice.log",
        "play",
        "tone.wav",
        env=account_env(
            kamailio, "alice", ALICE_PASSWORD, SIPROC_REGISTRAR_URI=f"{kamailio.uri};transport=tcp"
        ),
    )
    alice.wait_for(r"registered as sip:alice@", timeout=10)
    bob.wait_registered()

    alice.call(kamailio.aor("bob"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_event("CALL_CLOSED", timeout=10)  # alice hangs up when the tone ends

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    # Kamailio relays the 180 and the 200 from two TCP workers; the 200 can overtake the 180, and
    # a 1xx after the 2xx is rightly dropped, so RINGING is optional here.
    assert [e for e in events if e != "RINGING"][:2] == ["CONNECTED", "STOPPED tone.wav"], events
    assert events[-1].startswith("DISCONNECTED 200"), events
    log = kamailio.log()
    assert re.search(r"REQ REGISTER \S+ from 127\.0\.0\.1:\d+/tcp", log), log
    assert re.search(r"REQ INVITE sip:bob@\S+ from 127\.0\.0\.1:\d+/tcp", log), log
    assert re.search(r"REQ BYE \S+ from 127\.0\.0\.1:\d+/tcp", log), log
    assert_heard(bob, 550.0)


def test_reinvite_is_answered_with_the_current_session(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    """A re-INVITE mid-call gets a 200 whose SDP answers the new offer (sendonly -> recvonly)."""
    alice = make_siproc("alice.log", "answer")
    uac = make_sipp(
        SIPP_DIR / "uac_reinvite.xml",
        f"127.0.0.1:{alice.port}",
        timeout=15,
        extra_args=["-s", "alice"],
    )
    result = uac.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:]
    assert _sipp_successful_calls(uac) == 1
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events[0] == "CONNECTED"
    assert events.count("CONNECTED") == 1  # the re-INVITE is no new call for the handler
    assert events[-1].startswith("DISCONNECTED 200"), events


def test_quit_removes_the_registration(
    workdir: Path,
    kamailio: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    """QUIT un-REGISTERs (Expires: 0): calls to the account then fail at the registrar."""
    kamailio.add_user("alice", "alice-secret")
    kamailio.add_user("bob", "bob-secret")
    alice = make_siproc("alice.log", "answer", env=account_env(kamailio, "alice", "alice-secret"))
    alice.wait_for(r"registered as", timeout=10)
    assert alice.quit() == 0
    alice.wait_for(r"unregistered \(200\)")
    bob = make_baresip("bob", registrar=kamailio, password="bob-secret")
    bob.wait_registered()
    bob.dial(kamailio.aor("alice"))
    closed = bob.wait_event("CALL_CLOSED", timeout=10)
    assert "480" in str(closed.get("param", "")) or "404" in str(closed.get("param", "")), closed
