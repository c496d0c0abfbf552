"""In-call features against a real baresip 1.0 and SIPp (issue 4 acceptance): MESSAGE both
ways, early media both ways, and hold/resume from baresip.

Every test runs real processes on 127.0.0.1: siproc with a bash handler, baresip driven over
ctrl_tcp, SIPp with a scenario from ``sipp/``. baresip shows a received MESSAGE only in its UI
output (PEERS.md), which its ``cons`` module hands to a TCP client (``Baresip(console=True)``);
it sends MESSAGEs out of dialog, to its current contact (``contacts``, command ``/message``).

The acceptance tests:

- MESSAGE round trip with baresip both ways, including a text with a newline and a backslash;
- PROGRESS + PLAY before ANSWER: the caller's recording holds the early audio. baresip's sndfile
  recorder starts with the stream, which early media starts (at the 183), so baresip's own
  ``-dec`` recording is the caller's recording checked here. The other way round (siproc is the
  caller and records the far end's early media) needs a far end that sends audio before it
  answers: baresip does not (its answermode=early sends 183 with SDP but starts its audio
  source only at the answer), so SIPp replays a pcap after its 183; baresip's early answer is
  still checked for the RINGING and PROGRESS events;
- hold from baresip gives the handler HOLD and RESUME, and siproc sends no RTP while held: its
  packet counter, logged when the hold and the resume arrive, does not move in between.

Beyond the acceptance list: siproc's own HOLD and RESUME towards baresip.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.audio import dominant_frequency, read_mono, rms
from tests.peers import Baresip, Sipp
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]
MakeSipp = Callable[..., Sipp]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
SIPP_EARLY_SECONDS = 2.5  # uas_early_media.xml: 183 to 200
ENDED = r"^(SIGTERM|EOF)$"
EARLY_SECONDS = 2.0  # PROGRESS to ANSWER
TONE_SECONDS = 1.5  # the tone played during early media
TEXT_IN = "line1\nline2 \\ x"  # what baresip sends
DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
TEXT_OUT = r"from siproc: a\nb \\ c"  # what the handler writes (escaped): "a", LF, "b \ c"

# HANDLER LOG MODE: logs "EVENT <line>" for every event, then EOF or SIGTERM.
#   early    PROGRESS, PLAY tone.wav, ANSWER EARLY_SECONDS later
#   message  ANSWER; on CONNECTED: MESSAGE TEXT_OUT
#   hold     ANSWER; on CONNECTED: PLAY long.wav (so that there is something not to send)
#   holder   (outgoing) on CONNECTED: HOLD after 1 s, RESUME 1.5 s later, HANGUP 1 s later
#   record   (outgoing) RECORD rec.wav on PROGRESS, HANGUP 0.5 s after CONNECTED
HANDLER = rf"""
log=$1; mode=$2
on_term() {{
  while IFS= read -r -t 1 line; do printf 'EVENT %s\n' "$line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}}
trap on_term TERM
case "$mode" in
  early) echo PROGRESS; echo "PLAY tone.wav"; (sleep {EARLY_SECONDS}; echo ANSWER) & ;;
  message|hold) echo ANSWER ;;
esac
while IFS= read -r line; do
  printf 'EVENT %s\n' "$line" >> "$log"
  case "$mode:$line" in
    message:CONNECTED) printf 'MESSAGE %s\n' '{TEXT_OUT}' ;;
    hold:CONNECTED) echo "PLAY long.wav" ;;
    holder:CONNECTED) (sleep 1; echo HOLD; sleep 1.5; echo RESUME; sleep 1; echo HANGUP) & ;;
    record:PROGRESS) echo "RECORD rec.wav" ;;
    record:CONNECTED) (sleep 0.5; echo HANGUP) & ;;
  esac
done
echo EOF >> "$log"
"""


def handler_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def sdp_directions(
    proc: Siproc, start_line: str, method: str, *, received: bool = False
) -> list[str]:
    """The SDP direction attributes of the messages ``proc`` sent (or ``received``) whose start
    line begins with ``start_line`` and whose CSeq method is ``method`` (from its SIP trace,
    log level 6)."""
    found = []
    way = " recv from " if received else " send to "
    for block in re.split(r"\n(?=siproc\[)", "\n".join(proc.lines)):
        lines = [line.strip() for line in block.splitlines()]  # the trace lines are indented
        if len(lines) < 2 or way not in lines[0] or not lines[1].startswith(start_line):
            continue
        if any(re.fullmatch(rf"CSeq: \d+ {method}", line) for line in lines):
            found += [line[2:] for line in lines if line in DIRECTIONS]
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(
        tmp_path / "siproc", HANDLER, {"tone.wav": (440.0, TONE_SECONDS), "long.wav": (660.0, 20.0)}
    )


# --------------------------------------------------------------------------------------------
# MESSAGE


def test_message_round_trip_with_baresip(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "message")
    bob = make_baresip("bob", contacts=[f'"alice" <{alice.uri("alice")}>'], console=True)
    bob.dial(alice.uri("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)

    # siproc -> baresip: the in-dialog MESSAGE's text, unescaped, in baresip's UI
    shown = bob.wait_console('"from siproc: a\nb \\ c"', timeout=5)
    assert re.search(r"sip:alice@127\.0\.0\.1:\d+: \"from siproc: a\nb \\ c\"", shown), shown
    alice.wait_for(r"MESSAGE sent \(\d+ bytes\)")

    # baresip -> siproc: an out-of-dialog MESSAGE from the call's party reaches the handler,
    # escaped: one line, "\n" for the newline and "\\" for the backslash
    response = bob.message(TEXT_IN)
    assert response.get("ok"), response
    text = wait_file(workdir / "alice.log", r"^EVENT MESSAGE ")
    assert "EVENT MESSAGE line1\\nline2 \\\\ x\n" in text, text

    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events == [
        "CONNECTED",
        "MESSAGE line1\\nline2 \\\\ x",
        "DISCONNECTED 200 remote hangup",
    ], events


# --------------------------------------------------------------------------------------------
# Early media


def test_progress_and_play_before_answer_reach_baresip(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    """baresip calls siproc; the handler says PROGRESS, plays a 440 Hz tone, and answers 2 s
    later. baresip's recording of what it heard (it starts at the 183) holds the tone in its
    first 1.5 s: the early audio, which ended before the answer."""
    alice = make_siproc("alice.log", "early")
    bob = make_baresip("bob", record=True)
    bob.dial(alice.uri("alice"))
    progress = bob.wait_event("CALL_PROGRESS", timeout=5)
    established = bob.wait_event("CALL_ESTABLISHED", timeout=10)
    assert bob.events.index(progress) < bob.events.index(established)
    time.sleep(0.5)
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)

    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    # the tone ended before the answer: it was heard only as early media
    assert events[:2] == ["STOPPED tone.wav", "CONNECTED"], events
    assert not any(e.startswith("ERROR") for e in events), events
    log = bob.log()
    assert "183 Session Progress (application/sdp)" in log, log

    [heard] = bob.recordings("dec")
    early, rate = read_mono(heard)
    clip = heard.with_name("early-part.wav")
    soundfile.write(str(clip), early[: round(TONE_SECONDS * rate)], rate, subtype="PCM_16")
    assert dominant_frequency(clip, skip_seconds=0.2) == pytest.approx(440.0, abs=10)
    assert rms(clip, skip_seconds=0.2) > 0.1


def test_early_media_from_sipp_is_recorded_before_the_answer(
    workdir: Path, make_sipp: MakeSipp, make_siproc: Callable[..., Siproc]
) -> None:
    """siproc calls a SIPp UAS that answers 183 with a PCMA answer and replays 7 s of A-law
    audio (SIPp's g711a.pcap) from then on, and 200 OK 2.5 s later. The handler gets
    PROGRESS, RECORDs from then on, and the recording holds the far end's audio from before
    the answer. (baresip cannot be this far end: with answermode=early its 183 starts no audio
    source, see the next test.)"""
    uas = make_sipp(SIPP_DIR / "uas_early_media.xml", timeout=15)
    uas.wait_listening()
    alice = make_siproc("alice.log", "record")
    alice.call(uas.uri)
    result = uas.wait(timeout=25)
    assert result.returncode == 0, result.stdout[-3000:]

    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events[:2] == ["PROGRESS", "CONNECTED"], events
    assert events[-1].startswith("DISCONNECTED 200"), events
    alice.wait_for(r"early media from 127\.0\.0\.1 port \d+ \(183\)")
    alice.wait_for(r"recorded \d+\.\d+ s to rec\.wav")
    samples, rate = read_mono(workdir / "rec.wav")
    assert len(samples) > (SIPP_EARLY_SECONDS + 0.3) * rate
    early = samples[round(0.2 * rate) : round((SIPP_EARLY_SECONDS - 0.1) * rate)]
    assert float(np.sqrt(np.mean(early * early))) > 0.01, "the early audio was recorded"
    received = alice.wait_for(r"call ended: .*\(RTP: \d+ packets sent, (\d+) received\)")
    assert int(received.group(1)) > SIPP_EARLY_SECONDS / 0.02 * 0.8


def test_baresip_answering_early_gives_ringing_and_progress(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    """siproc calls a baresip in answermode=early: its 180 and its 183 with SDP reach the
    handler as RINGING and PROGRESS, and its later answer as CONNECTED."""
    bob = make_baresip("bob", answermode="early")
    alice = make_siproc("alice.log", "record")
    alice.call(bob.direct_uri)
    wait_file(workdir / "alice.log", r"^EVENT PROGRESS$")
    time.sleep(0.5)
    assert "CONNECTED" not in handler_events((workdir / "alice.log").read_text())
    bob.accept()
    bob.wait_event("CALL_ESTABLISHED", timeout=5)
    bob.wait_event("CALL_CLOSED", timeout=5)  # the handler hangs up 0.5 s after CONNECTED
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events[:3] == ["RINGING", "PROGRESS", "CONNECTED"], events
    alice.wait_for(r"early media from 127\.0\.0\.1 port \d+ \(183\)")


# --------------------------------------------------------------------------------------------
# Hold


def test_hold_from_baresip_gives_hold_and_resume_and_stops_sending(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    alice = make_siproc("alice.log", "hold", log_level=6)  # SIP trace: the SDP answers
    bob = make_baresip("bob")
    bob.dial(alice.uri("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "alice.log", r"^EVENT CONNECTED$")
    time.sleep(1.0)
    assert bob.hold().get("ok")
    wait_file(workdir / "alice.log", r"^EVENT HOLD$")
    held = alice.wait_for(r"RTP sending paused \((\d+) packets sent")
    time.sleep(2.0)
    assert bob.resume().get("ok")
    wait_file(workdir / "alice.log", r"^EVENT RESUME$")
    resumed = alice.wait_for(r"RTP sending resumed \((\d+) packets sent")
    time.sleep(1.0)
    bob.hangup()
    bob.wait_event("CALL_CLOSED", timeout=5)

    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events == ["CONNECTED", "HOLD", "RESUME", "DISCONNECTED 200 remote hangup"], events
    sent_before, sent_after_hold = int(held.group(1)), int(resumed.group(1))
    assert sent_before > 40, "siproc was sending before the hold (1 s of 20 ms packets)"
    assert sent_after_hold - sent_before <= 1, "siproc must not send while held"
    total = alice.wait_for(r"call ended: 200 remote hangup \(RTP: (\d+) packets sent")
    assert int(total.group(1)) - sent_after_hold > 40, "sending resumed after RESUME"
    # what siproc answered: recvonly to baresip's sendonly (RFC 3264 section 8.4), then
    # sendrecv to its sendrecv
    assert "call: hold sip:alice@" in bob.log()
    answers = sdp_directions(alice, "SIP/2.0 200 OK", "INVITE")
    assert answers == ["sendrecv", "recvonly", "sendrecv"], answers


def test_siproc_holds_and_resumes_baresip(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: Callable[..., Siproc]
) -> None:
    """HOLD and RESUME from siproc's handler: baresip answers the sendonly offer with recvonly
    and the sendrecv one with sendrecv; no ERROR, and the call goes on until the HANGUP."""
    bob = make_baresip("bob")
    alice = make_siproc("alice.log", "holder", log_level=6)
    alice.call(bob.direct_uri)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_event("CALL_CLOSED", timeout=10)
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events == ["RINGING", "CONNECTED", "DISCONNECTED 200 hung up"], events
    alice.wait_for(r"call put on hold by us")
    alice.wait_for(r"call taken off hold by us")
    offers = sdp_directions(alice, "INVITE sip:", "INVITE")
    assert offers == ["sendrecv", "sendonly", "sendrecv"], offers  # the call, HOLD, RESUME
    answers = sdp_directions(alice, "SIP/2.0 200 OK", "INVITE", received=True)
    assert answers[-2:] == ["recvonly", "sendrecv"], answers  # (sendrecv may go unsaid)
