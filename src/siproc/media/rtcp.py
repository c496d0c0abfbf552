"""RTCP (RFC 3550 section 6): packets, receiver statistics and the report interval, sans-I/O.

Theory of operation:

* Packets. :func:`parse_rtcp` splits a compound packet (section 6.1) into frozen dataclasses:
  :class:`SenderReport` (SR, 6.4.1), :class:`ReceiverReport` (RR, 6.4.2) with their
  :class:`ReportBlock` s, :class:`SourceDescription` (SDES, 6.5), :class:`Bye` (6.6),
  :class:`App` (6.7) and :class:`UnknownRtcp` for the types this module does not interpret
  (RTP/AVPF feedback, XR ...), which a receiver ignores (6.1). Anything malformed raises
  :class:`~siproc.media.rtp.PacketParseError` (a ``ValueError``) and nothing else: the network edge
  counts and drops it. Every dataclass ``pack()`` s itself; :func:`build_compound` joins them.
  Reduced-size RTCP (RFC 5506: a compound that does not start with SR/RR) is accepted.
* Time. SR timestamps are NTP format (section 4): seconds since 1900 in 32.32 fixed point,
  built by :func:`ntp_timestamp` from a wall-clock ``now`` (Unix seconds) that the caller passes
  in. LSR is the middle 32 bits of the last SR's NTP timestamp and DLSR the delay since it
  arrived, both in 1/65536 s; :func:`round_trip_time` is the section 6.4.1 computation.
* Statistics. :class:`ReceptionStats` is the per-source receiver state of appendix A: sequence
  validation with probation, wrap-around cycles and restart (A.1), expected and lost packets per
  interval and in total (A.3), interarrival jitter in timestamp units (A.8), and the LSR/DLSR of
  the last SR received. Its :meth:`ReceptionStats.received` runs once per RTP packet: integer
  and float arithmetic on slots only, no allocation beyond Python's own ints.
* The report interval (:class:`~siproc.media.rtcp_session.RtcpScheduler`) and the per-stream
  state that ties all this together live in :mod:`siproc.media.rtcp_session`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from siproc.media.rtp import PacketParseError

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "NTP_EPOCH_OFFSET",
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_MIN_INTERVAL",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "App",
    "Bye",
    "PacketParseError",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "build_compound",
    "ntp_middle",
    "ntp_timestamp",
    "parse_rtcp",
    "round_trip_time",
]

RTCP_SR = 200  # RFC 3550 section 12.1
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
SDES_END = 0  # RFC 3550 section 12.2
SDES_CNAME = 1

RTCP_MIN_INTERVAL = 5.0  # seconds, RFC 3550 section 6.2
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

MAX_DROPOUT = 3000  # RFC 3550 appendix A.1
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
SOURCE_SWITCH_PACKETS = 3  # consecutive packets of a new SSRC before the statistics follow it

_SEQ_MOD = 1 << 16
_U32 = 0xFFFFFFFF
_LOST_MAX = 0x7FFFFF  # cumulative number of packets lost: signed 24 bits (section 6.4.1)
_LOST_MIN = -0x800000

_HEADER = struct.Struct("!BBH")  # V/P/count, packet type, length in 32-bit words minus one
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|cumulative, highest seq, jitter, LSR, DLSR


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= _U32:
        raise ValueError(f"RTCP {name} out of range: {value}")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _header(packet_type: int, count: int, body_size: int) -> bytes:
    """The common header (section 6.4.1) for a body of ``body_size`` bytes (a multiple of 4)."""
    return _HEADER.pack(0x80 | count, packet_type, body_size // 4)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1) about the source ``ssrc``.

    ``fraction_lost`` is lost/expected in the last interval as an 8-bit fixed point fraction
    (0-255); ``cumulative_lost`` is signed (duplicates can make it negative); ``jitter`` is in
    timestamp units; ``lsr`` and ``dlsr`` are in NTP short format (1/65536 s)."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0  # extended: cycles << 16 | sequence
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        for name in ("ssrc", "highest_sequence", "jitter", "lsr", "dlsr"):
            _u32(name, getattr(self, name))
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"RTCP fraction lost out of range: {self.fraction_lost}")
        if not _LOST_MIN <= self.cumulative_lost <= _LOST_MAX:
            raise ValueError(f"RTCP cumulative lost out of range: {self.cumulative_lost}")

    @property
    def loss_fraction(self) -> float:
        """``fraction_lost`` as a float in [0, 1)."""
        return self.fraction_lost / 256

    def pack(self) -> bytes:
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _check_reports(reports: tuple[ReportBlock, ...], extension: bytes) -> None:
    if len(reports) > 31:
        raise ValueError(f"at most 31 report blocks fit one RTCP packet, not {len(reports)}")
    if len(extension) % 4:
        raise ValueError("RTCP profile-specific extension must be a multiple of 4 bytes")


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 section 6.4.1): sender info of ``ssrc`` plus reception report blocks.

    ``ntp_timestamp`` (64-bit NTP format) and ``rtp_timestamp`` denote the same instant;
    ``octet_count`` counts payload octets only (no header, no padding)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific, kept as is

    def __post_init__(self) -> None:
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _u32(name, getattr(self, name))
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise ValueError(f"RTCP NTP timestamp out of range: {self.ntp_timestamp}")
        _check_reports(self.reports, self.extension)

    def pack(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body += b"".join(block.pack() for block in self.reports) + self.extension
        return _header(RTCP_SR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 section 6.4.2): reception report blocks from ``ssrc``, a non-sender."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        _check_reports(self.reports, self.extension)

    def pack(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + b"".join(b.pack() for b in self.reports) + self.extension
        return _header(RTCP_RR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The SDES items of one source (RFC 3550 section 6.5): ``(type, text)`` pairs, UTF-8 text
    of at most 255 bytes each, e.g. ``((SDES_CNAME, "user@host"),)``."""

    ssrc: int
    items: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        for kind, text in self.items:
            if not 1 <= kind <= 255:
                raise ValueError(f"SDES item type out of range: {kind}")
            if len(_encode(text)) > 255:
                raise ValueError("SDES item longer than 255 bytes")

    @property
    def cname(self) -> str | None:
        return next((text for kind, text in self.items if kind == SDES_CNAME), None)

    def pack(self) -> bytes:
        data = bytearray(_SSRC.pack(self.ssrc))
        for kind, text in self.items:
            raw = _encode(text)
            data += bytes((kind, len(raw))) + raw
        data += b"\x00" * (4 - len(data) % 4)  # END item plus padding to 32 bits (6.5)
        return bytes(data)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 section 6.5): one chunk per source."""

    chunks: tuple[SdesChunk, ...] = ()

    def __post_init__(self) -> None:
        if len(self.chunks) > 31:
            raise ValueError(f"at most 31 SDES chunks fit one packet, not {len(self.chunks)}")

    def pack(self) -> bytes:
        body = b"".join(chunk.pack() for chunk in self.chunks)
        return _header(RTCP_SDES, len(self.chunks), len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 section 6.6): the sources leave, with an optional UTF-8 reason."""

    ssrcs: tuple[int, ...]
    reason: str | None = None

    def __post_init__(self) -> None:
        if len(self.ssrcs) > 31:
            raise ValueError(f"at most 31 sources fit one BYE, not {len(self.ssrcs)}")
        for ssrc in self.ssrcs:
            _u32("ssrc", ssrc)
        if self.reason is not None and len(_encode(self.reason)) > 255:
            raise ValueError("BYE reason longer than 255 bytes")

    def pack(self) -> bytes:
        body = b"".join(_SSRC.pack(s) for s in self.ssrcs)
        if self.reason is not None:
            raw = _encode(self.reason)
            body += bytes((len(raw),)) + raw
            body += b"\x00" * (-len(body) % 4)
        return _header(RTCP_BYE, len(self.ssrcs), len(body)) + body


@dataclass(frozen=True, slots=True)
class App:
    """APP (RFC 3550 section 6.7): application-defined, kept opaque."""

    subtype: int
    ssrc: int
    name: bytes  # four ASCII characters
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.subtype < 32:
            raise ValueError(f"APP subtype out of range: {self.subtype}")
        _u32("ssrc", self.ssrc)
        if len(self.name) != 4:
            raise ValueError("APP name must be 4 bytes")
        if len(self.data) % 4:
            raise ValueError("APP data must be a multiple of 4 bytes")

    def pack(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + self.name + self.data
        return _header(RTCP_APP, self.subtype, len(body)) + body


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """A packet type this module does not interpret (section 6.1: receivers ignore it)."""

    packet_type: int
    count: int
    body: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.packet_type <= 255 or not 0 <= self.count < 32:
            raise ValueError("RTCP packet type or count out of range")
        if len(self.body) % 4:
            raise ValueError("RTCP body must be a multiple of 4 bytes")

    def pack(self) -> bytes:
        return _header(self.packet_type, self.count, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | App | UnknownRtcp


def build_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Serialize packets into one compound RTCP packet (RFC 3550 section 6.1: start with an SR or
    RR, include an SDES CNAME, put a BYE last; this function does not reorder)."""
    return b"".join(packet.pack() for packet in packets)


# -- parsing --------------------------------------------------------------------------------------


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 section 6.1) into its packets, in order.

    Raises :class:`PacketParseError` when: the datagram is empty or not a multiple of 4 bytes, a
    packet's version is not 2, a length field runs past the end, a padding count is zero or
    exceeds its packet, or a packet's body does not hold what its count announces.
    """
    raw = bytes(data)
    size = len(raw)
    if size == 0:
        raise PacketParseError("empty RTCP packet")
    if size % 4:
        raise PacketParseError(f"RTCP compound of {size} bytes is not a multiple of 4")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise PacketParseError("truncated RTCP header")
        first, packet_type, words = _HEADER.unpack_from(raw, offset)
        if first >> 6 != 2:
            raise PacketParseError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > size:
            raise PacketParseError(f"RTCP packet length {words} exceeds the datagram")
        body_end = end
        if first & 0x20:  # padding (section 6.4.1, P bit)
            pad = raw[end - 1]
            if pad == 0 or pad > end - offset - 4:
                raise PacketParseError(f"RTCP padding count {pad} invalid")
            body_end = end - pad
        packets.append(_parse_one(packet_type, first & 0x1F, raw, offset + 4, body_end))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, raw: bytes, start: int, end: int) -> RtcpPacket:
    if packet_type == RTCP_SR:
        if start + 24 + 24 * count > end:
            raise PacketParseError(f"SR too short for {count} report blocks")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(raw, start)
        blocks_end = start + 24 + 24 * count
        return SenderReport(
            ssrc,
            ntp,
            rtp_ts,
            packets,
            octets,
            _parse_blocks(raw, start + 24, count),
            _aligned(raw[blocks_end:end]),
        )
    if packet_type == RTCP_RR:
        if start + 4 + 24 * count > end:
            raise PacketParseError(f"RR too short for {count} report blocks")
        (ssrc,) = _SSRC.unpack_from(raw, start)
        blocks_end = start + 4 + 24 * count
        return ReceiverReport(
            ssrc, _parse_blocks(raw, start + 4, count), _aligned(raw[blocks_end:end])
        )
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, raw, start, end)
    if packet_type == RTCP_BYE:
        return _parse_bye(count, raw, start, end)
    if packet_type == RTCP_APP:
        if start + 8 > end:
            raise PacketParseError("APP packet too short")
        (ssrc,) = _SSRC.unpack_from(raw, start)
        return App(count, ssrc, raw[start + 4 : start + 8], _aligned(raw[start + 8 : end]))
    return UnknownRtcp(packet_type, count, _aligned(raw[start:end]))


def _aligned(data: bytes) -> bytes:
    """Trailing words after padding removal may be ragged; keep whole words only."""
    return data[: len(data) - len(data) % 4]


def _parse_blocks(raw: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(raw, offset + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _text(data: bytes) -> str:
    """SDES and BYE text is UTF-8 (section 6.5); invalid bytes survive as lone surrogates
    (``surrogateescape``), so that parsing never fails on them and packing restores them."""
    return data.decode("utf-8", "surrogateescape")


def _parse_sdes(count: int, raw: bytes, offset: int, end: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if offset + 4 > end:
            raise PacketParseError("SDES chunk truncated")
        (ssrc,) = _SSRC.unpack_from(raw, offset)
        offset += 4
        items = []
        while True:
            if offset >= end:
                raise PacketParseError("SDES chunk has no END item")
            kind = raw[offset]
            if kind == SDES_END:
                offset += 4 - offset % 4 if offset % 4 else 4  # END plus padding to 32 bits
                if offset > end:
                    raise PacketParseError("SDES chunk padding runs past the packet")
                break
            if offset + 2 > end or offset + 2 + raw[offset + 1] > end:
                raise PacketParseError("SDES item runs past the packet")
            length = raw[offset + 1]
            items.append((kind, _text(raw[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, raw: bytes, offset: int, end: int) -> Bye:
    if offset + 4 * count > end:
        raise PacketParseError(f"BYE too short for {count} sources")
    ssrcs = struct.unpack_from(f"!{count}I", raw, offset)
    offset += 4 * count
    reason = None
    if offset < end:
        length = raw[offset]
        if offset + 1 + length > end:
            raise PacketParseError("BYE reason runs past the packet")
        reason = _text(raw[offset + 1 : offset + 1 + length])
    return Bye(tuple(ssrcs), reason)


# -- time -----------------------------------------------------------------------------------------


def ntp_timestamp(now: float) -> int:
    """64-bit NTP timestamp (RFC 3550 section 4) of the Unix wall-clock time ``now``."""
    seconds = math.floor(now)
    fraction = int((now - seconds) * (1 << 32))
    return (((seconds + NTP_EPOCH_OFFSET) << 32) | fraction) & ((1 << 64) - 1)


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field format (section 6.4.1)."""
    return (ntp >> 16) & _U32


def round_trip_time(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Section 6.4.1: RTT = A - LSR - DLSR, in seconds, where A is the arrival time of the
    report block as a 64-bit NTP timestamp. None when the block echoes no SR (LSR 0). A slightly
    negative result (clock granularity) reads as 0; a grossly negative one as None."""
    if lsr == 0:
        return None
    units = (ntp_middle(arrival_ntp) - lsr - dlsr) & _U32
    if units >= 1 << 31:  # negative
        return 0.0 if units > _U32 - 655 else None  # within 10 ms of zero: rounding
    return units / 65536


# -- receiver statistics (appendix A) -------------------------------------------------------------


class ReceptionStats:
    """Receiver statistics of the source we hear (RFC 3550 appendix A.1, A.3, A.8).

    Feed every RTP packet of the stream to :meth:`received`. The first source heard is tracked;
    another SSRC takes over after ``SOURCE_SWITCH_PACKETS`` consecutive packets of it that carry
    timing (not RFC 4733 events, which some gateways send with their own SSRC). Totals of the
    sources heard before are kept in :attr:`lost` and :attr:`packets`.
    """

    __slots__ = (
        "_candidate",
        "_candidate_count",
        "_lost_before",
        "_received_before",
        "_transit",
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "fraction_lost",
        "jitter",
        "last_sr",
        "last_sr_time",
        "max_seq",
        "probation",
        "received_count",
        "received_prior",
        "ssrc",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate}")
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self._candidate: int | None = None
        self._candidate_count = 0
        self._lost_before = 0
        self._received_before = 0
        self._start(0)

    def _start(self, seq: int) -> None:
        """A new source: RFC 3550 A.1 ``init_seq`` with ``max_seq = seq - 1`` and probation."""
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self.jitter = 0.0  # timestamp units (A.8)
        self._transit: float | None = None
        self.fraction_lost = 0  # of the last interval closed by report_block(), 0-255
        self.last_sr = 0  # middle 32 bits of the last SR's NTP timestamp (LSR)
        self.last_sr_time = 0.0  # when it arrived (the caller's clock, seconds)

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received_count = 0
        self.received_prior = 0
        self.expected_prior = 0

    def set_clock_rate(self, clock_rate: int) -> None:
        """The codec changed: timestamps now count at ``clock_rate``; restart the jitter."""
        if clock_rate != self.clock_rate and clock_rate > 0:
            self.clock_rate = clock_rate
            self._transit = None

    def received(
        self, ssrc: int, seq: int, timestamp: int, arrival: float, timing: bool = True
    ) -> bool:
        """Account one RTP packet that arrived at ``arrival`` seconds (any monotonic clock).
        ``timing`` is False for packets whose timestamp does not follow the sampling clock
        (RFC 4733 events): they count for loss but not for jitter. True if the packet counts as
        received (A.1: a valid sequence number of a source past probation)."""
        if ssrc != self.ssrc:
            if self.ssrc is not None and not self._switch_to(ssrc, timing):
                return False
            self.ssrc = ssrc
            self._start(seq)
        elif self._candidate_count:
            self._candidate_count = 0
        max_seq = self.max_seq
        if not self.probation and (seq - max_seq) & 0xFFFF < MAX_DROPOUT:
            # The common case of A.1 update_seq, inlined: in order, with a permissible gap.
            if seq < max_seq:
                self.cycles += _SEQ_MOD  # sequence number wrapped
            self.max_seq = seq
            self.received_count += 1
        elif not self._update_seq(seq):
            return False
        if timing:
            transit = arrival * self.clock_rate - timestamp
            previous = self._transit
            self._transit = transit
            if previous is not None:
                d = transit - previous
                if d < 0:
                    d = -d
                if d > 0x80000000:  # the 32-bit timestamp wrapped between the two packets
                    d = abs(d - 0x100000000)
                self.jitter += (d - self.jitter) / 16  # A.8
        return True

    def _switch_to(self, ssrc: int, timing: bool) -> bool:
        """A packet of another SSRC: follow it after ``SOURCE_SWITCH_PACKETS`` consecutive
        packets with timing, keeping the totals of the source we leave."""
        if not timing:
            return False
        if ssrc == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = ssrc, 1
        if self._candidate_count < SOURCE_SWITCH_PACKETS:
            return False
        self._lost_before += self.cumulative_lost
        self._received_before += self.received_count
        self._candidate, self._candidate_count = None, 0
        return True

    def _update_seq(self, seq: int) -> bool:
        """RFC 3550 appendix A.1 ``update_seq``."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:  # packets must be in sequence
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received_count += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:  # in order, with permissible gap
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD  # sequence number wrapped
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:  # a very large jump
            if seq == self.bad_seq:
                # Two sequential packets: the source restarted without telling us.
                self._init_seq(seq)
                self._transit = None
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or reordered packet
        self.received_count += 1
        return True

    # -- A.3 -------------------------------------------------------------------------------------

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the current source (0 while nothing counted)."""
        if self.ssrc is None or self.received_count == 0:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Packets lost from the current source (negative with duplicates), A.3."""
        return self.expected - self.received_count

    @property
    def lost(self) -> int:
        """Packets lost in total, sources heard before included."""
        return self._lost_before + self.cumulative_lost

    @property
    def packets(self) -> int:
        """Packets counted as received in total (A.1 valid), sources heard before included."""
        return self._received_before + self.received_count

    @property
    def loss_ratio(self) -> float:
        """Cumulative fraction of the current source's packets lost, 0..1."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return min(1.0, max(0.0, self.cumulative_lost / expected))

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate

    def sr_received(self, ssrc: int, ntp: int, now: float) -> None:
        """Remember an SR of the source we hear for LSR/DLSR (section 6.4.1)."""
        if ssrc == self.ssrc:
            self.last_sr = ntp_middle(ntp)
            self.last_sr_time = now

    def report_block(self, now: float) -> ReportBlock | None:
        """Close the interval (A.3) and describe it; None if no source is past probation."""
        if self.ssrc is None or self.received_count == 0:
            return None
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received_count - self.received_prior
        self.received_prior = self.received_count
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            self.fraction_lost = 0
        else:
            self.fraction_lost = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self.last_sr:
            dlsr = min(_U32, max(0, int((now - self.last_sr_time) * 65536)))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=self.fraction_lost,
            cumulative_lost=max(_LOST_MIN, min(_LOST_MAX, self.cumulative_lost)),
            highest_sequence=self.extended_max & _U32,
            jitter=min(_U32, int(self.jitter)),
            lsr=self.last_sr,
            dlsr=dlsr,
        )
