"""APLAY / ARECORD / ASTOP between two real siproc processes, on ALSA ``file`` plugin PCMs.

No sound card: bob's siproc runs with ``ALSA_CONFIG_PATH`` pointing at a configuration the test
writes (tests/alsa_conf.py): the duplex PCM ``phone`` captures from a raw file holding a 660 Hz
tone and plays into another raw file. Alice, the remote end, plays 440 Hz and records the call in
stereo (left: what she hears). Bob's handler runs ``APLAY phone`` and ``ARECORD phone`` on
CONNECTED, ``ASTOP phone`` two seconds later and hangs up 1.5 s after that. So:

* alice hears the capture file's tone while the bridge runs, and silence after ASTOP;
* bob's playback file holds alice's tone, and stops growing at ASTOP (about 2 s of audio, not
  the 3.5 s of the call).

And without pyalsaaudio (its import blocked by a module on PYTHONPATH that raises ImportError)
the three commands answer ``ERROR <verb> alsa support not installed``, and siproc-parameters says
how to install it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.alsa_conf import (
    DUPLEX,
    aplay_names,
    dominant,
    level,
    read_raw,
    write_alsa_config,
    write_tone_raw,
)
from tests.audio import make_tone
from tests.siproc_proc import Siproc, wait_file, write_handler

ENDED = r"^(SIGTERM|EOF)$"
CODEC_RATES = {"PCMU": 8000, "G722": 16000, "opus": 48000}
CAPTURE_HZ = 660.0
REMOTE_HZ = 440.0
STOP_AFTER = 2.0  # seconds from CONNECTED to ASTOP
HANGUP_AFTER = 1.5  # seconds from ASTOP to HANGUP
BLOCKER = 'raise ImportError("pyalsaaudio blocked for this test")\n'

# ROLE MODE: logs every event to ROLE.log.
#   remote  (alice) on CONNECTED: RECORD alice.wav stereo, PLAY a440.wav
#   bridge  (bob) ANSWER; on CONNECTED: two refused commands, APLAY phone, ARECORD phone;
#           ASTOP phone after STOP_AFTER s, HANGUP HANGUP_AFTER s later
#   noalsa  (bob) ANSWER; on CONNECTED: APLAY, ARECORD, ASTOP default, then HANGUP
HANDLER = rf"""
role=$1; mode=$2
log="$role.log"
on_term() {{
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
[ "$mode" = remote ] || echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    remote:CONNECTED) echo "RECORD alice.wav stereo"; echo "PLAY a440.wav" ;;
    bridge:CONNECTED)
      echo "APLAY nosuch"
      echo "ASTOP {DUPLEX}"
      echo "APLAY {DUPLEX}"
      echo "ARECORD {DUPLEX}"
      ( sleep {STOP_AFTER}; echo "ASTOP {DUPLEX}"; sleep {HANGUP_AFTER}; echo HANGUP ) & ;;
    noalsa:CONNECTED)
      echo "APLAY default"; echo "ARECORD default"; echo "ASTOP default"
      ( sleep 0.5; echo HANGUP ) & ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", HANDLER)
    make_tone(tmp_path / "a440.wav", REMOTE_HZ, 8.0)
    blocker = tmp_path / "noalsa"
    blocker.mkdir()
    (blocker / "alsaaudio.py").write_text(BLOCKER)
    return tmp_path


def only(codec: str) -> dict[str, str]:
    others = [name for name in ("PCMU", "PCMA", "G722", "opus") if name != codec]
    return {"SIPROC_CODEC_PRIORITIES": ",".join([f"{codec}:200", *(f"{o}:0" for o in others)])}


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def blocked_env(workdir: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(workdir / "noalsa"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


@pytest.mark.parametrize("codec", list(CODEC_RATES))
def test_aplay_arecord_astop_on_file_pcms(
    workdir: Path, phones: Callable[..., Siproc], codec: str
) -> None:
    rate = CODEC_RATES[codec]
    capture_raw = write_tone_raw(workdir / "mic.raw", CAPTURE_HZ, 20.0, rate)
    playback_raw = workdir / "speaker.raw"
    config = write_alsa_config(workdir, capture_raw, playback_raw, rate)
    bob = phones("bob", "bridge", env={**only(codec), "ALSA_CONFIG_PATH": str(config)})
    alice = phones("alice", "remote", env=only(codec))
    alice.call(bob.uri("bob"))
    bob_events = events(wait_file(workdir / "bob.log", ENDED, timeout=20))
    wait_file(workdir / "alice.log", ENDED, timeout=10)
    alice.wait_for(r"recorded \d+\.\d+ s to alice\.wav")
    bob.wait_for(rf"ALSA playback '{DUPLEX}' stopped: \d+\.\d+ s, \d+ overruns, \d+ underruns")
    bob.wait_for(rf"ALSA capture '{DUPLEX}' stopped")

    assert bob_events[0] == "CONNECTED"
    errors = sorted(e for e in bob_events if e.startswith("ERROR"))
    assert errors == [
        "ERROR APLAY cannot open ALSA capture device 'nosuch': no such file or directory",
        f"ERROR ASTOP nothing is playing or recording on '{DUPLEX}'",
    ]

    # Alice heard the capture file's tone while the bridge ran, then silence.
    data, file_rate = soundfile.read(str(workdir / "alice.wav"), dtype="float64", always_2d=True)
    assert file_rate == rate
    heard = data[:, 0]
    bridged = heard[round(0.4 * rate) : round((STOP_AFTER - 0.2) * rate)]
    assert dominant(bridged, rate) == pytest.approx(CAPTURE_HZ, abs=3)
    assert level(bridged) > 0.2
    after = heard[
        round((STOP_AFTER + 0.5) * rate) : round((STOP_AFTER + HANGUP_AFTER - 0.2) * rate)
    ]
    assert after.size > rate // 2
    assert level(after) < 0.01, "alice still hears the capture after ASTOP"

    # Bob's playback file holds alice's tone, about STOP_AFTER seconds of it: ASTOP stopped it.
    played = read_raw(playback_raw, 0.3, rate)
    assert dominant(played, rate) == pytest.approx(REMOTE_HZ, abs=3)
    assert level(played) > 0.2
    seconds = playback_raw.stat().st_size / 2 / rate
    assert seconds == pytest.approx(STOP_AFTER, abs=0.4), "the playback went on after ASTOP"


def test_without_pyalsaaudio_the_commands_answer_not_installed(
    workdir: Path, phones: Callable[..., Siproc]
) -> None:
    bob = phones("bob", "noalsa", env=blocked_env(workdir))
    alice = phones("alice", "remote")
    alice.call(bob.uri("bob"))
    bob_events = events(wait_file(workdir / "bob.log", ENDED, timeout=15))
    assert bob_events[:4] == [
        "CONNECTED",
        "ERROR APLAY alsa support not installed",
        "ERROR ARECORD alsa support not installed",
        "ERROR ASTOP alsa support not installed",
    ]
    assert bob_events[-1].startswith("DISCONNECTED")


def parameters(env: dict[str, str], *args: str) -> str:
    script = "import sys; from siproc.cli import parameters_main; sys.exit(parameters_main())"
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_siproc_parameters_lists_the_pcms_as_aplay_does(workdir: Path) -> None:
    config = write_alsa_config(workdir, workdir / "mic.raw", workdir / "speaker.raw")
    env = {"ALSA_CONFIG_PATH": str(config)}
    report = json.loads(parameters(env, "--json"))
    assert report["sound_devices"] == {
        "playback": aplay_names(config),
        "capture": aplay_names(config, capture=True),
    }
    text = parameters(env)
    assert "Sound devices, playback PCMs for ARECORD (as aplay -L names them):" in text
    assert f"\n  {DUPLEX}\n" in text


def test_siproc_parameters_without_pyalsaaudio_says_how_to_install(workdir: Path) -> None:
    env = blocked_env(workdir)
    assert "Sound devices: ALSA support not installed (pip install siproc[alsa])" in parameters(env)
    report = json.loads(parameters(env, "--json"))
    assert report["sound_devices"] is None
    assert report["sound_devices_note"] == "ALSA support not installed (pip install siproc[alsa])"


def test_the_pcm_rig_needs_no_sound_card(workdir: Path) -> None:
    """The rig itself: the capture PCM reads the tone file (checked with arecord)."""
    raw = write_tone_raw(workdir / "mic.raw", CAPTURE_HZ, 2.0, 8000)
    config = write_alsa_config(workdir, raw, workdir / "speaker.raw")
    out = subprocess.run(
        [
            "arecord",
            "-q",
            "-D",
            "captone",
            "-f",
            "S16_LE",
            "-r",
            "8000",
            "-c",
            "1",
            "-d",
            "1",
            "-t",
            "raw",
        ],
        env={**os.environ, "ALSA_CONFIG_PATH": str(config)},
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    samples = np.frombuffer(out, dtype="<i2").astype(np.float64) / 32768
    assert dominant(samples, 8000) == pytest.approx(CAPTURE_HZ, abs=2)
