"""RTCP packets, receiver statistics, the report schedule and the per-stream session
(RFC 3550 section 6 and appendix A), all sans-I/O."""

from __future__ import annotations

import calendar
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.media.rtcp import (
    MAX_DROPOUT,
    SDES_CNAME,
    App,
    Bye,
    PacketParseError,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    build_compound,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    round_trip_time,
)
from siproc.media.rtcp_session import RtcpScheduler, RtcpSession, random_cname

# -- packets ---------------------------------------------------------------------------------------

# A compound written out by hand from the RFC 3550 section 6.4.1 / 6.5 / 6.6 layouts:
# SR (SSRC 0x11223344, NTP 0xb44db705.20000000, RTP ts 0x1000, 50 packets, 8000 octets) with
# one report block (SSRC 0x55667788, fraction 25/256, 5 lost, highest 0x00010005, jitter 4,
# LSR 0xb7052000, DLSR 0x00054000), SDES CNAME "abc", BYE with reason "bye".
SR_HEX = (
    "81c8000c 11223344 b44db705 20000000 00001000 00000032 00001f40"
    " 55667788 19000005 00010005 00000004 b7052000 00054000"
)
SDES_HEX = "81ca0003 11223344 01036162 63000000"
BYE_HEX = "81cb0002 11223344 03627965"
COMPOUND = bytes.fromhex((SR_HEX + SDES_HEX + BYE_HEX).replace(" ", ""))
BLOCK = ReportBlock(0x55667788, 25, 5, 0x00010005, 4, 0xB7052000, 0x00054000)
PACKETS = [
    SenderReport(0x11223344, 0xB44DB705_20000000, 0x1000, 50, 8000, (BLOCK,)),
    SourceDescription((SdesChunk(0x11223344, ((SDES_CNAME, "abc"),)),)),
    Bye((0x11223344,), "bye"),
]


def test_parse_hand_built_compound() -> None:
    assert parse_rtcp(COMPOUND) == PACKETS
    assert build_compound(PACKETS) == COMPOUND
    sr = PACKETS[0]
    assert isinstance(sr, SenderReport)
    assert sr.reports[0].loss_fraction == pytest.approx(25 / 256)


def test_parse_accepts_bytearray_and_memoryview() -> None:
    assert parse_rtcp(bytearray(COMPOUND)) == PACKETS
    assert parse_rtcp(memoryview(COMPOUND)) == PACKETS


def test_rfc3550_rtt_example() -> None:
    """RFC 3550 section 6.4.1, figure 2: SR at 10 Nov 1995 11:33:25.125 UTC has NTP timestamp
    0xb44db705:20000000; the RR echoing it (LSR 0xb7052000, DLSR 5.25 s = 0x00054000) arrives at
    A = 0xb7108000 (11:33:36.5): the round-trip delay is 6.125 s."""
    sent = calendar.timegm((1995, 11, 10, 11, 33, 25)) + 0.125
    ntp = ntp_timestamp(sent)
    assert ntp == 0xB44DB705_20000000
    assert ntp_middle(ntp) == 0xB7052000
    arrival = ntp_timestamp(calendar.timegm((1995, 11, 10, 11, 33, 36)) + 0.5)
    assert ntp_middle(arrival) == 0xB7108000
    assert round_trip_time(arrival, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(arrival, 0, 0x00054000) is None  # no SR echoed
    # Slightly negative (granularity): 0; grossly negative: unusable.
    assert round_trip_time(arrival, 0xB7108000, 1) == 0.0
    assert round_trip_time(arrival, 0xB7108000, 0x00050000) is None


def test_round_trip_of_every_packet_type() -> None:
    blocks = (
        ReportBlock(1, 255, -1, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        ReportBlock(2, 0, -0x800000, 0, 0, 0, 0),
        ReportBlock(3, 1, 0x7FFFFF, 1, 1, 1, 1),
    )
    packets = [
        SenderReport(7, (1 << 64) - 1, 0xFFFFFFFF, 1, 2, blocks, extension=b"\x01\x02\x03\x04"),
        ReceiverReport(8, blocks),
        ReceiverReport(9),
        SourceDescription(
            (
                SdesChunk(7, ((SDES_CNAME, "a"), (2, "Alice"), (6, "siproc"))),
                SdesChunk(8, ((SDES_CNAME, "ab"),)),
                SdesChunk(9, ((SDES_CNAME, "abcd"), (2, "é" * 100))),
                SdesChunk(10),
            )
        ),
        App(5, 7, b"test", b"\x00\x01\x02\x03" * 2),
        UnknownRtcp(207, 3, b"\xaa" * 8),  # XR: kept opaque
        Bye((7, 8)),
        Bye((), "moving on"),
        Bye((9,), ""),
    ]
    data = build_compound(packets)
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == packets
    for packet in packets:
        assert parse_rtcp(packet.pack()) == [packet]


@pytest.mark.parametrize("text", ["", "a", "ab", "abc", "abcd", "abcde", "x" * 255])
def test_sdes_chunk_always_ends_with_null_octets(text: str) -> None:
    """RFC 3550 section 6.5: the item list ends with one or more null octets up to a 32-bit
    boundary; an item ending on the boundary needs a whole extra word."""
    chunk = SdesChunk(1, ((SDES_CNAME, text),))
    raw = chunk.pack()
    assert len(raw) % 4 == 0
    assert raw[6 + len(text) :] == b"\x00" * (len(raw) - 6 - len(text))
    assert len(raw) - 6 - len(text) >= 1
    assert chunk.cname == text
    assert parse_rtcp(SourceDescription((chunk,)).pack()) == [SourceDescription((chunk,))]


def test_padding_is_stripped() -> None:
    """RFC 3550 section 6.4.1: the P bit, the last octet counts the padding octets."""
    rr = ReceiverReport(5).pack()
    padded = bytes([rr[0] | 0x20, rr[1]]) + struct.pack("!H", 2) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [ReceiverReport(5)]
    bye = bytes([0xA1, 203]) + struct.pack("!H", 2) + struct.pack("!I", 9) + b"\x00\x00\x00\x04"
    assert parse_rtcp(bye) == [Bye((9,))]


def test_invalid_values_are_refused_when_building() -> None:
    with pytest.raises(ValueError, match="fraction"):
        ReportBlock(1, fraction_lost=256)
    with pytest.raises(ValueError, match="cumulative"):
        ReportBlock(1, cumulative_lost=0x800000)
    with pytest.raises(ValueError, match="ssrc"):
        ReceiverReport(1 << 32)
    with pytest.raises(ValueError, match="31"):
        ReceiverReport(1, (ReportBlock(1),) * 32)
    with pytest.raises(ValueError, match="255"):
        SdesChunk(1, ((SDES_CNAME, "x" * 256),))
    with pytest.raises(ValueError, match="type"):
        SdesChunk(1, ((0, "x"),))
    with pytest.raises(ValueError, match="255"):
        Bye((1,), "x" * 256)
    with pytest.raises(ValueError, match="name"):
        App(0, 1, b"abc")
    with pytest.raises(ValueError, match="NTP"):
        SenderReport(1, 1 << 64, 0, 0, 0)


def test_invalid_utf8_text_survives_a_round_trip() -> None:
    """255 bytes that are not UTF-8 in a CNAME and a BYE reason: parsed (not refused, not
    grown past 255 bytes by replacement characters) and packed back unchanged."""
    sdes = _h(0x81, 202, 66) + b"\x00\x00\x00\x01\x01\xff" + b"\xff" * 255 + b"\x00" * 3
    bye = _h(0x81, 203, 65) + b"\x00\x00\x00\x01\xff" + b"\xfe" * 255
    packets = parse_rtcp(sdes + bye)
    assert build_compound(packets) == sdes + bye


def _h(first: int, packet_type: int, words: int) -> bytes:
    return bytes([first, packet_type]) + struct.pack("!H", words)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x80\xc9\x00", "multiple of 4"),
        (_h(0x40, 201, 1) + b"\x00" * 4, "version 1"),
        (_h(0x80, 201, 2) + b"\x00" * 4, "exceeds"),
        (_h(0xA0, 201, 1) + b"\x00" * 4, "padding count 0"),
        (_h(0xA0, 201, 1) + b"\x00\x00\x00\x09", "padding count 9"),
        (_h(0x81, 200, 6) + b"\x00" * 24, "SR too short"),
        (_h(0x81, 201, 1) + b"\x00" * 4, "RR too short"),
        (_h(0x81, 202, 0), "SDES chunk truncated"),
        (_h(0x81, 202, 2) + b"\x00\x00\x00\x01\x01\x05ab", "runs past"),
        (_h(0x82, 202, 2) + b"\x00\x00\x00\x01\x01\x01a\x00", "truncated"),
        (_h(0x81, 202, 2) + b"\x00\x00\x00\x01\x01\x02ab", "no END"),
        (_h(0x82, 203, 1) + b"\x00" * 4, "BYE too short"),
        (_h(0x81, 203, 2) + b"\x00" * 4 + b"\x09abc", "reason runs past"),
        (_h(0x80, 204, 0), "APP packet too short"),
        (_h(0x80, 201, 1) + b"\x00" * 4 + b"\x80\xc9", "multiple of 4"),
    ],
)
def test_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(PacketParseError, match=reason):
        parse_rtcp(data)


@given(st.binary(max_size=200))
def test_parse_never_raises_anything_else(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except PacketParseError:
        return
    assert packets
    assert build_compound(packets) == build_compound(parse_rtcp(build_compound(packets)))


@given(
    st.lists(st.tuples(st.integers(0, len(COMPOUND) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(COMPOUND)),
)
def test_mutated_compound_parses_or_raises_parse_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    """Bit flips and truncations of a valid compound: the structured fuzz complement."""
    data = bytearray(COMPOUND)
    for index, value in edits:
        data[index] = value
    try:
        packets = parse_rtcp(bytes(data[:cut]))
    except PacketParseError:
        return
    assert parse_rtcp(build_compound(packets)) == packets


# -- receiver statistics (appendix A) --------------------------------------------------------------


def feed(stats: ReceptionStats, seqs: list[int], ssrc: int = 0xABC) -> list[bool]:
    return [stats.received(ssrc, s & 0xFFFF, 160 * i, i * 0.02) for i, s in enumerate(seqs)]


def test_probation_then_in_order() -> None:
    """A.1: a new source is valid after MIN_SEQUENTIAL (2) sequential packets; the packet that
    ends probation is the base of the statistics."""
    stats = ReceptionStats()
    assert stats.report_block(0.0) is None  # nothing heard
    assert feed(stats, [1000]) == [False]
    assert stats.ssrc == 0xABC
    assert stats.report_block(0.0) is None  # still on probation
    assert feed(stats, list(range(1001, 1100))) == [True] * 99
    assert (stats.base_seq, stats.received_count, stats.expected) == (1001, 99, 99)
    assert stats.lost == stats.cumulative_lost == 0
    block = stats.report_block(1.0)
    assert block == ReportBlock(0xABC, 0, 0, 1099, 0, 0, 0)


def test_probation_restarts_on_out_of_order_packet() -> None:
    stats = ReceptionStats()
    assert feed(stats, [10, 50, 51, 52]) == [False, False, True, True]
    assert stats.base_seq == 51


def test_sequence_wrap_counts_cycles() -> None:
    stats = ReceptionStats()
    feed(stats, list(range(65530, 65536 + 10)))
    assert stats.cycles == 65536
    assert stats.max_seq == 9
    assert stats.extended_max == 65536 + 9
    assert stats.expected == stats.received_count == 15
    assert stats.report_block(0.0) == ReportBlock(0xABC, 0, 0, 65536 + 9, 0, 0, 0)


def test_loss_and_fraction_lost_per_interval() -> None:
    """A.3: fraction lost is per interval (8-bit fixed point), cumulative lost is total."""
    stats = ReceptionStats()
    seqs = [s for s in range(0, 102) if s % 10 != 5]  # 10 lost
    feed(stats, seqs)
    assert stats.base_seq == 1  # packet 0 was the first of probation
    assert stats.expected == 101  # 1..101
    assert stats.cumulative_lost == 10
    block = stats.report_block(1.0)
    assert block is not None
    assert block.fraction_lost == (10 << 8) // 101 == 25
    assert block.cumulative_lost == 10
    assert stats.loss_ratio == pytest.approx(10 / 101)
    # Next interval: 50 more packets, none lost: fraction 0, cumulative stays 10.
    for seq in range(102, 152):
        stats.received(0xABC, seq, 0, 0.0)
    block = stats.report_block(2.0)
    assert block is not None
    assert (block.fraction_lost, block.cumulative_lost) == (0, 10)
    # An empty interval: fraction 0.
    block = stats.report_block(3.0)
    assert block is not None and block.fraction_lost == 0


def test_duplicates_and_misorder() -> None:
    """Late and duplicate packets count as received (A.3): lost can go negative."""
    stats = ReceptionStats()
    feed(stats, [0, 1, 2, 3, 5, 4, 5, 5, 6])
    assert stats.max_seq == 6
    assert stats.expected == 6  # 1..6
    assert stats.received_count == 8
    assert stats.cumulative_lost == -2
    block = stats.report_block(0.0)
    assert block is not None and block.cumulative_lost == -2 and block.fraction_lost == 0
    assert stats.loss_ratio == 0.0


def test_large_jump_is_dropped_unless_sequential_restart() -> None:
    """A.1: a jump beyond MAX_DROPOUT is dropped; a second sequential packet after it means the
    source restarted its sequence numbers: statistics start over from there."""
    stats = ReceptionStats()
    feed(stats, list(range(100, 110)))
    far = 109 + MAX_DROPOUT + 1000
    assert stats.received(0xABC, far, 0, 1.0) is False
    assert stats.received(0xABC, 110, 0, 1.0) is True  # not a restart: the old run goes on
    assert stats.received(0xABC, far, 0, 1.0) is False
    assert stats.received(0xABC, far + 1, 0, 1.0) is True  # restart
    assert (stats.base_seq, stats.max_seq, stats.received_count) == (far + 1, far + 1, 1)
    assert stats.received(0xABC, far + 2, 0, 1.0) is True
    assert stats.expected == 2


def test_jitter_matches_hand_computation() -> None:
    """A.8 by hand, 8 kHz, 20 ms packets. Arrivals 0, 20, 40, 65, 80, 100 ms; transit
    (arrival in timestamp units minus timestamp) is 0, 0, 0, 40, 0, 0. The first packet is on
    probation; the second sets the transit; then |D| = 0, 40, 40, 0:
    J = 0; 0 + (40 - 0)/16 = 2.5; 2.5 + (40 - 2.5)/16 = 4.84375; 4.84375 - 4.84375/16."""
    stats = ReceptionStats(8000)
    arrivals = [0.000, 0.020, 0.040, 0.065, 0.080, 0.100]
    for i, arrival in enumerate(arrivals):
        stats.received(7, i, 160 * i, 1000.0 + arrival)
    assert stats.jitter == pytest.approx(4.84375 * 15 / 16)
    assert stats.jitter_ms == pytest.approx(4.84375 * 15 / 16 / 8)
    block = stats.report_block(0.0)
    assert block is not None and block.jitter == 4


def test_jitter_across_timestamp_wrap_and_events() -> None:
    """Timestamps wrap mod 2**32 without a jitter spike; packets without timing (RFC 4733
    events: one timestamp for the whole event) count for loss but not for jitter."""
    stats = ReceptionStats(8000)
    ts0 = (1 << 32) - 480
    for i in range(8):
        stats.received(7, i, (ts0 + 160 * i) & 0xFFFFFFFF, 5.0 + 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    for i in range(8, 12):  # a DTMF event: same timestamp, packets 20 ms apart
        stats.received(7, i, 12345, 5.0 + 0.02 * i, timing=False)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.expected == 11 and stats.cumulative_lost == 0


def test_clock_rate_change_restarts_jitter() -> None:
    stats = ReceptionStats(8000)
    for i in range(5):
        stats.received(7, i, 160 * i, 0.02 * i)
    stats.set_clock_rate(16000)
    assert stats.clock_rate == 16000
    for i in range(5, 10):
        stats.received(7, i, 320 * i + 99999, 0.02 * i)  # a new timeline: no spike
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_source_switch_keeps_totals() -> None:
    """Another SSRC takes over after 3 consecutive timing packets; event packets of a foreign
    SSRC (some gateways send RFC 4733 with their own SSRC) do not disturb the statistics."""
    stats = ReceptionStats()
    feed(stats, [s for s in range(0, 22) if s != 10])  # 1 lost
    for i in range(5):
        assert stats.received(0xDEF, 500 + i, 0, 1.0, timing=False) is False
    assert stats.received(0xDEF, 900, 0, 1.0) is False
    assert stats.received(0xABC, 22, 0, 1.0) is True  # the old source: count restarts
    assert stats.received(0xDEF, 901, 0, 1.0) is False
    assert stats.received(0xDEF, 902, 0, 1.0) is False
    assert stats.ssrc == 0xABC
    assert stats.received(0xDEF, 903, 0, 1.0) is False  # third: switch, probation begins
    assert stats.ssrc == 0xDEF
    assert stats.received(0xDEF, 904, 0, 1.0) is True
    assert stats.cumulative_lost == 0
    assert stats.lost == 1  # the old source's loss is kept in the total
    assert stats.packets == 21 + 1


def test_lsr_and_dlsr() -> None:
    stats = ReceptionStats()
    feed(stats, [1, 2, 3])
    stats.sr_received(0x999, 0x1111_2222_3333_4444, 10.0)  # not our source: ignored
    assert stats.last_sr == 0
    stats.sr_received(0xABC, 0x1111_2222_3333_4444, 10.0)
    assert stats.last_sr == 0x2222_3333
    block = stats.report_block(11.25)
    assert block is not None
    assert (block.lsr, block.dlsr) == (0x2222_3333, 0x0001_4000)


# -- the report interval ---------------------------------------------------------------------------


def test_scheduler_interval_bounds() -> None:
    """Section 6.2/6.3: first report after half the minimum, randomised 0.5..1.5; then the
    minimum (5 s) randomised 0.5..1.5."""
    firsts, laters = [], []
    for seed in range(300):
        scheduler = RtcpScheduler(rng=random.Random(seed))
        assert not scheduler.due(100.0)  # starts the schedule
        assert scheduler.next_time is not None
        firsts.append(scheduler.next_time - 100.0)
        assert not scheduler.due(scheduler.next_time - 1e-6)
        assert scheduler.due(scheduler.next_time)
        scheduler.sent(200.0, 100)
        assert scheduler.next_time is not None
        laters.append(scheduler.next_time - 200.0)
    assert 1.25 <= min(firsts) < 1.4 and 3.6 < max(firsts) <= 3.75
    assert 2.5 <= min(laters) < 2.7 and 7.3 < max(laters) <= 7.5
    assert 4.7 < sum(laters) / len(laters) < 5.3


def test_scheduler_bandwidth_term_and_validation() -> None:
    scheduler = RtcpScheduler(min_interval=1.0, rtcp_bandwidth=100.0, rng=random.Random(1))
    assert scheduler.interval() == pytest.approx(2 * 128 / 100)  # members * avg / bandwidth
    for _ in range(200):
        scheduler.received(28)
    assert scheduler.interval() == pytest.approx(2 * 28 / 100, abs=0.01)
    scheduler.sent(0.0, 28)
    assert scheduler.interval() == 1.0  # small packets: the minimum wins
    with pytest.raises(ValueError):
        RtcpScheduler(min_interval=0)
    with pytest.raises(ValueError):
        RtcpScheduler(rtcp_bandwidth=-1)
    with pytest.raises(ValueError):
        RtcpScheduler(members=1)


# -- two sessions in virtual time ------------------------------------------------------------------


def test_sessions_exchange_reports_in_virtual_time() -> None:
    """A sends RTP to B for 10 s over a path with 30 ms each way; B sends nothing. B's reports
    are RRs whose block about A gives A a round-trip time of 60 ms; A's are SRs."""
    delay = 0.030
    a = RtcpSession(0xAAAA, rng=random.Random(1), wall_offset=1e9)
    b = RtcpSession(0xBBBB, rng=random.Random(2), wall_offset=1e9 + 123.0)  # other wall clock
    assert len(a.cname) == 16 and a.cname != b.cname
    rtp_ts = 5000
    sent = 0
    now = 0.0
    a_first: list[str] = []
    b_first: list[str] = []
    for n in range(500):
        now = n * 0.02
        if n % 10 != 3:  # every 10th packet lost on the way
            b.reception.received(0xAAAA, n, rtp_ts + 160 * n, now + delay)
        sent += 1
        if a.due(now):
            data = a.report(now, rtp_ts + 160 * n, sent, 160 * sent)
            a_first.append(type(parse_rtcp(data)[0]).__name__)
            b.receive(data, now + delay)
        if b.due(now):
            data = b.report(now, 0, 0, 0)
            b_first.append(type(parse_rtcp(data)[0]).__name__)
            a.receive(data, now + delay)
    assert a_first and set(a_first) == {"SenderReport"}
    assert b_first and set(b_first) == {"ReceiverReport"}
    assert b.remote_sr is not None and b.remote_sr.ssrc == 0xAAAA
    assert a.rtt == pytest.approx(2 * delay, abs=2 / 65536)
    assert a.remote_report is not None
    assert a.remote_report.ssrc == 0xAAAA
    assert 20 <= a.remote_report.fraction_lost <= 30  # about 10 %
    assert a.peer_cname == b.cname and b.peer_cname == a.cname
    assert b.rtt is None  # A's SRs carry no block about B: B sent nothing
    # BYE at the end: report, CNAME, BYE, in that order.
    data = a.bye(now, rtp_ts, sent, 160 * sent, "done")
    kinds = [type(p).__name__ for p in parse_rtcp(data)]
    assert kinds == ["SenderReport", "SourceDescription", "Bye"]  # A sent since its report
    kinds = [type(p).__name__ for p in parse_rtcp(b.bye(now, 0, 0, 0))]
    assert kinds == ["ReceiverReport", "SourceDescription", "Bye"]  # B never sent
    assert not b.bye_received
    b.receive(data, now + delay)
    assert b.bye_received and b.bye_reason == "done"


def test_session_report_without_anything_heard() -> None:
    session = RtcpSession(1, rng=random.Random(3), cname="me@example")
    packets = parse_rtcp(session.report(0.0, 0, 0, 0))
    assert packets == [
        ReceiverReport(1),
        SourceDescription((SdesChunk(1, ((SDES_CNAME, "me@example"),)),)),
    ]
    assert session.reports_sent == 1
    with pytest.raises(PacketParseError):
        session.receive(b"\x80\xc9\x00", 1.0)


def test_random_cname() -> None:
    names = {random_cname(random.Random(seed)) for seed in range(50)}
    assert len(names) == 50
    assert all(len(n) == 16 for n in names)
