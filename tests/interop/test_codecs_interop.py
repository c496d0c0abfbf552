"""Every codec siproc offers, in a real call with baresip (issue 3, acceptance "codecs").

For PCMU, PCMA, G.722 and Opus, siproc calls a baresip that knows only that codec (its module
alone is loaded and the account lists only it) while ``SIPROC_CODEC_PRIORITIES`` puts the codec
first on siproc's side. siproc's handler RECORDs the call and PLAYs a tone; baresip sends a tone
of another frequency from its file source and records what it hears. Then:

* baresip's recording of what it heard holds siproc's tone, at the right frequency and loud;
* siproc's RECORD file holds baresip's tone, at the codec's sample rate;
* the SIP trace shows the codec in the answer, and baresip's log shows it set that codec.

The wideband codecs carry a 5 kHz tone from siproc: an 8 kHz path (a narrowband codec, or a
resampling mistake anywhere) cannot pass it, so hearing it proves the 16/48 kHz path end to end.

And ``SIPROC_CODEC_PRIORITIES=PCMA:200,PCMU:0`` makes a call use PCMA, with PCMU absent from
the offer (checked in siproc's SIP trace, ``SIPROC_LOG_LEVEL=6``).

Real processes only, on 127.0.0.1; nothing is skipped (a missing baresip module or libopus
fails the test: CI installs them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.audio import dominant_frequency, make_tone, read_mono
from tests.peers import Baresip
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]

SKIP_SECONDS = 0.3  # call setup, jitter buffers and codec start-up at the start of a recording
TONE_SECONDS = 3.0  # siproc's tone; it hangs up when the tone ends
BARESIP_SOURCE_SECONDS = 8.0  # longer than the call: baresip would hang up when it ends
BARESIP_TONE = 660.0  # what baresip sends

# HANDLER LOG: RECORD rec.wav and PLAY tone.wav when CONNECTED, HANGUP when it has STOPPED;
# every event goes to LOG, then EOF (stdin closed) or SIGTERM.
HANDLER = r"""
log=$1
trap 'echo SIGTERM >> "$log"; exit 0' TERM
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) echo "RECORD rec.wav"; echo "PLAY tone.wav" ;;
    "STOPPED tone.wav") echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""


@dataclass(frozen=True)
class Case:
    baresip_codec: str  # as baresip's audio_codecs names it (name/rate/channels)
    priorities: str  # SIPROC_CODEC_PRIORITIES
    rtpmap: str  # the encoding in the SDP answer, as baresip writes it
    rate: int  # PCM sample rate of the codec: baresip's source file, both recordings
    channels: int  # of baresip's source file (its aufile wants the codec's channel count)
    siproc_tone: float  # what siproc plays
    baresip_log: str  # how baresip's log names the codec when it sets it up


CASES = [
    Case("PCMU", "PCMU:255", "PCMU/8000", 8000, 1, 440.0, "PCMU 8000Hz"),
    Case("PCMA", "PCMA:255", "PCMA/8000", 8000, 1, 440.0, "PCMA 8000Hz"),
    Case("G722", "G722:255", "G722/8000", 16000, 1, 5000.0, "G722 16000Hz"),
    # baresip reads a bare "opus" as opus/8000/1; and it runs Opus in stereo (RFC 7587 allows
    # it; siproc sends mono and downmixes what it receives).
    Case("opus/48000/2", "opus:255", "opus/48000/2", 48000, 2, 5000.0, "opus 48000Hz"),
]


# --------------------------------------------------------------------------------------------
# Helpers


def sip_messages(stderr_lines: list[str]) -> list[tuple[str, str]]:
    """The SIP messages in siproc's trace (SIPROC_LOG_LEVEL=6): (``send``/``recv``, text)."""
    messages: list[tuple[str, str]] = []
    current: list[str] | None = None
    kind = ""
    for line in [*stderr_lines, "siproc[end]"]:
        if line.startswith("siproc["):
            if current:
                messages.append((kind, "\n".join(current)))
            match = re.search(r": (send|recv)( to| from)? ?\S*$", line)
            current, kind = ([], match.group(1)) if match else (None, "")
        elif current is not None:  # the trace's lines are indented by 4 (siproc/logs.py)
            current.append(line.removeprefix("    "))
    return messages


def band_level(path: Path, freq_hz: float, width_hz: float = 20.0) -> float:
    """RMS (relative to full scale) of ``path`` within ``freq_hz`` +- ``width_hz``, after the
    first SKIP_SECONDS (Parseval, with the Hann window's power gain of 3/8)."""
    samples, rate = read_mono(path, SKIP_SECONDS)
    spectrum = np.fft.rfft(samples * np.hanning(samples.size))
    band = np.abs(np.fft.rfftfreq(samples.size, 1 / rate) - freq_hz) <= width_hz
    power = 2 * np.sum(np.abs(spectrum[band]) ** 2) / (samples.size**2 * 0.375)
    return float(np.sqrt(power))


def find_message(messages: list[tuple[str, str]], kind: str, first_line: str) -> str:
    """The first traced message of ``kind`` whose first line matches ``first_line``."""
    regex = re.compile(first_line)
    for direction, text in messages:
        if direction == kind and regex.match(text):
            return text
    raise AssertionError(f"no {kind} message {first_line!r} in the trace: {messages!r}")


def audio_m_line(message: str) -> list[str]:
    """The payload types of the message body's ``m=audio`` line."""
    match = re.search(r"^m=audio \d+ RTP/AVP ((?:\d+ ?)+)$", message, re.M)
    assert match, f"no m=audio line in:\n{message}"
    return match.group(1).split()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER)


@pytest.fixture
def siprocs() -> Iterator[list[Siproc]]:
    started: list[Siproc] = []
    yield started
    for proc in started:
        proc.stop()
        print(f"--- siproc (port {proc.port}) ---\n{proc.stderr()}")


def call_baresip(
    workdir: Path, siprocs: list[Siproc], bob: Baresip, priorities: str
) -> tuple[Siproc, str]:
    """siproc (SIP trace on) calls ``bob`` directly; return it and the handler log once the
    call is over (the handler hangs up when its tone has played)."""
    proc = Siproc(
        workdir / "h.sh",
        "handler.log",
        env={"SIPROC_CODEC_PRIORITIES": priorities},
        cwd=workdir,
        log_level=6,
    )
    siprocs.append(proc)
    proc.wait_ready()
    proc.call(bob.direct_uri)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    log = wait_file(workdir / "handler.log", r"^(EOF|SIGTERM)$", timeout=TONE_SECONDS + 15)
    bob.wait_event("CALL_CLOSED", timeout=10)
    return proc, log


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("case", CASES, ids=[c.baresip_codec.split("/")[0] for c in CASES])
def test_tones_cross_in_every_codec(
    case: Case, workdir: Path, tmp_path: Path, siprocs: list[Siproc], make_baresip: MakeBaresip
) -> None:
    make_tone(workdir / "tone.wav", case.siproc_tone, TONE_SECONDS, rate=case.rate)
    source = make_tone(
        tmp_path / "bob-source.wav", BARESIP_TONE, BARESIP_SOURCE_SECONDS, rate=case.rate
    )
    if case.channels == 2:
        mono, _ = soundfile.read(str(source), dtype="int16")
        soundfile.write(str(source), np.stack([mono, mono], axis=1), case.rate, "PCM_16")
    bob = make_baresip("bob", codecs=(case.baresip_codec,), audio_source=source, record=True)

    proc, log = call_baresip(workdir, siprocs, bob, case.priorities)

    events = [line[6:] for line in log.splitlines() if line.startswith("EVENT ")]
    assert events[:3] == ["RINGING", "CONNECTED", "STOPPED tone.wav"], events
    assert not any(e.startswith("ERROR") for e in events), events

    # The codec: in the SDP answer, and as baresip set it up.
    messages = sip_messages(proc.lines)
    answer = find_message(messages, "recv", r"SIP/2\.0 200 (?s:.*)\nCSeq: \d+ INVITE\n")
    [pt, *_] = audio_m_line(answer)
    assert re.search(rf"^a=rtpmap:{pt} {re.escape(case.rtpmap)}\s*$", answer, re.M | re.I), answer
    assert f"Set audio encoder: {case.baresip_log}" in bob.log()
    assert f"Set audio decoder: {case.baresip_log}" in bob.log()

    # siproc -> baresip: what baresip heard.
    [heard] = bob.recordings("dec")
    assert soundfile.info(str(heard)).samplerate == case.rate
    assert dominant_frequency(heard, skip_seconds=SKIP_SECONDS) == pytest.approx(
        case.siproc_tone, abs=10
    )
    assert band_level(heard, case.siproc_tone) > 0.3  # played at 0.5 of full scale: 0.35 RMS

    # baresip -> siproc: siproc's RECORD file (both directions mixed) holds baresip's tone as
    # loud as it was sent, next to siproc's own.
    recording = workdir / "rec.wav"
    info = soundfile.info(str(recording))
    assert info.samplerate == case.rate
    assert info.duration > TONE_SECONDS - 0.5
    assert band_level(recording, BARESIP_TONE) > 0.3  # sent at 0.5 of full scale: 0.35 RMS
    assert band_level(recording, case.siproc_tone) > 0.3


def test_codec_priorities_pcma_first_and_no_pcmu(
    workdir: Path, tmp_path: Path, siprocs: list[Siproc], make_baresip: MakeBaresip
) -> None:
    """SIPROC_CODEC_PRIORITIES=PCMA:200,PCMU:0: the call uses PCMA, the offer has no PCMU."""
    make_tone(workdir / "tone.wav", 440.0, 2.0)
    source = make_tone(tmp_path / "bob-source.wav", BARESIP_TONE, BARESIP_SOURCE_SECONDS)
    # baresip would take either G.711 law (PCMU first, as it prefers).
    bob = make_baresip("bob", codecs=("PCMU", "PCMA"), audio_source=source, record=True)

    proc, _ = call_baresip(workdir, siprocs, bob, "PCMA:200,PCMU:0")

    messages = sip_messages(proc.lines)
    invite = find_message(messages, "send", r"INVITE sip:")
    offered = audio_m_line(invite)
    assert offered[0] == "8"  # PCMA first: 200 beats every default priority
    assert "0" not in offered
    assert "PCMU" not in invite.upper()
    assert re.search(r"^a=rtpmap:8 PCMA/8000\s*$", invite, re.M)
    answer = find_message(messages, "recv", r"SIP/2\.0 200 (?s:.*)\nCSeq: \d+ INVITE\n")
    assert audio_m_line(answer)[0] == "8"
    assert "Set audio encoder: PCMA 8000Hz" in bob.log()
    [heard] = bob.recordings("dec")
    assert dominant_frequency(heard, skip_seconds=SKIP_SECONDS) == pytest.approx(440, abs=10)


def test_siproc_parameters_lists_every_codec_usable_here() -> None:
    """This machine (and CI) has the g722 package and libopus: all codecs are usable."""
    script = "import sys; from siproc.cli import parameters_main; sys.exit(parameters_main())"
    env = {"PATH": "/usr/bin:/bin", "SIPROC_CODEC_PRIORITIES": "opus:150"}
    done = subprocess.run(
        [sys.executable, "-c", script, "--json"], capture_output=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    codecs = {c["name"]: c for c in json.loads(done.stdout)["codecs"]}
    assert list(codecs) == [
        "PCMU/8000/1",
        "PCMA/8000/1",
        "G722/16000/1",
        "opus/48000/2",
        "telephone-event/8000/1",
    ]
    assert all(c["usable"] for c in codecs.values()), codecs
    assert codecs["opus/48000/2"]["priority"] == 150
    assert codecs["opus/48000/2"]["note"].startswith("Opus 48 kHz mono, libopus 1.")
    assert codecs["G722/16000/1"]["note"].startswith("G.722 64 kbit/s, g722 package 1.")
