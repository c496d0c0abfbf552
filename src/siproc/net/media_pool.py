"""The control process's side of the media workers: the pool and a stand-in for each stream.

Theory of operation (see :mod:`siproc.net.media_worker` for the worker's side): with
``SIPROC_MEDIA_WORKERS`` > 0 the phone opens every call's media through :class:`MediaPool`.
The pool binds the RTP/RTCP socket pair here, so the SDP has its port at once, and passes both
descriptors to a worker (the first with fewer than :data:`PACK_STREAMS` streams, else the least
loaded); the call gets a :class:`RemoteStream`, which has the methods of
:class:`~siproc.net.rtp_socket.RtpStream` that calls use and relays them.

What a handler must hear at once is decided here, without a round trip: ``PLAY`` of a file that
cannot be read and ``RECORD`` to a file that cannot be written fail synchronously (the file is
opened here once to check: the same reasons as without workers), ``STOP`` knows which file was
added last, ``RECORD`` alone knows whether something records. What only the worker can find out
(a file that became unreadable in between, a sound card that fails) comes back as an error
event, which the call reports as ``ERROR <verb> <reason>``.

The end of a call waits for its media: :meth:`RemoteStream.when_closed` runs when the worker
has closed the stream, so the recording is complete before the handler hears ``DISCONNECTED``,
and the stream's final figures (packets, loss, jitter, RTCP) are those the call logs.

Workers start when calls need them and stop when calls no longer do (issue 12: an idle siproc
is one small process). A few calls do not need them: while no worker is ready, the control
process runs up to :data:`INLINE_STREAMS` streams itself (as with ``SIPROC_MEDIA_WORKERS=0``;
:meth:`MediaPool.takes_next` says where the next stream goes), so a door phone's call has its
media at once, with no worker to wait for. Half that many inline calls start the first worker;
once one is ready, new calls go to workers (the inline ones stay where they are). Past the
inline limit a call goes to the worker that is starting and waits for it (commands queue in
the channel, RTP in its socket's buffer: the jitter buffer then keeps what fits its bound of
that burst). The next worker starts when every running one holds :data:`PACK_STREAMS`
streams, up to ``SIPROC_MEDIA_WORKERS``. A worker that has had no stream for ``idle`` seconds
(``SIPROC_MEDIA_IDLE``) is retired: it leaves the pool at once (no new stream goes to it), its
channel is closed, and it exits. ``idle`` 0 keeps the old way: every worker starts with the
phone, which waits until they are ready, none stops, and every call's media runs in one.

One that exits is logged; its calls, which have no audio any more, are hung up (their handlers
hear ``ERROR MEDIA``, then the usual end), and a new worker takes later calls. Closing the pool
closes the channels; each worker then finishes its recordings and exits, and is waited for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from siproc.media.codecs import AudioCodec
from siproc.media.player import FilePlayer, MediaFileError
from siproc.media.recorder import CallRecorder, RecordFileError
from siproc.media.rtcp import RTCP_MIN_INTERVAL
from siproc.net.child_exit import wait_exit
from siproc.net.media_channel import Channel, Message
from siproc.net.media_stream import MediaStream
from siproc.net.media_stream_edge import StreamSpec
from siproc.net.rtp_socket import DIRECTIONS, bind_rtp_pair
from siproc.net.rtp_state import DEFAULT_RATE, Address, RtpStats
from siproc.sdp.sdes import SrtpParams

__all__ = ["INLINE_STREAMS", "MediaPool", "MediaStream", "RemoteStream"]

log = logging.getLogger(__name__)

PACK_STREAMS: Final = 50  # streams a worker takes before the next one gets any
WORKER_START_TIMEOUT: Final = 20.0  # seconds for a worker to import the media stack
WORKER_EXIT_TIMEOUT: Final = 10.0  # seconds for workers to finish their recordings at close
CLOSE_TIMEOUT: Final = 10.0  # seconds for a worker to confirm a stream's close
DEFAULT_IDLE: Final = 30.0  # seconds a worker without streams lives (SIPROC_MEDIA_IDLE)
INLINE_STREAMS: Final = 8  # streams the control process runs itself while no worker is ready


class RemoteStream:
    """A call's RTP stream that runs in a media worker (the API of ``RtpStream`` that the call
    layer uses)."""

    def __init__(self, worker: _Worker, sid: int, local_host: str, local_port: int) -> None:
        self._worker = worker
        self._sid = sid
        self.local_host = local_host
        self.local_port = local_port
        self.stats = RtpStats()  # the worker's final figures replace it at close
        self.on_stopped: Callable[[str], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_error: Callable[[str, str], None] | None = None
        self.on_lost: Callable[[], None] | None = None  # the worker died mid-call
        self.on_rtp_timeout: Callable[[], None] | None = None
        self.on_bot: Callable[[str, str], None] | None = None  # STREAM events (kind, text)
        self.telephone_event_pt: int | None = None
        self._codec: AudioCodec | None = None
        self._play_ids = itertools.count(1)
        self._playing: dict[int, str] = {}  # play id -> name, oldest first
        self._recording: str | None = None
        self._closed = False
        self._final = False  # the worker closed it (or is gone)
        self._when_closed: list[Callable[[], None]] = []

    def _send(self, verb: str, *args: object) -> None:
        self._worker.channel.send((verb, self._sid, *args))

    # -- control (the RtpStream API) ------------------------------------------------------------

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
        """As :meth:`RtpStream.configure`. The same codec instance as before stays the same
        instance in the worker (G.722 and Opus keep their state across a re-INVITE)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"invalid media direction {direction!r}")
        same = codec is self._codec
        self._codec = codec
        self.telephone_event_pt = telephone_event_pt
        self._send(
            "configure",
            remote,
            None if same else codec,
            payload_type,
            telephone_event_pt,
            direction,
            telephone_event_rate,
            None if receive_telephone_events is None else dict(receive_telephone_events),
        )

    def configure_rtcp(self, *, mux: bool, remote: Address | None = None) -> None:
        self._send("configure_rtcp", mux, remote)

    def latch_from(self, hosts: Sequence[str]) -> None:
        self._send("latch_from", tuple(hosts))

    def guard_unproven(self, packets: int) -> None:
        self._send("guard_unproven", packets)

    def prove(self) -> None:
        self._send("prove")

    def watch_rtp(self, seconds: float) -> None:
        self._send("watch_rtp", seconds)

    def configure_srtp(self, params: SrtpParams | None) -> None:
        """As :meth:`RtpStream.configure_srtp`. The keys go to the worker over its channel
        (never through its environment or command line) and are never logged."""
        self._send("configure_srtp", params)

    def start(self) -> None:
        if not self._closed:  # (closed: its worker died; the call is being hung up)
            self._send("start")

    def play(self, path: str) -> None:
        """Check that ``path`` plays (raises MediaFileError with the reason), then play it."""
        if self._closed:
            raise MediaFileError(path, "the call has no media any more")
        player = FilePlayer.open(path, self.sample_rate)
        name = player.name
        player.close()
        play_id = next(self._play_ids)
        self._playing[play_id] = name
        self._send("play", play_id, path)

    def stop_last(self) -> str | None:
        """Stop the file added last; report it through ``on_stopped`` and return its name."""
        if not self._playing:
            return None
        play_id = next(reversed(self._playing))
        name = self._playing.pop(play_id)
        self._send("stop", play_id)
        self._emit("stopped", name)
        return name

    def start_recording(self, path: str, stereo: bool = False) -> None:
        """Check that ``path`` can be recorded to (raises RecordFileError), then record."""
        if self._closed:
            raise RecordFileError(path, "the call has no media any more")
        CallRecorder.open(path, self.sample_rate, stereo).close()
        self._recording = path
        self._send("record", path, stereo)

    def stop_recording(self) -> str | None:
        path, self._recording = self._recording, None
        if path is not None and not self._closed:
            self._send("record_stop")
        return path

    def send_dtmf(self, digits: str) -> None:
        if self._closed:
            raise ValueError("the call has no media any more")
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event negotiated with the remote end")
        self._send("dtmf", digits)

    def log_as(self, call: str) -> None:
        """The worker prefixes this stream's log lines with ``[call <call>]``."""
        self._send("log_as", call)

    def sound_card(self, verb: str, device: str) -> None:
        """APLAY / ARECORD / ASTOP in the worker; failures come back through ``on_error``."""
        self._send("sound", verb, device)

    def bot_start(self, spec: StreamSpec, report: Callable[[str, str], None]) -> None:
        """STREAM: the worker connects to the bot; its events (kind, text) come back to
        ``report``."""
        self.on_bot = report
        self._send("bot_start", spec)

    def bot_stop(self) -> None:
        self._send("bot_stop")

    def audio_fds(self, to_handler: int, from_handler: int) -> None:
        """SIPROC_AUDIO_FDS: siproc's ends of the handler's audio pipes go to the worker
        (net/audio_pipes.py); the channel closes our copies once they are sent."""
        self._worker.channel.send(("audio_fds", self._sid), [to_handler, from_handler])

    def close(self) -> None:
        """Ask the worker to close the stream; :meth:`when_closed` callbacks run when it has
        (or after :data:`CLOSE_TIMEOUT`, when a worker that hangs does not answer)."""
        if self._closed:
            return
        self._closed = True
        self._recording = None
        self._playing.clear()
        self._send("close")
        self._worker.pool.loop.call_later(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if not self._final:
            log.error("media worker %d did not close stream %d", self._worker.index, self._sid)
            self.finalize()
            # the worker's "closed" may never come: forget the stream, so the worker can idle
            if self._worker.streams.pop(self._sid, None) is not None:
                self._worker.pool.maybe_idle(self._worker)

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the worker has closed the stream (its recording is final)."""
        if not self._closed:
            raise RuntimeError("RemoteStream.when_closed() before close()")
        if self._final:
            callback()
        else:
            self._when_closed.append(callback)

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sample_rate(self) -> int:
        return self._codec.sample_rate if self._codec is not None else DEFAULT_RATE

    @property
    def playing(self) -> list[str]:
        return list(self._playing.values())

    @property
    def recording(self) -> str | None:
        return self._recording

    # -- events from the worker -----------------------------------------------------------------

    def event(self, verb: object, args: list[object]) -> None:
        match verb, args:
            case "stopped", [int() as play_id, str() as name]:
                if self._playing.pop(play_id, None) is not None:  # else: STOP said it already
                    self._emit("stopped", name)
            case "dtmf", [str() as digit]:
                self._emit("dtmf", digit)
            case "rtp_timeout", []:
                if self.on_rtp_timeout is not None:
                    self.on_rtp_timeout()
            case "error", [str() as verb_, str() as reason]:
                self._report(verb_, reason)
            case "play_failed", [int() as play_id, str() as reason]:
                if self._playing.pop(play_id, None) is not None:
                    self._report("PLAY", reason)
            case "record_failed", [str() as path, str() as reason]:
                if self._recording == path:
                    self._recording = None
                self._report("RECORD", reason)
            case "bot", [str() as kind, str() as text]:
                if self.on_bot is not None:
                    self.on_bot(kind, text)
            case "closed", [RtpStats() as stats]:
                self.stats = stats
                self.finalize()
            case _:
                log.error("media stream: malformed event %r dropped", verb)

    def lost(self) -> None:
        """The worker died: the stream is gone. A call still using it hears ``on_lost``."""
        in_use = not self._closed
        self._playing.clear()
        self._recording = None
        self.finalize()
        if in_use and self.on_lost is not None:
            self.on_lost()

    def finalize(self) -> None:
        """The worker is done with this stream (closed it, or is gone)."""
        self._closed = True
        if self._final:
            return
        self._final = True
        callbacks, self._when_closed = self._when_closed, []
        for callback in callbacks:
            callback()

    def _emit(self, kind: str, value: str) -> None:
        callback = self.on_stopped if kind == "stopped" else self.on_dtmf
        if callback is not None:
            try:
                callback(value)
            except Exception:
                log.exception("on_%s(%r) failed", kind, value)

    def _report(self, verb: str, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(verb, reason)
        else:
            log.warning("%s: %s", verb, reason)

    def __repr__(self) -> str:
        return f"RemoteStream({self.local_host}:{self.local_port} in worker {self._worker.index})"


# what a call's media is (here, or in a worker): net/media_stream.py


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """A media worker's environment: siproc's without any SIPROC_ variable. A worker takes
    its few settings on its command line, and so never holds SIPROC_PASSWORD (nor any secret a
    future variable carries) where /proc/PID/environ or a core dump would show it."""
    return {name: value for name, value in env.items() if not name.upper().startswith("SIPROC_")}


class _Worker:
    """One worker process and its channel."""

    def __init__(self, pool: MediaPool, index: int) -> None:
        self.index = index
        self.pool = pool
        ours, theirs = Channel.pair()
        with theirs:
            try:
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "siproc.net.media_worker",
                        str(theirs.fileno()),
                        str(pool.log_level),
                        str((index % pool.size) / pool.size),  # the workers' ticks take turns
                        pool.priority,
                        pool.log_format,
                    ],
                    pass_fds=[theirs.fileno()],
                    env=worker_environment(os.environ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            except OSError:
                ours.close()
                raise
        self.streams: dict[int, RemoteStream] = {}
        self.idle_timer: asyncio.TimerHandle | None = None  # set while it has no stream
        self.ready = asyncio.Event()
        self.channel = Channel(pool.loop, ours, self._on_message, self._on_closed)
        log.debug("media worker %d started (pid %d)", index, self.process.pid)

    def _on_message(self, message: Message, fds: list[int]) -> None:
        for fd in fds:  # workers send none
            with contextlib.suppress(OSError):
                os.close(fd)
        verb, sid, *args = message
        if verb == "ready":
            self.ready.set()
            return
        if verb == "clock":
            if self.pool.on_clock is not None:
                self.pool.on_clock(self.index, args)
            return
        stream = self.streams.get(sid) if isinstance(sid, int) else None
        if stream is None:
            return
        if verb == "closed":
            del self.streams[sid]  # type: ignore[arg-type]
        elif verb == "error" and args[:1] == ["MEDIA"]:  # the worker could not take it
            del self.streams[sid]  # type: ignore[arg-type]
            log.error("media worker %d refused stream %d: %s", self.index, sid, args[1:])
            stream.lost()
            self.pool.maybe_idle(self)
            return
        stream.event(verb, args)
        if verb == "closed":
            self.pool.maybe_idle(self)

    def _on_closed(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        code = self.process.poll()
        if self.streams and not self.pool.closing:
            log.error(
                "media worker %d (pid %d) exited%s: the media of %d call(s) stopped",
                self.index,
                self.process.pid,
                "" if code is None else f" with status {code}",
                len(self.streams),
            )
        streams, self.streams = self.streams, {}
        self.pool.worker_gone(self)
        for stream in streams.values():  # each call on its own: one failing stops no other
            try:
                if self.pool.closing:
                    stream.finalize()
                else:
                    stream.lost()
            except Exception:
                log.exception("ending the media of %r failed", stream)


class MediaPool:
    """The media workers of one phone; :meth:`open_stream` is where calls get their media."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        workers: int,
        log_level: int,
        *,
        priority: str = "realtime",
        rtcp_interval: float = RTCP_MIN_INTERVAL,
        idle: float = DEFAULT_IDLE,
        log_format: str = "text",
    ) -> None:
        if workers < 1:
            raise ValueError(f"a media pool needs at least one worker, not {workers}")
        if idle < 0:
            raise ValueError(f"a media worker's idle time cannot be negative, not {idle}")
        self.loop = loop
        self.size = workers
        self.log_level = log_level
        self.log_format = log_format  # SIPROC_LOG_FORMAT, for the workers' own lines
        self.priority = priority  # the most the workers ask for (media_priority.py)
        self.rtcp_interval = rtcp_interval
        self.idle = idle  # 0: every worker starts with the pool and none stops for want of calls
        self.closing = False
        # a worker's clock figures, once a second while it ticks (net/media_worker.py)
        self.on_clock: Callable[[int, list[object]], None] | None = None
        self._workers: list[_Worker] = []
        self._gone: collections.deque[_Worker] = collections.deque()
        self._reapers: set[asyncio.Task[None]] = set()
        self._indexes = itertools.count()
        self._sids = itertools.count(1)

    def start(self) -> None:
        """Start every worker now (``idle`` 0, or to replace workers that exited); otherwise
        workers start as calls need them (:meth:`_pick`)."""
        while len(self._workers) < self.size:
            self._start_worker()

    def _start_worker(self) -> _Worker:
        worker = _Worker(self, next(self._indexes))
        self._workers.append(worker)
        return worker

    async def started(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """With ``idle`` 0: start the workers and wait until each can take streams. Raises
        OSError (with the worker's exit status) if one exits or does not get ready within
        ``timeout``. Otherwise nothing: workers start with the calls that need them."""
        if self.idle:
            return
        self.start()
        for worker in list(self._workers):
            ready = asyncio.ensure_future(worker.ready.wait())
            try:
                await asyncio.wait_for(asyncio.shield(ready), timeout)
            except TimeoutError:
                ready.cancel()
                code = worker.process.poll()
                raise OSError(
                    f"media worker {worker.index} did not start within {timeout:g} s"
                    + ("" if code is None else f" (it exited with status {code})")
                    + "; its errors are above. SIPROC_MEDIA_WORKERS=0 runs media in-process"
                ) from None

    def open_stream(
        self, bind_host: str, port_range: tuple[int, int], rng: random.Random | None = None
    ) -> RemoteStream:
        """Bind an RTP/RTCP pair here and run the stream in a worker (:meth:`_pick`). Raises
        OSError (no free port pair, a worker cannot start) like ``RtpStream.open``."""
        if self.closing:
            raise RuntimeError("MediaPool.open_stream() after close()")
        # the ports first: a bind that fails must neither start a worker nor stop the idle
        # count of one (either would then never retire)
        sock, rtcp_sock = bind_rtp_pair(bind_host, port_range, rng)
        try:
            if not self.idle:
                self.start()  # replaces workers that exited
            worker = self._pick()
        except BaseException:
            sock.close()
            rtcp_sock.close()
            raise
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
            worker.idle_timer = None
        port = sock.getsockname()[1]
        sid = next(self._sids)
        stream = RemoteStream(worker, sid, bind_host, port)
        worker.streams[sid] = stream
        worker.channel.send(
            ("open", sid, bind_host, float(self.rtcp_interval)),
            [sock.detach(), rtcp_sock.detach()],
        )
        return stream

    def _pick(self) -> _Worker:
        """The first worker with fewer than :data:`PACK_STREAMS` streams, else a new worker
        while there are fewer than ``size``, else the least loaded: a few calls share one
        worker (one clock ticking, not one per CPU), many spread evenly. Raises OSError when a
        worker cannot be started."""
        live = [w for w in self._workers if not w.channel.closed]
        for worker in live:
            if len(worker.streams) < PACK_STREAMS:
                return worker
        if len(live) < self.size:
            return self._start_worker()
        return min(live, key=lambda w: len(w.streams))

    def takes_next(self, inline: int) -> bool:
        """Whether the next stream goes to a worker (True) or runs in the control process
        (False), which carries ``inline`` streams now. With ``idle`` 0 every stream goes to a
        worker. Otherwise: to a worker when one is ready, or when ``inline`` is at
        :data:`INLINE_STREAMS` (it starts one if none is starting); else inline, and from half
        the limit on a worker is started for what may come."""
        if not self.idle or self.closing:
            return True
        live = [w for w in self._workers if not w.channel.closed]
        if any(w.ready.is_set() for w in live) or inline >= INLINE_STREAMS:
            return True
        if inline + 1 >= INLINE_STREAMS // 2 and not live:
            self._start_worker()
        return False

    def maybe_idle(self, worker: _Worker) -> None:
        """``worker`` just lost a stream: if it has none left, retire it after ``idle``
        seconds unless a stream comes to it before."""
        if worker.streams or not self.idle or self.closing or worker.idle_timer is not None:
            return
        worker.idle_timer = self.loop.call_later(self.idle, self._retire, worker)

    def _retire(self, worker: _Worker) -> None:
        """Stop an idle worker: out of the pool first (no stream may go to it any more), then
        its channel closed; it exits, and is reaped like one that exited by itself."""
        worker.idle_timer = None
        if worker.streams or self.closing or worker not in self._workers:
            return
        log.debug("media worker %d (pid %d) idle: stopping it", worker.index, worker.process.pid)
        worker.channel.close()
        self.worker_gone(worker)

    def worker_gone(self, worker: _Worker) -> None:
        """A worker's channel closed: take it out of service and reap its process (watched
        with a pidfd: it may take a moment to exit) so that no zombie is left."""
        if worker in self._workers:
            self._workers.remove(worker)
        if self.closing or worker in self._gone:
            return
        self._gone.append(worker)

        async def reap() -> None:
            await wait_exit(self.loop, worker.process)
            with contextlib.suppress(ValueError):
                self._gone.remove(worker)

        task = self.loop.create_task(reap())
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    @property
    def streams(self) -> int:
        return sum(len(worker.streams) for worker in self._workers)

    async def close(self) -> None:
        """Close the channels; the workers finish their recordings and exit (waited for, then
        killed after :data:`WORKER_EXIT_TIMEOUT`)."""
        self.closing = True
        workers = [*self._workers, *self._gone]
        for worker in workers:
            if worker.idle_timer is not None:
                worker.idle_timer.cancel()
                worker.idle_timer = None
            worker.channel.close()
            for stream in list(worker.streams.values()):
                stream.finalize()
            worker.streams.clear()
        self._workers.clear()
        self._gone.clear()
        for worker in workers:
            try:
                await asyncio.wait_for(
                    self.loop.run_in_executor(None, worker.process.wait), WORKER_EXIT_TIMEOUT
                )
            except TimeoutError:
                log.warning("media worker %d did not exit; killing it", worker.index)
                worker.process.kill()
                await self.loop.run_in_executor(None, worker.process.wait)
