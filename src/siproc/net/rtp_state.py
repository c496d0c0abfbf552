"""State of one RTP stream shared by its parts: counters, the symmetric RTP latch, and the
attributes :class:`~siproc.net.rtp_socket.RtpStream` and its mixins (:mod:`siproc.net.rtcp_edge`,
:mod:`siproc.net.media_taps`) all read.

:class:`StreamParts` holds no code of its own beyond the send destination: it declares, for the
type checker, what ``RtpStream.__init__`` sets up, so that each concern of the stream can live in
its own module and still use the one object's state without indirection on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Final

from siproc.media.codecs import AudioCodec
from siproc.media.mixer import PlaybackMixer
from siproc.media.rtcp import ReceptionStats
from siproc.media.rtcp_session import RtcpSession
from siproc.media.rtp import RtpSender
from siproc.media.srtp import SrtpContext

__all__ = [
    "DEFAULT_RATE",
    "RELATCH_PACKETS",
    "Address",
    "Logger",
    "RtpStats",
    "StreamParts",
    "SymmetricRtpLatch",
]

Address = tuple[Any, ...]  # as socket.recvfrom returns it: (host, port) or IPv6 4-tuple
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

RELATCH_PACKETS: Final = 3  # consecutive valid packets from a new source before we follow it
DEFAULT_RATE: Final = 8000  # sample rate for play() before the codec is known


@dataclass(slots=True)
class RtpStats:
    """Counters of one stream. Bytes are RTP bytes (header included, UDP/IP excluded)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0  # valid RTP of an expected type from the latched source
    bytes_received: int = 0
    packets_invalid: int = 0  # not RTP (parse error), or SRTP/SRTCP that failed to verify
    packets_ignored: int = 0  # valid RTP, but an unexpected payload type or an unlatched source
    rtcp_received: int = 0  # on the RTCP port, or multiplexed (RFC 5761)
    rtcp_invalid: int = 0  # RTCP that did not parse (counted in rtcp_received too)
    rtcp_sent: int = 0
    send_errors: int = 0  # sendto failures (buffer full, unreachable ...)
    relatches: int = 0  # times the send destination followed a new source
    # The RTCP state (RFC 3550 section 6) behind the figures below; None: no RTCP.
    rtcp: RtcpSession | None = field(default=None, repr=False, compare=False)

    @property
    def lost(self) -> int:
        """Packets of the peer's stream lost (RFC 3550 A.3; negative with duplicates)."""
        return self.rtcp.reception.lost if self.rtcp is not None else 0

    @property
    def fraction_lost(self) -> float:
        """Share of the peer's current stream lost since it began, 0..1."""
        return self.rtcp.reception.loss_ratio if self.rtcp is not None else 0.0

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter of the peer's stream (RFC 3550 A.8), in milliseconds."""
        return self.rtcp.reception.jitter_ms if self.rtcp is not None else 0.0

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time from the peer's last report about us (section 6.4.1); None: none."""
        rtt = self.rtcp.rtt if self.rtcp is not None else None
        return None if rtt is None else rtt * 1000

    @property
    def remote_lost(self) -> int | None:
        """Packets of our stream lost, as the peer last reported (cumulative); None: no report."""
        report = self.rtcp.remote_report if self.rtcp is not None else None
        return None if report is None else report.cumulative_lost

    @property
    def remote_fraction_lost(self) -> float | None:
        """Share of our stream lost in the peer's last reporting interval, 0..1."""
        report = self.rtcp.remote_report if self.rtcp is not None else None
        return None if report is None else report.loss_fraction

    @property
    def remote_jitter_ms(self) -> float | None:
        """Jitter of our stream as the peer last reported it, in milliseconds."""
        if self.rtcp is None or self.rtcp.remote_report is None:
            return None
        return self.rtcp.remote_report.jitter * 1000 / self.rtcp.reception.clock_rate

    @property
    def bye_received(self) -> bool:
        """The peer sent RTCP BYE (section 6.6)."""
        return self.rtcp is not None and self.rtcp.bye_received


class SymmetricRtpLatch:
    """Symmetric RTP (RFC 4961 idea, "comedia" latching): where do we send?

    The first valid packet's source becomes the latched address. A different source takes over
    only after ``relatch_packets`` consecutive valid packets from it (a NAT rebinding), so a
    single stray or spoofed packet cannot steal the stream. Pure logic, no I/O.

    With ``trusted`` set (the call's signalling peer), only a source at the SDP's address
    (``sdp_host``) or at a trusted address may latch, on any port: otherwise a few forged
    packets could point our stream at any host on the internet (a packet cannon). A NAT may
    still change the port; a peer behind a NAT that does not rewrite its SDP is reached where
    its signalling comes from.
    """

    __slots__ = (
        "_candidate",
        "_count",
        "address",
        "relatch_packets",
        "relatches",
        "sdp_host",
        "trusted",
    )

    def __init__(self, relatch_packets: int = RELATCH_PACKETS) -> None:
        if relatch_packets < 1:
            raise ValueError(f"relatch_packets must be at least 1, not {relatch_packets}")
        self.relatch_packets = relatch_packets
        self.address: Address | None = None
        self.relatches = 0
        self.sdp_host: str | None = None
        self.trusted: frozenset[str] | None = None  # None: any source may latch
        self._candidate: Address | None = None
        self._count = 0

    @property
    def pending(self) -> bool:
        """A different source is being counted: the next packet must go through :meth:`offer`
        even if it comes from the latched address (it resets the count)."""
        return self._count != 0

    def reset(self) -> None:
        """Forget the latched address (the remote changed in a re-INVITE)."""
        self.address = None
        self._candidate = None
        self._count = 0

    def offer(self, source: Address) -> bool:
        """Account one valid packet from ``source``; True if it comes from the latched address
        (possibly latched by this very packet), False if it is from another source."""
        trusted = self.trusted
        if trusted is not None and source[0] != self.sdp_host and source[0] not in trusted:
            return source == self.address
        if self.address is None:
            self.address = source
            return True
        if source == self.address:
            self._candidate = None
            self._count = 0
            return True
        if source == self._candidate:
            self._count += 1
        else:
            self._candidate = source
            self._count = 1
        if self._count >= self.relatch_packets:
            self.address = source
            self._candidate = None
            self._count = 0
            self.relatches += 1
            return True
        return False


class StreamParts:
    """The state of an :class:`~siproc.net.rtp_socket.RtpStream` that its parts share
    (declarations only: ``RtpStream.__init__`` sets them), and where packets go."""

    log: Logger
    stats: RtpStats
    _loop: asyncio.AbstractEventLoop
    _sock: socket.socket
    _rtcp_sock: socket.socket
    _rbuf: bytearray
    _rview: memoryview
    _closed: bool
    _remote: Address | None
    _latch: SymmetricRtpLatch
    _codec: AudioCodec | None
    _sender: RtpSender
    _mixer: PlaybackMixer
    _ptime_ms: int
    _frame_samples: int
    _ts_step: int
    _rtcp: RtcpSession
    _reception: ReceptionStats
    _srtp: SrtpContext | None  # RFC 3711, from configure_srtp(); None: plain RTP

    @property
    def remote_address(self) -> Address | None:
        """Where packets go now: the latched source, else the SDP address; None: nowhere."""
        if self._remote is None:
            return None
        return self._latch.address if self._latch.address is not None else self._remote

    @property
    def latched_address(self) -> Address | None:
        return self._latch.address
