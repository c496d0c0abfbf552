"""RECORD between two real siproc processes on loopback (DESIGN.md 4.4): A plays a 440 Hz tone to
B, B's handler records the call; in stereo, B also plays 880 Hz, which lands on the other channel.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.audio import duration
from tests.siproc_proc import Siproc, handler_dir, wait_file

ENDED = r"^(SIGTERM|EOF)$"
CODEC_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000, "opus": 48000}  # PCM rate of the file
TONE_SECONDS = 1.5

# ROLE MODE: logs every event to ROLE.log.
#   play    PLAY a440.wav on CONNECTED, HANGUP when it has played
#   record  ANSWER; on CONNECTED: two refused RECORDs, RECORD first.wav, then RECORD rec.wav
#           (which replaces the first)
#   stereo  ANSWER; on CONNECTED: RECORD rec.wav stereo and PLAY b880.wav
HANDLER = r"""
role=$1; mode=$2
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = play ] || echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    play:CONNECTED) echo "PLAY a440.wav" ;;
    play:STOPPED*) echo HANGUP ;;
    record:CONNECTED)
      echo RECORD
      echo "RECORD no/such/dir/x.wav"
      echo "RECORD first.wav"
      echo "RECORD rec.wav" ;;
    stereo:CONNECTED) echo "RECORD rec.wav stereo"; echo "PLAY b880.wav" ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(
        tmp_path, HANDLER, {"a440.wav": (440.0, TONE_SECONDS), "b880.wav": (880.0, 5.0)}
    )


def dominant(samples: np.ndarray, rate: int) -> float:  # type: ignore[type-arg]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def call_and_wait(
    workdir: Path,
    phones: Callable[..., Siproc],
    mode: str,
    codec: str | None = None,
    media_workers: str | None = None,
) -> list[str]:
    """A (play) calls B (mode), both allowing only ``codec`` and running ``media_workers`` if
    given; returns B's events once B's call and handler are over."""
    env: dict[str, str] = {}
    if codec is not None:
        others = [name for name in CODEC_RATES if name != codec]
        env["SIPROC_CODEC_PRIORITIES"] = ",".join([f"{codec}:200", *(f"{o}:0" for o in others)])
    if media_workers is not None:
        env["SIPROC_MEDIA_WORKERS"] = media_workers
        env["SIPROC_MEDIA_IDLE"] = "0"  # with workers: the call's media runs in one
    bob = phones("bob", mode, env=env)
    alice = phones("alice", "play", env=env)
    alice.call(bob.uri("bob"))
    text = wait_file(workdir / "bob.log", ENDED, timeout=15)
    bob.wait_for(r"call ended: 200 remote hangup")
    bob.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    return events(text)


@pytest.mark.parametrize("codec", list(CODEC_RATES))
def test_record_mono_holds_the_far_end(
    workdir: Path, phones: Callable[..., Siproc], codec: str
) -> None:
    bob_events = call_and_wait(workdir, phones, "record", codec)
    assert bob_events[0] == "CONNECTED"
    assert bob_events[1:3] == [
        "ERROR RECORD nothing is being recorded",
        "ERROR RECORD cannot record 'no/such/dir/x.wav': no such directory",
    ]
    assert bob_events[-1].startswith("DISCONNECTED 200")
    assert sum(e.startswith("ERROR") for e in bob_events) == 2

    rec = workdir / "rec.wav"
    info = soundfile.info(str(rec))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
    assert info.samplerate == CODEC_RATES[codec]  # the codec's PCM rate
    # A's tone lasts 1.5 s and A hangs up when it ends; B records from its CONNECTED on.
    assert duration(rec) == pytest.approx(TONE_SECONDS, abs=0.3)
    data, rate = soundfile.read(str(rec), dtype="float64")
    assert dominant(data, rate) == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(data[rate // 5 : -rate // 5] ** 2)) > 0.2  # a loud tone, not a hint
    # RECORD rec.wav replaced RECORD first.wav, which was finished as a valid, short file.
    assert soundfile.info(str(workdir / "first.wav")).frames < CODEC_RATES[codec] * 0.1


@pytest.mark.parametrize("media_workers", ["0", "2"])  # in siproc's process, or in workers
def test_record_stereo_far_end_left_own_play_right(
    workdir: Path, phones: Callable[..., Siproc], media_workers: str
) -> None:
    bob_events = call_and_wait(workdir, phones, "stereo", media_workers=media_workers)
    assert not [e for e in bob_events if e.startswith("ERROR")], bob_events

    data, rate = soundfile.read(str(workdir / "rec.wav"), dtype="float64", always_2d=True)
    assert data.shape[1] == 2
    assert len(data) / rate == pytest.approx(TONE_SECONDS, abs=0.3)
    left, right = data[:, 0], data[:, 1]
    assert dominant(left, rate) == pytest.approx(440, abs=5)  # received: the far end
    assert dominant(right, rate) == pytest.approx(880, abs=5)  # sent: B's own PLAY

    def band(samples: np.ndarray, freq: float) -> float:  # type: ignore[type-arg]
        # Hann window: without it a tone that ends mid-cycle leaks into every bin, and the
        # check would depend on whether the call ended on a whole cycle of the 880 Hz tone.
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        bins = np.fft.rfftfreq(len(samples), 1 / rate)
        return float(spectrum[np.abs(bins - freq) < 20].sum())

    # The directions are apart: each channel holds (almost) nothing of the other tone.
    assert band(left, 880) < 0.01 * band(left, 440)
    assert band(right, 440) < 0.01 * band(right, 880)


def test_a_killed_siproc_leaves_its_recording_whole(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    """SIGKILL of siproc itself mid-call: its media workers see their channel close, finish
    the recording (header final, nothing buffered lost) and exit."""
    # workers up before the call: the recording then spans the whole second up to the kill
    # (a worker started by the call itself begins a quarter second later: SIPROC_MEDIA_IDLE)
    bob = phones("bob", "stereo", env={"SIPROC_MEDIA_IDLE": "0"})
    alice = phones("alice", "play")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"^EVENT CONNECTED$", timeout=10)
    workers = [pid for pid, _ in bob.children(media_workers=True)]
    assert workers, "bob runs media workers"
    time.sleep(1.0)
    os.kill(bob.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "media workers outlived siproc"
        time.sleep(0.05)
    data, rate = soundfile.read(str(workdir / "rec.wav"), dtype="float64", always_2d=True)
    assert data.shape[1] == 2
    assert 0.8 < len(data) / rate < 1.6  # the second up to the kill, the last block included
    assert dominant(data[:, 0], rate) == pytest.approx(440, abs=5)  # what alice played


def test_a_dead_media_worker_hangs_up_its_calls_and_siproc_goes_on(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    bob = phones("bob", "stereo", env={"SIPROC_MEDIA_IDLE": "0"})  # the call in a worker
    alice = phones("alice", "play")
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", r"^EVENT CONNECTED$", timeout=10)
    for pid, _ in bob.children(media_workers=True):
        os.kill(pid, signal.SIGKILL)
    text = wait_file(workdir / "bob.log", ENDED, timeout=15)
    bob_events = events(text)
    assert "ERROR MEDIA the media worker stopped; hanging up" in bob_events, bob_events
    assert bob_events[-1].startswith("DISCONNECTED"), bob_events
    bob.wait_for(r"media worker \d+ \(pid \d+\) exited.*: the media of 1 call\(s\) stopped")
    wait_file(workdir / "alice.log", ENDED, timeout=15)
    # A new call gets new workers and its audio.
    (workdir / "bob.log").unlink()
    (workdir / "rec.wav").unlink()
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", ENDED, timeout=15)
    bob.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    data, rate = soundfile.read(str(workdir / "rec.wav"), dtype="float64", always_2d=True)
    assert dominant(data[:, 0], rate) == pytest.approx(440, abs=5)
    assert bob.proc.poll() is None
