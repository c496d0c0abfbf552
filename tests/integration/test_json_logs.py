"""SIPROC_LOG_FORMAT=json (siproc/logs.py) with two real siproc processes at log level 6: every
line either process (and its media workers) writes on stderr during a call is one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio import make_tone
from tests.siproc_proc import wait_file, write_handler

# Writes nothing on stderr (a handler's stderr is siproc's, and is not JSON).
HANDLER = r"""
role=$1
trap 'echo SIGTERM >> "$role.log"; exit 0' TERM
[ "$role" = bob ] && { echo RINGING; echo ANSWER; }
while read -r line; do
  echo "EVENT $line" >> "$role.log"
  case "$role $line" in
    "alice CONNECTED") echo "PLAY tone.wav" ;;
    "alice STOPPED"*) echo HANGUP ;;
  esac
done
echo EOF >> "$role.log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", HANDLER)
    make_tone(tmp_path / "tone.wav", 440.0, 0.5)
    return tmp_path


def parsed(lines: list[str], who: str) -> list[dict[str, object]]:
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"{who} stderr line {number} is not JSON ({exc}): {line!r}"
            raise AssertionError(message) from None
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize("media_workers", ["0", "1"])
def test_every_line_of_a_call_at_level_6_is_json(
    workdir: Path,
    phones,  # type: ignore[no-untyped-def]
    media_workers: str,
) -> None:
    env = {
        "SIPROC_LOG_FORMAT": "json",
        "SIPROC_MEDIA_WORKERS": media_workers,
        "SIPROC_MEDIA_IDLE": "0",  # with workers: the call's media runs in one
    }
    bob = phones("bob", log_level=6, env=env)
    alice = phones("alice", log_level=6, env=env)
    alice.call(bob.uri("bob"))
    assert "EVENT DISCONNECTED 200" in wait_file(workdir / "bob.log", r"^(SIGTERM|EOF)$")
    wait_file(workdir / "alice.log", r"^(SIGTERM|EOF)$")
    alice.wait_for(r"call ended: 200")
    bob.wait_for(r"call ended: 200 remote hangup")
    assert alice.quit() == 0 and bob.quit() == 0
    for proc, who in ((alice, "alice"), (bob, "bob")):
        proc.stop()
        entries = parsed(proc.lines, who)
        keys = {"time", "level", "logger", "program", "pid", "message"}
        assert all(keys <= entry.keys() for entry in entries)
        # the SIP trace: the message in a field of its own, tagged with its call
        traced = [e for e in entries if "sip" in e]
        invites = [e for e in traced if str(e["sip"]).startswith("INVITE sip:bob@")]
        assert invites, f"{who}: no INVITE in the trace"
        assert all(
            e["message"] == "send" or str(e["message"]).startswith(("send to ", "recv from "))
            for e in traced
        )
        calls = {e["call"] for e in invites}
        assert len(calls) == 1
        (call,) = calls
        ended = [e for e in entries if str(e["message"]).startswith("call ended: 200")]
        assert [e["call"] for e in ended] == [call]
        assert not any(str(e["message"]).startswith("[call ") for e in entries)
        if media_workers == "1":
            assert any(e["program"] == "siproc-media" for e in entries), who


def test_a_bad_log_format_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    handler = write_handler(tmp_path / "h.sh", "exit 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "siproc", str(handler)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")},
            "SIPROC_LOG_FORMAT": "xml",
            "SIPROC_BIND_ADDRESS": "127.0.0.1",  # should it start after all: loopback only
            "SIPROC_TRANSPORT_PORT": "0",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == "siproc: SIPROC_LOG_FORMAT: must be one of text, json, not 'xml'\n"
