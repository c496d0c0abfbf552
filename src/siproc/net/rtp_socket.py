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
* DTMF (:mod:`siproc.media.dtmf`): ``send_dtmf`` queues RFC 4733 events whose packets replace
  the audio on their ticks (PT ``telephone_event_pt``, the event's start timestamp, while the
  stream timestamp runs on). Received telephone-events are reported once per key press through
  ``on_dtmf``; without telephone-event, the decoded audio goes through a Goertzel detector.
  Keys due while the stream may not send (hold) are skipped, not delayed.
* RTCP (RFC 3550 section 6; the sans-I/O state is :mod:`siproc.media.rtcp_session`): every
  packet from the latched source feeds the receiver statistics (sequence, loss, jitter; about
  0.25 us). The tick sends an SR or RR with SDES CNAME when the randomised interval is up: to
  the peer's RTP address with rtcp-mux (RFC 5761), else to where its RTCP comes from, its
  ``a=rtcp`` (RFC 3605) or RTP port + 1; ``close`` sends BYE. Received RTCP (either socket)
  gives the round-trip time and the peer's view of our stream; all of it is in ``stats``.
* RECORD (:mod:`siproc.media.recorder`): while ``start_recording`` is in force, received audio
  packets go into a jitter buffer (copied out of the receive buffer) and each tick records the
  popped, decoded frame next to the frame we sent (or silence), one file write per 0.5 s;
  ``stop_recording`` and ``close`` finish the file. About 6-8 us per tick for G.711.
* Taps (APLAY/ARECORD, :mod:`siproc.net.alsa`): a live source added with ``add_source`` is
  mixed into what we send, next to the files, until removed; a sink added with ``add_sink`` gets
  the far end's decoded audio every tick. The decoded audio is one pipeline
  (:class:`~siproc.media.received.ReceivedAudio`, jitter buffer -> decode -> concealment),
  shared by RECORD and every sink and present only while one of them listens: each packet is
  decoded once. ``close`` closes the sources and sinks still attached.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from siproc.media.codecs import AudioCodec, get_codec
from siproc.media.dtmf import DtmfReceiver, DtmfSender, GoertzelDetector
from siproc.media.mixer import LiveSource, PlaybackMixer
from siproc.media.player import FilePlayer
from siproc.media.received import ReceivedAudio
from siproc.media.recorder import CallRecording, RecordFileError
from siproc.media.rtcp import RTCP_MIN_INTERVAL, ReceiverReport, SenderReport
from siproc.media.rtcp_session import RtcpSession
from siproc.media.rtp import RTP_HEADER_SIZE, ParseError, RtpHeader, RtpSender, is_rtcp, parse_rtp
from siproc.net.clock import MediaClock

__all__ = ["DIRECTIONS", "AudioSink", "AudioSource", "RtpStats", "RtpStream", "SymmetricRtpLatch"]

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


class AudioSource(LiveSource, Protocol):
    """A live source (:class:`~siproc.media.mixer.LiveSource`) the stream closes at its end."""

    def close(self) -> None: ...


class AudioSink(Protocol):
    """Takes the far end's decoded audio, one frame per media tick (ARECORD's sound card)."""

    def write_frame(self, frame: npt.NDArray[np.int16], rate: int) -> None:
        """One frame at ``rate`` Hz; ``frame`` is valid only during the call (copy it)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class RtpStats:
    """Counters of one stream. Bytes are RTP bytes (header included, UDP/IP excluded)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0  # valid RTP of an expected type from the latched source
    bytes_received: int = 0
    packets_invalid: int = 0  # not RTP (parse error)
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
        self.on_dtmf: Callable[[str], None] | None = None  # one key press received
        self._sender = RtpSender(0, rng)
        # RTCP (media/rtcp_session.py): reports on their own schedule, BYE at close().
        wall_offset = time.time() - loop.time()  # loop.time() + wall_offset: the wall clock
        self._rtcp = RtcpSession(
            self._sender.ssrc, wall_offset=wall_offset, min_interval=rtcp_interval, rng=rng
        )
        self._reception = self._rtcp.reception
        self.stats.rtcp = self._rtcp
        self._rtcp_mux = False  # RFC 5761, from configure_rtcp()
        self._rtcp_remote: Address | None = None  # the peer's a=rtcp (RFC 3605)
        self._rtcp_source: Address | None = None  # where the peer's RTCP comes from
        self._rtcp_due = 0.0  # _rtcp_tick() looks at the schedule from this time on
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
        self._zeros = np.zeros(self._frame_samples, dtype=np.int16)
        self._silence: bytes | None = None  # cached encoded silence, stateless codecs only
        self._expected_pts: frozenset[int] | None = None  # None: accept any until configured
        self.telephone_event_pt: int | None = None
        # DTMF (media/dtmf.py): RFC 4733 out; in from RFC 4733 or, without it, in-band tones.
        self._event_pts: frozenset[int] = frozenset()  # telephone-event types we receive
        self._dtmf_out = DtmfSender()
        self._dtmf_in = DtmfReceiver()
        self._dtmf_tones: GoertzelDetector | None = None
        self._dtmf_decoder: AudioCodec | None = None
        self.direction = "sendrecv"
        self._recording: CallRecording | None = None  # RECORD (media/recorder.py)
        self._sources: list[AudioSource] = []  # APLAY (net/alsa.py), mixed by self._mixer
        self._sinks: list[AudioSink] = []  # ARECORD (net/alsa.py)
        self._received: ReceivedAudio | None = None  # while the recording or a sink listens
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
        rtcp_interval: float = RTCP_MIN_INTERVAL,
    ) -> RtpStream:
        """Bind an even RTP port and the odd RTCP port above it, tried in random order within
        ``port_range`` (inclusive). ``bind_host`` is an IPv4 or IPv6 literal; it picks the
        family. ``rtcp_interval`` is the minimum RTCP report interval (RFC 3550 section 6.2;
        shorter in tests). Raises ``OSError`` if no pair is free, ``ValueError`` for bad
        arguments."""
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
            return cls(
                loop, clock, sock, rtcp_sock, bind_host, rng, logger, rtcp_interval=rtcp_interval
            )
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
        *,
        receive_telephone_event_pt: int | None = None,
    ) -> None:
        """Apply a negotiated SDP (offer/answer or re-INVITE).

        ``telephone_event_pt`` is the type we send RFC 4733 events with (the remote's number),
        ``receive_telephone_event_pt`` the one in our SDP, which the remote sends with (default:
        the same). Without either, received audio is watched for in-band DTMF tones.

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
        if receive_telephone_event_pt is not None and not 0 <= receive_telephone_event_pt < 128:
            raise ValueError(f"invalid telephone-event payload type {receive_telephone_event_pt}")
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
        self._zeros = np.zeros(self._frame_samples, dtype=np.int16)
        # A stateful codec (G.722, Opus) encodes real zeros every tick: a cached payload
        # would leave the peer's decoder out of step with our encoder.
        self._silence = None if codec.stateful else codec.encode(self._zeros)
        self._sender.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        expected = {payload_type, COMFORT_NOISE_PT}
        if telephone_event_pt is not None:
            expected.add(telephone_event_pt)
        self._configure_dtmf(codec, telephone_event_pt, receive_telephone_event_pt)
        self._expected_pts = frozenset(expected | self._event_pts)
        self.direction = direction

    def _configure_dtmf(
        self, codec: AudioCodec, send_pt: int | None, receive_pt: int | None
    ) -> None:
        """RFC 4733 events in both directions when negotiated; else in-band detection (the
        detector decodes with its own codec instance when the codec has state)."""
        pts = frozenset(pt for pt in (send_pt, receive_pt) if pt is not None)
        self._event_pts = pts
        if send_pt is None:
            self._dtmf_out.clear()
        if pts:
            self._dtmf_tones = self._dtmf_decoder = None
            return
        if self._dtmf_tones is None or self._dtmf_tones.sample_rate != codec.sample_rate:
            self._dtmf_tones = GoertzelDetector(codec.sample_rate)
        decoder = self._dtmf_decoder
        if not codec.stateful:
            self._dtmf_decoder = codec
        elif decoder is None or decoder is codec or decoder.name != codec.name:
            self._dtmf_decoder = get_codec(codec.name)

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

    def send_dtmf(self, digits: str) -> None:
        """Queue DTMF keys (``0-9 * # A-D``) to send as RFC 4733 events from the next tick
        on, after any queued before; each event's packets replace the audio frames of its
        ticks. Raises ValueError for an invalid character (then nothing is queued) or when no
        telephone-event payload type was negotiated (the call layer falls back to SIP INFO)."""
        if self._closed:
            raise RuntimeError("RtpStream.send_dtmf() after close()")
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event negotiated with the remote end")
        self._dtmf_out.queue(digits)

    def stop_last(self) -> str | None:
        """Stop the file added last; report it through ``on_stopped`` (now) and return its name,
        or None if nothing plays. The caller must not report it a second time."""
        player = self._mixer.stop_last()
        if player is None:
            return None
        self._emit_stopped(player.name)
        return player.name

    # -- recording (RECORD) ---------------------------------------------------------------------

    @property
    def recording(self) -> str | None:
        """The file being recorded, or None."""
        return None if self._recording is None else self._recording.path

    def start_recording(self, path: str, stereo: bool = False) -> None:
        """Record the call to ``path`` from the next tick on (media/recorder.py): what arrives
        (through a jitter buffer, decoded, losses concealed) and what we send, mixed (mono) or
        one per channel (``stereo``: left received, right sent). A running recording is
        finished first (the new one may be the same file). Raises
        :class:`~siproc.media.recorder.RecordFileError` with a one-line reason."""
        if self._closed:
            raise RuntimeError("RtpStream.start_recording() after close()")
        self.stop_recording()
        rate = self._codec.sample_rate if self._codec is not None else DEFAULT_RATE
        self._recording = CallRecording.open(
            path,
            rate,
            stereo,
            self._ts_step,
            frame_ms=self._ptime_ms,
            received=self._received_audio(),
        )
        self.log.info("recording to %s (%s)", path, "stereo" if stereo else "mono")

    def stop_recording(self) -> str | None:
        """Finish the recording: the file is complete and its header final. Returns its name,
        or None if nothing was being recorded."""
        recording, self._recording = self._recording, None
        if recording is None:
            return None
        self._release_received()
        try:
            recording.close()
        except RecordFileError as exc:
            self.log.warning("%s", exc)
        else:
            self.log.info("recorded %.2f s to %s", recording.recorder.seconds, recording.path)
        return recording.path

    def _received_audio(self) -> ReceivedAudio:
        """The decoded received audio, created for its first listener."""
        if self._received is None:
            self._received = ReceivedAudio(self._ts_step, self._frame_samples)
        return self._received

    def _release_received(self) -> None:
        """Drop the decoded received audio when nobody listens any more."""
        if self._recording is None and not self._sinks:
            self._received = None

    def _received_tick(self, sent: npt.NDArray[np.int16] | None, skipped: int) -> None:
        """One tick of the far end's decoded audio (plus one per tick the clock skipped, so
        the timeline stays the call's) to the recording and the sinks. A write error ends the
        recording, not the call."""
        received, codec = self._received, self._codec
        if received is None or codec is None:
            return
        for n in range(skipped + 1):
            frame = received.pull(codec, self._ts_step, self._frame_samples)
            for sink in self._sinks:
                sink.write_frame(frame, codec.sample_rate)
            recording = self._recording
            if recording is None:
                continue
            try:
                recording.write(frame, sent if n == skipped else None, codec)
            except RecordFileError as exc:
                self._recording = None
                self._release_received()
                self.log.warning("recording stopped: %s", exc)

    # -- taps: live sources and sinks (APLAY/ARECORD, net/alsa.py) -----------------------------

    def add_source(self, source: AudioSource) -> None:
        """Mix ``source`` into what we send from the next tick on, until removed."""
        if self._closed:
            raise RuntimeError("RtpStream.add_source() after close()")
        if source not in self._sources:
            self._sources.append(source)
            self._mixer.add_source(source)

    def remove_source(self, source: AudioSource) -> bool:
        """Stop mixing ``source`` (the caller closes it); False if it was not added."""
        if source not in self._sources:
            return False
        self._sources.remove(source)
        return self._mixer.remove_source(source)

    def add_sink(self, sink: AudioSink) -> None:
        """Give ``sink`` the far end's decoded audio every tick from the next one on."""
        if self._closed:
            raise RuntimeError("RtpStream.add_sink() after close()")
        if sink not in self._sinks:
            self._sinks.append(sink)
            self._received_audio()

    def remove_sink(self, sink: AudioSink) -> bool:
        """Stop feeding ``sink`` (the caller closes it); False if it was not added."""
        if sink not in self._sinks:
            return False
        self._sinks.remove(sink)
        self._release_received()
        return True

    def close(self) -> None:
        """Stop ticking, close both sockets and all players. Idempotent. Files still playing are
        dropped silently: no ``on_stopped`` (the call is over; the handler gets SIGTERM)."""
        if self._closed:
            return
        self._closed = True
        self._clock.remove(self)
        self._send_rtcp_bye()
        for sock in (self._sock, self._rtcp_sock):
            self._loop.remove_reader(sock.fileno())
            sock.close()
        taps: list[AudioSource | AudioSink] = [*self._sources, *self._sinks]
        for tap in taps:
            self._close_tap(tap)
        self._sources.clear()
        self._sinks.clear()
        self._mixer.close()
        self.stop_recording()

    def _close_tap(self, tap: AudioSource | AudioSink) -> None:
        try:
            tap.close()
        except Exception:
            self.log.exception("closing %r failed", tap)

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
        # RFC 4733 (media/dtmf.py): an event packet, if a digit is on, replaces the audio.
        event = (
            self._dtmf_out.next_packet(self._sender.timestamp, self._ts_step)
            if self._dtmf_out.busy
            else None
        )
        if codec is None or dest is None or not self._sending:
            self._sender.skip(self._ts_step)
            self._need_marker = True
        elif event is not None:
            packet = self._sender.packet(
                event.payload,
                self._ts_step,
                event.marker,
                self.telephone_event_pt,
                timestamp=event.timestamp,
            )
            self._send(packet, dest)
        elif frame is None and not SEND_SILENCE:
            self._sender.skip(self._ts_step)
        else:
            if frame is None and self._silence is not None:
                payload = self._silence
            else:
                payload = codec.encode(self._zeros if frame is None else frame)
            packet = self._sender.packet(payload, self._ts_step, self._need_marker or talkspurt)
            self._need_marker = False
            self._send(packet, dest)
        if self._received is not None:  # RECORD or ARECORD; sent: the frame, or silence
            sending = codec is not None and dest is not None and self._sending
            self._received_tick(frame if sending else None, skipped)
        for player in finished:
            self._emit_stopped(player.name)
        self._rtcp_tick(now)

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
            self._rtcp_received(data, source)
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
        self._reception.received(  # RFC 3550 A.1/A.8 (RFC 4733 events carry no timing)
            header.ssrc,
            header.sequence,
            header.timestamp,
            time.monotonic(),
            header.payload_type not in self._event_pts,
        )
        callback = self.on_rtp
        if callback is not None and self._receiving:
            try:
                callback(header, payload)
            except Exception:
                self.log.exception("on_rtp hook failed")
        received = self._received  # RECORD or ARECORD listens
        if received is not None and self._receiving and self._is_audio(header.payload_type):
            received.push(header.sequence, header.timestamp, header.ssrc, payload)
        if self._receiving:
            self._dtmf_received(header, payload)

    def _is_audio(self, payload_type: int) -> bool:
        """An accepted payload type that is neither comfort noise nor telephone-event."""
        return payload_type != COMFORT_NOISE_PT and payload_type not in self._event_pts

    def _dtmf_received(self, header: RtpHeader, payload: memoryview) -> None:
        """DTMF in: telephone-events (RFC 4733 section 2.5.2, one report per event), else,
        when none was negotiated, in-band tones in the decoded audio (Goertzel)."""
        if header.payload_type in self._event_pts:
            digit = self._dtmf_in.on_packet(header.timestamp, payload, header.ssrc)
            if digit is not None:
                self._emit_dtmf(digit)
            return
        tones, decoder = self._dtmf_tones, self._dtmf_decoder
        if tones is None or decoder is None or header.payload_type == COMFORT_NOISE_PT:
            return
        for digit in tones.feed(decoder.decode(payload)):
            self._emit_dtmf(digit)

    def _emit_dtmf(self, digit: str) -> None:
        callback = self.on_dtmf
        if callback is None:
            return
        try:
            callback(digit)
        except Exception:
            self.log.exception("on_dtmf(%r) failed", digit)

    # -- RTCP (RFC 3550 section 6; the state is media/rtcp_session.py) -----------------------

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
        try:
            sock.sendto(data, dest)
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
        except ParseError:
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

    def _on_rtcp_readable(self) -> None:
        recv = self._rtcp_sock.recvfrom_into
        for _ in range(RECV_BATCH):
            try:
                size, source = recv(self._rbuf)
            except OSError:  # BlockingIOError included
                return
            self._rtcp_received(self._rview[:size], source)

    def __repr__(self) -> str:
        return f"RtpStream({self.local_host}:{self.local_port} -> {self.remote_address})"
