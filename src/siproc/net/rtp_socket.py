"""The per-call media edge: one RTP socket pair, file playback out, symmetric RTP in.

Theory of operation:

* ``RtpStream.open`` binds a non-blocking UDP socket to a free even port (RFC 3550 section 11:
  RTP on an even port, RTCP on the next odd one) and a second socket on port + 1, because the SDP
  claims that port for RTCP. Both are read from then on.
* ``configure`` sets the remote address from the SDP, the codec and payload types and our
  direction (RFC 3264 section 5.1, from our side: ``sendrecv``, ``sendonly``, ``recvonly``,
  ``inactive``). It may be called again on every re-INVITE.
* ``start`` adds the stream to the shared :class:`~siproc.net.clock.MediaClock`. On each tick the
  stream pulls one frame from its :class:`~siproc.media.mixer.PlaybackMixer` (files started with
  ``play``), encodes it and sends one packet. When nothing plays it sends encoded silence
  (``SEND_SILENCE``): it keeps NAT bindings open and keeps peers that watch for RTP timeouts
  (baresip, many PBXs) happy. The marker bit flags the first packet of the stream and the first
  packet of each file after silence (RFC 3551 section 4.1: start of a talkspurt). The RTP
  timestamp advances by one frame every tick, sent or not, so it always follows the clock.
  Files advance in real time whenever the stream is started, even while sending is not allowed
  (on hold): a handler waiting for ``STOPPED`` is never stuck.
* Receiving drains the socket with ``recvfrom_into`` into one reused buffer until it would block
  (bounded per wakeup), from a ``loop.add_reader`` callback: no asyncio protocol object per
  packet. Garbage is counted and dropped. Valid packets of an expected payload type feed the
  symmetric RTP latch (:class:`SymmetricRtpLatch`): we send to where the peer's RTP really comes
  from (NAT), not to the SDP address, once it arrives.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from siproc.media.codecs import AudioCodec
from siproc.media.mixer import PlaybackMixer
from siproc.media.player import FilePlayer
from siproc.media.rtp import ParseError, RtpHeader, RtpSender, is_rtcp, parse_rtp
from siproc.net.clock import MediaClock

__all__ = ["DIRECTIONS", "RtpStats", "RtpStream", "SymmetricRtpLatch"]

log = logging.getLogger(__name__)

Address = tuple[Any, ...]  # as socket.recvfrom returns it: (host, port) or IPv6 4-tuple
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})  # RFC 3264 5.1
SEND_SILENCE: Final = True  # send encoded silence when nothing plays (False: suppress)
RELATCH_PACKETS: Final = 3  # consecutive valid packets from a new source before we follow it
COMFORT_NOISE_PT: Final = 13  # RFC 3551 table 4 (RFC 3389)
RECV_BUFFER: Final = 4096  # bytes; RTP on a LAN/WAN stays far below the MTU
RECV_BATCH: Final = 256  # datagrams per reader wakeup, so a flood cannot starve the loop
DEFAULT_RATE: Final = 8000  # sample rate for play() before the codec is known
DSCP_EF_TOS: Final = 0xB8  # DSCP EF (RFC 3246) in the IP TOS / traffic class byte


@dataclass(slots=True)
class RtpStats:
    """Counters of one stream. Bytes are RTP bytes (header included, UDP/IP excluded)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0  # valid RTP of an expected type from the latched source
    bytes_received: int = 0
    packets_invalid: int = 0  # not RTP (parse error)
    packets_ignored: int = 0  # valid RTP, but an unexpected payload type or an unlatched source
    rtcp_received: int = 0  # on the RTCP port, or multiplexed (RFC 5761), not parsed yet
    send_errors: int = 0  # sendto failures (buffer full, unreachable ...)
    relatches: int = 0  # times the send destination followed a new source


class SymmetricRtpLatch:
    """Symmetric RTP (RFC 4961 idea, "comedia" latching): where do we send?

    The first valid packet's source becomes the latched address. A different source takes over
    only after ``relatch_packets`` consecutive valid packets from it (a NAT rebinding), so a
    single stray or spoofed packet cannot steal the stream. Pure logic, no I/O.
    """

    __slots__ = ("_candidate", "_count", "address", "relatch_packets", "relatches")

    def __init__(self, relatch_packets: int = RELATCH_PACKETS) -> None:
        if relatch_packets < 1:
            raise ValueError(f"relatch_packets must be at least 1, not {relatch_packets}")
        self.relatch_packets = relatch_packets
        self.address: Address | None = None
        self.relatches = 0
        self._candidate: Address | None = None
        self._count = 0

    def reset(self) -> None:
        """Forget the latched address (the remote changed in a re-INVITE)."""
        self.address = None
        self._candidate = None
        self._count = 0

    def offer(self, source: Address) -> bool:
        """Account one valid packet from ``source``; True if it comes from the latched address
        (possibly latched by this very packet), False if it is from another source."""
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


def _coprime_step(count: int, rng: random.Random) -> int:
    """A stride in [1, count) coprime with count, to visit 0..count-1 in a scrambled order."""
    if count <= 2:
        return 1
    while True:
        step = rng.randrange(1, count)
        if math.gcd(step, count) == 1:
            return step


def _bind_udp(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _set_dscp_ef(sock: socket.socket, family: socket.AddressFamily) -> None:
    """Mark outgoing RTP as expedited forwarding; best effort (may be unsupported)."""
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_EF_TOS)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF_TOS)
    except (OSError, AttributeError):
        pass


_PORT_BUSY: Final = frozenset({errno.EADDRINUSE, errno.EACCES})


class RtpStream:
    """One call's RTP session (one audio stream). Create with :meth:`open`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: MediaClock,
        sock: socket.socket,
        rtcp_sock: socket.socket,
        bind_host: str,
        rng: random.Random,
        logger: Logger | None = None,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._sock = sock
        self._rtcp_sock = rtcp_sock
        self.local_host = bind_host
        self.local_port: int = sock.getsockname()[1]
        self.log: Logger = logger if logger is not None else log
        self.stats = RtpStats()
        self.on_stopped: Callable[[str], None] | None = None
        self.on_rtp: Callable[[RtpHeader, memoryview], None] | None = None
        self._sender = RtpSender(0, rng)
        self._latch = SymmetricRtpLatch()
        self._mixer = PlaybackMixer()
        self._rbuf = bytearray(RECV_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._ptime_ms = round(clock.interval * 1000)
        # Set by configure():
        self._remote: Address | None = None
        self._codec: AudioCodec | None = None
        self._frame_samples = DEFAULT_RATE * self._ptime_ms // 1000
        self._ts_step = self._frame_samples
        self._silence = b""
        self._expected_pts: frozenset[int] | None = None  # None: accept any until configured
        self.telephone_event_pt: int | None = None
        self.direction = "sendrecv"
        # Tick state:
        self._started = False
        self._closed = False
        self._need_marker = True  # first packet of the stream
        self._was_playing = False
        self._seen_skipped = clock.skipped_ticks
        self._send_error_logged = False
        loop.add_reader(sock.fileno(), self._on_readable)
        loop.add_reader(rtcp_sock.fileno(), self._on_rtcp_readable)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        clock: MediaClock,
        bind_host: str,
        port_range: tuple[int, int],
        rng: random.Random | None = None,
        *,
        logger: Logger | None = None,
    ) -> RtpStream:
        """Bind an even RTP port and the odd RTCP port above it, tried in random order within
        ``port_range`` (inclusive). ``bind_host`` is an IPv4 or IPv6 literal; it picks the
        family. Raises ``OSError`` if no pair is free, ``ValueError`` for bad arguments."""
        try:
            family = (
                socket.AF_INET6 if ipaddress.ip_address(bind_host).version == 6 else socket.AF_INET
            )
        except ValueError:
            raise ValueError(f"RTP bind address must be an IP address, not {bind_host!r}") from None
        low, high = port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"invalid RTP port range {low}-{high}")
        first = low + (low & 1)
        count = (high - 1 - first) // 2 + 1 if high - 1 >= first else 0
        if count <= 0:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        rng = rng if rng is not None else random.SystemRandom()
        start, step = rng.randrange(count), _coprime_step(count, rng)
        for i in range(count):
            port = first + 2 * ((start + i * step) % count)
            try:
                sock = _bind_udp(family, bind_host, port)
            except OSError as exc:
                if exc.errno in _PORT_BUSY:
                    continue
                raise OSError(
                    exc.errno, f"cannot bind RTP socket to {bind_host} port {port}: {exc.strerror}"
                ) from None
            try:
                rtcp_sock = _bind_udp(family, bind_host, port + 1)
            except OSError as exc:
                sock.close()
                if exc.errno in _PORT_BUSY:
                    continue
                raise OSError(
                    exc.errno,
                    f"cannot bind RTCP socket to {bind_host} port {port + 1}: {exc.strerror}",
                ) from None
            _set_dscp_ef(sock, family)
            return cls(loop, clock, sock, rtcp_sock, bind_host, rng, logger)
        raise OSError(
            errno.EADDRINUSE, f"no free RTP/RTCP port pair in {low}-{high} on {bind_host}"
        )

    # -- control (from the call layer) -------------------------------------------------------

    def configure(
        self,
        remote: tuple[str, int],
        codec: AudioCodec,
        payload_type: int,
        telephone_event_pt: int | None,
        direction: str,
    ) -> None:
        """Apply a negotiated SDP (offer/answer or re-INVITE).

        ``remote`` is the SDP's connection address and port (IP literal); port 0 or an
        unspecified address (``0.0.0.0``, the RFC 2543 hold) means: send nothing. ``direction``
        is ours. A remote address changed by a later call forgets the latched source (a source
        latched before the first call, from early RTP, is kept). The codec's sample rate
        should stay the same across re-INVITEs while files play (they were opened at it).
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"invalid media direction {direction!r}")
        if not 0 <= payload_type < 128:
            raise ValueError(f"invalid RTP payload type {payload_type}")
        if telephone_event_pt is not None and not 0 <= telephone_event_pt < 128:
            raise ValueError(f"invalid telephone-event payload type {telephone_event_pt}")
        host, port = remote
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"remote RTP address must be an IP address, not {host!r}") from None
        if (ip.version == 6) != (self._sock.family == socket.AF_INET6):
            raise ValueError(f"remote {host} is not of the RTP socket's address family")
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid remote RTP port {port}")
        new_remote = None if port == 0 or ip.is_unspecified else (str(ip), port)
        old = self._codec
        if new_remote != self._remote:
            if old is not None:  # a re-INVITE moved the media: learn the source anew
                self._latch.reset()
            self._need_marker = True
        if old is not None and codec.sample_rate != old.sample_rate and len(self._mixer):
            self.log.warning(
                "codec rate changed %d -> %d Hz while playing; playing files keep the old rate",
                old.sample_rate,
                codec.sample_rate,
            )
        if (
            old is None
            or (old.name, old.clock_rate) != (codec.name, codec.clock_rate)
            or payload_type != self._sender.payload_type
        ):
            self._need_marker = True
        self._remote = new_remote
        self._codec = codec
        self._frame_samples = codec.frame_samples(self._ptime_ms)
        self._ts_step = codec.clock_rate * self._ptime_ms // 1000
        self._silence = codec.encode(np.zeros(self._frame_samples, dtype=np.int16))
        self._sender.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        expected = {payload_type, COMFORT_NOISE_PT}
        if telephone_event_pt is not None:
            expected.add(telephone_event_pt)
        self._expected_pts = frozenset(expected)
        self.direction = direction

    def start(self) -> None:
        """Join the media clock: sending (and playback) begins on the next tick."""
        if self._closed:
            raise RuntimeError("RtpStream.start() after close()")
        if not self._started:
            self._started = True
            self._clock.add(self)

    def play(self, path: str) -> None:
        """Start playing a file (mixed with any others) from the next tick on.
        Raises :class:`~siproc.media.player.MediaFileError` with a one-line reason."""
        if self._closed:
            raise RuntimeError("RtpStream.play() after close()")
        rate = self._codec.sample_rate if self._codec is not None else DEFAULT_RATE
        self._mixer.add(FilePlayer.open(path, rate))

    def stop_last(self) -> str | None:
        """Stop the file added last; report it through ``on_stopped`` (now) and return its name,
        or None if nothing plays. The caller must not report it a second time."""
        player = self._mixer.stop_last()
        if player is None:
            return None
        self._emit_stopped(player.name)
        return player.name

    def close(self) -> None:
        """Stop ticking, close both sockets and all players. Idempotent. Files still playing are
        dropped silently: no ``on_stopped`` (the call is over; the handler gets SIGTERM)."""
        if self._closed:
            return
        self._closed = True
        self._clock.remove(self)
        for sock in (self._sock, self._rtcp_sock):
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._mixer.close()

    # -- state --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ssrc(self) -> int:
        return self._sender.ssrc

    @property
    def playing(self) -> list[str]:
        """Names of the files playing, oldest first."""
        return self._mixer.names

    @property
    def remote_address(self) -> Address | None:
        """Where packets go now: the latched source, else the SDP address; None: nowhere."""
        if self._remote is None:
            return None
        return self._latch.address if self._latch.address is not None else self._remote

    @property
    def latched_address(self) -> Address | None:
        return self._latch.address

    @property
    def _sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def _receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    # -- the media tick ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One 20 ms frame: mix, encode, send (called by the MediaClock)."""
        if self._closed:
            return
        skipped = self._clock.skipped_ticks - self._seen_skipped
        if skipped:  # the loop was late; keep the timestamp on the clock, leave a gap
            self._seen_skipped += skipped
            self._sender.skip(skipped * self._ts_step)
            self._need_marker = True
        frame, finished = self._mixer.next_frame(self._frame_samples)
        talkspurt = frame is not None and not self._was_playing
        self._was_playing = frame is not None
        dest = self.remote_address
        codec = self._codec
        if codec is None or dest is None or not self._sending:
            self._sender.skip(self._ts_step)
            self._need_marker = True
        elif frame is None and not SEND_SILENCE:
            self._sender.skip(self._ts_step)
        else:
            payload = self._silence if frame is None else codec.encode(frame)
            packet = self._sender.packet(payload, self._ts_step, self._need_marker or talkspurt)
            self._need_marker = False
            self._send(packet, dest)
        for player in finished:
            self._emit_stopped(player.name)

    def _send(self, packet: bytes, dest: Address) -> None:
        try:
            self._sock.sendto(packet, dest)
        except OSError as exc:  # BlockingIOError (buffer full), unreachable, ...
            self.stats.send_errors += 1
            if not self._send_error_logged:
                self._send_error_logged = True
                self.log.warning("RTP send to %s failed: %s (logged once)", dest, exc)
            return
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(packet)

    def _emit_stopped(self, name: str) -> None:
        callback = self.on_stopped
        if callback is None:
            return
        try:
            callback(name)
        except Exception:
            self.log.exception("on_stopped(%r) failed", name)

    # -- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv = self._sock.recvfrom_into
        buf, view = self._rbuf, self._rview
        for _ in range(RECV_BATCH):
            try:
                size, source = recv(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. a pending ICMP error; the next read goes on
                self.log.debug("RTP receive error: %s", exc)
                return
            self.datagram_received(view[:size], source)

    def datagram_received(self, data: memoryview, source: Address) -> None:
        """Handle one datagram from the RTP socket (public for tests and other transports).
        ``data`` may be a view of a reused buffer: valid only during this call."""
        if is_rtcp(data):
            self.stats.rtcp_received += 1
            return
        try:
            header, payload = parse_rtp(data)
        except ParseError:
            self.stats.packets_invalid += 1
            return
        expected = self._expected_pts
        if expected is not None and header.payload_type not in expected:
            self.stats.packets_ignored += 1
            return
        relatches = self._latch.relatches
        if not self._latch.offer(source):
            self.stats.packets_ignored += 1
            return
        if self._latch.relatches != relatches:
            self.stats.relatches += 1
            self.log.info("RTP source moved to %s; sending there", source)
        self.stats.packets_received += 1
        self.stats.bytes_received += len(data)
        callback = self.on_rtp
        if callback is not None and self._receiving:
            try:
                callback(header, payload)
            except Exception:
                self.log.exception("on_rtp hook failed")

    def _on_rtcp_readable(self) -> None:
        for _ in range(RECV_BATCH):
            try:
                self._rtcp_sock.recvfrom_into(self._rbuf)
            except OSError:  # BlockingIOError included
                return
            self.stats.rtcp_received += 1

    def __repr__(self) -> str:
        return f"RtpStream({self.local_host}:{self.local_port} -> {self.remote_address})"
