"""DTMF: the RFC 4733 sender's packet sequence, the receiver's deduplication, and the in-band
Goertzel detector on synthetic tones (siproc.media.dtmf)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import numpy as np
import numpy.typing as npt
import pytest

from siproc.media.codecs import G711Codec, get_codec
from siproc.media.dtmf import (
    DTMF_COLUMN_FREQUENCIES,
    DTMF_ROW_FREQUENCIES,
    DtmfReceiver,
    DtmfSender,
    EventPacket,
    GoertzelDetector,
    TelephoneEvent,
    goertzel_power,
    pack_event,
    parse_event,
)
from siproc.media.rtp import RtpHeader
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream
from tests.rtp_peer import drain_rtp

RATE = 8000
STEP = 160  # 20 ms at 8000 Hz
KEYPAD = {
    key: (DTMF_ROW_FREQUENCIES[r], DTMF_COLUMN_FREQUENCIES[c])
    for r, row in enumerate(("123A", "456B", "789C", "*#0D"))
    for c, key in enumerate(row)
}

Samples = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Payload


def test_pack_and_parse_event_round_trip() -> None:
    payload = pack_event(11, True, 10, 800)
    assert payload == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_event(payload) == TelephoneEvent(11, True, 10, 800)
    assert parse_event(payload).digit == "#"
    assert parse_event(bytes([16, 10, 0, 0])).digit is None  # flash-hook is not a key
    # sipp's dtmf_2833_1.pcap, first and last packets (duration 0 is legal at the start)
    assert parse_event(bytes.fromhex("010a0000")) == TelephoneEvent(1, False, 10, 0)
    assert parse_event(bytes.fromhex("018a08c0")) == TelephoneEvent(1, True, 10, 2240)


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x0a\x00"])
def test_parse_event_refuses_short_payloads(payload: bytes) -> None:
    with pytest.raises(ValueError, match="too short"):
        parse_event(payload)


@pytest.mark.parametrize(
    ("event", "volume", "duration"), [(256, 10, 0), (1, 64, 0), (1, 10, 0x10000), (-1, 0, 0)]
)
def test_pack_event_validates(event: int, volume: int, duration: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        pack_event(event, False, volume, duration)


# --------------------------------------------------------------------------------------------
# Sender


def run_sender(
    sender: DtmfSender, start: int, ticks: int, step: int = STEP
) -> list[tuple[int, EventPacket | None]]:
    """(tick timestamp, what the sender returned) for ``ticks`` consecutive ticks."""
    out = []
    for i in range(ticks):
        timestamp = (start + i * step) % (1 << 32)
        out.append((timestamp, sender.next_packet(timestamp, step)))
    return out


def decoded(packet: EventPacket) -> tuple[int, bool, int, int, bool, int]:
    event = parse_event(packet.payload)
    return (event.event, event.end, event.volume, event.duration, packet.marker, packet.timestamp)


def test_sender_packet_sequence_for_one_digit_is_exact() -> None:
    sender = DtmfSender()
    assert not sender.busy
    assert sender.next_packet(1000, STEP) is None  # nothing queued: audio
    sender.queue("5")
    assert sender.busy and sender.pending == "5"
    ticks = run_sender(sender, 5000, 12)
    packets = [p for _, p in ticks]
    assert [decoded(p) for p in packets[:8] if p is not None] == [
        (5, False, 10, 160, True, 5000),  # marker on the first packet only
        (5, False, 10, 320, False, 5000),
        (5, False, 10, 480, False, 5000),
        (5, False, 10, 640, False, 5000),
        (5, False, 10, 800, False, 5000),  # 100 ms of tone
        (5, True, 10, 800, False, 5000),  # end packet, three times, same timestamp/duration
        (5, True, 10, 800, False, 5000),
        (5, True, 10, 800, False, 5000),
    ]
    assert all(p is not None for p in packets[:8])
    assert [p.end for p in packets[:8] if p is not None] == [False] * 5 + [True] * 3
    assert packets[8:11] == [None, None, None]  # 60 ms pause: audio goes out
    assert not sender.busy
    assert packets[11] is None


def test_sender_digits_follow_each_other_with_a_pause_and_new_timestamps() -> None:
    sender = DtmfSender()
    sender.queue("0*9#")
    ticks = run_sender(sender, 90_000, 4 * 11 + 2)
    starts = [
        (parse_event(p.payload).digit, p.timestamp, ts)
        for ts, p in ticks
        if p is not None and p.marker
    ]
    # One marker per event, its timestamp is the tick's own timestamp at the event's start.
    assert [(d, t) for d, t, _ in starts] == [
        ("0", 90_000),
        ("*", 90_000 + 11 * STEP),
        ("9", 90_000 + 22 * STEP),
        ("#", 90_000 + 33 * STEP),
    ]
    assert all(t == ts for _, t, ts in starts)
    audio_ticks = [i for i, (_, p) in enumerate(ticks) if p is None]
    assert audio_ticks == [8, 9, 10, 19, 20, 21, 30, 31, 32, 41, 42, 43, 44, 45]
    # Every packet of an event carries the event's start timestamp.
    for ts_start, group in zip(
        [90_000 + k * 11 * STEP for k in range(4)],
        [ticks[k * 11 : k * 11 + 8] for k in range(4)],
        strict=True,
    ):
        assert {p.timestamp for _, p in group if p is not None} == {ts_start}


def test_sender_timestamps_wrap_around() -> None:
    sender = DtmfSender()
    sender.queue("1")
    start = (1 << 32) - 320
    packets = [p for _, p in run_sender(sender, start, 8)]
    assert all(p is not None and p.timestamp == start for p in packets)
    assert [parse_event(p.payload).duration for p in packets if p is not None] == [
        160,
        320,
        480,
        640,
        800,
        800,
        800,
        800,
    ]


def test_sender_duration_counts_ticks_the_clock_skipped() -> None:
    sender = DtmfSender()
    sender.queue("1")
    first = sender.next_packet(0, STEP)
    second = sender.next_packet(3 * STEP, STEP)  # two ticks lost: the timestamp jumped
    assert first is not None and second is not None
    assert parse_event(second.payload).duration == 4 * STEP
    assert second.timestamp == 0


def test_sender_refuses_invalid_characters_and_queues_nothing() -> None:
    sender = DtmfSender()
    with pytest.raises(ValueError, match="'X'"):
        sender.queue("12X4")
    assert not sender.busy and sender.pending == ""
    sender.queue("ab*")  # case-insensitive
    assert sender.pending == "AB*"
    sender.clear()
    assert not sender.busy


def test_sender_queue_appends_while_sending() -> None:
    sender = DtmfSender()
    sender.queue("1")
    run_sender(sender, 0, 3)
    sender.queue("2")
    assert sender.pending == "2"
    ticks = run_sender(sender, 3 * STEP, 20)
    firsts = [parse_event(p.payload).digit for _, p in ticks if p is not None and p.marker]
    assert firsts == ["2"]
    assert not sender.busy


def test_sender_options() -> None:
    sender = DtmfSender(tone_ticks=2, end_packets=1, pause_ticks=0, volume=0)
    sender.queue("11")
    packets = [p for _, p in run_sender(sender, 0, 7)]
    assert [None if p is None else decoded(p)[:5] for p in packets] == [
        (1, False, 0, 160, True),
        (1, False, 0, 320, False),
        (1, True, 0, 320, False),
        (1, False, 0, 160, True),
        (1, False, 0, 320, False),
        (1, True, 0, 320, False),
        None,
    ]
    with pytest.raises(ValueError):
        DtmfSender(tone_ticks=0)
    with pytest.raises(ValueError):
        DtmfSender(volume=64)


# --------------------------------------------------------------------------------------------
# Receiver


def sent_packets(digits: str, start: int = 1234) -> list[EventPacket]:
    sender = DtmfSender()
    sender.queue(digits)
    return [p for _, p in run_sender(sender, start, 11 * len(digits)) if p is not None]


def test_receiver_reports_each_event_once_from_the_sender() -> None:
    receiver = DtmfReceiver()
    digits = "0123456789*#ABCD"
    got = [receiver.on_packet(p.timestamp, p.payload, 7) for p in sent_packets(digits)]
    assert "".join(d for d in got if d) == digits
    # reported at the first packet of each event
    assert [i for i, d in enumerate(got) if d] == [8 * k for k in range(len(digits))]


def test_receiver_ignores_retransmitted_end_packets_and_redundant_copies() -> None:
    receiver = DtmfReceiver()
    packets = sent_packets("11")
    doubled = [p for p in packets for _ in range(2)] + packets[5:8] * 3
    got = [receiver.on_packet(p.timestamp, p.payload) for p in doubled]
    assert [d for d in got if d] == ["1", "1"]  # the same key twice is two key presses


def test_receiver_deduplicates_across_reordering() -> None:
    rng = random.Random(4733)
    packets = sent_packets("123#")
    for _ in range(50):
        events = [packets[k * 8 : k * 8 + 8] for k in range(4)]
        for group in events:
            rng.shuffle(group)
        # Late end packets of each event arrive after the next event began.
        stream = []
        for k, group in enumerate(events):
            stream += group[:5]
            if k:
                stream += events[k - 1][5:]
        stream += events[-1][5:]
        receiver = DtmfReceiver()
        got = [receiver.on_packet(p.timestamp, p.payload, 1) for p in stream]
        assert "".join(d for d in got if d) == "123#"


def test_receiver_reports_an_event_whose_start_was_lost() -> None:
    receiver = DtmfReceiver()
    end = [p for p in sent_packets("9") if p.end]
    got = [receiver.on_packet(p.timestamp, p.payload) for p in end]
    assert got == ["9", None, None]


def test_receiver_keeps_ssrcs_apart() -> None:
    """SIPp's pcaps keep their own SSRC and timestamps: equal timestamps, other SSRC."""
    receiver = DtmfReceiver()
    assert receiver.on_packet(100, pack_event(1, False, 10, 0), ssrc=1) == "1"
    assert receiver.on_packet(100, pack_event(2, False, 10, 0), ssrc=2) == "2"
    assert receiver.on_packet(100, pack_event(1, True, 10, 800), ssrc=1) is None


def test_receiver_replays_sipp_pcap_payloads() -> None:
    """The payloads of /usr/share/sip-tester/dtmf_2833_{1,2,3,pound}.pcap, as captured."""
    receiver = DtmfReceiver()
    got = []
    for code, timestamp in ((1, 13280), (2, 23200), (3, 31040), (11, 92640)):
        for duration in range(0, 2240, 320):
            got.append(receiver.on_packet(timestamp, pack_event(code, False, 10, duration), 9))
        for _ in range(3):
            got.append(receiver.on_packet(timestamp, pack_event(code, True, 10, 2240), 9))
    assert [d for d in got if d] == ["1", "2", "3", "#"]


def test_receiver_long_event_segments_are_one_key_press() -> None:
    receiver = DtmfReceiver()
    assert receiver.on_packet(0, pack_event(5, False, 10, 160)) == "5"
    assert receiver.on_packet(0, pack_event(5, False, 10, 0xFFFF)) is None
    # section 2.5.2.3: the next segment starts where the previous one ends
    assert receiver.on_packet(0xFFFF, pack_event(5, False, 10, 160)) is None
    assert receiver.on_packet(0xFFFF, pack_event(5, True, 10, 4000)) is None
    # after the end, the same key at a later timestamp is a new press
    assert receiver.on_packet(0xFFFF + 4000 + 480, pack_event(5, False, 10, 160)) == "5"


def test_receiver_segments_continue_only_at_the_same_clock_rate() -> None:
    # An unfinished 5 at 8000 Hz (duration 800), then a 5 whose timestamp is 800 later but on
    # a 48000 Hz payload type: its units are not those of the first, so it is a new press.
    receiver = DtmfReceiver()
    assert receiver.on_packet(0, pack_event(5, False, 10, 800), 1, 8000) == "5"
    assert receiver.on_packet(800, pack_event(5, False, 10, 960), 1, 48000) == "5"
    # The same at one clock rate is a segment of one long press (RFC 4733 section 2.5.2.3).
    receiver = DtmfReceiver()
    assert receiver.on_packet(0, pack_event(5, False, 10, 4800), 1, 48000) == "5"
    assert receiver.on_packet(4800, pack_event(5, False, 10, 960), 1, 48000) is None


def test_sender_counts_durations_at_the_event_clock_rate() -> None:
    # Opus (48000 Hz timestamps, 960 per 20 ms) with telephone-event/8000: 100 ms is 800.
    sender = DtmfSender()
    sender.set_clocks(8000, 48000)
    sender.queue("9")
    packets = [p for _, p in run_sender(sender, 96000, 11, 960) if p is not None]
    assert [parse_event(p.payload).duration for p in packets] == [160, 320, 480, 640, 800] + [
        800
    ] * 3
    assert {p.timestamp for p in packets} == {96000}  # the stream's timestamp of the start
    sender.set_clocks(48000, 48000)
    sender.queue("9")
    packets = [p for _, p in run_sender(sender, 0, 11, 960) if p is not None]
    assert [parse_event(p.payload).duration for p in packets][:5] == [960, 1920, 2880, 3840, 4800]
    with pytest.raises(ValueError, match="clock rates"):
        sender.set_clocks(0, 8000)


def test_receiver_ignores_garbage_and_other_events() -> None:
    receiver = DtmfReceiver()
    assert receiver.on_packet(0, b"\x01\x0a") is None
    assert receiver.on_packet(160, pack_event(16, False, 10, 160)) is None  # flash
    assert receiver.on_packet(320, pack_event(3, False, 10, 160)) == "3"


def test_receiver_memory_is_bounded() -> None:
    receiver = DtmfReceiver(memory=4)
    for k in range(10):
        assert receiver.on_packet(k * 2000, pack_event(k % 10, True, 10, 800)) == str(k % 10)
    assert len(receiver._seen) == 4
    receiver.reset()
    assert receiver.on_packet(18000, pack_event(9, True, 10, 800)) == "9"
    with pytest.raises(ValueError):
        DtmfReceiver(memory=0)


# --------------------------------------------------------------------------------------------
# Goertzel detector


def tone(
    key: str, ms: float, level: float = 0.25, rate: int = RATE, twist_db: float = 0.0
) -> Samples:
    """A DTMF dual tone, each component at ``level`` of full scale (the column tone
    ``twist_db`` louder)."""
    low, high = KEYPAD[key]
    t = np.arange(round(ms * rate / 1000)) / rate
    column_level = level * 10 ** (twist_db / 20)
    return 32767 * (
        level * np.sin(2 * np.pi * low * t) + column_level * np.sin(2 * np.pi * high * t)
    )


def silence(ms: float, rate: int = RATE) -> Samples:
    return np.zeros(round(ms * rate / 1000))


def sines(freqs: list[float], ms: float, level: float = 0.25, rate: int = RATE) -> Samples:
    t = np.arange(round(ms * rate / 1000)) / rate
    return sum(32767 * level * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))  # type: ignore[return-value]


def detect(signal: Samples, frame: int = 160, rate: int = RATE, g711: bool = True) -> str:
    """Run the detector over ``signal`` in frames, through G.711 mu-law like a real call."""
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    if g711:
        codec = G711Codec("PCMU")
        pcm = codec.decode(codec.encode(pcm))
    detector = GoertzelDetector(rate)
    return "".join(detector.feed(pcm[i : i + frame]) for i in range(0, len(pcm), frame))


def sequence(keys: str, on_ms: float, off_ms: float, lead_ms: float = 0.0) -> Samples:
    parts = [silence(lead_ms)] if lead_ms else []
    for key in keys:
        parts += [tone(key, on_ms), silence(off_ms)]
    return np.concatenate(parts)


def test_goertzel_block_power_matches_the_recursion() -> None:
    rng = np.random.default_rng(1)
    block = rng.normal(0, 3000, 80)
    detector = GoertzelDetector()
    parts = block @ detector._basis
    for i, freq in enumerate(DTMF_ROW_FREQUENCIES + DTMF_COLUMN_FREQUENCIES):
        vectorised = parts[i] ** 2 + parts[i + 8] ** 2
        assert vectorised == pytest.approx(goertzel_power(block, freq, RATE), rel=1e-9)


@pytest.mark.parametrize("key", list(KEYPAD))
def test_every_key_is_detected_once(key: str) -> None:
    assert detect(sequence(key, 100, 100, lead_ms=30)) == key


@pytest.mark.parametrize("lead_samples", [0, 7, 20, 33, 40, 51, 66, 79, 80, 117])
def test_quick_dialling_40_ms_on_40_ms_off_is_not_missed(lead_samples: int) -> None:
    signal = np.concatenate([np.zeros(lead_samples), sequence("123#", 40, 40)])
    assert detect(signal) == "123#"


@pytest.mark.parametrize("lead_samples", [0, 25, 50, 75])
def test_the_same_key_twice_quickly_is_two_presses(lead_samples: int) -> None:
    signal = np.concatenate([np.zeros(lead_samples), sequence("5599", 40, 40)])
    assert detect(signal) == "5599"


def test_a_long_press_is_one_event() -> None:
    assert detect(sequence("7", 2000, 100, lead_ms=15)) == "7"


def test_a_long_press_with_a_brief_dropout_is_still_one_event() -> None:
    signal = np.concatenate([tone("8", 500), silence(8), tone("8", 500)])
    assert detect(signal) == "8"


def test_keys_without_gap_are_both_reported() -> None:
    assert detect(np.concatenate([tone("1", 100), tone("2", 100), silence(40)])) == "12"


def test_detection_works_in_noise_and_in_odd_frame_sizes() -> None:
    rng = np.random.default_rng(2)
    signal = sequence("*0#", 60, 60, lead_ms=20)
    sigma = 32767 * 0.25 / np.sqrt(2) / 10  # each tone 20 dB above the noise
    assert detect(signal + rng.normal(0, sigma, signal.size)) == "*0#"
    assert detect(signal, frame=37) == "*0#"
    assert detect(signal, frame=1000, g711=False) == "*0#"


def test_wideband_rate() -> None:
    rate = 16000
    parts = []
    for key in "159D":
        low, high = KEYPAD[key]
        t = np.arange(rate * 50 // 1000) / rate
        parts += [8000 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))]
        parts += [np.zeros(rate * 50 // 1000)]
    assert detect(np.concatenate(parts), frame=320, rate=rate, g711=False) == "159D"


def test_silence_and_noise_are_not_dtmf() -> None:
    rng = np.random.default_rng(3)
    assert detect(silence(2000)) == ""
    for sigma in (30, 300, 3000, 12000):
        assert detect(rng.normal(0, sigma, RATE * 2)) == ""


@pytest.mark.parametrize("freq", [*DTMF_ROW_FREQUENCIES, *DTMF_COLUMN_FREQUENCIES, 1000.0, 440.0])
def test_single_tones_are_not_dtmf(freq: float) -> None:
    assert detect(sines([freq], 1000)) == ""


@pytest.mark.parametrize(
    "freqs",
    [
        [350.0, 440.0],  # dial tone
        [440.0, 480.0],  # ring-back
        [480.0, 620.0],  # busy
        [500.0, 1000.0],
        [600.0, 1100.0],
        [1000.0, 2000.0],
        [697.0, 941.0],  # two rows, no column
        [1209.0, 1477.0],  # two columns, no row
        [697.0, 1209.0, 2500.0],  # a key plus a strong third tone
    ],
)
def test_chords_off_the_keypad_are_not_dtmf(freqs: list[float]) -> None:
    assert detect(sines(freqs, 1000)) == ""


def test_speech_like_harmonic_sounds_are_not_dtmf() -> None:
    """Voiced sounds: harmonic series (f0 100-250 Hz, gliding) under formant-like envelopes,
    the kind of spectrum whose harmonics may fall on DTMF frequencies."""
    rng = np.random.default_rng(5)
    t = np.arange(RATE * 3) / RATE
    for f0_start, f0_end, formants in [
        (120, 140, (700, 1220)),  # /a/: formants right at the "1" key
        (200, 180, (300, 2300)),  # /i/
        (100, 250, (800, 1300)),
        (241, 241, (730, 1240)),  # steady, harmonics 3 and 5 close to 697/1209 (723, 1205)
    ]:
        f0 = np.linspace(f0_start, f0_end, t.size)
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        voice = np.zeros(t.size)
        for h in range(1, 30):
            freq = h * f0
            gain = sum(1 / (1 + ((freq - f) / 120) ** 2) for f in formants) + 0.05
            voice += gain * np.sin(h * phase + rng.uniform(0, 6))
        voice *= 8000 / np.max(np.abs(voice))
        assert detect(voice) == "", (f0_start, f0_end, formants)


def test_twist_limits() -> None:
    assert detect(sequence("2", 100, 60)) == "2"
    assert detect(tone("2", 100, twist_db=6)) == "2"  # column 6 dB louder: normal twist
    assert detect(tone("2", 100, twist_db=-4)) == "2"  # row 4 dB louder
    assert detect(tone("2", 100, twist_db=12)) == ""
    assert detect(tone("2", 100, twist_db=-10)) == ""


def test_level_threshold() -> None:
    assert detect(tone("6", 100, level=1000 / 32767)) == "6"
    assert detect(tone("6", 100, level=150 / 32767)) == ""


def test_reset_and_validation() -> None:
    detector = GoertzelDetector()
    pcm = np.round(tone("3", 30)).astype(np.int16)
    assert detector.feed(pcm) == "3"
    detector.reset()
    assert detector.feed(pcm) == "3"  # re-armed by the reset
    assert detector.feed(np.zeros(10, dtype=np.int16)) == ""
    with pytest.raises(ValueError):
        GoertzelDetector(2000)


def test_pack_event_is_network_byte_order() -> None:
    assert pack_event(10, False, 63, 0x1234) == struct.pack("!BBH", 10, 63, 0x1234)


# --------------------------------------------------------------------------------------------
# RtpStream: DTMF on the media edge (real loopback sockets, ticked by hand)


def open_stream(loop: asyncio.AbstractEventLoop) -> RtpStream:
    return RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(3))


def rtp_packet(pt: int, seq: int, timestamp: int, payload: bytes, ssrc: int = 5) -> memoryview:
    header = RtpHeader(payload_type=pt, sequence=seq, timestamp=timestamp, ssrc=ssrc)
    return memoryview(header.pack() + payload)


def test_stream_sends_rfc4733_events_in_place_of_audio(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = open_stream(loop)
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, 101, "sendrecv")
    stream.tick(0.0)  # one audio packet first
    stream.send_dtmf("1#")
    for n in range(1, 24):
        stream.tick(n * 0.02)
    packets = drain_rtp(peer, 24)
    headers = [h for h, _ in packets]
    first = headers[0]
    tick_ts = [(first.timestamp + 160 * i) % (1 << 32) for i in range(24)]
    assert [h.sequence for h in headers] == [(first.sequence + i) % 65536 for i in range(24)]
    assert [h.payload_type for h in headers] == [0] + ([101] * 8 + [0] * 3) * 2 + [0]
    assert {h.ssrc for h in headers} == {stream.ssrc}
    events = [(i, h, parse_event(p)) for i, (h, p) in enumerate(packets) if h.payload_type == 101]
    for k, digit in enumerate("1#"):
        group = events[k * 8 : k * 8 + 8]
        start = tick_ts[1 + 11 * k]
        assert {h.timestamp for _, h, _ in group} == {start}  # the event's start, all 8
        assert [h.marker for _, h, _ in group] == [True] + [False] * 7
        assert [e.digit for _, _, e in group] == [digit] * 8
        assert [e.duration for _, _, e in group] == [160, 320, 480, 640, 800, 800, 800, 800]
        assert [e.end for _, _, e in group] == [False] * 5 + [True] * 3
    # Audio between the events keeps the stream's own timestamps.
    audio = [(i, h) for i, (h, _) in enumerate(packets) if h.payload_type == 0]
    assert all(h.timestamp == tick_ts[i] for i, h in audio)
    stream.close()


def test_stream_send_dtmf_needs_telephone_event_and_valid_keys(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = open_stream(loop)
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
    with pytest.raises(ValueError, match="no telephone-event"):
        stream.send_dtmf("1")
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, 101, "sendrecv")
    with pytest.raises(ValueError, match="invalid DTMF character"):
        stream.send_dtmf("1Z")
    stream.send_dtmf("2")
    stream.tick(0.0)
    # A re-INVITE without telephone-event drops what was queued: audio goes on.
    stream.configure(peer.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
    stream.tick(0.02)
    assert [h.payload_type for h, _ in drain_rtp(peer, 2)] == [101, 0]
    stream.close()
    with pytest.raises(RuntimeError):
        stream.send_dtmf("1")


def test_stream_reports_received_events_once(loop: asyncio.AbstractEventLoop) -> None:
    stream = open_stream(loop)
    got: list[str] = []
    stream.on_dtmf = got.append
    # We send with the remote's 101; the remote sends with our 96 (RFC 3264 allows both).
    stream.configure(
        ("127.0.0.1", 4000),
        get_codec("PCMU"),
        0,
        101,
        "sendrecv",
        receive_telephone_events={96: 8000},
    )
    src = ("127.0.0.1", 5000)
    seq = 0
    for k, packet in enumerate(sent_packets("123#", start=8000)):
        for _ in range(2 if packet.end else 1):
            seq += 1
            pt = 96 if k % 2 else 101
            stream.datagram_received(rtp_packet(pt, seq, packet.timestamp, packet.payload), src)
    assert got == ["1", "2", "3", "#"]
    stream.configure(("127.0.0.1", 4000), get_codec("PCMU"), 0, 101, "recvonly")
    stream.datagram_received(rtp_packet(101, 99, 1, pack_event(7, False, 10, 160)), src)
    assert got[-1] == "7"
    stream.configure(("127.0.0.1", 4000), get_codec("PCMU"), 0, 101, "sendonly")
    stream.datagram_received(rtp_packet(101, 100, 2000, pack_event(8, False, 10, 160)), src)
    assert got[-1] == "7"  # not receiving in sendonly
    stream.close()


def test_stream_detects_in_band_tones_only_without_telephone_event(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    codec = get_codec("PCMU")
    pcm = np.round(sequence("147*", 60, 60, lead_ms=20)).astype(np.int16)
    payloads = [codec.encode(pcm[i : i + 160]) for i in range(0, len(pcm) - 159, 160)]
    src = ("127.0.0.1", 5000)

    def run(telephone_event_pt: int | None) -> list[str]:
        stream = open_stream(loop)
        got: list[str] = []
        stream.on_dtmf = got.append
        stream.configure(("127.0.0.1", 4000), codec, 0, telephone_event_pt, "sendrecv")
        for seq, payload in enumerate(payloads):
            stream.datagram_received(rtp_packet(0, seq, seq * 160, payload), src)
        stream.datagram_received(rtp_packet(13, 999, 0, b"\x40"), src)  # comfort noise
        stream.close()
        return got

    assert run(None) == ["1", "4", "7", "*"]
    assert run(101) == []  # RFC 4733 negotiated: tones in the audio are left alone

    stream = open_stream(loop)

    def broken(digit: str) -> None:
        raise RuntimeError("handler gone")

    stream.on_dtmf = broken
    stream.configure(("127.0.0.1", 4000), codec, 0, 101, "sendrecv")
    stream.datagram_received(rtp_packet(101, 1, 0, pack_event(1, False, 10, 160)), src)
    assert "handler gone" in caplog.text
    stream.close()


#: The telephone-events of the answer to a WebRTC-style offer (issue 8 item 9).
THREE_RATES = {99: 48000, 100: 16000, 101: 8000}


def test_stream_receives_events_on_every_negotiated_type(
    loop: asyncio.AbstractEventLoop,
) -> None:
    stream = open_stream(loop)
    got: list[str] = []
    stream.on_dtmf = got.append
    stream.configure(
        ("127.0.0.1", 4000),
        get_codec("PCMU"),
        0,
        101,
        "sendrecv",
        telephone_event_rate=8000,
        receive_telephone_events=THREE_RATES,
    )
    src = ("127.0.0.1", 5000)
    seq = 0
    for pt, digit, start in [(99, "1", 48000), (100, "2", 16000), (101, "3", 8000)]:
        clock = THREE_RATES[pt]
        for end, ms in [(False, 20), (False, 40), (True, 60), (True, 60)]:
            seq += 1  # all packets of one event carry its start timestamp (section 2.3.1)
            payload = pack_event(int(digit), end, 10, clock * ms // 1000)
            stream.datagram_received(rtp_packet(pt, seq, start, payload), src)
    assert got == ["1", "2", "3"]
    assert stream.stats.packets_ignored == 0
    # A payload type nobody negotiated is not taken for events.
    stream.datagram_received(rtp_packet(98, seq + 1, 1, pack_event(4, False, 10, 160)), src)
    assert got == ["1", "2", "3"] and stream.stats.packets_ignored == 1
    stream.close()


def test_stream_never_takes_its_audio_type_for_events(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    stream = open_stream(loop)
    got: list[str] = []
    stream.on_dtmf = got.append
    stream.configure(
        ("127.0.0.1", 4000),
        get_codec("PCMU"),
        0,
        101,
        "sendrecv",
        receive_telephone_events={0: 8000, 101: 8000},
    )
    src = ("127.0.0.1", 5000)
    stream.datagram_received(rtp_packet(0, 1, 0, pack_event(4, False, 10, 160)), src)
    assert got == []
    stream.close()
    with pytest.raises(ValueError, match="invalid telephone-event"):
        open_stream(loop).configure(
            ("127.0.0.1", 4000),
            get_codec("PCMU"),
            0,
            101,
            "sendrecv",
            receive_telephone_events={200: 8000},
        )
    with pytest.raises(ValueError, match="clock rate"):
        open_stream(loop).configure(
            ("127.0.0.1", 4000), get_codec("PCMU"), 0, 101, "sendrecv", telephone_event_rate=0
        )


def test_stream_sends_events_at_the_negotiated_clock_rate(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    # Opus with telephone-event/8000 (an answerer without 48 kHz events): durations in 8 kHz
    # units; with telephone-event/48000 (the default: the codec's clock) in 48 kHz units.
    durations = {}
    for rate in (8000, None):
        stream = open_stream(loop)
        stream.configure(
            peer.getsockname(), get_codec("opus"), 111, 101, "sendrecv", telephone_event_rate=rate
        )
        stream.send_dtmf("7")
        for n in range(8):
            stream.tick(n * 0.02)
        packets = drain_rtp(peer, 8)
        stream.close()
        assert {h.payload_type for h, _ in packets} == {101}
        durations[rate] = [parse_event(p).duration for _, p in packets]
    assert durations[8000] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert durations[None] == [960, 1920, 2880, 3840, 4800, 4800, 4800, 4800]
