"""DTMF between two real siproc processes on loopback (DESIGN.md 4.4): RFC 4733 events, SIP
INFO when telephone-event is disabled, in-band tones played from a file, and the handler's
errors (invalid keys, not connected). And a phone that offers Opus with telephone-event at
48000, 16000 and 8000 Hz (issue 8 item 9): a small SIP/RTP peer in the test, over real UDP on
loopback, checks the answer and sends its DTMF on two of those payload types."""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siproc.media.codecs import get_codec, opus
from siproc.media.dtmf import pack_event, parse_event
from siproc.media.rtp import is_rtcp, parse_rtp
from siproc.sdp.model import parse_sdp, rtpmap
from siproc.sip.message import Request, Response, parse_message
from tests.siproc_proc import MakePhone, handler_dir, wait_file

ENDED = r"^(SIGTERM|EOF)$"
NO_TELEPHONE_EVENT = {"SIPROC_CODEC_PRIORITIES": "telephone-event:0"}

# HANDLER LOG MODE [ARG]: logs "EVENT <line>" for every event, then EOF or SIGTERM.
#   answer  "DTMF 1" before answering (refused: not connected), RINGING, ANSWER; on CONNECTED
#           "DTMF 12x" (refused: invalid key)
#   send    on CONNECTED "DTMF ARG" (words of ARG as separate commands), HANGUP 4 s later
#   play    on CONNECTED "PLAY ARG", HANGUP on STOPPED
#   events  RINGING, ANSWER; on CONNECTED "DTMF 1"; HANGUP after the event "DTMF #"
HANDLER = r"""
log=$1; mode=$2; arg=$3
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = answer ] && { echo "DTMF 1"; echo RINGING; echo ANSWER; }
[ "$mode" = events ] && { echo RINGING; echo ANSWER; }
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    answer:CONNECTED) echo "DTMF 12x" ;;
    send:CONNECTED) for keys in $arg; do echo "DTMF $keys"; done; sleep 4; echo HANGUP ;;
    play:CONNECTED) echo "PLAY $arg" ;;
    play:STOPPED*) echo HANGUP ;;
    events:CONNECTED) echo "DTMF 1" ;;
    "events:DTMF #") echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""

KEYPAD = {
    key: (row_hz, column_hz)
    for row_hz, keys in zip((697, 770, 852, 941), ("123A", "456B", "789C", "*#0D"), strict=True)
    for column_hz, key in zip((1209, 1336, 1477, 1633), keys, strict=True)
}


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]


def dtmf(text: str) -> str:
    return "".join(e[5:] for e in events(text) if e.startswith("DTMF "))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER)


def check_answerer(text: str) -> None:
    """The answering handler's refused commands: DTMF before the call is up, invalid keys."""
    seen = events(text)
    assert seen[0] == "ERROR DTMF not possible while the call is incoming", seen
    assert "ERROR DTMF invalid DTMF character 'X'" in seen, seen


def test_rfc4733_every_key_once_in_order(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob.log", "answer")
    alice = phones("alice.log", "send", "0123456789 *#ABCD")  # two commands: queued
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "0123456789*#ABCD"
    check_answerer(bob_log)
    alice_log = wait_file(workdir / "alice.log", ENDED)
    assert not any(e.startswith("ERROR") for e in events(alice_log)), alice_log


def test_sip_info_when_telephone_event_is_disabled(workdir: Path, phones: MakePhone) -> None:
    bob = phones("bob.log", "answer")
    alice = phones("alice.log", "send", "*1a#", env=NO_TELEPHONE_EVENT)
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "*1A#"
    check_answerer(bob_log)
    assert alice.count(r"ERROR") == 0, alice.stderr()


def test_in_band_quick_tones_from_a_played_file(workdir: Path, phones: MakePhone) -> None:
    """40 ms tones with 40 ms gaps, played by alice, detected by bob (no telephone-event)."""
    rate = 8000
    t = np.arange(rate * 40 // 1000) / rate
    parts = [np.zeros(rate // 5)]
    for key in "123#":
        low, high = KEYPAD[key]
        parts += [0.25 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))]
        parts += [np.zeros(rate * 40 // 1000)]
    parts += [np.zeros(rate // 5)]
    sf.write(str(workdir / "keys.wav"), np.concatenate(parts), rate, subtype="PCM_16")
    bob = phones("bob.log", "answer", env=NO_TELEPHONE_EVENT)
    alice = phones("alice.log", "play", "keys.wav")
    alice.call(bob.uri("bob"))
    bob_log = wait_file(workdir / "bob.log", ENDED, timeout=15)
    assert dtmf(bob_log) == "123#"


# -- a phone offering telephone-event at three clock rates (issue 8 item 9) -------------------

HOST = "127.0.0.1"
OPUS_PT = 111
#: payload type -> clock rate, as a WebRTC-style phone offers them
PHONE_EVENTS = {99: 48000, 100: 16000, 101: 8000}
THREE_RATE_SDP = """v=0
o=- 7 7 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 111 99 100 101
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:99 telephone-event/48000
a=rtpmap:100 telephone-event/16000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""


class Phone:
    """A tiny SIP UAC and RTP end on two loopback UDP sockets: one INVITE, its ACK, RTP
    (Opus frames and RFC 4733 events) and a 200 to the callee's BYE."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((HOST, 0))
        self.rtp.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.call_id = f"rates{time.time_ns()}@{HOST}"
        self.seq = 0
        self.ssrc = 0x5EED
        self.received: list[tuple[int, bytes]] = []  # (payload type, payload) from siproc
        self.opus = get_codec("opus")
        self.silence = self.opus.encode(np.zeros(self.opus.frame_samples(20), dtype=np.int16))

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def _headers(self, branch: str, cseq: str, to: str) -> str:
        return (
            f"Via: SIP/2.0/UDP {HOST}:{self.sip_port};branch=z9hG4bK{branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:phone@{HOST}>;tag=ph7\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq}\r\n"
            f"Contact: <sip:phone@{HOST}:{self.sip_port}>\r\n"
        )

    def invite(self, target: str, port: int) -> Response:
        """INVITE with the three-rate offer; ACK the 200 and return it."""
        body = THREE_RATE_SDP.format(port=self.rtp_port).replace("\n", "\r\n").encode()
        to = f"<{target}>"
        message = (
            f"INVITE {target} SIP/2.0\r\n"
            + self._headers("inv1", "1 INVITE", to)
            + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.sip.settimeout(0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.sip.sendto(message, (HOST, port))  # again until a response comes (Timer A)
            try:
                response = self._final(deadline)
            except TimeoutError:
                continue
            assert response.status == 200, f"INVITE got {response.status} {response.reason}"
            contact = response.headers.get("Contact") or ""
            uri = re.search(r"<([^>]+)>", contact)
            assert uri is not None, contact
            ack = (
                f"ACK {uri.group(1)} SIP/2.0\r\n"
                + self._headers("ack1", "1 ACK", response.headers.get("To") or "")
                + "Content-Length: 0\r\n\r\n"
            )
            self.sip.sendto(ack.encode(), (HOST, port))
            return response
        raise AssertionError("siproc never answered the INVITE")

    def _final(self, deadline: float) -> Response:
        while True:
            data, _ = self.sip.recvfrom(65535)
            message = parse_message(data)
            if isinstance(message, Response) and message.status >= 200:
                return message
            if time.monotonic() > deadline:
                raise TimeoutError

    def send_rtp(self, dest: tuple[str, int], pt: int, ts: int, payload: bytes, m: bool) -> None:
        self.seq += 1
        header = struct.pack("!BBHII", 0x80, (0x80 if m else 0) | pt, self.seq, ts, self.ssrc)
        self.rtp.sendto(header + payload, dest)

    def drain(self) -> None:
        """Keep what siproc sent us (RTP only: RTCP is muxed on the same port)."""
        while True:
            try:
                data = self.rtp.recv(65535)
            except BlockingIOError:
                return
            if not is_rtcp(data):
                header, payload = parse_rtp(data)
                self.received.append((header.payload_type, bytes(payload)))

    def answer_bye(self, timeout: float) -> Request:
        """Wait for the callee's BYE and answer it 200."""
        self.sip.settimeout(timeout)
        while True:
            data, source = self.sip.recvfrom(65535)
            message = parse_message(data)
            if isinstance(message, Request) and message.method == "BYE":
                lines = [
                    f"{name}: {value}"
                    for name, value in message.headers
                    if name in ("Via", "From", "To", "Call-ID", "CSeq")
                ]
                ok = "SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"
                self.sip.sendto(ok.encode(), source)
                return message


@pytest.fixture
def phone() -> Iterator[Phone]:
    # Opus is part of what is tested: without libopus this fails, it does not skip.
    usable, why = opus.probe()
    assert usable, f"Opus is needed for this test: {why}"
    peer = Phone()
    yield peer
    peer.close()


def key_press(phone: Phone, dest: tuple[str, int], pt: int, key: int, ts: int) -> None:
    """One RFC 4733 key press of 100 ms, its durations at ``pt``'s clock rate: five packets
    20 ms apart, then the end packet three times (RFC 4733 section 2.5.1)."""
    step = PHONE_EVENTS[pt] // 50
    for n in range(1, 6):
        phone.send_rtp(dest, pt, ts, pack_event(key, False, 10, n * step), n == 1)
        phone.drain()
        time.sleep(0.02)
    for _ in range(3):
        phone.send_rtp(dest, pt, ts, pack_event(key, True, 10, 5 * step), False)


def test_phone_offering_telephone_event_at_three_rates(
    workdir: Path, phones: MakePhone, phone: Phone
) -> None:
    bob = phones("bob.log", "events")
    response = phone.invite(bob.uri("bob"), bob.port)

    # The answer: Opus, and each telephone-event with the offer's own number AND clock rate,
    # the one at Opus' 48000 Hz first (RFC 3264 section 6.1, RFC 4733 section 2.1).
    answer = parse_sdp(response.body)
    media = answer.media[0]
    assert media.formats[0] == str(OPUS_PT), media.formats
    events = {
        pt: clock for pt, (name, clock, _) in rtpmap(media).items() if name == "telephone-event"
    }
    assert events == PHONE_EVENTS, rtpmap(media)
    chosen = next(int(f) for f in media.formats if int(f) in events)
    assert chosen == 99
    assert answer.connection is not None
    dest = (answer.connection.address, media.port)

    # Opus audio for a while (siproc latches onto us), a "5" on the chosen type at 48000 Hz,
    # more audio, then a "#" on 101 at 8000 Hz; siproc's own "1" arrives meanwhile.
    audio_ts = 0
    for tick in range(60):
        if tick == 15:
            key_press(phone, dest, chosen, 5, audio_ts)
        elif tick == 30:
            key_press(phone, dest, 101, 11, audio_ts // 6)  # the 8000 Hz clock
        phone.send_rtp(dest, OPUS_PT, audio_ts, phone.silence, tick == 0)
        audio_ts += 960
        phone.drain()
        time.sleep(0.02)

    bob_log = wait_file(workdir / "bob.log", r"^EVENT DTMF #$", timeout=10)
    assert dtmf(bob_log) == "5#", bob_log
    phone.answer_bye(10)  # the handler hung up after "#"
    wait_file(workdir / "bob.log", ENDED)
    # What siproc sent: Opus, and its "1" on 99 with durations in 48000 Hz units.
    phone.drain()
    sent_types = {pt for pt, _ in phone.received}
    assert sent_types <= {OPUS_PT, chosen}, sent_types
    keys = [parse_event(p) for pt, p in phone.received if pt == chosen]
    assert {e.digit for e in keys} == {"1"}, keys
    assert [e.duration for e in keys][:5] == [960, 1920, 2880, 3840, 4800]
