"""The audio of a call as a byte stream for a handler's pipes (``SIPROC_AUDIO_FDS``, siproc(1)):
framing, resampling and pacing, without any I/O (the descriptors are
:mod:`siproc.net.audio_pipes`' business).

Both directions carry 16-bit little-endian signed mono PCM at :data:`PIPE_RATE` Hz, whatever
the call's codec: a handler written for one rate works on every call (speech models mostly
want 16 kHz; G.711's 8 kHz is upsampled, Opus's 48 kHz downsampled).

* To the handler (fd 3), :class:`ToHandler`: each media tick's frame of the far end's decoded
  audio becomes the bytes of the same 20 ms at :data:`PIPE_RATE` (640 bytes: less than
  ``PIPE_BUF``, so the edge's non-blocking write of it is all or nothing and the stream never
  loses its sample alignment).
* From the handler (fd 4), :class:`FromHandler`: the edge reads at most :meth:`quota` bytes per
  tick, one tick's worth of audio, and so never more than real time; a handler writing faster
  fills its pipe and blocks in its own write (that is the throttle), and what it has not
  written yet is never read ahead into an unbounded buffer here. The bytes become frames at the
  stream's rate; an odd byte waits for its partner, a short frame for the rest of it (the tick
  then plays nothing from the handler: an underrun, counted by the edge).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["PIPE_RATE", "FromHandler", "ToHandler"]

PIPE_RATE: Final = 16000  # Hz, both directions (documented in siproc(1), AUDIO FDS)
SAMPLE_BYTES: Final = 2  # 16-bit little-endian
QUALITY: Final = "HQ"  # soxr's, ~8 us per 20 ms frame
#: soxr's variable-rate mode: it returns each chunk's worth at once, a few milliseconds late.
#: (Its fixed-rate mode releases ~60-110 ms blocks every few chunks, which would starve a
#: paced reader and add that much delay each way.)
VARIABLE_RATE: Final = True

Int16Array = npt.NDArray[np.int16]
_LE16: Final = np.dtype("<i2")


def _resampler(rate_in: int, rate_out: int) -> Any:
    return soxr.ResampleStream(
        rate_in, rate_out, 1, dtype="int16", quality=QUALITY, vr=VARIABLE_RATE
    )


class ToHandler:
    """The far end's frames, at the stream's rate, to bytes at :data:`PIPE_RATE`."""

    def __init__(self) -> None:
        self._rate = 0
        self._resample: Any = None

    def encode(self, frame: Int16Array, rate: int) -> bytes:
        """The bytes for one frame of ``rate`` Hz (empty while the resampler fills: its first
        frame comes out a few milliseconds short). A codec change starts a new resampler."""
        if rate != PIPE_RATE:
            if rate != self._rate:
                self._rate, self._resample = rate, _resampler(rate, PIPE_RATE)
            frame = self._resample.resample_chunk(frame)
        return frame.astype(_LE16, copy=False).tobytes()


class FromHandler:
    """Bytes the handler wrote to frames at the stream's rate, one per tick at most."""

    def __init__(self) -> None:
        self._odd = b""  # the first byte of a sample whose second has not come yet
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)  # at the stream's rate
        self._rate = 0
        self._resample: Any = None
        self._carry = 0  # PIPE_RATE-sample remainder of ticks at rates that do not divide

    def quota(self, samples: int, rate: int) -> int:
        """Bytes to read from the pipe this tick: one tick's worth (``samples`` at ``rate``)
        at :data:`PIPE_RATE`, less the odd byte held; nothing while two frames wait (the
        resampler keeps a little back, so what waits is normally under one frame)."""
        if len(self._pending) >= 2 * samples:
            return 0
        whole, self._carry = divmod(samples * PIPE_RATE + self._carry, rate)
        return whole * SAMPLE_BYTES - len(self._odd)

    def feed(self, data: bytes, rate: int) -> None:
        """Take what the pipe gave (up to :meth:`quota` bytes)."""
        if self._odd:
            data = self._odd + data
        cut = len(data) - len(data) % SAMPLE_BYTES
        self._odd = data[cut:]
        if not cut:
            return
        pcm = np.frombuffer(data, dtype=_LE16, count=cut // SAMPLE_BYTES).astype(np.int16)
        if rate != PIPE_RATE:
            if rate != self._rate:
                self._rate, self._resample = rate, _resampler(PIPE_RATE, rate)
            pcm = self._resample.resample_chunk(pcm)
        self._pending = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm

    def frame(self, samples: int) -> Int16Array | None:
        """The next frame of ``samples``, or None while less is waiting (an underrun)."""
        if len(self._pending) < samples:
            return None
        out, self._pending = self._pending[:samples], self._pending[samples:]
        return out

    @property
    def waiting(self) -> int:
        """Samples (at the stream's rate) read and not played yet; under three frames."""
        return len(self._pending)
