"""RECORD and the live taps of an RTP stream, a mixin of
:class:`~siproc.net.rtp_socket.RtpStream`.

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

from typing import Protocol

import numpy as np
import numpy.typing as npt

from siproc.media.mixer import LiveSource
from siproc.media.received import ReceivedAudio
from siproc.media.recorder import CallRecording, RecordFileError
from siproc.net.rtp_state import DEFAULT_RATE, StreamParts

__all__ = ["AudioSink", "AudioSource", "MediaTaps"]


class AudioSource(LiveSource, Protocol):
    """A live source (:class:`~siproc.media.mixer.LiveSource`) the stream closes at its end."""

    def close(self) -> None: ...


class AudioSink(Protocol):
    """Takes the far end's decoded audio, one frame per media tick (ARECORD's sound card)."""

    def write_frame(self, frame: npt.NDArray[np.int16], rate: int) -> None:
        """One frame at ``rate`` Hz; ``frame`` is valid only during the call (copy it)."""
        ...

    def close(self) -> None: ...


class MediaTaps(StreamParts):
    """The recording and the live sources and sinks of one stream."""

    _recording: CallRecording | None  # RECORD (media/recorder.py)
    _sources: list[AudioSource]  # APLAY (net/alsa.py), mixed by self._mixer
    _sinks: list[AudioSink]  # ARECORD (net/alsa.py)
    _received: ReceivedAudio | None  # while the recording or a sink listens

    def _init_taps(self) -> None:
        self._recording = None
        self._sources = []
        self._sinks = []
        self._received = None

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

    def _close_tap(self, tap: AudioSource | AudioSink) -> None:
        try:
            tap.close()
        except Exception:
            self.log.exception("closing %r failed", tap)
