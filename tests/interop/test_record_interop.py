"""RECORD against a real baresip (issue 3 acceptance): "The RECORD file is valid and complete after
a remote hangup, a HANGUP and a SIGKILL of the handler."

baresip (``audio_source``: a 550 Hz tone) calls siproc directly on 127.0.0.1; siproc's handler
answers and, on CONNECTED, says ``RECORD rec.wav``. The call then ends three ways: baresip hangs
up, the handler says HANGUP, or the test SIGKILLs the handler (siproc survives, notices the
handler is gone and sends BYE). Each time the WAV opens with soundfile, its header counts exactly
the data written, it lasts as long as the call was connected (within 0.3 s), and it holds the
peer's tone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile

from tests.audio import dominant_frequency, duration, rms, wav_data_frames
from tests.peers import Baresip
from tests.siproc_proc import MakePhone, Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]

TONE_HZ = 550.0
TALK_SECONDS = 2.0  # how long the call stays connected before it is ended
TOLERANCE = 0.3  # seconds: recorded duration vs connected time
SKIP_SECONDS = 0.2  # jitter buffer fill at the start of the recording

# LOGFILE MODE: writes its pid to handler.pid, answers, and logs each event with the time it
# read it ($EPOCHREALTIME, seconds since the epoch). On CONNECTED: RECORD rec.wav; in mode
# "hangup" also HANGUP after TALK_SECONDS.
HANDLER = rf"""
log=$1; mode=$2
echo $$ > handler.pid
on_term() {{
  while read -r -t 1 line; do echo "EVENT $EPOCHREALTIME $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
echo ANSWER
while read -r line; do
  echo "EVENT $EPOCHREALTIME $line" >> "$log"
  case "$line" in
    CONNECTED)
      echo "RECORD rec.wav"
      if [ "$mode" = hangup ]; then sleep {TALK_SECONDS}; echo HANGUP; fi ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER)


@pytest.fixture
def siproc(make_siproc: MakePhone) -> Callable[[str], Siproc]:
    """``siproc(mode)``: a ready siproc whose handler logs to handler.log in ``mode``."""
    return lambda mode: make_siproc("handler.log", mode)


def connected_at(workdir: Path) -> float:
    """The wall-clock time at which the handler read CONNECTED."""
    text = wait_file(workdir / "handler.log", r"^EVENT \S+ CONNECTED$")
    [line] = [line for line in text.splitlines() if line.endswith(" CONNECTED")]
    return float(line.split()[1])


def start_call(
    make_baresip: MakeBaresip,
    tone_wav: Callable[..., Path],
    siproc: Callable[[str], Siproc],
    workdir: Path,
    mode: str,
) -> tuple[Siproc, Baresip, float]:
    """baresip dials siproc; returns both and the time the handler saw CONNECTED."""
    alice = siproc(mode)
    bob = make_baresip("bob", audio_source=tone_wav(TONE_HZ, seconds=TALK_SECONDS + 6.0))
    bob.dial(alice.uri("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    return alice, bob, connected_at(workdir)


def assert_recording_complete(workdir: Path, alice: Siproc, connected_seconds: float) -> None:
    alice.wait_for(r"recorded \d+\.\d+ s to rec\.wav", timeout=5)
    rec = workdir / "rec.wav"
    claimed, present = wav_data_frames(rec)
    assert claimed == present > 0, "the WAV header must count exactly the data written"
    info = soundfile.info(str(rec))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
    assert info.frames == present
    print(f"recorded {duration(rec):.3f} s; connected {connected_seconds:.3f} s")
    assert duration(rec) == pytest.approx(connected_seconds, abs=TOLERANCE)
    assert dominant_frequency(rec, skip_seconds=SKIP_SECONDS) == pytest.approx(TONE_HZ, abs=10)
    assert rms(rec, skip_seconds=SKIP_SECONDS) > 0.1


def test_record_is_complete_after_a_remote_hangup(
    workdir: Path,
    make_baresip: MakeBaresip,
    tone_wav: Callable[..., Path],
    siproc: Callable[[str], Siproc],
) -> None:
    alice, bob, start = start_call(make_baresip, tone_wav, siproc, workdir, "record")
    time.sleep(max(0.0, start + TALK_SECONDS - time.time()))
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)
    end = time.time()
    alice.wait_for(r"call ended: 200 remote hangup")
    events = wait_file(workdir / "handler.log", r"^(SIGTERM|EOF)$")
    assert "DISCONNECTED 200" in events
    assert " ERROR " not in events, events
    assert_recording_complete(workdir, alice, end - start)


def test_record_is_complete_after_the_handler_hangs_up(
    workdir: Path,
    make_baresip: MakeBaresip,
    tone_wav: Callable[..., Path],
    siproc: Callable[[str], Siproc],
) -> None:
    alice, bob, start = start_call(make_baresip, tone_wav, siproc, workdir, "hangup")
    bob.wait_event("CALL_CLOSED", timeout=TALK_SECONDS + 5)
    end = time.time()
    alice.wait_for(r"call ended: 200 hung up")
    assert " ERROR " not in (workdir / "handler.log").read_text()
    assert end - start == pytest.approx(TALK_SECONDS, abs=TOLERANCE)
    assert_recording_complete(workdir, alice, end - start)


def test_record_is_complete_after_the_handler_is_killed(
    workdir: Path,
    make_baresip: MakeBaresip,
    tone_wav: Callable[..., Path],
    siproc: Callable[[str], Siproc],
) -> None:
    alice, bob, start = start_call(make_baresip, tone_wav, siproc, workdir, "record")
    pid = int((workdir / "handler.pid").read_text())
    time.sleep(max(0.0, start + TALK_SECONDS - time.time()))
    os.kill(pid, signal.SIGKILL)
    bob.wait_event("CALL_CLOSED", timeout=5)  # siproc hung up: the handler died
    end = time.time()
    alice.wait_for(r"handler exited with status -9")
    alice.wait_for(r"call ended: 200 hung up")
    assert alice.proc.poll() is None, "siproc itself must survive its handler"
    assert_recording_complete(workdir, alice, end - start)
