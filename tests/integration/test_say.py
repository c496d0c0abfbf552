"""SAY between two real siproc processes on loopback (issue 10): A speaks a text twice with
espeak-ng (through a wrapper that counts its runs), B records the call; B's recording holds the
speech twice, the second SAY comes from the cache; without an engine, ERROR SAY.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tests.audio import duration, read_mono
from tests.siproc_proc import Siproc, wait_file, write_handler

ENDED = r"^(SIGTERM|EOF)$"
TEXT = "Hello, this is siproc speaking. Press one for sales."

# ROLE MODE: logs every event to ROLE.log.
#   say      on CONNECTED: SAY TEXT; on STOPPED say:1 the same again; on STOPPED say:2 HANGUP
#   once     on CONNECTED: SAY TEXT; on ERROR or STOPPED: HANGUP
#   record   ANSWER; on CONNECTED: RECORD rec.wav
#   early    RINGING, SAY TEXT, wait 2 s (the render is done by then), ANSWER; HANGUP on STOPPED
HANDLER = r"""
role=$1; mode=$2
log="$role.log"
text="Hello, this is siproc speaking. Press one for sales."
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
case "$mode" in
  record) echo ANSWER ;;
  early) echo RINGING; echo "SAY $text"; read -r -t 2 line && echo "EVENT $line" >> "$log";
         echo ANSWER ;;
esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    say:CONNECTED|once:CONNECTED) echo "SAY $text" ;;
    say:"STOPPED say:1") echo "SAY $text" ;;
    say:"STOPPED say:2"|once:STOPPED*|once:ERROR*|early:STOPPED*) echo HANGUP ;;
    record:CONNECTED) echo "RECORD rec.wav" ;;
  esac
done
echo EOF >> "$log"
"""

ENGINE = r"""
echo run >> "$(dirname "$0")/engine-runs.log"
exec espeak-ng "$@"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (scripts/install-deps.sh installs it)")
    write_handler(tmp_path / "h.sh", HANDLER)
    write_handler(tmp_path / "engine.sh", ENGINE)
    return tmp_path


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def espeak_speech(tmp_path: Path, rate: int) -> np.ndarray:  # type: ignore[type-arg]
    """TEXT as espeak-ng says it, at ``rate`` Hz, without its last half second (a recording
    ends when the handler hangs up on STOPPED: it may miss the speech's last frames)."""
    path = tmp_path / "reference.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "--", TEXT], check=True, timeout=30)
    data, file_rate = soundfile.read(str(path), dtype="float64")
    speech = np.asarray(soxr.resample(data, file_rate, rate), dtype=np.float64)
    return speech[: -rate // 2]


def best_match(recording: np.ndarray, speech: np.ndarray) -> tuple[float, int]:  # type: ignore[type-arg]
    """(normalised cross-correlation, offset in samples) of ``speech`` where it best fits in
    ``recording``."""
    size = 1 << int(np.ceil(np.log2(len(recording) + len(speech))))
    spectrum = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(speech, size))
    correlation = np.fft.irfft(spectrum, size)[: len(recording) - len(speech) + 1]
    energy = np.convolve(recording**2, np.ones(len(speech)), "valid")
    normalised = correlation / (np.sqrt(energy * np.sum(speech**2)) + 1e-12)
    offset = int(np.argmax(normalised))
    return float(normalised[offset]), offset


def test_say_plays_speech_and_the_second_comes_from_the_cache(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    tts = {
        "SIPROC_TTS_COMMAND": f"{workdir / 'engine.sh'} -w {{file}} -- {{text}}",
        "SIPROC_TTS_CACHE_DIR": str(workdir / "cache"),
    }
    pcmu = {"SIPROC_CODEC_PRIORITIES": "PCMU:200,PCMA:0,G722:0,opus:0"}
    bob = phones("bob", "record", env=pcmu)
    alice = phones("alice", "say", env={**tts, **pcmu})
    alice.call(bob.uri("bob"))
    alice_events = events(wait_file(workdir / "alice.log", ENDED, timeout=30))
    wait_file(workdir / "bob.log", ENDED, timeout=10)
    bob.wait_for(r"recorded \d+\.\d+ s to rec\.wav")

    assert alice_events[:3] == ["CONNECTED", "STOPPED say:1", "STOPPED say:2"]
    assert not [e for e in alice_events if e.startswith("ERROR")], alice_events
    # One engine run for two SAYs of the same text: the second came from the cache.
    assert (workdir / "engine-runs.log").read_text().splitlines() == ["run"]
    alice.wait_for(r"SAY 2 plays from the cache")
    assert alice.count(r"SAY rendered by") == 1
    [cached] = (workdir / "cache").glob("*.wav")
    assert soundfile.info(str(cached)).samplerate == 8000  # PCMU's rate: no resampling to play

    speech = espeak_speech(workdir, 8000)
    spoken = len(speech) / 8000 + 0.5
    rec = workdir / "rec.wav"
    assert duration(rec) == pytest.approx(2 * spoken, abs=0.4)  # the two SAYs back to back
    recording, rate = read_mono(rec)
    assert rate == 8000
    half = len(recording) // 2
    for part in (recording[: half + 2000], recording[half - 2000 :]):
        match, _ = best_match(part, speech)
        assert match > 0.8, match  # this speech, through G.711 both ways: not just any sound


def test_say_given_while_ringing_plays_at_once_when_answered(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    """Rendering starts at SAY: a SAY at RINGING is ready when the call connects, and the
    far end hears the speech from its first frames on."""
    tts = {"SIPROC_TTS_CACHE_DIR": str(workdir / "cache")}
    bob = phones("bob", "early", env=tts)
    alice = phones("alice", "record")  # the caller records (RECORD on CONNECTED)
    alice.call(bob.uri("bob"))
    bob_events = events(wait_file(workdir / "bob.log", ENDED, timeout=30))
    alice.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    assert bob_events[:2] == ["CONNECTED", "STOPPED say:1"], bob_events

    recording, rate = read_mono(workdir / "rec.wav")
    speech = espeak_speech(workdir, rate)
    match, offset = best_match(recording, speech)
    assert match > 0.8, match
    assert offset / rate < 0.3  # from the start of the call's media, no render delay


@pytest.mark.parametrize("engine", ["not installed", "not found"])
def test_say_without_an_engine_is_an_error(
    workdir: Path, phones: Callable[..., Siproc], engine: str
) -> None:
    if engine == "not installed":  # espeak-ng is not on PATH
        (workdir / "empty").mkdir()
        env = {"PATH": str(workdir / "empty")}
        expected = (
            "ERROR SAY no text-to-speech engine: espeak-ng is not installed "
            "(install it, or set SIPROC_TTS_COMMAND)"
        )
    else:
        env = {"SIPROC_TTS_COMMAND": "/nonexistent/tts -w {file} -- {text}"}
        expected = "ERROR SAY cannot run '/nonexistent/tts': No such file or directory"
    env["SIPROC_TTS_CACHE_DIR"] = str(workdir / "cache")
    bob = phones("bob", "record")
    alice = phones("alice", "once", env=env)
    alice.call(bob.uri("bob"))
    alice_events = events(wait_file(workdir / "alice.log", ENDED, timeout=15))
    assert alice_events[:2] == ["CONNECTED", expected], alice_events
    assert alice_events[2].startswith("DISCONNECTED 200"), alice_events
