"""Record a call to an audio file: both directions, mixed (mono) or one per channel (stereo).

Theory of operation: the media tick hands :meth:`CallRecorder.write` one frame per direction
(``received``: the far end, after the jitter buffer and loss concealment; ``sent``: what we sent
this tick), either of which may be None (nothing that tick: written as silence, so the file's
timeline stays the call's timeline). Frames are copied into a preallocated int16 block of
:data:`CHUNK_SECONDS`; when the block is full it is written with one ``soundfile`` call. So the
tick costs a few small numpy copies, and the file system sees one write per half second per
call (about 8 KB for G.711 mono), never one per packet.

* Mono mixes the two directions: the int16 samples are summed in int32 and clipped to the int16
  range (as :func:`siproc.media.mixer.mix` does for played files), once per block at the write
  (the block keeps both directions side by side until then: cheaper than mixing every tick).
* Stereo keeps the directions apart, for transcription: **left = received (the far end),
  right = sent (our side)**.
* A frame of another length than ``frame_samples`` (a peer sending 30 ms packets, a codec
  change mid-call) is cut or padded with silence to one tick's length, so the timeline holds.
* The format follows the file name's extension where libsndfile can write it: ``.wav`` (16-bit
  PCM, also the default for a name without a known extension), ``.flac`` (16-bit), ``.ogg`` /
  ``.oga`` (Vorbis), ``.opus`` (Opus in Ogg; codec rates 8/12/16/24/48 kHz), ``.mp3``, and the
  other extensions libsndfile knows (``.aiff``, ``.au``, ``.caf``, ``.w64``, ``.rf64`` ...,
  16-bit PCM where the format has it). An existing file is replaced.
* Nothing recorded is lost: :meth:`CallRecorder.close` writes the partial block and finalises
  the header, and the call closes its recorder however it ends. For header-based formats (WAV,
  AIFF, CAF ...) libsndfile also rewrites the header after every block
  (``SFC_SET_UPDATE_HEADER_AUTO``), so even if siproc itself were killed the file would be
  valid, missing at most the last half second.
* Closing finalises the file without an ``fsync``: soundfile's ``close()`` asks libsndfile for
  ``sf_write_sync`` first, which is an ``fsync``, and a media worker closing a hundred calls'
  recordings at once on a busy disk then stalled every call's audio (up to 200 ms: issue 8,
  item 6). The data are in the file system when the file is closed, which is what a crash of
  siproc needs; like any other file written without ``fsync``, the last seconds may be lost
  to a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile

from siproc.media.codecs import AudioCodec
from siproc.media.jitter import JitterBuffer, PushResult
from siproc.media.received import ReceivedAudio

__all__ = [
    "CHUNK_SECONDS",
    "CallRecorder",
    "CallRecording",
    "RecordFileError",
    "recording_format",
]

CHUNK_SECONDS: Final = 1.0  # audio buffered between two file writes
FRAME_MS: Final = 20  # one media tick (DESIGN.md section 2)
DEFAULT_FORMAT: Final = ("WAV", "PCM_16")

# Extensions soundfile does not map by itself (it maps ".wav" -> "WAV" and so on).
_EXTRA_EXTENSIONS: Final = {
    "opus": ("OGG", "OPUS"),
    "oga": ("OGG", "VORBIS"),
    "aif": ("AIFF", "PCM_16"),
}
# Formats whose header carries the length: libsndfile can rewrite it after each write.
_HEADER_FORMATS: Final = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "CAF", "AU"})
_SFC_SET_UPDATE_HEADER_AUTO: Final = 0x1061  # sndfile.h

Int16Array = npt.NDArray[np.int16]


class RecordFileError(ValueError):
    """A recording cannot be made; ``str()`` is one line: ``cannot record 'x.wav': reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot record {path!r}: {reason}")
        self.path = path
        self.reason = reason


def recording_format(path: str) -> tuple[str, str]:
    """(libsndfile major format, subtype) for a file name, by its extension; WAV 16-bit PCM for a
    name without an extension libsndfile can write."""
    extension = os.path.splitext(path)[1][1:].lower()
    if extension in _EXTRA_EXTENSIONS:
        return _EXTRA_EXTENSIONS[extension]
    major = extension.upper()
    if not extension or major not in soundfile.available_formats():
        return DEFAULT_FORMAT
    if soundfile.check_format(major, "PCM_16"):
        return major, "PCM_16"
    subtype = soundfile.default_subtype(major)
    return (major, subtype) if subtype else DEFAULT_FORMAT


_ERRNO_REASONS: Final = {
    errno.ENOENT: "no such directory",  # with O_CREAT, only a missing directory gives ENOENT
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
}


def _create(path: str) -> int:
    """Create or truncate ``path`` for writing; raise :class:`RecordFileError` with the OS's
    reason. (Opening it ourselves, not by name in libsndfile, keeps the reason precise:
    libsndfile reports every OS error as "System error".) The descriptor is not inherited by
    handler processes (PEP 446)."""
    if not path:
        raise RecordFileError(path, "empty file name")
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except OSError as exc:
        reason = _ERRNO_REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        raise RecordFileError(path, reason) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


class CallRecorder:
    """One recording. Create with :meth:`open`; the media tick owns it (not thread-safe)."""

    def __init__(
        self,
        path: str,
        sound: soundfile.SoundFile,
        rate: int,
        stereo: bool,
        frame_samples: int,
        chunk_frames: int,
        fd: int | None = None,
    ) -> None:
        self.path = path  # as the handler gave it
        self.rate = rate
        self.stereo = stereo
        self.frame_samples = frame_samples
        self.format: str = str(sound.format)
        self.subtype: str = str(sound.subtype)
        self._sound: soundfile.SoundFile | None = sound
        self._fd = fd  # the file descriptor under ``sound``, closed after it
        block = frame_samples * chunk_frames
        # Both directions side by side, whatever the mode: a mono file is mixed once per block
        # at flush (one vector operation instead of four small ones per tick).
        self._buf: Int16Array = np.zeros((block, 2), dtype=np.int16)
        self._pos = 0  # samples (per channel) in _buf
        self._written = 0  # samples (per channel) handed to libsndfile
        self._mix32 = np.zeros(0 if stereo else block, dtype=np.int32)
        self._mono: Int16Array = np.zeros(0 if stereo else block, dtype=np.int16)
        self._fit_rx: Int16Array = np.zeros(frame_samples, dtype=np.int16)
        self._fit_tx: Int16Array = np.zeros(frame_samples, dtype=np.int16)

    @classmethod
    def open(
        cls,
        path: str,
        rate: int,
        stereo: bool = False,
        *,
        frame_ms: int = FRAME_MS,
        chunk_seconds: float = CHUNK_SECONDS,
    ) -> CallRecorder:
        """Create (or replace) ``path`` for recording at ``rate`` Hz, one frame per
        ``frame_ms``; raise :class:`RecordFileError` with a one-line reason if we can't."""
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, not {rate}")
        if frame_ms <= 0 or chunk_seconds <= 0:
            raise ValueError("frame_ms and chunk_seconds must be positive")
        major, subtype = recording_format(path)
        existed = os.path.lexists(path)
        fd = _create(path)
        try:
            sound = soundfile.SoundFile(
                fd,
                "w",
                samplerate=rate,
                channels=2 if stereo else 1,
                format=major,
                subtype=subtype,
                closefd=False,  # ours to close, also when libsndfile fails
            )
        except (RuntimeError, TypeError, ValueError, OSError) as exc:  # LibsndfileError: Runtime
            os.close(fd)
            if not existed:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise RecordFileError(path, f"cannot write {major} ({_one_line(exc)})") from None
        if major in _HEADER_FORMATS:
            _update_header_after_each_write(sound)
        frame_samples = rate * frame_ms // 1000
        chunk_frames = max(1, round(chunk_seconds * 1000 / frame_ms))
        return cls(path, sound, rate, stereo, frame_samples, chunk_frames, fd)

    # -- state ----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sound is None

    @property
    def frames(self) -> int:
        """Samples per channel recorded so far (written or buffered)."""
        return self._written + self._pos

    @property
    def block_frames(self) -> int:
        """Ticks per file write (the block size in frames)."""
        return len(self._buf) // self.frame_samples

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    # -- the media tick -------------------------------------------------------------------------

    def write(self, received: Int16Array | None, sent: Int16Array | None) -> None:
        """Record one tick: the far end's frame and ours (None: silence). Raises
        :class:`RecordFileError` if the file cannot be written (the recorder is then closed,
        keeping what was written)."""
        if self._sound is None:
            raise RecordFileError(self.path, "recording is closed")
        n = self.frame_samples
        if received is not None and len(received) != n:
            received = self._fit(received, self._fit_rx)
        if sent is not None and len(sent) != n:
            sent = self._fit(sent, self._fit_tx)
        pos = self._pos
        out = self._buf[pos : pos + n]
        out[:, 0] = 0 if received is None else received
        out[:, 1] = 0 if sent is None else sent
        self._pos = pos + n
        if self._pos >= len(self._buf):
            self.flush()

    def _fit(self, frame: Int16Array, scratch: Int16Array) -> Int16Array:
        """``frame`` cut or zero-padded to one tick's length (in a reused buffer)."""
        count = min(len(frame), len(scratch))
        scratch[:count] = frame[:count]
        scratch[count:] = 0
        return scratch

    def flush(self) -> None:
        """Write the buffered block to the file now."""
        sound = self._sound
        if sound is None or self._pos == 0:
            return
        block = self._buf[: self._pos]
        if not self.stereo:  # mix: int32 sum, clipped to int16 (minimum/maximum: faster than clip)
            mixed = self._mix32[: self._pos]
            np.add(block[:, 0], block[:, 1], out=mixed, dtype=np.int32)
            np.minimum(mixed, 32767, out=mixed)
            np.maximum(mixed, -32768, out=mixed)
            block = self._mono[: self._pos]
            block[:] = mixed
        try:
            sound.write(block)
        except (RuntimeError, OSError, ValueError) as exc:  # disk full, file gone ...
            self._pos = 0
            self._close_file()
            raise RecordFileError(self.path, f"write failed ({_one_line(exc)})") from None
        self._written += self._pos
        self._pos = 0

    def close(self) -> None:
        """Write what is buffered and finalise the file (headers). Idempotent. A write error at
        this point is raised as :class:`RecordFileError`, after the file is closed."""
        if self._sound is None:
            return
        try:
            self.flush()
        finally:
            self._close_file()

    def _close_file(self) -> None:
        sound, self._sound = self._sound, None
        if sound is not None:
            with contextlib.suppress(RuntimeError, OSError):
                _close_without_sync(sound)
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        kind = "stereo" if self.stereo else "mono"
        return f"CallRecorder({self.path!r}, {self.format}/{self.subtype}, {self.rate} Hz {kind})"


def _close_without_sync(sound: soundfile.SoundFile) -> None:
    """``sf_close`` (header final, descriptor closed) without soundfile's ``sf_write_sync``
    before it, which is an ``fsync`` (see the module's docstring). Best effort: another
    soundfile version closes the usual way."""
    try:
        lib, handle = soundfile._snd, sound._file
    except AttributeError:  # pragma: no cover - another soundfile version
        sound.close()
        return
    if handle is None:
        return
    sound._file = None
    if lib.sf_close(handle) != 0:
        raise RuntimeError("sf_close failed")


def _update_header_after_each_write(sound: soundfile.SoundFile) -> None:
    """Ask libsndfile to rewrite the header after every write (best effort: soundfile has no
    public API for ``sf_command``, so this reaches for its cffi handle)."""
    try:
        lib = soundfile._snd
        ffi = soundfile._ffi
        lib.sf_command(sound._file, _SFC_SET_UPDATE_HEADER_AUTO, ffi.NULL, 1)
    except AttributeError:  # pragma: no cover - another soundfile version
        pass


class CallRecording:
    """The receive-side pipeline of a recording: the far end's decoded audio
    (:class:`~siproc.media.received.ReceivedAudio`: jitter buffer -> decode -> loss concealment)
    -> :class:`CallRecorder`, next to the frames we send.

    Used alone, the media edge calls :meth:`push` for every received packet of the call's
    audio payload type and :meth:`tick` once per media tick with the frame it sent (None:
    nothing or silence). When the decoded audio has other listeners too (ARECORD), the edge
    owns the :class:`ReceivedAudio`, passes it to :meth:`open` and calls :meth:`write` with the
    frame it pulled, so that each packet is decoded once.

    The file takes the codec's sample rate. When the codec changes before anything was
    recorded (RECORD given before the answer fixed the codec) the file is created again at the
    new rate; a later change of rate keeps the file's rate, and frames are cut or padded to it.
    """

    def __init__(
        self, recorder: CallRecorder, frame_ts: int, received: ReceivedAudio | None = None
    ) -> None:
        self.recorder = recorder
        self.received = (
            received if received is not None else ReceivedAudio(frame_ts, recorder.frame_samples)
        )

    @classmethod
    def open(
        cls,
        path: str,
        rate: int,
        stereo: bool,
        frame_ts: int,
        *,
        frame_ms: int = FRAME_MS,
        received: ReceivedAudio | None = None,
    ) -> CallRecording:
        """Open the file (see :meth:`CallRecorder.open`, which raises RecordFileError)."""
        return cls(CallRecorder.open(path, rate, stereo, frame_ms=frame_ms), frame_ts, received)

    @property
    def path(self) -> str:
        return self.recorder.path

    @property
    def jitter(self) -> JitterBuffer:
        return self.received.jitter

    def push(self, seq: int, timestamp: int, ssrc: int, payload: bytes | memoryview) -> PushResult:
        """One received RTP packet of the audio codec (the payload is copied)."""
        return self.received.push(seq, timestamp, ssrc, payload)

    def tick(self, sent: Int16Array | None, codec: AudioCodec, frame_ts: int) -> None:
        """Record one media tick with the current codec and RTP frame length. Raises
        :class:`RecordFileError` when the file cannot be written."""
        self._follow_rate(codec)
        received = self.received.pull(codec, frame_ts, self.recorder.frame_samples)
        self.recorder.write(received, sent)

    def write(
        self, received: Int16Array | None, sent: Int16Array | None, codec: AudioCodec
    ) -> None:
        """Record one media tick whose received frame was already pulled from the shared
        :class:`ReceivedAudio`. Raises :class:`RecordFileError`."""
        self._follow_rate(codec)
        self.recorder.write(received, sent)

    def _follow_rate(self, codec: AudioCodec) -> None:
        old = self.recorder
        if old.frames != 0 or codec.sample_rate == old.rate:
            return
        old.close()
        frame_ms = old.frame_samples * 1000 // old.rate
        self.recorder = CallRecorder.open(
            old.path, codec.sample_rate, old.stereo, frame_ms=frame_ms
        )

    def close(self) -> None:
        """Finalise the file (see :meth:`CallRecorder.close`)."""
        self.recorder.close()
