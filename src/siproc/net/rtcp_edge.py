"""The RTCP part of an RTP stream (RFC 3550 section 6; the sans-I/O state is
:mod:`siproc.media.rtcp_session`), a mixin of :class:`~siproc.net.rtp_socket.RtpStream`.

Every packet from the latched source feeds the receiver statistics (sequence, loss, jitter; in
the stream's receive path). The media tick calls :meth:`RtcpEdge._rtcp_tick` when the randomised
interval may be up, which sends an SR or RR with SDES CNAME: to the peer's RTP address with
rtcp-mux (RFC 5761), else to where its RTCP comes from, its ``a=rtcp`` (RFC 3605) or RTP port + 1;
``close`` sends BYE. Received RTCP (either socket) gives the round-trip time and the peer's view
of our stream; all of it is in ``stats``.
"""

from __future__ import annotations

import ipaddress
import socket

from siproc.media.rtcp import ReceiverReport, SenderReport
from siproc.media.rtp import RTP_HEADER_SIZE, PacketParseError
from siproc.media.srtp import SrtpError
from siproc.net.rtp_state import Address, StreamParts

__all__ = ["RtcpEdge"]


class RtcpEdge(StreamParts):
    """RTCP of one stream: where reports go, when, and what arrives."""

    _rtcp_mux: bool  # RFC 5761, from configure_rtcp()
    _rtcp_remote: Address | None  # the peer's a=rtcp (RFC 3605)
    _rtcp_source: Address | None  # where the peer's RTCP comes from
    _rtcp_due: float  # _rtcp_tick() looks at the schedule from this time on

    def _init_rtcp(self) -> None:
        self._rtcp_mux = False
        self._rtcp_remote = None
        self._rtcp_source = None
        self._rtcp_due = 0.0
        self._recv_rtcp = self._rtcp_sock.recvfrom_into

    def configure_rtcp(self, *, mux: bool, remote: tuple[str, int] | None = None) -> None:
        """Where our RTCP goes; call after each offer/answer. With ``mux`` (``a=rtcp-mux``
        negotiated, RFC 5761 section 5.1.1) to the peer's RTP address from our RTP socket.
        Else from our RTCP socket to where the peer's RTCP comes from (symmetric RTCP, RFC
        4961) once it has come, before that to ``remote`` (the peer's ``a=rtcp``, RFC 3605)
        or to its RTP port + 1 (RFC 3550 section 11)."""
        rtcp_remote: Address | None = None
        if remote is not None and not mux:
            host, port = remote
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            if (
                ip is not None
                and not ip.is_unspecified
                and (ip.version == 6) == (self._sock.family == socket.AF_INET6)
                and 0 < port <= 65535
            ):
                rtcp_remote = (str(ip), port)
            else:
                self.log.debug("ignoring unusable a=rtcp address %s port %s", host, port)
        self._rtcp_mux = mux
        self._rtcp_remote = rtcp_remote
        self._rtcp_source = None  # the media may have moved: learn it anew
        self._rtcp_clock_rate()

    @property
    def rtcp_address(self) -> Address | None:
        """Where our RTCP goes now; None: nowhere (no remote RTP address)."""
        rtp = self.remote_address
        if rtp is None:
            return None
        if self._rtcp_mux:
            return rtp
        if self._rtcp_source is not None:
            return self._rtcp_source
        if self._rtcp_remote is not None:
            return self._rtcp_remote
        if rtp[1] >= 65535:
            return None
        return (rtp[0], rtp[1] + 1, *rtp[2:])

    def _rtcp_tick(self, now: float) -> None:
        """Send a report when the RTCP schedule says so (RFC 3550 section 6.3). Between
        reports this is one float comparison."""
        if now < self._rtcp_due:
            return
        self._rtcp_clock_rate()
        if self._rtcp.due(now):  # the first call starts the schedule
            self._send_rtcp(self._rtcp.report(now, *self._rtcp_sender_info()))
        self._rtcp_due = self._rtcp.scheduler.next_time or now

    def _rtcp_clock_rate(self) -> None:
        """Jitter is in the codec's RTP clock units (RFC 3550 A.8)."""
        codec = self._codec
        if codec is not None and codec.clock_rate != self._reception.clock_rate:
            self._reception.set_clock_rate(codec.clock_rate)

    def _rtcp_sender_info(self) -> tuple[int, int, int]:
        """Section 6.4.1 sender info: our RTP clock at the current tick (the tick has advanced
        the timestamp by one frame), packets and payload octets sent."""
        stats = self.stats
        timestamp = (self._sender.timestamp - self._ts_step) & 0xFFFFFFFF
        octets = stats.bytes_sent - RTP_HEADER_SIZE * stats.packets_sent
        return timestamp, stats.packets_sent, octets

    def _send_rtcp(self, data: bytes) -> None:
        dest = self.rtcp_address
        if dest is None:
            return
        sock = self._sock if self._rtcp_mux else self._rtcp_sock
        srtp = self._srtp
        try:
            sock.sendto(data if srtp is None else srtp.protect_rtcp(data), dest)
        except SrtpError as exc:  # our own packet: a local fault
            self.stats.send_errors += 1
            self.log.debug("RTCP not sent: %s", exc)
            return
        except OSError as exc:
            self.stats.send_errors += 1
            self.log.debug("RTCP send to %s failed: %s", dest, exc)
            return
        self.stats.rtcp_sent += 1

    def _send_rtcp_bye(self) -> None:
        """Leave the session with a report and BYE (section 6.6), unless we never sent an RTP
        or RTCP packet (section 6.3.7 forbids BYE then)."""
        if self.stats.packets_sent or self.stats.rtcp_sent:
            now = self._loop.time()
            self._send_rtcp(self._rtcp.bye(now, *self._rtcp_sender_info()))

    def _rtcp_received(self, data: memoryview, source: Address) -> None:
        """One RTCP compound, from the RTCP socket or multiplexed on the RTP one (RFC 5761)."""
        self.stats.rtcp_received += 1
        had_bye = self._rtcp.bye_received
        try:
            packets = self._rtcp.receive(data, self._loop.time())
        except PacketParseError:
            self.stats.rtcp_invalid += 1
            return
        first = packets[0]
        if (
            isinstance(first, SenderReport | ReceiverReport)
            and first.ssrc == self._reception.ssrc
            and not self._rtcp_mux
        ):
            self._rtcp_source = source  # symmetric RTCP: the peer's RTCP comes from here
        if self._rtcp.bye_received and not had_bye:
            reason = self._rtcp.bye_reason
            self.log.info("RTCP BYE from the peer%s", f" ({reason})" if reason else "")

    def _srtcp_dropped(self) -> None:
        self.stats.rtcp_received += 1
        self.stats.rtcp_invalid += 1

    def _read_rtcp(self) -> None:
        """Read one datagram from the RTCP socket (the clock's receive phase)."""
        try:
            size, source = self._recv_rtcp(self._rbuf)
        except OSError:  # BlockingIOError included
            return
        data = self._rview[:size]
        srtp = self._srtp
        if srtp is not None:
            plain = srtp.unprotect_rtcp(data)
            if plain is None:  # forged, replayed or plain RTCP: dropped (RFC 3711 3.4)
                self._srtcp_dropped()
                return
            data = memoryview(plain)
        self._rtcp_received(data, source)
