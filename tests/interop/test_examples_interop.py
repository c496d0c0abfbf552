"""The voice examples, run as they are against baresip calling siproc (issue 10, item 5).

* ``examples/bot_echo.py`` (its own process) behind ``STREAM``: baresip sends a 1 s tone and
  hears it again 1 s later (its recordings of what it sent and heard are compared); the bot's
  marks come back once their second of echo has played.
* ``examples/ivr_speech.sh``: the caller presses 2 during the menu (bargein: the menu stops, and
  comes again from the cache), then 1: the opening hours are said and siproc hangs up. baresip's
  recording holds the menu and then the hours, as espeak-ng says them.
* ``examples/voicemail.sh``: the greeting, then the caller's 2 s tone and #: the message file
  holds the tone (and nothing of the greeting), then "thank you" and the hang-up.

The examples' handlers are run through a wrapper that copies their events to a log (``tee``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tests.audio import best_match, read_mono
from tests.peers import Baresip
from tests.siproc_proc import Siproc, handler_dir, wait_file
from tests.ws_bot import goertzel_share

MakeBaresip = Callable[..., Baresip]
MakeSiproc = Callable[..., Siproc]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MENU = "Welcome to siproc. For our opening hours, press 1. To hear this menu again, press 2."
HOURS = "We are open from Monday to Friday, nine to five. Goodbye."
GREETING = "Please leave your message now. Press the pound key when you are done."

# EXAMPLE [ARGS...]: runs examples/EXAMPLE with its events copied to events.log
HANDLER = r"""
example=$1; shift
tee -a events.log | "$EXAMPLES/$example" "$@"
"""

# A TTS engine that logs each text it renders, then runs espeak-ng.
ENGINE = r"""
for text; do :; done
printf '%s\n' "$text" >> "$(dirname "$0")/engine-texts.log"
exec espeak-ng "$@"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (scripts/install-deps.sh installs it)")
    work = handler_dir(tmp_path / "siproc", HANDLER)
    (work / "engine.sh").write_text("#!/bin/bash\n" + ENGINE)
    (work / "engine.sh").chmod(0o755)
    return work


def env_for(workdir: Path) -> dict[str, str]:
    """The examples' siproc, as a user runs it (the defaults: one call's media runs in siproc's
    own process, media_pool.takes_next), with a fake TTS engine."""
    return {
        "EXAMPLES": str(EXAMPLES),
        "SIPROC_TTS_COMMAND": f"{workdir / 'engine.sh'} -w {{file}} -- {{text}}",
        "SIPROC_TTS_CACHE_DIR": str(workdir / "cache"),
    }


def events(workdir: Path) -> list[str]:
    return (workdir / "events.log").read_text().splitlines()


def write_wav(path: Path, *parts: tuple[float, float]) -> Path:
    """A mono 8 kHz WAV of (frequency, seconds) parts; frequency 0 is silence."""
    pieces = []
    for freq, seconds in parts:
        t = np.arange(round(seconds * 8000)) / 8000
        pieces.append(0.4 * np.sin(2 * np.pi * freq * t) if freq else np.zeros(len(t)))
    soundfile.write(str(path), np.concatenate(pieces), 8000, subtype="PCM_16")
    return path


def is_tone(samples: np.ndarray, freq: float, rate: int) -> bool:  # type: ignore[type-arg]
    """Most 20 ms frames of ``samples`` are ``freq``, each measured on its own (a jitter buffer
    that conceals a late packet shifts the phase, which spoils a DFT over the whole)."""
    block = rate // 50
    starts = range(0, len(samples) - block + 1, block)
    shares = [goertzel_share(samples[i : i + block], freq, rate) for i in starts]
    return sum(share > 0.9 for share in shares) >= 0.9 * len(shares)


def sounding(samples: np.ndarray, rate: int, freq: float) -> tuple[float, float]:  # type: ignore[type-arg]
    """(start, end) in seconds of the one stretch that is ``freq`` (split at 10 ms of silence)."""
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    assert loud.size, "nothing but silence"
    breaks = np.flatnonzero(np.diff(loud) > rate // 100)
    starts = np.r_[loud[0], loud[breaks + 1]]
    ends = np.r_[loud[breaks], loud[-1]] + 1
    found = [
        (s / rate, e / rate)
        for s, e in zip(starts, ends, strict=True)
        if e - s > rate // 20 and is_tone(samples[s:e], freq, rate)
    ]
    assert len(found) == 1, (freq, list(zip(starts / rate, ends / rate, strict=True)))
    return found[0]


def speech(text: str, tmp: Path, rate: int = 8000) -> np.ndarray:  # type: ignore[type-arg]
    """``text`` as espeak-ng says it, at ``rate``, without its trailing silence."""
    path = tmp / "reference.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "--", text], check=True, timeout=30)
    data, file_rate = soundfile.read(str(path), dtype="float64")
    out = np.asarray(soxr.resample(data, file_rate, rate), dtype=np.float64)
    return out[: np.flatnonzero(np.abs(out) > 0.01)[-1] + 1]


@pytest.fixture
def echo_bot(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """examples/bot_echo.py on a free port: (its URL, its output file)."""
    out = tmp_path / "bot.out"
    with open(out, "w") as sink:
        bot = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "bot_echo.py"), "--port", "0"], stdout=sink
        )
    try:
        match = re.search(r"listening on (ws://\S+)", wait_file(out, r"listening on", 10))
        assert match
        yield match.group(1), out
    finally:
        bot.terminate()
        bot.wait(5)


def test_bot_echo_plays_the_caller_back_one_second_later(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: MakeSiproc,
    echo_bot: tuple[str, Path],
    tmp_path: Path,
) -> None:
    url, bot_out = echo_bot
    (workdir / "stream.sh").write_text(
        '#!/bin/sh\necho ANSWER\nwhile read -r e r; do [ "$e" = CONNECTED ] && '
        '{ echo "RECORD call.wav stereo"; echo "STREAM $1 who=baresip"; }; done\n'
    )
    (workdir / "stream.sh").chmod(0o755)
    env = {**env_for(workdir), "EXAMPLES": str(workdir)}
    siproc = make_siproc("stream.sh", url, env=env)
    source = write_wav(tmp_path / "caller.wav", (0, 1.0), (440, 1.0), (0, 3.5))
    alice = make_baresip("alice", audio_source=source, record=True)
    alice.dial(siproc.uri("bob"))
    alice.wait_event("CALL_CLOSED", timeout=15)  # its file ended
    wait_file(workdir / "events.log", r"^DISCONNECTED", timeout=10)
    streams = [e for e in events(workdir) if e.startswith("STREAM ")]
    assert streams and streams[0].startswith("STREAM CONNECTED MZ"), streams
    assert not [e for e in events(workdir) if e.startswith("ERROR")], events(workdir)

    # siproc's stereo recording: left what baresip sent (as the bot got it), right what
    # siproc sent back (the bot's audio), on one timeline
    siproc.wait_for(r"recorded \d+\.\d+ s to call\.wav")
    data, rate = soundfile.read(str(workdir / "call.wav"), dtype="float64", always_2d=True)
    tone_in = sounding(data[:, 0], rate, 440)
    tone_out = sounding(data[:, 1], rate, 440)
    print(f"tone in {tone_in}, echo out {tone_out}")
    delay = tone_out[0] - tone_in[0]
    print(f"echo sent {delay:.3f} s after the tone came in")
    assert delay == pytest.approx(1.0, abs=0.025), delay  # 50 frames, and one tick at most
    # and baresip heard all of it
    [heard] = alice.recordings("dec")
    heard_pcm, rate = read_mono(heard)
    tone_heard = sounding(heard_pcm, rate, 440)
    assert tone_heard[1] - tone_heard[0] == pytest.approx(1.0, abs=0.025)

    text = wait_file(bot_out, r"^stop MZ", 5)
    assert re.search(r'^start MZ\w+ \{"who": "baresip", ', text, re.M), text
    marks = re.findall(r"^mark (echo-\d+s) played$", text, re.M)
    assert marks[:2] == ["echo-1s", "echo-2s"], text  # a call of 5.5 s: 4.5 s of echo


def test_ivr_branches_on_keys(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: MakeSiproc, tmp_path: Path
) -> None:
    siproc = make_siproc("ivr_speech.sh", env=env_for(workdir))
    alice = make_baresip("alice", record=True)
    alice.dial(siproc.uri("ivr"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(2.5)
    alice.send_dtmf("2")
    wait_file(workdir / "events.log", r"^GATHERED 2 max$", timeout=5)
    time.sleep(2.5)
    alice.send_dtmf("1")
    alice.wait_event("CALL_CLOSED", timeout=20)  # the IVR hung up after the hours
    wait_file(workdir / "events.log", r"^DISCONNECTED", timeout=10)
    siproc.wait_for(r"call ended: 200 hung up")

    got = [e for e in events(workdir) if e.startswith(("GATHERED", "STOPPED", "ERROR"))]
    assert got == [
        "STOPPED say:1",  # bargein: the menu stops at the key
        "GATHERED 2 max",
        "STOPPED say:2",
        "GATHERED 1 max",
        "STOPPED say:3",  # the hours, said to the end: then the hang-up
    ], events(workdir)
    # the menu rendered once (the second time from the cache), then the hours
    assert (workdir / "engine-texts.log").read_text().splitlines() == [MENU, HOURS]

    [heard] = alice.recordings("dec")
    recording, rate = read_mono(heard)
    menu = speech(MENU, tmp_path)[: 2 * rate]  # its first 2 s, before the key
    hours = speech(HOURS, tmp_path)
    first, at = best_match(recording[: int(2.4 * rate)], menu)  # the key came at 2.5 s
    assert first > 0.8 and at / rate < 0.3, (first, at / rate)
    again, at_again = best_match(recording[at + rate :], menu)  # the menu from its start
    assert again > 0.8, again
    at_again += at + rate
    said, at_hours = best_match(recording, hours)
    assert said > 0.8, said
    assert at_hours > at_again + 1.5 * rate  # after the menu again, cut by the key
    assert len(recording) - (at_hours + len(hours)) < 0.5 * rate  # and the call ended


def test_voicemail_records_the_callers_message(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: MakeSiproc, tmp_path: Path
) -> None:
    siproc = make_siproc("voicemail.sh", env=env_for(workdir))
    # the greeting lasts about 3.7 s: the caller is silent for 6 s, then a 2 s tone
    source = write_wav(tmp_path / "caller.wav", (0, 6.0), (600, 2.0), (0, 12.0))
    alice = make_baresip("alice", audio_source=source, record=True)
    alice.dial(siproc.uri("vm"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(9.0)
    alice.send_dtmf("#")
    alice.wait_event("CALL_CLOSED", timeout=10)  # thanked, and hung up by the voicemail
    wait_file(workdir / "events.log", r"^DISCONNECTED", timeout=10)
    siproc.wait_for(r"voicemail: a message from sip:alice@127\.0\.0\.1:\d+ in voicemail/")
    siproc.wait_for(r"call ended: 200 hung up")

    got = [e for e in events(workdir) if e.startswith(("GATHERED", "STOPPED", "ERROR"))]
    assert got == ["STOPPED say:1", "GATHERED - finish", "STOPPED say:2"], events(workdir)
    [message] = (workdir / "voicemail").glob("*.wav")
    assert re.fullmatch(r"\d{8}-\d{6}-alice\.wav", message.name)
    samples, rate = read_mono(message)
    start, end = sounding(samples, rate, 600)
    assert end - start == pytest.approx(2.0, abs=0.03)  # all of the caller's tone
    assert start > 1.0  # after some silence: recording began at the end of the greeting
    assert np.max(np.abs(samples[: int(start * rate) - 80])) < 0.01  # no greeting in it
    assert len(samples) / rate - end < 2.0  # stopped at the # (1 s after the tone)

    [heard] = alice.recordings("dec")
    recording, _ = read_mono(heard)
    greeting, at = best_match(recording, speech(GREETING, tmp_path))
    assert greeting > 0.8 and at / 8000 < 0.5, (greeting, at / 8000)
    thanks, _ = best_match(recording[8 * 8000 :], speech("Thank you. Goodbye.", tmp_path))
    assert thanks > 0.8, thanks
