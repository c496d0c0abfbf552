"""DTMF both ways against real SIPp and baresip (issue 3, items 5 and 6; DESIGN.md 4.5).

In: SIPp replays RFC 4733 events from its shipped pcaps and sends SIP INFO; baresip sends
in-band tones (its audio source is a WAV of DTMF dual tones, and siproc does not accept
telephone-event, so nothing but the audio carries them). Out: siproc's ``DTMF 0*9#`` reaches
baresip as RFC 4733 events (its ctrl_tcp CALL_DTMF_START events) and SIPp as four SIP INFO
requests whose bodies the scenario checks one by one. Every handler here logs every event it
reads; the tests compare the handler's DTMF events with what was sent: each once, in order.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.peers import Baresip, Sipp
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]
MakeSipp = Callable[..., Sipp]
MakeSiproc = Callable[..., Siproc]

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ENDED = r"^(SIGTERM|EOF)$"  # the last line a DTMF_HANDLER writes
NO_TELEPHONE_EVENT = {"SIPROC_CODEC_PRIORITIES": "telephone-event:0"}

# DTMF_HANDLER LOGFILE MODE [DIGITS]: logs "EVENT <line>" for every event, then "EOF" or
# "SIGTERM". MODE answer: RINGING, ANSWER. MODE send (outgoing calls): on CONNECTED,
# "DTMF DIGITS", then HANGUP 2.5 s later.
DTMF_HANDLER = r"""
log=$1; mode=$2; digits=$3
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = answer ] && { echo RINGING; echo ANSWER; }
while read -r line; do
  echo "EVENT $line" >> "$log"
  if [ "$mode:$line" = send:CONNECTED ]; then
    echo "DTMF $digits"
    sleep 2.5
    echo HANGUP
  fi
done
echo EOF >> "$log"
"""

KEYPAD = {
    key: (row_hz, column_hz)
    for row_hz, keys in zip((697, 770, 852, 941), ("123A", "456B", "789C", "*#0D"), strict=True)
    for column_hz, key in zip((1209, 1336, 1477, 1633), keys, strict=True)
}


def write_dtmf_wav(
    path: Path, keys: str, on_s: float, off_s: float, lead_s: float, tail_s: float
) -> Path:
    """A mono 8 kHz 16-bit WAV: silence, then each key as a dual tone (-12 dBFS per tone)
    followed by silence, then a tail of silence."""
    rate = 8000
    parts = [np.zeros(round(lead_s * rate))]
    t = np.arange(round(on_s * rate)) / rate
    for key in keys:
        low, high = KEYPAD[key]
        parts.append(0.25 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)))
        parts.append(np.zeros(round(off_s * rate)))
    parts.append(np.zeros(round(tail_s * rate)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.concatenate(parts), rate, subtype="PCM_16", format="WAV")
    return path


def handler_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def dtmf_events(text: str) -> list[str]:
    return [event for event in handler_events(text) if event.startswith("DTMF ")]


def sipp_successful_calls(sipp: Sipp) -> int:
    """The SuccessfulCall(C) counter of the last line of sipp's -trace_stat CSV."""
    [stats] = [p for p in sipp.workdir.glob("*.csv") if "rtt" not in p.name]
    rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";"))
    return int(rows[-1][rows[0].index("SuccessfulCall(C)")])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", DTMF_HANDLER)


# --------------------------------------------------------------------------------------------
# DTMF in


def test_sipp_rfc4733_and_info_digits_reach_the_handler_once_each(
    workdir: Path, make_sipp: MakeSipp, make_siproc: MakeSiproc
) -> None:
    """SIPp replays dtmf_2833_{1,2,3,pound}.pcap (PT 101, 10 packets each: updates and three
    end packets) and sends INFO 5 (dtmf-relay) and 9 (dtmf): the handler sees each once."""
    alice = make_siproc("alice.log", "answer")
    uac = make_sipp(
        SIPP_DIR / "uac_dtmf.xml", f"127.0.0.1:{alice.port}", timeout=12, extra_args=["-s", "a"]
    )
    result = uac.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sipp_successful_calls(uac) == 1

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    assert events[0] == "CONNECTED", events
    assert events[-1].startswith("DISCONNECTED 200"), events
    assert dtmf_events(text) == ["DTMF 1", "DTMF 2", "DTMF 3", "DTMF #", "DTMF 5", "DTMF 9"]
    assert not any(e.startswith("ERROR") for e in events), events


def test_baresip_in_band_tones_are_detected_once_each(
    tmp_path: Path, workdir: Path, make_baresip: MakeBaresip, make_siproc: MakeSiproc
) -> None:
    """baresip's audio carries 147* as dual tones, 80 ms on / 80 ms off; siproc refuses
    telephone-event (priority 0), so its Goertzel detector must find exactly those keys."""
    source = write_dtmf_wav(
        tmp_path / "keys.wav", "147*", on_s=0.08, off_s=0.08, lead_s=1.0, tail_s=1.0
    )
    alice = make_siproc("alice.log", "answer", env=NO_TELEPHONE_EVENT)
    bob = make_baresip("bob", audio_source=source)
    bob.dial(alice.uri("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=5)
    bob.wait_event("CALL_CLOSED", timeout=8)  # baresip hangs up when the WAV ends

    text = wait_file(workdir / "alice.log", ENDED)
    events = handler_events(text)
    assert events[0] == "CONNECTED", events
    assert dtmf_events(text) == ["DTMF 1", "DTMF 4", "DTMF 7", "DTMF *"], events
    alice.wait_for(r"call ended: 200 remote hangup")


# --------------------------------------------------------------------------------------------
# DTMF out


def test_siproc_sends_rfc4733_digits_to_baresip_in_order(
    workdir: Path, make_baresip: MakeBaresip, make_siproc: MakeSiproc
) -> None:
    """``DTMF 0*9#`` with telephone-event negotiated: baresip reports each key once."""
    bob = make_baresip("bob")
    alice = make_siproc("alice.log", "send", "0*9#")
    alice.call(bob.direct_uri)
    bob.wait_event("CALL_ESTABLISHED", timeout=5)
    keys = [str(bob.wait_event("CALL_DTMF_START", timeout=5).get("param")) for _ in range(4)]
    assert keys == ["0", "*", "9", "#"]
    bob.wait_event("CALL_CLOSED", timeout=5)  # the handler hangs up 2.5 s after DTMF
    assert bob.event_types().count("CALL_DTMF_START") == 4, bob.events

    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events[:2] == ["RINGING", "CONNECTED"], events  # baresip's 180, then its 200
    assert not any(e.startswith("ERROR") for e in events), events
    alice.wait_for(r"call ended: 200 hung up")


def test_siproc_sends_info_digits_to_sipp_in_order(
    workdir: Path, make_sipp: MakeSipp, make_siproc: MakeSiproc
) -> None:
    """``DTMF 0*9#`` without telephone-event (SIPp answers PCMU only): four SIP INFO requests
    with application/dtmf-relay bodies, in order; the scenario checks each body."""
    uas = make_sipp(SIPP_DIR / "uas_dtmf_info.xml", timeout=12, extra_args=["-trace_logs"])
    uas.wait_listening()
    alice = make_siproc("alice.log", "send", "0*9#")
    alice.call(uas.uri)
    result = uas.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sipp_successful_calls(uas) == 1

    [messages] = uas.workdir.glob("*_messages.log")
    bodies = [
        line.strip()
        for line in messages.read_text(errors="replace").splitlines()
        if line.startswith("Signal=")
    ]
    assert bodies == ["Signal=0", "Signal=*", "Signal=9", "Signal=#"]
    events = handler_events(wait_file(workdir / "alice.log", ENDED))
    assert events[:2] == ["RINGING", "CONNECTED"], events  # SIPp's 180, then its 200
    assert not any(e.startswith("ERROR") for e in events), events
