"""Sound-card bridging through ALSA (APLAY, ARECORD, ASTOP), with pyalsaaudio (``siproc[alsa]``).

The names read backwards, as in the original manual page: ``APLAY <device>`` plays what the
ALSA PCM ``device`` captures *to the remote end*; ``ARECORD <device>`` records the remote end
*into* the PCM ``device`` (plays it there); ``ASTOP <device>`` stops both for that device.

Theory of operation:

* **One worker thread per device and direction, bounded queues between it and the loop.** The
  thread alone touches the PCM: it opens it, reads or writes it with ordinary blocking calls
  (pyalsaaudio releases the GIL in them) and closes it. The event loop only moves small numpy
  frames through a :class:`queue.Queue` without waiting. We chose threads over non-blocking
  PCMs watched through their poll descriptors because plugin PCMs (``file``, ``null``, ``dmix``
  on some drivers) have descriptors that are always ready or never are, which makes a poll loop
  spin or stall (DESIGN.md section 3, the reason sounddevice is not used); a thread that blocks
  in ``snd_pcm_readi``/``snd_pcm_writei`` behaves the same on hardware and on plugins, and a
  stuck device stalls only its own thread.
* **Opening never blocks the loop.** A busy hardware PCM makes a blocking ``snd_pcm_open`` wait
  until it is free, and pyalsaaudio holds the GIL while opening. So the worker first probes the
  device non-blocking (a busy device fails at once with "device or resource busy") and then
  opens it for blocking I/O. The result comes back to the loop with ``call_soon_threadsafe``:
  a failure becomes ``ERROR APLAY <reason>`` (or ``ARECORD``) for the handler, asynchronously,
  and the bridge goes away; success is silent, as for PLAY.
* **Capture (APLAY)** asks for the stream's codec rate, mono, S16_LE, 20 ms periods; ALSA may
  realise another rate or channel count (a ``hw:`` device): the worker mixes channels down and
  the loop side resamples with a streaming ``soxr`` resampler to the rate the stream asks for
  (which follows codec changes). The capture is a live source of the stream's mixer
  (:class:`~siproc.media.mixer.LiveSource`): mixed with PLAY files, untouched by STOP. The loop
  side primes two frames before it delivers (so the two clocks' phase jitter does not starve
  it) and keeps at most :data:`QUEUE_FRAMES` frames buffered (latency stays bounded).
* **Playback (ARECORD)** is a sink of the stream (:class:`~siproc.net.rtp_socket.AudioSink`):
  every tick it gets the far end's decoded audio, from the same jitter buffer and decoder as
  RECORD (each packet is decoded once), copies it into the queue, and the worker resamples it
  to the device's rate, duplicates it onto the device's channels and writes it. The device is
  prefilled with :data:`PREFILL_PERIODS` periods of silence, the cushion for tick jitter.
* **Pacing.** A real device paces the blocking reads and writes. A plugin PCM on the ``null``
  slave (the ``file`` plugin used in tests and for taps) does not: its reads return at once.
  The capture worker therefore keeps to the wall clock: when it has read more than two periods
  ahead of real time, it sleeps the excess. (Playback needs no guard: the media tick paces it.)
* **Counted, never fatal.** Overruns (capture: the device overran, or the queue was full and the
  oldest frame was dropped; playback: the queue was full and a frame was dropped) and underruns
  (capture: a tick found less than a frame; playback: the device ran dry, ``-EPIPE``) are
  counted, recovered from (pyalsaaudio re-prepares the PCM) and logged when the bridge stops. A
  device that fails mid-call ends its own bridge, with ``ERROR <verb> <reason>``, not the call.
* **Stopping.** ``ASTOP`` and the end of the call (:meth:`RtpStream.close`) stop the bridges:
  the worker sees the stop event (or the queue's end marker) within one period, closes the PCM
  and logs its counters. The workers are daemon threads; at exit siproc waits a short while for
  them to close their PCMs (a ``file`` PCM writes its last period then).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import soxr

if TYPE_CHECKING:
    from siproc.net.rtp_socket import RtpStream

__all__ = [
    "ALSA_MISSING",
    "CaptureBridge",
    "PlaybackBridge",
    "SoundCardError",
    "SoundCards",
    "load_alsaaudio",
    "sound_devices",
]

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
Int16Array = npt.NDArray[np.int16]

ALSA_MISSING: Final = "alsa support not installed"
FRAME_MS: Final = 20  # one media tick (DESIGN.md section 2); also the period we ask ALSA for
PERIODS: Final = 4  # periods in the ALSA buffer (80 ms)
QUEUE_FRAMES: Final = 6  # frames buffered between a worker and the loop (120 ms)
PRIME_FRAMES: Final = 2  # capture: frames buffered before delivering (after an underrun too)
PREFILL_PERIODS: Final = 2  # playback: periods of silence written before the first frame
PACE_AHEAD_PERIODS: Final = 1  # capture: read at most this far ahead of real time, then sleep
# soxr quality for live audio. A streaming soxr resampler releases its output in blocks: "HQ"
# (used for PLAY files, which are pulled as fast as needed) holds back about 100 ms and then
# releases it at once, too bursty for a live device; "LQ" (16-bit quality, for telephony bands
# plenty) comes in blocks of at most about 60 ms. The bridges buffer one block more than that.
RESAMPLE_QUALITY: Final = "LQ"
STOP_JOIN_SECONDS: Final = 1.0  # at exit, per worker still running
_GET_TIMEOUT: Final = 0.25  # playback worker: how often it looks at the stop event when idle

_alsaaudio: Any = None
_alsaaudio_loaded = False


def load_alsaaudio() -> Any | None:
    """The ``alsaaudio`` module (pyalsaaudio), or None when it is not installed."""
    global _alsaaudio, _alsaaudio_loaded
    if not _alsaaudio_loaded:
        try:
            import alsaaudio
        except ImportError:
            alsaaudio = None
        _alsaaudio, _alsaaudio_loaded = alsaaudio, True
    return _alsaaudio


def sound_devices(alsa: Any | None = None) -> dict[str, list[str]] | None:
    """The PCM names ALSA knows, as ``aplay -L`` and ``arecord -L`` print them:
    ``{"playback": [...], "capture": [...]}``; None when ALSA support is not installed."""
    alsa = alsa if alsa is not None else load_alsaaudio()
    if alsa is None:
        return None
    return {
        "playback": list(alsa.pcms(alsa.PCM_PLAYBACK)),
        "capture": list(alsa.pcms(alsa.PCM_CAPTURE)),
    }


class SoundCardError(Exception):
    """A sound-card command cannot be carried out; ``str()`` is the one-line reason."""


def _reason(exc: BaseException) -> str:
    """ALSA's message without pyalsaaudio's `` [device]`` suffix, lower case first."""
    text = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")]
    return text[:1].lower() + text[1:]


@dataclass(slots=True)
class BridgeStats:
    """Counters of one bridge (updated by its worker and the loop; read when it stops)."""

    frames: int = 0  # device frames read or written
    overruns: int = 0
    underruns: int = 0


class _Bridge:
    """What both directions share: the worker thread, its stop event, the open handshake."""

    kind = ""  # "capture" or "playback"
    pcm_type_name = ""  # the alsaaudio constant

    def __init__(
        self,
        alsa: Any,
        device: str,
        rate: int,
        loop: Any,
        *,
        on_failed: Callable[[_Bridge, str], None] | None = None,
        logger: Logger | None = None,
        frame_ms: int = FRAME_MS,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"invalid rate {rate}")
        self.alsa = alsa
        self.device = device
        self.requested_rate = rate
        self.frame_ms = frame_ms
        self.stats = BridgeStats()
        self.log: Logger = logger if logger is not None else log
        self.device_rate = 0  # set by the worker once open
        self.device_channels = 0
        self._loop = loop
        self._on_failed = on_failed
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[int, Int16Array] | None] = queue.Queue(QUEUE_FRAMES)
        self._opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"alsa-{self.kind}-{device}", daemon=True
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device!r})"

    # -- loop side -------------------------------------------------------------------------

    def start(self) -> None:
        _WORKERS.add(self)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the worker (it closes the PCM within about one period). Never waits."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._put_end_marker()

    def _put_end_marker(self) -> None:
        """Wake a worker waiting on the queue (playback)."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker (tests, exit); True if it has ended."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_open(self, timeout: float | None = None) -> bool:
        """Wait until the worker has opened the PCM or given up (tests); True if open."""
        self._opened.wait(timeout)
        return self.device_rate > 0

    # -- worker side -------------------------------------------------------------------------

    def _open(self) -> Any | None:
        """Probe non-blocking, then open for blocking I/O; None (failure reported) if it
        cannot be opened."""
        alsa = self.alsa
        pcm_type = getattr(alsa, self.pcm_type_name)
        period = self.requested_rate * self.frame_ms // 1000
        params = {
            "type": pcm_type,
            "device": self.device,
            "rate": self.requested_rate,
            "channels": 1,
            "format": alsa.PCM_FORMAT_S16_LE,
            "periodsize": period,
            "periods": PERIODS,
        }
        try:
            alsa.PCM(mode=alsa.PCM_NONBLOCK, **params).close()
            pcm = alsa.PCM(mode=alsa.PCM_NORMAL, **params)
        except alsa.ALSAAudioError as exc:
            self._fail(f"cannot open ALSA {self.kind} device {self.device!r}: {_reason(exc)}")
            return None
        info = pcm.info()
        if info.get("format_name") != "S16_LE":
            pcm.close()
            self._fail(
                f"ALSA {self.kind} device {self.device!r} does not take 16-bit samples "
                f"({info.get('format_name')}); use a plughw: or plug device"
            )
            return None
        self.device_rate = int(info["rate"])
        self.device_channels = max(1, int(info["channels"]))
        self.log.info(
            "ALSA %s %r open: %d Hz, %d channel(s), period %d frames",
            self.kind,
            self.device,
            self.device_rate,
            self.device_channels,
            int(info.get("period_size", period)),
        )
        return pcm

    def _run(self) -> None:
        pcm = None
        try:
            pcm = self._open()
            self._opened.set()
            if pcm is not None:
                self._work(pcm)
        except Exception as exc:  # a device that fails mid-call ends this bridge only
            alsa_error = getattr(self.alsa, "ALSAAudioError", None)
            if alsa_error is None or not isinstance(exc, alsa_error):
                self.log.exception("ALSA %s %r failed", self.kind, self.device)
            if not self._stop.is_set():
                self._fail(f"ALSA {self.kind} device {self.device!r} failed: {_reason(exc)}")
        finally:
            self._opened.set()
            if pcm is not None:
                try:
                    pcm.close()
                except Exception as exc:
                    self.log.warning("closing ALSA %s %r: %s", self.kind, self.device, exc)
                self._log_stats()
            self._stop.set()
            _WORKERS.discard(self)

    def _work(self, pcm: Any) -> None:
        raise NotImplementedError

    def _fail(self, reason: str) -> None:
        """Report a failure to the loop (the owner removes the bridge) and stop."""
        self._stop.set()
        callback = self._on_failed
        if callback is None:
            self.log.warning("%s", reason)
            return
        self.log.debug("%s", reason)  # the owner reports it (ERROR <verb>, logged by the call)
        with contextlib.suppress(RuntimeError):  # the loop is closed: siproc is exiting
            self._loop.call_soon_threadsafe(callback, self, reason)

    def _log_stats(self) -> None:
        stats = self.stats
        seconds = stats.frames / self.device_rate if self.device_rate else 0.0
        self.log.info(
            "ALSA %s %r stopped: %.2f s, %d overruns, %d underruns",
            self.kind,
            self.device,
            seconds,
            stats.overruns,
            stats.underruns,
        )


class CaptureBridge(_Bridge):
    """APLAY: the PCM's capture as a live source of the stream's send mix."""

    kind = "capture"
    pcm_type_name = "PCM_CAPTURE"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)  # loop side, at out_rate
        self._primed = False
        self._resampler: soxr.ResampleStream | None = None
        self._resample_rates: tuple[int, int] = (0, 0)
        self._burst = 0  # the largest block one chunk brought (the resampler's block size)

    # -- loop side: LiveSource -------------------------------------------------------------------

    def read_frame(self, samples: int) -> Int16Array | None:
        """One tick's frame of ``samples`` samples (at ``samples`` per ``frame_ms``), or None
        while priming or after an underrun."""
        if samples <= 0:
            return None
        out_rate = samples * 1000 // self.frame_ms
        self._drain(out_rate)
        pending = self._pending
        # Start (and restart after an underrun) with PRIME_FRAMES buffered, or a resampler
        # block and a frame; more than QUEUE_FRAMES beyond that is latency we drop.
        target = max(PRIME_FRAMES * samples, self._burst + samples)
        if len(pending) > target + QUEUE_FRAMES * samples:  # the device runs fast: drop
            self.stats.overruns += 1
            pending = pending[len(pending) - target :]
        need = samples if self._primed else target
        if len(pending) < need:
            if self._primed:
                self.stats.underruns += 1
                self._primed = False
            self._pending = pending
            return None
        self._primed = True
        frame, self._pending = pending[:samples], pending[samples:]
        return frame

    def _drain(self, out_rate: int) -> None:
        parts = [self._pending]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                continue
            rate, chunk = item
            block = self._resample(chunk, rate, out_rate)
            self._burst = max(self._burst, len(block))
            parts.append(block)
        if len(parts) > 1:
            self._pending = np.concatenate(parts)

    def _resample(self, chunk: Int16Array, rate: int, out_rate: int) -> Int16Array:
        if rate == out_rate:
            return chunk
        if self._resampler is None or self._resample_rates != (rate, out_rate):
            self._resampler = soxr.ResampleStream(
                rate, out_rate, 1, dtype="int16", quality=RESAMPLE_QUALITY
            )
            self._resample_rates = (rate, out_rate)
            self._burst = 0
        out: Int16Array = self._resampler.resample_chunk(chunk)
        return out

    # -- worker side ----------------------------------------------------------------------------

    def _work(self, pcm: Any) -> None:
        rate, channels = self.device_rate, self.device_channels
        epipe = -errno.EPIPE
        period_s = self.frame_ms / 1000
        ahead_limit = PACE_AHEAD_PERIODS * period_s
        start, frames = time.monotonic(), 0
        while not self._stop.is_set():
            count, data = pcm.read()
            if count == epipe or count < 0:  # overrun; pyalsaaudio re-prepared the PCM
                self.stats.overruns += 1
                start, frames = time.monotonic(), 0
                continue
            if count == 0:  # nothing (should not happen in blocking mode): do not spin
                self._stop.wait(period_s / 2)
                continue
            chunk = np.frombuffer(data, dtype="<i2")
            if channels > 1:
                chunk = chunk[: count * channels].reshape(count, channels).mean(axis=1)
                chunk = np.round(chunk).astype(np.int16)
            else:
                chunk = chunk.astype(np.int16)  # own, writable, native order
            self.stats.frames += count
            self._push((rate, chunk))
            frames += count
            ahead = frames / rate - (time.monotonic() - start)
            if ahead > ahead_limit:  # a PCM that is not paced by a clock (null slave)
                self._stop.wait(ahead - period_s)
            elif ahead < -1.0:  # far behind (a stall): start counting afresh
                start, frames = time.monotonic(), 0

    def _push(self, item: tuple[int, Int16Array]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the loop is not taking frames fast enough: drop the oldest
            self.stats.overruns += 1
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(item)


class PlaybackBridge(_Bridge):
    """ARECORD: the far end's decoded audio, played into the PCM."""

    kind = "playback"
    pcm_type_name = "PCM_PLAYBACK"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resampler: soxr.ResampleStream | None = None
        self._resample_rate = 0

    # -- loop side: AudioSink ---------------------------------------------------------------------

    def write_frame(self, frame: Int16Array, rate: int) -> None:
        """Queue one frame at ``rate`` Hz (copied); a full queue drops it (counted)."""
        if self._stop.is_set():
            return
        try:
            self._queue.put_nowait((rate, np.array(frame, dtype=np.int16)))
        except queue.Full:  # the device is behind (or not open yet)
            self.stats.overruns += 1

    def _put_end_marker(self) -> None:
        with contextlib.suppress(queue.Full):  # the worker sees the stop event at its next get
            self._queue.put_nowait(None)

    # -- worker side ------------------------------------------------------------------------------

    def _work(self, pcm: Any) -> None:
        channels = self.device_channels
        period = self.device_rate * self.frame_ms // 1000
        silence = bytes(2 * channels * period * PREFILL_PERIODS)
        self._write(pcm, silence, 0)
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_GET_TIMEOUT)
            except queue.Empty:
                continue  # nothing to play: the device may run dry (counted at the next write)
            if item is None:
                break
            rate, frame = item
            out = self._resample(frame, rate)
            if not len(out):
                continue
            if channels > 1:
                out = np.repeat(out, channels)
            if self._write(pcm, out.astype("<i2").tobytes(), len(out) // channels) < 0:
                self.stats.underruns += 1  # the device ran dry; refill the cushion, then the frame
                self._write(pcm, silence, 0)
                self._write(pcm, out.astype("<i2").tobytes(), len(out) // channels)

    def _write(self, pcm: Any, data: bytes, frames: int) -> int:
        written = int(pcm.write(data))
        if written > 0:
            self.stats.frames += frames
        return written

    def _resample(self, frame: Int16Array, rate: int) -> Int16Array:
        if rate == self.device_rate:
            return frame
        if self._resampler is None or self._resample_rate != rate:
            self._resampler = soxr.ResampleStream(
                rate, self.device_rate, 1, dtype="int16", quality=RESAMPLE_QUALITY
            )
            self._resample_rate = rate
        out: Int16Array = self._resampler.resample_chunk(frame)
        return out


# Workers still running, for the wait at exit (a set of bridges; threads hold them alive).
_WORKERS: set[_Bridge] = set()


@atexit.register
def _stop_workers_at_exit() -> None:
    for bridge in list(_WORKERS):
        bridge.close()
    for bridge in list(_WORKERS):
        bridge.join(STOP_JOIN_SECONDS)


class SoundCards:
    """The sound-card bridges of one call, by device: ``APLAY``, ``ARECORD``, ``ASTOP``.

    ``on_error(verb, reason)`` reports a bridge that could not open its device or failed later
    (asynchronously, from the loop). The bridges are taps of ``stream``, which closes them when
    the call ends."""

    def __init__(
        self,
        stream: RtpStream,
        loop: Any,
        on_error: Callable[[str, str], None],
        logger: Logger | None = None,
        *,
        alsa: Any | None = None,
    ) -> None:
        self._stream = stream
        self._loop = loop
        self._on_error = on_error
        self.log: Logger = logger if logger is not None else log
        self._alsa = alsa
        self.capture: dict[str, CaptureBridge] = {}
        self.playback: dict[str, PlaybackBridge] = {}

    def _module(self) -> Any:
        alsa = self._alsa if self._alsa is not None else load_alsaaudio()
        if alsa is None:
            raise SoundCardError(ALSA_MISSING)
        return alsa

    def aplay(self, device: str) -> None:
        """Send what ``device`` captures to the remote end. Raises SoundCardError."""
        alsa = self._module()
        if self._stream.closed:
            raise SoundCardError("the call's media has ended")
        old = self.capture.get(device)
        if old is not None and not old.stopped:
            raise SoundCardError(f"already capturing from {device!r}")
        bridge = CaptureBridge(
            alsa,
            device,
            self._stream.sample_rate,
            self._loop,
            logger=self.log,
            on_failed=functools.partial(self._failed, "APLAY"),
        )
        self.capture[device] = bridge
        self._stream.add_source(bridge)
        bridge.start()

    def arecord(self, device: str) -> None:
        """Play the remote end's audio into ``device``. Raises SoundCardError."""
        alsa = self._module()
        if self._stream.closed:
            raise SoundCardError("the call's media has ended")
        old = self.playback.get(device)
        if old is not None and not old.stopped:
            raise SoundCardError(f"already playing into {device!r}")
        bridge = PlaybackBridge(
            alsa,
            device,
            self._stream.sample_rate,
            self._loop,
            logger=self.log,
            on_failed=functools.partial(self._failed, "ARECORD"),
        )
        self.playback[device] = bridge
        self._stream.add_sink(bridge)
        bridge.start()

    def astop(self, device: str) -> None:
        """Stop both directions on ``device``. Raises SoundCardError if neither runs."""
        self._module()
        capture = self.capture.pop(device, None)
        playback = self.playback.pop(device, None)
        if capture is None and playback is None:
            raise SoundCardError(f"nothing is playing or recording on {device!r}")
        if capture is not None:
            self._stream.remove_source(capture)
            capture.close()
        if playback is not None:
            self._stream.remove_sink(playback)
            playback.close()

    def close(self) -> None:
        """Stop every bridge (the stream's close does it too)."""
        for device in list({*self.capture, *self.playback}):
            self.astop(device)

    def _failed(self, verb: str, bridge: _Bridge, reason: str) -> None:
        """A bridge could not open its device, or its device failed: forget it and tell the
        handler, unless ASTOP or the end of the call came first."""
        current: _Bridge | None = None
        if isinstance(bridge, CaptureBridge):
            self._stream.remove_source(bridge)
            current = self.capture.get(bridge.device)
            if current is bridge:
                del self.capture[bridge.device]
        elif isinstance(bridge, PlaybackBridge):
            self._stream.remove_sink(bridge)
            current = self.playback.get(bridge.device)
            if current is bridge:
                del self.playback[bridge.device]
        if current is bridge and not self._stream.closed:
            self._on_error(verb, reason)
