"""A media worker: a process that runs RTP streams for siproc's control process.

Theory of operation: siproc shards its calls' media over ``SIPROC_MEDIA_WORKERS`` worker
processes (:mod:`siproc.net.media_pool` starts them), so that thousands of streams use every
core and the SIP signalling and handler pipes of the control process never wait behind a media
tick. A worker is this module run as a program (``python -m siproc.net.media_worker FD LEVEL
PHASE``, see :func:`main`) with one end of a :class:`~siproc.net.media_channel.Channel` as
descriptor ``FD``. It owns a :class:`~siproc.net.clock.MediaClock` and ordinary
:class:`~siproc.net.rtp_socket.RtpStream` objects, the same ones the control process runs when
it has no workers: playing, recording, DTMF, RTCP and symmetric RTP are not reimplemented here,
only relayed.

The control process binds each stream's RTP and RTCP sockets itself (so the port is known for
the SDP at once) and hands the descriptors over in the ``open`` message. Commands then arrive
in the order the call made them; what the stream reports (a file that ended, a key press, an
error found late, the final figures) goes back as events. Messages are tuples:

control -> worker: ``open sid host rtcp_interval`` (+ 2 fds), ``log_as sid call``,
``configure sid remote codec pt te_pt direction rx_te_pt`` (codec None: keep the current
instance), ``configure_rtcp sid mux remote``, ``configure_srtp sid params`` (SrtpParams or
None: the keys travel only over this channel, and are never logged), ``start sid``, ``play
sid id path``, ``stop sid id``, ``record sid path stereo``, ``record_stop sid``, ``dtmf sid
digits``, ``sound sid verb device``, ``bot_start sid spec`` (STREAM, net/media_stream_edge.py:
the WebSocket runs here, next to the stream's audio), ``bot_stop sid``, ``audio_fds sid``
(+ 2 fds: siproc's ends of the handler's audio pipes, net/audio_pipes.py), ``close sid``.

worker -> control: ``ready 0`` (once, when it can take streams), ``clock 0 ticks skipped
lag_max busy`` (once a second while its clock ticks: the figures of net/clock.py),
``dtmf sid digit``, ``error sid verb reason``, ``play_failed sid id reason``, ``stopped sid id
name``,
``record_failed sid path reason``, ``bot sid kind text`` (STREAM: CONNECTED, STOPPED, ERROR),
``closed sid stats``.

Commands are paced (net/media_channel.py): a worker takes no further command when its next
tick is less than :data:`COMMAND_MARGIN` away, and goes on after that tick, so a burst of
commands (hundreds of calls set up or ended at once) never makes the clock late. After each
tick the commands have :data:`COMMAND_SLICE` at least, however near the next tick is: a worker
whose ticks take 19 ms of the 20 would otherwise take one command per tick (200 commands in
4 s; a close the control process gives up after 10 s), where the slice lets the next tick be
at most about a millisecond late.

A worker stops when its channel closes (the control process quit, or died: the worker then
finishes every recording, so nothing recorded is lost) or on SIGTERM; it ignores SIGINT, which
a terminal sends to the whole process group: the control process decides when calls end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from siproc.media.codecs import AudioCodec
from siproc.media.player import FilePlayer, MediaFileError
from siproc.media.recorder import RecordFileError
from siproc.net.alsa import SoundCardError, SoundCards
from siproc.net.clock import MediaClock
from siproc.net.media_channel import Channel, Message
from siproc.net.media_priority import PRIORITIES, OverloadGuard, set_priority
from siproc.net.media_stream_edge import StreamSpec
from siproc.net.rtp_socket import RtpStream
from siproc.net.rtp_state import RtpStats
from siproc.sdp.sdes import SrtpParams

__all__ = ["MediaWorker", "main"]

log = logging.getLogger(__name__)

SOUND_VERBS: Final = frozenset({"APLAY", "ARECORD", "ASTOP"})
CLOCK_REPORT_INTERVAL: Final = 1.0  # seconds between two ``clock`` reports
GC_THRESHOLD: Final = 10_000  # allocations between young collections (Python's default: 700)
# Seconds before a tick is due from which the worker takes no further command: about what the
# dearest one (a close that finishes a recording, ~0.5 ms; an open) costs on a busy machine.
COMMAND_MARGIN: Final = 0.002
COMMAND_SLICE: Final = 0.001  # seconds of commands after each tick, even with the tick near
_monotonic: Final = time.monotonic  # the loop's clock, as in net/clock.py


@dataclass(slots=True)
class _Stream:
    """A stream and what the worker keeps beside it."""

    rtp: RtpStream
    codec: AudioCodec | None = None
    players: dict[int, FilePlayer] = field(default_factory=dict)
    sound_cards: SoundCards | None = None


class MediaWorker:
    """The streams of one worker, driven by the messages of its channel."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, phase: float | None = None
    ) -> None:
        self._loop = loop
        self.clock = MediaClock(loop, phase=phase)
        self._rng = random.SystemRandom()
        self._streams: dict[int, _Stream] = {}
        self.done = asyncio.Event()
        self._channel = Channel(
            loop,
            sock,
            self._on_message,
            self.stop,
            pause_when=self._tick_near,
            resume_later=self._after_next_tick,
        )
        self._slice_end = 0.0  # commands go on until then, tick near or not (COMMAND_SLICE)
        self._send("ready", 0)
        self._reported_ticks = -1
        loop.call_later(CLOCK_REPORT_INTERVAL, self._report_clock)

    def __len__(self) -> int:
        return len(self._streams)

    def watch_priority(self, priority: str) -> None:
        """Log the priority the worker got; while it is real-time, check once a second that
        the worker keeps up, and step down to ``high`` when it does not (media_priority.py)."""
        log.info("media worker (pid %d) runs at %s priority", os.getpid(), priority)
        if priority == "realtime":
            self._guard = OverloadGuard()
            self._loop.call_later(1.0, self._check_overload)

    def _check_overload(self) -> None:
        if self.done.is_set():
            return
        if not self._guard.check(self._loop.time(), self.clock.busy):
            self._loop.call_later(1.0, self._check_overload)
            return
        got = set_priority("high")
        log.warning(
            "media worker (pid %d, %d calls) busy %.0f%% of the time for %d s: leaving "
            "real-time priority (now %s) so that SIP and the handlers keep running; "
            "audio may break up (fewer calls per worker, or more SIPROC_MEDIA_WORKERS)",
            os.getpid(),
            len(self._streams),
            100 * self._guard.last_share,
            self._guard.seconds,
            got,
        )

    def _tick_near(self) -> bool:
        """Is the next media tick too near for another command (COMMAND_MARGIN), and the
        slice of commands after the last tick (COMMAND_SLICE) over?"""
        due = self.clock.next_due
        if due is None:
            return False
        now = _monotonic()
        return now >= due - COMMAND_MARGIN and now >= self._slice_end

    def _after_next_tick(self, resume: Callable[[], None]) -> None:
        """The channel's ``resume_later``: after the next tick, a slice of commands."""

        def after_tick() -> None:
            self._slice_end = _monotonic() + COMMAND_SLICE
            resume()

        self.clock.after_next_tick(after_tick)

    def _report_clock(self) -> None:
        """Once a second while the clock ticks: its figures to the control process, which
        serves them as metrics (calls/metrics.py) without ever asking a worker."""
        if self.done.is_set():
            return
        clock = self.clock
        if clock.ticks != self._reported_ticks:
            self._reported_ticks = clock.ticks
            self._send(
                "clock", 0, clock.ticks, clock.skipped_ticks, clock.take_lag_max(), clock.busy
            )
        self._loop.call_later(CLOCK_REPORT_INTERVAL, self._report_clock)

    def stop(self) -> None:
        """Close every stream (recordings are finished), then the channel."""
        for sid in list(self._streams):
            self._close(sid)
        self.clock.close()
        self._channel.close()
        self.done.set()

    def _send(self, *message: object) -> None:
        self._channel.send(message)

    # -- commands -------------------------------------------------------------------------------

    def _on_message(self, message: Message, fds: list[int]) -> None:
        verb, sid, *args = message
        assert isinstance(sid, int)
        if verb == "open":
            self._open(sid, fds, args)
            return
        stream = self._streams.get(sid)
        if verb == "audio_fds" and stream is not None and len(fds) == 2:
            self._audio_fds(stream, fds)
            return
        for fd in fds:  # only open and audio_fds carry descriptors
            with contextlib.suppress(OSError):
                os.close(fd)
        if stream is None:  # its open failed (logged): the call still hears it closed
            if verb == "close":
                self._send("closed", sid, RtpStats())
            return
        try:
            self._command(sid, stream, verb, args)
        except Exception:  # a bug: log it, keep the worker and the other calls going
            log.exception("media worker: %s for stream %d failed", verb, sid)
            if verb == "close":
                self._send("closed", sid, stream.rtp.stats)

    def _command(self, sid: int, stream: _Stream, verb: object, args: list[object]) -> None:
        rtp = stream.rtp
        match verb, args:
            case "configure", [remote, codec, pt, te_pt, direction, te_rate, rx_events]:
                if codec is not None:
                    stream.codec = codec  # type: ignore[assignment]
                assert stream.codec is not None, "first configure without a codec"
                rtp.configure(
                    remote,  # type: ignore[arg-type]
                    stream.codec,
                    pt,  # type: ignore[arg-type]
                    te_pt,  # type: ignore[arg-type]
                    direction,  # type: ignore[arg-type]
                    telephone_event_rate=te_rate,  # type: ignore[arg-type]
                    receive_telephone_events=rx_events,  # type: ignore[arg-type]
                )
            case "configure_rtcp", [mux, remote]:
                rtp.configure_rtcp(mux=bool(mux), remote=remote)  # type: ignore[arg-type]
            case "configure_srtp", [SrtpParams() | None as params]:
                rtp.configure_srtp(params)
            case "latch_from", [tuple() as hosts]:
                rtp.latch_from([str(host) for host in hosts])
            case "guard_unproven", [int() as packets]:
                rtp.guard_unproven(packets)
            case "prove", []:
                rtp.prove()
            case "watch_rtp", [int() | float() as seconds]:
                rtp.watch_rtp(float(seconds))
            case "start", []:
                rtp.start()
            case "log_as", [str() as call]:
                rtp.log_as(call)
            case "play", [int() as play_id, str() as path]:
                try:
                    stream.players[play_id] = rtp.play(path)
                except MediaFileError as exc:
                    self._send("play_failed", sid, play_id, str(exc))
            case "stop", [int() as play_id]:
                player = stream.players.pop(play_id, None)
                if player is not None:
                    rtp.stop_player(player)
            case "record", [str() as path, stereo]:
                try:
                    rtp.start_recording(path, bool(stereo))
                except RecordFileError as exc:
                    self._send("record_failed", sid, path, str(exc))
            case "record_stop", []:
                rtp.stop_recording()
            case "dtmf", [str() as digits]:
                try:
                    rtp.send_dtmf(digits)
                except ValueError as exc:
                    self._send("error", sid, "DTMF", str(exc))
            case "sound", [str() as verb_, str() as device] if verb_ in SOUND_VERBS:
                self._sound(sid, stream, verb_, device)
            case "bot_start", [StreamSpec() as spec]:
                # STREAM: the WebSocket runs in this worker's loop (net/media_stream_edge.py)
                rtp.bot_start(spec, lambda kind, text: self._send("bot", sid, kind, text))
            case "bot_stop", []:
                rtp.bot_stop()
            case "close", []:
                self._close(sid)
            case _:
                log.error("media worker: malformed %r for stream %d dropped", verb, sid)

    def _open(self, sid: int, fds: list[int], args: list[object]) -> None:
        """A new stream on the two passed sockets. Without them (descriptors lost to the
        limit: the channel reports a truncated message as no descriptors) the stream is
        refused, and its call hears it: ``error`` now, ``closed`` when it closes."""
        match args:
            case [str() as host, float() as rtcp_interval] if len(fds) == 2:
                pass
            case _:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                log.error("media worker: stream %d came without its sockets; refused", sid)
                self._send("error", sid, "MEDIA", "the media worker could not take the call")
                return
        rtp_sock, rtcp_sock = (socket.socket(fileno=fd) for fd in fds)
        try:
            rtp = RtpStream(
                self._loop,
                self.clock,
                rtp_sock,
                rtcp_sock,
                host,
                self._rng,
                rtcp_interval=rtcp_interval,
            )
        except Exception:
            log.exception("media worker: stream %d could not be set up", sid)
            rtp_sock.close()
            rtcp_sock.close()
            self._send("error", sid, "MEDIA", "the media worker could not take the call")
            return
        stream = _Stream(rtp)
        rtp.on_stopped = lambda name: self._stopped(sid, stream, name)
        rtp.on_dtmf = lambda digit: self._send("dtmf", sid, digit)
        rtp.on_rtp_timeout = lambda: self._send("rtp_timeout", sid)
        self._streams[sid] = stream

    def _stopped(self, sid: int, stream: _Stream, name: str) -> None:
        """A file ended by itself: forget its player, tell the control process which one."""
        for play_id, player in stream.players.items():
            if player.name == name and player.exhausted:
                del stream.players[play_id]
                self._send("stopped", sid, play_id, name)
                return

    def _audio_fds(self, stream: _Stream, fds: list[int]) -> None:
        """SIPROC_AUDIO_FDS: the handler's audio pipes as taps of the stream
        (net/audio_pipes.py); closed with the stream, or by the handler."""
        try:
            stream.rtp.audio_fds(fds[0], fds[1])
        except Exception:
            log.exception("media worker: the audio fds could not be attached")
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _close(self, sid: int) -> None:
        stream = self._streams.pop(sid)
        try:
            stream.rtp.close()  # finishes the recording and stops the sound-card bridges
        finally:
            self._send("closed", sid, stream.rtp.stats)

    def _sound(self, sid: int, stream: _Stream, verb: str, device: str) -> None:
        """APLAY / ARECORD / ASTOP (net/alsa.py) on this worker's stream."""
        if stream.sound_cards is None:

            def report(verb: str, reason: str) -> None:
                self._send("error", sid, verb, reason)

            stream.sound_cards = SoundCards(stream.rtp, self._loop, report)
        cards = stream.sound_cards
        try:
            match verb:
                case "APLAY":
                    cards.aplay(device)
                case "ARECORD":
                    cards.arecord(device)
                case _:
                    cards.astop(device)
        except SoundCardError as exc:
            self._send("error", sid, verb, str(exc))


def main(argv: list[str] | None = None) -> int:
    """``python -m siproc.net.media_worker FD LOG_LEVEL PHASE PRIORITY [LOG_FORMAT]`` (started
    by the media pool). PHASE: the tick offset in [0, 1), worker i of n takes i/n, so that the
    workers' send bursts take turns instead of colliding; PRIORITY: the most to ask for
    (media_priority.py); LOG_FORMAT: text (the default) or json (SIPROC_LOG_FORMAT)."""
    from siproc.logs import LOG_FORMATS

    args = sys.argv[1:] if argv is None else argv
    try:
        fd, level, phase, priority = int(args[0]), int(args[1]), float(args[2]), args[3]
        log_format = args[4] if len(args) > 4 else LOG_FORMATS[0]
        if len(args) not in (4, 5) or not 0 <= phase < 1 or priority not in PRIORITIES:
            raise ValueError
        if log_format not in LOG_FORMATS:
            raise ValueError
    except (ValueError, IndexError):
        print(
            "usage: python -m siproc.net.media_worker FD LOG_LEVEL PHASE PRIORITY [LOG_FORMAT] "
            "(siproc runs it)"
        )
        return 2
    from siproc.logs import setup_logging
    from siproc.net.fd_limit import raise_fd_limit

    setup_logging(level, "siproc-media", log_format)
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)

    # The imported modules live as long as the worker: out of the collector's way, so that a
    # full collection in the middle of a tick walks only the streams (DESIGN.md section 2).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    async def run() -> int:
        loop = asyncio.get_running_loop()
        worker = MediaWorker(loop, sock, phase)
        worker.watch_priority(set_priority(priority))
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.done.wait()
        return 0

    if importlib.util.find_spec("uvloop") is None:
        return asyncio.run(run())
    import uvloop

    result: int = uvloop.run(run())
    return result


if __name__ == "__main__":
    sys.exit(main())
