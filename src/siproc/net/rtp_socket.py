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
* Receiving happens in the media clock's receive phase (:mod:`siproc.net.clock`): both sockets
  are in the clock's one epoll set, and each time a socket is reported readable one datagram is
  read with ``recvfrom_into`` into one reused buffer: no event-loop callback, no asyncio
  protocol object and no empty read per packet. Garbage is counted and dropped. Valid packets
  of an expected payload type feed the symmetric RTP latch (:class:`SymmetricRtpLatch`): we
  send to where the peer's RTP really comes from (NAT), not to the SDP address, once it
  arrives.
* RTCP (reports, BYE, what the peer says about us) is :mod:`siproc.net.rtcp_edge`; DTMF out
  and in is :mod:`siproc.net.dtmf_edge`; RECORD and the APLAY/ARECORD taps are
  :mod:`siproc.net.media_taps`; counters, the latch and the state
  those parts share are :mod:`siproc.net.rtp_state`. All are parts of the one ``RtpStream``
  object (mixins), so the hot path reads its state without indirection.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import math
import platform
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from siproc.logs import CallLog
from siproc.media.codecs import AudioCodec
from siproc.media.mixer import PlaybackMixer
from siproc.media.player import FilePlayer
from siproc.media.rtcp import RTCP_MIN_INTERVAL
from siproc.media.rtcp_session import RtcpSession
from siproc.media.rtp import (
    RTP_HEADER,
    RTP_HEADER_SIZE,
    PacketParseError,
    RtpHeader,
    RtpSender,
    is_rtcp,
    parse_rtp,
)
from siproc.media.srtp import SrtpContext, SrtpError
from siproc.net.clock import MediaClock
from siproc.net.dtmf_edge import DtmfEdge
from siproc.net.media_taps import AudioSink, AudioSource, MediaTaps
from siproc.net.rtcp_edge import RtcpEdge
from siproc.net.rtp_state import (
    DEFAULT_RATE,
    RELATCH_PACKETS,
    Address,
    Logger,
    RtpStats,
    SymmetricRtpLatch,
)
from siproc.sdp.sdes import SrtpParams

if TYPE_CHECKING:
    from siproc.net.alsa import SoundCards
    from siproc.net.media_stream_edge import BotStream, StreamSpec

__all__ = [
    "DIRECTIONS",
    "RELATCH_PACKETS",
    "Address",
    "AudioSink",
    "AudioSource",
    "RtpStats",
    "RtpStream",
    "SymmetricRtpLatch",
    "bind_rtp_pair",
]

log = logging.getLogger(__name__)


DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})  # RFC 3264 5.1
SEND_SILENCE: Final = True  # send encoded silence when nothing plays (False: suppress)
COMFORT_NOISE_PT: Final = 13  # RFC 3551 table 4 (RFC 3389)
RECV_BUFFER: Final = 4096  # bytes; RTP on a LAN/WAN stays far below the MTU
RECV_DRAIN_AT_CLOSE: Final = 64  # datagrams read at close(), beyond the clock's last receive
DSCP_EF_TOS: Final = 0xB8  # DSCP EF (RFC 3246) in the IP TOS / traffic class byte


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


def _enable_timestamps(sock: socket.socket) -> bool:
    """Ask for the kernel's arrival time (CLOCK_REALTIME) with every datagram; best effort."""
    if sys.platform != "linux" or platform.machine() not in _TIMESTAMP_MACHINES:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


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
# Kernel receive timestamps (Linux socket(7) SO_TIMESTAMPNS; Python does not export the name):
# RTP is read once per tick, so the time of reading is not the time of arrival, and the RFC 3550
# jitter we measure and report must not include our own 20 ms batching. 35 is the value in
# asm-generic, x86 and ARM; elsewhere the read time stands in (jitter then includes batching).
_SO_TIMESTAMPNS: Final = 35
_TIMESTAMP_MACHINES: Final = frozenset({"x86_64", "aarch64", "arm64", "i686", "armv7l", "riscv64"})
_ANC_SPACE: Final = socket.CMSG_SPACE(16)  # one struct timespec (64-bit)
_unpack_timespec: Final = struct.Struct("@qq").unpack_from
_unpack_header: Final = RTP_HEADER.unpack_from  # the hot path's header parse
_wall_time: Final = time.time  # the clock of the kernel's receive timestamps


def bind_rtp_pair(
    bind_host: str, port_range: tuple[int, int], rng: random.Random | None = None
) -> tuple[socket.socket, socket.socket]:
    """Bind an even RTP port and the odd RTCP port above it (RFC 3550 section 11), tried in
    random order within ``port_range`` (inclusive); both non-blocking, RTP marked DSCP EF.
    ``bind_host`` is an IPv4 or IPv6 literal; it picks the family. Raises ``OSError`` if no
    pair is free, ``ValueError`` for bad arguments."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind_host).version == 6 else socket.AF_INET
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
        return sock, rtcp_sock
    raise OSError(errno.EADDRINUSE, f"no free RTP/RTCP port pair in {low}-{high} on {bind_host}")


class RtpStream(RtcpEdge, MediaTaps, DtmfEdge):
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
        *,
        rtcp_interval: float = RTCP_MIN_INTERVAL,
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
        self.on_rtp_timeout: Callable[[], None] | None = None  # see watch_rtp()
        # errors found after the command that caused them (a sound card that fails later);
        # on_lost is never called here (only a media worker's stream can be lost)
        self.on_error: Callable[[str, str], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self._sound_cards: SoundCards | None = None  # APLAY / ARECORD / ASTOP, once used
        self._bot: BotStream | None = None  # STREAM, when it runs in this process
        self._rtp_timeout = 0.0  # watch_rtp(): seconds; 0: not watching
        self._rtp_check_at = 0.0  # when the received count is looked at next
        self._rtp_seen = (-1, 0.0)  # (packets received, when that count was first seen)
        self._sender = RtpSender(0, rng)
        # RTCP (media/rtcp_session.py): reports on their own schedule, BYE at close().
        wall_offset = time.time() - loop.time()  # loop.time() + wall_offset: the wall clock
        self._rtcp = RtcpSession(
            self._sender.ssrc, wall_offset=wall_offset, min_interval=rtcp_interval, rng=rng
        )
        self._reception = self._rtcp.reception
        self.stats.rtcp = self._rtcp
        self._init_rtcp()
        self._srtp: SrtpContext | None = None
        self._latch = SymmetricRtpLatch()
        self._unproven: int | None = None  # guard_unproven(): packets left to send
        self._mixer = PlaybackMixer()
        self._rbuf = bytearray(RECV_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._ptime_ms = round(clock.interval * 1000)
        # Set by configure():
        self._remote: Address | None = None
        self._codec: AudioCodec | None = None
        self._frame_samples = DEFAULT_RATE * self._ptime_ms // 1000
        self._ts_step = self._frame_samples
        self._zeros = np.zeros(self._frame_samples, dtype=np.int16)
        self._silence: bytes | None = None  # cached encoded silence, stateless codecs only
        self._expected_pts: frozenset[int] | None = None  # None: accept any until configured
        self._init_dtmf()  # RFC 4733 out; in from RFC 4733 or, without it, in-band tones
        self._direction = "sendrecv"
        self._tx = True  # direction allows sending (sendrecv, sendonly)
        self._rx = True  # direction allows receiving (sendrecv, recvonly)
        self._init_taps()  # RECORD, APLAY, ARECORD
        # Tick state:
        self._started = False
        self._closed = False
        self._need_marker = True  # first packet of the stream
        self._was_playing = False
        self._seen_skipped = clock.skipped_ticks
        self._send_error_logged = False
        # Deferred work of ticks (MediaClock.defer), oldest first: at most two are pending.
        self._late: collections.deque[tuple[npt.NDArray[np.int16] | None, int, list[FilePlayer]]]
        self._late = collections.deque()
        self._late_work = self._late_tick  # one bound method, not one per tick
        self._sendto = sock.sendto
        self._recv_rtp = sock.recvfrom_into
        self._recvmsg_rtp = sock.recvmsg_into if _enable_timestamps(sock) else None
        self._rbufs = [self._rbuf]
        clock.add_reader(sock.fileno(), self._read_rtp)
        clock.add_reader(rtcp_sock.fileno(), self._read_rtcp)

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
        rtcp_interval: float = RTCP_MIN_INTERVAL,
    ) -> RtpStream:
        """Bind an even RTP port and the odd RTCP port above it, tried in random order within
        ``port_range`` (inclusive). ``bind_host`` is an IPv4 or IPv6 literal; it picks the
        family. ``rtcp_interval`` is the minimum RTCP report interval (RFC 3550 section 6.2;
        shorter in tests). Raises ``OSError`` if no pair is free, ``ValueError`` for bad
        arguments."""
        rng = rng if rng is not None else random.SystemRandom()
        sock, rtcp_sock = bind_rtp_pair(bind_host, port_range, rng)
        return cls(
            loop, clock, sock, rtcp_sock, bind_host, rng, logger, rtcp_interval=rtcp_interval
        )

    # -- control (from the call layer) -------------------------------------------------------

    def configure(
        self,
        remote: tuple[str, int],
        codec: AudioCodec,
        payload_type: int,
        telephone_event_pt: int | None,
        direction: str,
        *,
        telephone_event_rate: int | None = None,
        receive_telephone_events: Mapping[int, int] | None = None,
    ) -> None:
        """Apply a negotiated SDP (offer/answer or re-INVITE).

        ``telephone_event_pt`` is the type we send RFC 4733 events with (the remote's number)
        and ``telephone_event_rate`` its clock rate (default: the codec's, RFC 4733 section
        2.1); ``receive_telephone_events`` maps every telephone-event type the remote may send
        with (those of both SDPs) to its clock rate (default: the send type only). Without any,
        received audio is watched for in-band DTMF tones.

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
        if telephone_event_rate is not None and telephone_event_rate <= 0:
            raise ValueError(f"invalid telephone-event clock rate {telephone_event_rate}")
        for event_pt, event_rate in (receive_telephone_events or {}).items():
            if not 0 <= event_pt < 128 or event_rate <= 0:
                raise ValueError(f"invalid telephone-event {event_pt} at {event_rate} Hz")
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
        self._latch.sdp_host = None if new_remote is None else new_remote[0]
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
        self._zeros = np.zeros(self._frame_samples, dtype=np.int16)
        # A stateful codec (G.722, Opus) encodes real zeros every tick: a cached payload
        # would leave the peer's decoder out of step with our encoder.
        self._silence = None if codec.stateful else codec.encode(self._zeros)
        self._sender.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        send_event = None
        if telephone_event_pt is not None:
            send_event = (telephone_event_pt, telephone_event_rate or codec.clock_rate)
        self._configure_dtmf(codec, payload_type, send_event, receive_telephone_events or {})
        self._expected_pts = frozenset({payload_type, COMFORT_NOISE_PT} | self._event_pts)
        was_sending = self._tx
        self.direction = direction
        if old is not None and self._tx != was_sending:  # hold or resume (RFC 3264 8.4)
            self.log.info(
                "RTP sending %s (%d packets sent so far)",
                "resumed" if self._tx else "paused",
                self.stats.packets_sent,
            )

    def configure_srtp(self, params: SrtpParams | None) -> None:
        """Protect the stream with SRTP/SRTCP (RFC 3711) with the negotiated suite and keys,
        or not (None: plain RTP). Call after each offer/answer, with
        :attr:`NegotiatedMedia.srtp`. A direction whose key is unchanged keeps its crypto
        context (:meth:`SrtpContext.replaced`). With SRTP on, received packets that do not
        verify are dropped (counted in ``packets_invalid``), plain RTP included."""
        if params is None:
            if self._srtp is not None:
                self.log.info("SRTP off")
            self._srtp = None
        elif self._srtp is None:
            self._srtp = SrtpContext.from_params(params)
            self.log.info("SRTP on (%s)", params.suite.value)
        else:
            self._srtp = self._srtp.replaced(params)

    def latch_from(self, hosts: Sequence[str]) -> None:
        """Latch (symmetric RTP) only to sources at the SDP's address or at ``hosts`` (the
        signalling peer's address), see :class:`SymmetricRtpLatch`."""
        self._latch.trusted = frozenset(hosts)

    def watch_rtp(self, seconds: float) -> None:
        """Call ``on_rtp_timeout`` once when no RTP arrived for ``seconds`` while both sides
        send (sendrecv: a held call is not watched); 0 stops watching. Checked once a second."""
        self._rtp_timeout = seconds
        self._rtp_seen = (-1, 0.0)

    def _check_rtp(self, now: float) -> None:
        self._rtp_check_at = now + 1.0
        count = self.stats.packets_received
        if count != self._rtp_seen[0] or not (self._rx and self._tx) or self._remote is None:
            self._rtp_seen = (count, now)
        elif now - self._rtp_seen[1] >= self._rtp_timeout:
            self._rtp_timeout = 0.0
            self.log.info("no RTP for %.0f s", now - self._rtp_seen[1])
            if self.on_rtp_timeout is not None:
                try:
                    self.on_rtp_timeout()
                except Exception:
                    self.log.exception("on_rtp_timeout failed")

    def guard_unproven(self, packets: int) -> None:
        """Until :meth:`prove` or a packet from the far end latches, send at most ``packets``
        packets: early media to an address nothing has confirmed (the SDP of an INVITE whose
        source may be forged) must not turn us into a packet cannon."""
        self._unproven = packets

    def prove(self) -> None:
        """The far end is confirmed (the ACK to our 2xx came): send without limit."""
        self._unproven = None

    def start(self) -> None:
        """Join the media clock: sending (and playback) begins on the next tick."""
        if self._closed:
            raise RuntimeError("RtpStream.start() after close()")
        if not self._started:
            self._started = True
            self._clock.add(self)

    def play(self, path: str) -> FilePlayer:
        """Start playing a file (mixed with any others) from the next tick on; return its
        player. Raises :class:`~siproc.media.player.MediaFileError` with a one-line reason."""
        if self._closed:
            raise RuntimeError("RtpStream.play() after close()")
        rate = self._codec.sample_rate if self._codec is not None else DEFAULT_RATE
        player = FilePlayer.open(path, rate)
        self._mixer.add(player)
        return player

    def stop_player(self, player: FilePlayer) -> bool:
        """Stop ``player`` without reporting it (the caller does); False if it had ended."""
        return self._mixer.stop(player)

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
        self._drain_rtp()
        while self._late:  # work the clock postponed: the recording's last frames
            self._late_tick(self._clock.now)
        self._closed = True
        self._clock.remove(self)
        self._send_rtcp_bye()
        for sock in (self._sock, self._rtcp_sock):
            self._clock.remove_reader(sock.fileno())
            sock.close()
        taps: list[AudioSource | AudioSink] = [*self._sources, *self._sinks]
        for tap in taps:
            self._close_tap(tap)
        self._sources.clear()
        self._sinks.clear()
        self._mixer.close()
        self.stop_recording()

    def sound_card(self, verb: str, device: str) -> None:
        """APLAY / ARECORD / ASTOP (net/alsa.py): bridges that are taps of this stream (closed
        with it). Opening happens off the loop; every failure, now or later, goes to
        ``on_error`` as it does for a media worker's stream."""
        from siproc.net.alsa import SoundCardError, SoundCards  # (pyalsaaudio is optional)

        if self._sound_cards is None:
            self._sound_cards = SoundCards(self, self._loop, self._report_error, self.log)
        cards = self._sound_cards
        try:
            match verb:
                case "APLAY":
                    cards.aplay(device)
                case "ARECORD":
                    cards.arecord(device)
                case _:
                    cards.astop(device)
        except SoundCardError as exc:
            self._report_error(verb, str(exc))

    def bot_start(self, spec: StreamSpec, report: Callable[[str, str], None]) -> None:
        """STREAM: a WebSocket to a voice bot in this process's loop, a tap of this stream
        (net/media_stream_edge.py; closed with it); its events (kind, text) go to ``report``.
        A stream still running from before ends quietly."""
        from siproc.net.media_stream_edge import BotStream  # (websockets: only when used)

        if self._bot is not None:
            self._bot.close()
        self._bot = BotStream(self._loop, self, spec, report, self.log)
        self._bot.start()

    def audio_fds(self, to_handler: int, from_handler: int) -> None:
        """SIPROC_AUDIO_FDS: the handler's audio pipes (net/audio_pipes.py), a sink and a live
        source of this stream, closed with it; the stream owns both descriptors from now on."""
        from siproc.net.audio_pipes import HandlerAudio

        HandlerAudio(self._loop, self, to_handler, from_handler, self.log).attach()

    def bot_stop(self) -> None:
        """STREAM STOP: ``stop`` to the bot, then ``STOPPED handler`` through its report."""
        if self._bot is not None:
            self._bot.stop("handler")

    def _report_error(self, verb: str, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(verb, reason)

    def log_as(self, call: str) -> None:
        """Prefix this stream's log lines with ``[call <call>]``."""
        self.log = CallLog(log, {"call": call})

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the stream is closed and its recording final: here that is
        at once after :meth:`close` (a media worker's stream answers later)."""
        if not self._closed:
            raise RuntimeError("RtpStream.when_closed() before close()")
        callback()

    # -- state --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ssrc(self) -> int:
        return self._sender.ssrc

    @property
    def sample_rate(self) -> int:
        """The PCM rate of the codec (what the mixer and the taps exchange), 8000 before the
        codec is known."""
        return self._codec.sample_rate if self._codec is not None else DEFAULT_RATE

    @property
    def playing(self) -> list[str]:
        """Names of the files playing, oldest first."""
        return self._mixer.names

    @property
    def direction(self) -> str:
        """Ours (RFC 3264 section 5.1): ``sendrecv``, ``sendonly``, ``recvonly``, ``inactive``."""
        return self._direction

    @direction.setter
    def direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"invalid media direction {direction!r}")
        self._direction = direction
        self._tx = direction in ("sendrecv", "sendonly")
        self._rx = direction in ("sendrecv", "recvonly")

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
        dest = self._remote
        if dest is not None and self._latch.address is not None:
            dest = self._latch.address  # symmetric RTP
        elif self._unproven is not None and dest is not None:  # guard_unproven()
            if self._unproven <= 0:
                dest = None
            else:
                self._unproven -= 1
        codec = self._codec
        sender, ts_step = self._sender, self._ts_step
        # RFC 4733 (media/dtmf.py): an event packet, if a digit is on, replaces the audio.
        dtmf_out = self._dtmf_out
        event = dtmf_out.next_packet(sender.timestamp, ts_step) if dtmf_out.busy else None
        sending = self._tx and codec is not None and dest is not None
        if not sending or codec is None or dest is None:  # (the Nones again: for mypy)
            sender.skip(ts_step)
            self._need_marker = True
        elif event is not None:
            packet = sender.packet(
                event.payload,
                ts_step,
                event.marker,
                self.telephone_event_pt,
                timestamp=event.timestamp,
            )
            self._send(packet, dest)
        elif frame is None and not SEND_SILENCE:
            sender.skip(ts_step)
        else:
            if frame is None and self._silence is not None:
                payload = self._silence
            else:
                payload = codec.encode(self._zeros if frame is None else frame)
            packet = sender.audio_packet(payload, ts_step, self._need_marker or talkspurt)
            self._need_marker = False
            self._send(packet, dest)
        if self._rtp_timeout and now >= self._rtp_check_at:
            self._check_rtp(now)
        if frame is not None or self._received is not None or finished or now >= self._rtcp_due:
            # RECORD/ARECORD (sent: the frame, or silence), STOPPED, RTCP, reading ahead in
            # the files: after the receive phase, so that every stream's packet leaves first
            # (MediaClock.defer).
            self._late.append((frame if sending else None, skipped, finished))
            if not self._clock.defer(self._late_work):
                self._late_tick(now)

    def _late_tick(self, now: float) -> None:
        """The rest of this tick's work, after the clock's receive phase."""
        if not self._late or self._closed:
            return
        sent, skipped, finished = self._late.popleft()
        if self._received is not None:
            self._received_tick(sent, skipped)
        for player in finished:
            self._emit_stopped(player.name)
        if now >= self._rtcp_due:
            self._rtcp_tick(now)
        if self._mixer:
            self._mixer.prefetch(self._frame_samples)

    def _send(self, packet: bytes, dest: Address) -> None:
        size = len(packet)  # RTP octets: the SR's octet count leaves out the SRTP tag
        srtp = self._srtp
        try:
            self._sendto(packet if srtp is None else srtp.protect(packet), dest)
        except SrtpError as exc:  # our own packet: a bug, or a key used up (2^48 packets)
            self.stats.send_errors += 1
            if not self._send_error_logged:
                self._send_error_logged = True
                self.log.error("%s (logged once)", exc)
            return
        except OSError as exc:  # BlockingIOError (buffer full), unreachable, ...
            self.stats.send_errors += 1
            if not self._send_error_logged:
                self._send_error_logged = True
                self.log.warning("RTP send to %s failed: %s (logged once)", dest, exc)
            return
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += size

    def _emit_stopped(self, name: str) -> None:
        callback = self.on_stopped
        if callback is None:
            return
        try:
            callback(name)
        except Exception:
            self.log.exception("on_stopped(%r) failed", name)

    # -- receiving ----------------------------------------------------------------------------

    def _read_rtp(self) -> None:
        """Read one datagram from the RTP socket (the clock's receive phase: it is readable).

        The hot path: a plain RTP header (version 2; no padding, extension or CSRC: what
        every G.711 peer sends) is unpacked here into plain values, with no header object and
        no parse call; anything else (RTCP, garbage, the rarer header forms) takes the general
        path, :meth:`datagram_received`. With SRTP on, an RTP packet is authenticated and
        decrypted first (RFC 3711 section 3.3: before anything else, latching included), then
        the plain packet takes the same inline handling; SRTCP takes the general path."""
        buf = self._rbuf
        recvmsg = self._recvmsg_rtp
        try:
            if recvmsg is not None:  # with the kernel's arrival time
                size, ancillary, _flags, source = recvmsg(self._rbufs, _ANC_SPACE)
                if ancillary and len(ancillary[0][2]) == 16:
                    seconds, nanoseconds = _unpack_timespec(ancillary[0][2])
                    arrival = seconds + nanoseconds * 1e-9
                else:
                    arrival = _wall_time()
            else:
                size, source = self._recv_rtp(buf)
                arrival = _wall_time()
        except OSError as exc:  # BlockingIOError (spurious readiness), a pending ICMP error ...
            if not isinstance(exc, BlockingIOError | InterruptedError):
                self.log.debug("RTP receive error: %s", exc)
            return
        srtp = self._srtp
        if srtp is not None and not (size >= 2 and 192 <= buf[1] <= 223):  # SRTP, not SRTCP
            size = srtp.unprotect_in_place(buf, size)  # decrypted where it lies: no copy
            if size < 0:  # forged, replayed, plain RTP or garbage: counted, not latched
                self.stats.packets_invalid += 1
                return
            if size < RTP_HEADER_SIZE or buf[0] != 0x80:
                self._plain_datagram(self._rview[:size], source, arrival)
                return
            _, b1, seq, timestamp, ssrc = _unpack_header(buf)
            payload = self._rview[RTP_HEADER_SIZE:size]
            self._accept_rtp(b1, seq, timestamp, ssrc, payload, size, source, arrival, None)
            return
        # 0x80: V=2, P=0, X=0, CC=0. Second octet 192..223 is RTCP (RFC 5761 section 4).
        if size < RTP_HEADER_SIZE or buf[0] != 0x80 or 192 <= buf[1] <= 223 or srtp is not None:
            self._datagram(self._rview[:size], source, arrival)
            return
        _, b1, seq, timestamp, ssrc = _unpack_header(buf)
        payload = self._rview[RTP_HEADER_SIZE:size]
        self._accept_rtp(b1, seq, timestamp, ssrc, payload, size, source, arrival, None)

    def _drain_rtp(self) -> None:
        """At close: take in what arrived since the clock's last receive phase (up to a tick's
        worth of packets), so that the counters see every packet that came before the end."""
        for _ in range(RECV_DRAIN_AT_CLOSE):
            try:
                size, source = self._recv_rtp(self._rbuf)
            except OSError:  # BlockingIOError: nothing left
                return
            self.datagram_received(self._rview[:size], source)

    def datagram_received(self, data: memoryview, source: Address) -> None:
        """Handle one datagram from the RTP socket (public for tests and other transports),
        arrived now. ``data`` may be a view of a reused buffer: valid only during this call."""
        self._datagram(data, source, _wall_time())

    def _datagram(self, data: memoryview, source: Address, arrival: float) -> None:
        """The general receive path; ``arrival`` in seconds of the wall clock (the kernel's
        receive timestamps are CLOCK_REALTIME)."""
        rtcp = is_rtcp(data)
        srtp = self._srtp
        if srtp is not None:  # authenticate before anything else (latching included)
            plain = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
            if plain is None:
                if rtcp:
                    self._srtcp_dropped()
                else:
                    self.stats.packets_invalid += 1
                return
            data = memoryview(plain)
        if rtcp:
            self._rtcp_received(data, source)
            return
        self._plain_datagram(data, source, arrival)

    def _plain_datagram(self, data: memoryview, source: Address, arrival: float) -> None:
        """An RTP packet in the clear (SRTP already removed) in any header form: parse it."""
        try:
            header, payload = parse_rtp(data)
        except PacketParseError:
            self.stats.packets_invalid += 1
            return
        b1 = (0x80 if header.marker else 0) | header.payload_type
        seq, timestamp, ssrc = header.sequence, header.timestamp, header.ssrc
        self._accept_rtp(b1, seq, timestamp, ssrc, payload, len(data), source, arrival, header)

    def _accept_rtp(
        self,
        b1: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        payload: memoryview,
        size: int,
        source: Address,
        arrival: float,
        header: RtpHeader | None,
    ) -> None:
        """One parsed RTP packet (``b1``: marker bit and payload type, the header's second
        octet; ``arrival``: wall-clock seconds, for the jitter; ``header``: the parsed header if
        there is one, else built for ``on_rtp`` only)."""
        pt = b1 & 0x7F
        stats = self.stats
        expected = self._expected_pts
        if expected is not None and pt not in expected:
            stats.packets_ignored += 1
            return
        latch = self._latch
        if source != latch.address or latch.pending:  # else: the common case, in line
            relatches = latch.relatches
            if not latch.offer(source):
                stats.packets_ignored += 1
                return
            if latch.relatches != relatches:
                stats.relatches += 1
                self.log.info("RTP source moved to %s; sending there", source)
        stats.packets_received += 1
        stats.bytes_received += size
        event_pts = self._event_pts
        audio = pt not in event_pts
        # RFC 3550 A.1/A.8 (RFC 4733 events carry no timing)
        self._reception.received(ssrc, seq, timestamp, arrival, audio)
        if not self._rx:
            return
        callback = self.on_rtp
        if callback is not None:
            if header is None:
                header = RtpHeader(pt, seq, timestamp, ssrc, b1 > 0x7F)
            try:
                callback(header, payload)
            except Exception:
                self.log.exception("on_rtp hook failed")
        received = self._received  # RECORD or ARECORD listens
        if received is not None and audio and pt != COMFORT_NOISE_PT:
            received.jitter.push(seq, timestamp, ssrc, payload)
        if not audio:  # DTMF in: RFC 4733 section 2.5.2, one report per event
            digit = self._dtmf_in.on_packet(timestamp, payload, ssrc, self._event_clocks[pt])
            if digit is not None:
                self._emit_dtmf(digit)
        elif self._dtmf_tones is not None and pt != COMFORT_NOISE_PT:
            self._dtmf_tones_received(payload)

    def __repr__(self) -> str:
        return f"RtpStream({self.local_host}:{self.local_port} -> {self.remote_address})"
