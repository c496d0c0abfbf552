"""Play one audio file as fixed-size mono int16 frames at the codec rate, in small chunks.

Theory of operation: the media tick asks each player for one frame (160 samples for G.711 at
20 ms). The player keeps a short buffer of converted samples; when the buffer holds no more than
one frame it reads the next block of about 0.1 s from the file with soundfile (float32, always
2-D), mixes the channels down to mono by their mean, resamples with a streaming ``soxr``
resampler when the file rate differs from the codec rate, and converts to int16 (rounding,
clipping). So a file is never loaded whole: a one-hour recording costs one block of memory, and
the work per tick stays small and even.

Because the buffer is refilled while it still holds a frame, the player knows that a frame is
its last one when it returns it (``exhausted``): the mixer reports the file as finished on that
same tick, so a handler that answers ``STOPPED a`` with ``PLAY b`` gets no gap in between.

A 16-bit file already at the codec rate passes through bit-exact (int16 -> float32 -> int16 is
lossless here).
"""

from __future__ import annotations

import os
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

__all__ = ["FilePlayer", "MediaFileError"]

BLOCK_SECONDS: Final = 1.0  # file read granularity (a read costs ~20 us, whatever its size)
RESAMPLE_QUALITY: Final = "HQ"  # soxr quality; VHQ costs more and changes nothing audible at 8 kHz

_EMPTY: Final = np.zeros(0, dtype=np.int16)


class MediaFileError(ValueError):
    """A file cannot be played; ``str()`` is one line: ``cannot play 'x.wav': no such file``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot play {path!r}: {reason}")
        self.path = path
        self.reason = reason


def _open_reason(path: str) -> str | None:
    """A short reason why ``path`` is no readable file, or None if the OS would let us read it."""
    if not path:
        return "empty file name"
    if not os.path.lexists(path):
        return "no such file"
    if not os.path.exists(path):
        return "broken symbolic link"
    if os.path.isdir(path):
        return "is a directory"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _downmix(data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Mono as the mean of the channels. Column by column: 20x faster than ``mean(axis=1)``."""
    mono = data[:, 0].copy()
    for channel in range(1, data.shape[1]):
        mono += data[:, channel]
    mono *= np.float32(1.0 / data.shape[1])
    return mono


def _to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    scaled: npt.NDArray[np.float32] = np.rint(samples * np.float32(32768.0))
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype(np.int16)


class FilePlayer:
    """One playing file. Create with :meth:`open`; not thread-safe (the media tick owns it)."""

    def __init__(self, name: str, sound: soundfile.SoundFile, rate: int) -> None:
        self.name = name  # the path exactly as the handler gave it (for STOPPED <file>)
        self.rate = rate
        self.file_rate: int = int(sound.samplerate)
        self.channels: int = int(sound.channels)
        self._sound: soundfile.SoundFile | None = sound
        self._block = max(1, round(self.file_rate * BLOCK_SECONDS))
        self._resampler: soxr.ResampleStream | None = (
            None
            if self.file_rate == rate
            else soxr.ResampleStream(
                self.file_rate, rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )
        self._buf: npt.NDArray[np.int16] = _EMPTY
        self._pos = 0
        self._eof = False  # no more samples will enter _buf
        self.exhausted = False  # the last frame has been returned

    @classmethod
    def open(cls, path: str, rate: int) -> FilePlayer:
        """Open ``path`` for playback at ``rate`` Hz; raise :class:`MediaFileError` if we can't."""
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, not {rate}")
        reason = _open_reason(path)
        if reason is not None:
            raise MediaFileError(path, reason)
        try:
            sound = soundfile.SoundFile(path)
        except (RuntimeError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MediaFileError(path, f"unreadable audio file ({detail})") from None
        except OSError as exc:
            raise MediaFileError(path, exc.strerror or str(exc)) from None
        if sound.samplerate <= 0 or sound.channels <= 0:
            sound.close()
            raise MediaFileError(path, "invalid sample rate or channel count")
        return cls(path, sound, rate)

    def read_frame(self, samples: int) -> npt.NDArray[np.int16] | None:
        """The next ``samples`` mono int16 samples at ``rate``, the last frame zero-padded; None
        once the file is finished. The returned array is read-only and must not be kept beyond
        the tick (it may be a view into the player's buffer)."""
        if self.exhausted or samples <= 0:
            return None
        # Keep more than one frame buffered, so that `exhausted` is known with the last frame.
        while len(self._buf) - self._pos <= samples and not self._eof:
            self._fill()
        start = self._pos
        end = min(start + samples, len(self._buf))
        self._pos = end
        if self._eof and self._pos >= len(self._buf):
            self.exhausted = True
            self.close()
        if end - start == samples:
            return self._buf[start:end]
        if end == start:  # an empty file, or exactly on a frame boundary
            return None
        frame = np.zeros(samples, dtype=np.int16)
        frame[: end - start] = self._buf[start:end]
        frame.flags.writeable = False
        return frame

    def prefetch(self, samples: int) -> None:
        """Read ahead now, so that the next ``read_frame(samples)`` finds its frame buffered
        (the media clock calls this after its send phase: file reads and resampling stay out
        of the loop whose timing the peer hears)."""
        while len(self._buf) - self._pos <= samples and not self._eof:
            self._fill()

    def _fill(self) -> None:
        """Read one block, convert it and append it to the buffer (or mark the end)."""
        sound = self._sound
        chunk: npt.NDArray[np.float32]
        if sound is None:
            self._eof = True
            return
        try:
            data = sound.read(self._block, dtype="float32", always_2d=True)
        except (RuntimeError, ValueError):  # a truncated or corrupt file: end playback there
            data = np.zeros((0, 1), dtype=np.float32)
        last = len(data) < self._block
        chunk = data[:, 0] if data.shape[1] == 1 else _downmix(data)
        if self._resampler is not None:
            chunk = self._resampler.resample_chunk(chunk, last=last)
        if last:
            self._eof = True
        if len(chunk) == 0:
            return
        rest = self._buf[self._pos :]
        self._buf = np.concatenate((rest, _to_int16(chunk))) if len(rest) else _to_int16(chunk)
        self._buf.flags.writeable = False
        self._pos = 0

    def close(self) -> None:
        """Release the file. Idempotent; read_frame() returns what is still buffered."""
        if self._sound is not None:
            self._sound.close()
            self._sound = None
            self._eof = True

    def __repr__(self) -> str:
        return f"FilePlayer({self.name!r}, {self.file_rate} -> {self.rate} Hz)"
