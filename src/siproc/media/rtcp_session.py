"""One RTP stream's RTCP (RFC 3550 section 6), sans-I/O: when to report, what to send, what the
peer reports back.

Theory of operation: the network edge owns one :class:`RtcpSession` per stream. It feeds every
received RTP packet to :attr:`RtcpSession.reception` (a
:class:`~siproc.media.rtcp.ReceptionStats`), asks :meth:`RtcpSession.due` on each media tick and,
when a report is due, sends what :meth:`RtcpSession.report` builds: an SR when we sent RTP since
the last report, else an RR, each with one report block about the source we hear and an SDES
CNAME (section 6.1: every compound carries one). At the end it sends :meth:`RtcpSession.bye`.
Received compounds go to :meth:`RtcpSession.receive`, which keeps the LSR of the peer's SR (for
our DLSR), the round-trip time computed from the peer's report block about us (section 6.4.1)
and the peer's view of our stream (loss, jitter).

All times are seconds on one monotonic clock (the media clock's ``now``); ``wall_offset`` turns
them into wall-clock time for NTP timestamps. Using one clock for the LSR we send and the arrival
time of the echo makes the round-trip time immune to wall-clock steps.
"""

from __future__ import annotations

import base64
import random

from siproc.media.rtcp import (
    RTCP_MIN_INTERVAL,
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_timestamp,
    parse_rtcp,
    round_trip_time,
)

__all__ = ["UDP_IP_OVERHEAD", "RtcpScheduler", "RtcpSession", "random_cname"]

UDP_IP_OVERHEAD = 28  # bytes; RFC 3550 section 6.2 counts lower-layer headers in avg_rtcp_size


def random_cname(rng: random.Random) -> str:
    """A short-term persistent CNAME (RFC 7022 section 4.2): 96 random bits, base64."""
    return base64.b64encode(rng.getrandbits(96).to_bytes(12, "big")).decode("ascii")


# -- the report interval (section 6.3, appendix A.7) ----------------------------------------------


class RtcpScheduler:
    """When to send the next report, for a two-party session (RFC 3550 section 6.3, A.7).

    Timer reconsideration and the e - 3/2 compensation factor (6.3.1) only matter in large
    groups and are left out: with two members and an audio codec the bandwidth term is far
    below the 5 s minimum, so the interval is the minimum times a random factor in [0.5, 1.5]
    (reports of many sessions do not synchronise) and half of that before the first report.
    Given ``rtcp_bandwidth`` (bytes/s), the deterministic interval is
    ``max(min_interval, members * avg_rtcp_size / rtcp_bandwidth)`` as in A.7."""

    __slots__ = (
        "_initial",
        "_rng",
        "avg_rtcp_size",
        "members",
        "min_interval",
        "next_time",
        "rtcp_bandwidth",
    )

    def __init__(
        self,
        *,
        min_interval: float = RTCP_MIN_INTERVAL,
        rtcp_bandwidth: float | None = None,
        members: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        if min_interval <= 0:
            raise ValueError(f"RTCP minimum interval must be positive, not {min_interval}")
        if rtcp_bandwidth is not None and rtcp_bandwidth <= 0:
            raise ValueError(f"RTCP bandwidth must be positive, not {rtcp_bandwidth}")
        if members < 2:
            raise ValueError(f"an RTP session has at least 2 members, not {members}")
        self.min_interval = min_interval
        self.rtcp_bandwidth = rtcp_bandwidth
        self.members = members
        self.avg_rtcp_size = 128.0  # bytes incl. UDP/IP: A.7's first guess before any report
        self.next_time: float | None = None  # None: not started
        self._initial = True
        self._rng = rng if rng is not None else random.Random()

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the random source (a media worker sends the stream's figures to the
        control process; ``SystemRandom`` has no state to copy). The copy draws from a new
        ``random.Random``."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "_rng"}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._rng = random.Random()

    def interval(self) -> float:
        """The deterministic interval Td (section 6.3.1), before randomisation."""
        minimum = self.min_interval / 2 if self._initial else self.min_interval
        if self.rtcp_bandwidth is None:
            return minimum
        return max(minimum, self.members * self.avg_rtcp_size / self.rtcp_bandwidth)

    def start(self, now: float) -> None:
        """Join the session at ``now``: the first report goes out after half an interval."""
        self._initial = True
        self.next_time = now + self.interval() * self._rng.uniform(0.5, 1.5)

    def due(self, now: float) -> bool:
        """True when a report should be sent now. The first call starts the schedule."""
        if self.next_time is None:
            self.start(now)
            return False
        return now >= self.next_time

    def sent(self, now: float, size: int) -> None:
        """A compound of ``size`` bytes (UDP/IP headers included) went out at ``now``: update
        the average size (A.7) and schedule the next report."""
        self.avg_rtcp_size += (size - self.avg_rtcp_size) / 16
        self._initial = False
        self.next_time = now + self.interval() * self._rng.uniform(0.5, 1.5)

    def received(self, size: int) -> None:
        """A compound of ``size`` bytes (UDP/IP headers included) arrived (A.7 average)."""
        self.avg_rtcp_size += (size - self.avg_rtcp_size) / 16


class RtcpSession:
    """The RTCP state of one stream whose RTP SSRC is ``ssrc``. ``min_interval`` shortens the
    report interval (tests); ``rng`` supplies the CNAME and the interval randomisation."""

    def __init__(
        self,
        ssrc: int,
        *,
        clock_rate: int = 8000,
        wall_offset: float = 0.0,
        min_interval: float = RTCP_MIN_INTERVAL,
        rng: random.Random | None = None,
        cname: str | None = None,
    ) -> None:
        rng = rng if rng is not None else random.SystemRandom()
        self.ssrc = ssrc
        self.cname = cname if cname is not None else random_cname(rng)
        self.wall_offset = wall_offset
        self.reception = ReceptionStats(clock_rate)
        self.scheduler = RtcpScheduler(min_interval=min_interval, rng=rng)
        self.rtt: float | None = None  # seconds, from the peer's last report block about us
        self.remote_report: ReportBlock | None = None  # the peer's last report block about us
        self.remote_sr: SenderReport | None = None  # the peer's last SR
        self.peer_cname: str | None = None
        self.bye_received = False
        self.bye_reason: str | None = None
        self.reports_sent = 0
        self._packets_reported = 0  # our packet count at the last report

    def due(self, now: float) -> bool:
        """True when a report should go out now (the first call starts the schedule)."""
        return self.scheduler.due(now)

    def report(self, now: float, rtp_timestamp: int, packet_count: int, octet_count: int) -> bytes:
        """The compound for this interval, and the next one scheduled. ``rtp_timestamp`` is our
        RTP clock at ``now``; ``packet_count`` and ``octet_count`` (payload octets) are what we
        sent since the stream began (section 6.4.1 sender info)."""
        data = self._compound(now, rtp_timestamp, packet_count, octet_count)
        self.scheduler.sent(now, len(data) + UDP_IP_OVERHEAD)
        return data

    def bye(
        self,
        now: float,
        rtp_timestamp: int,
        packet_count: int,
        octet_count: int,
        reason: str | None = None,
    ) -> bytes:
        """The last compound: a report, the CNAME, then BYE (section 6.6)."""
        return self._compound(
            now, rtp_timestamp, packet_count, octet_count, Bye((self.ssrc,), reason)
        )

    def _compound(
        self,
        now: float,
        rtp_timestamp: int,
        packet_count: int,
        octet_count: int,
        bye: Bye | None = None,
    ) -> bytes:
        block = self.reception.report_block(now)
        blocks = (block,) if block is not None else ()
        first: SenderReport | ReceiverReport
        if packet_count != self._packets_reported:  # we sent RTP since the last report
            first = SenderReport(
                self.ssrc,
                ntp_timestamp(now + self.wall_offset),
                rtp_timestamp & 0xFFFFFFFF,
                packet_count & 0xFFFFFFFF,
                octet_count & 0xFFFFFFFF,
                blocks,
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        self._packets_reported = packet_count
        self.reports_sent += 1
        packets: list[RtcpPacket] = [
            first,
            SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.cname),)),)),
        ]
        if bye is not None:
            packets.append(bye)
        return build_compound(packets)

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> list[RtcpPacket]:
        """Take in one compound that arrived at ``now``; return its packets. Raises
        :class:`~siproc.media.rtp.PacketParseError` for a malformed one (nothing is taken from
        it)."""
        packets = parse_rtcp(data)
        self.scheduler.received(len(data) + UDP_IP_OVERHEAD)
        for packet in packets:
            if isinstance(packet, SenderReport):
                if packet.ssrc == self.reception.ssrc:
                    self.remote_sr = packet
                    self.reception.sr_received(packet.ssrc, packet.ntp_timestamp, now)
                self._report_blocks(packet.reports, now)
            elif isinstance(packet, ReceiverReport):
                self._report_blocks(packet.reports, now)
            elif isinstance(packet, SourceDescription):
                for chunk in packet.chunks:
                    if chunk.ssrc != self.ssrc and chunk.cname is not None:
                        self.peer_cname = chunk.cname
            elif isinstance(packet, Bye) and any(s != self.ssrc for s in packet.ssrcs):
                self.bye_received = True
                self.bye_reason = packet.reason
        return packets

    def _report_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self.remote_report = block
            rtt = round_trip_time(ntp_timestamp(now + self.wall_offset), block.lsr, block.dlsr)
            if rtt is not None:
                self.rtt = rtt
