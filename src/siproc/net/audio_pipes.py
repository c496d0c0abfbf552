"""The handler's audio descriptors (``SIPROC_AUDIO_FDS``): the edge that moves a call's audio
through two pipes, in the process that runs the call's media.

Theory of operation
-------------------
The main process makes two pipes when it starts a handler (:mod:`siproc.calls.audio_fds`):
the handler gets the read end of one as fd 3 and the write end of the other as fd 4; siproc's
ends go to where the call's :class:`~siproc.net.rtp_socket.RtpStream` runs (its media worker,
over the worker channel with ``SCM_RIGHTS``, or this process with ``SIPROC_MEDIA_WORKERS=0``)
and become one :class:`HandlerAudio`, a tap of the stream (:mod:`siproc.net.media_taps`), as
the STREAM edge is:

* a *sink*: every tick, the far end's decoded audio (after the jitter buffer, losses
  concealed, silence when nothing arrives) is converted (:class:`~siproc.media.pcm_pipe.
  ToHandler`) and written to fd 3's pipe with one non-blocking ``write``. A frame is less than
  ``PIPE_BUF``, so the write is all or nothing: when the pipe is full (the handler does not
  read) the frame is dropped and counted, and the handler later reads on from a whole sample;
* a *live source*, mixed with ``PLAY`` files into what we send: every tick one non-blocking
  ``read`` of at most one tick's worth (:meth:`~siproc.media.pcm_pipe.FromHandler.quota`). A
  handler that writes faster than real time fills its pipe and blocks in its own write; one
  that writes nothing, or too little, leaves the tick to the files (an underrun).

Nothing here waits: a tick costs one write and one read system call (a few microseconds) and a
resampling when the codec's rate is not :data:`~siproc.media.pcm_pipe.PIPE_RATE`. Each pipe
holds :data:`PIPE_BYTES` (about a second), so the audio buffered either way is bounded.

The end: the handler closing fd 3 (``EPIPE``) or fd 4 (end of file), or exiting, closes that
direction here, and the tap leaves the stream on the next loop turn (a handler that does not
want the audio closes both and costs nothing more). The end of the call closes the stream's
taps, which closes both descriptors (the handler then reads end of file on fd 3, and gets
``EPIPE`` on fd 4), and logs the counters. A media worker that dies takes its descriptors with
it (the kernel closes them); the main process kept no copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from siproc.media.pcm_pipe import FromHandler, ToHandler

if TYPE_CHECKING:
    from siproc.net.rtp_socket import RtpStream

__all__ = ["PIPE_BYTES", "HandlerAudio"]

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
Int16Array = npt.NDArray[np.int16]

#: Bytes each pipe holds (F_SETPIPE_SZ; a power of two the kernel takes as is): about one
#: second at 16 kHz; what a handler may lag behind before frames are dropped, or write ahead
#: before its write blocks.
PIPE_BYTES: Final = 32 * 1024
_PIPE_BUF: Final = 4096  # POSIX: a pipe write this small is atomic (Linux: PIPE_BUF)


class HandlerAudio:
    """The two pipes of one call's handler, as a sink and a live source of its stream."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rtp: RtpStream,
        to_handler: int,
        from_handler: int,
        logger: Logger | None = None,
    ) -> None:
        """Take ownership of ``to_handler`` (fd 3's pipe, our write end) and ``from_handler``
        (fd 4's pipe, our read end); :meth:`close` closes them."""
        self._loop = loop
        self._rtp = rtp
        self.log: Logger = logger if logger is not None else log
        self._out: int | None = to_handler
        self._in: int | None = from_handler
        for fd in (to_handler, from_handler):
            os.set_blocking(fd, False)
        self._to = ToHandler()
        self._from = FromHandler()
        self._attached = False
        self._closed = False
        self.frames_written = 0  # to fd 3
        self.frames_dropped = 0  # to fd 3, while its pipe was full
        self.frames_played = 0  # from fd 4
        self.underruns = 0  # ticks on which fd 4 was open but had no whole frame for us

    def attach(self) -> None:
        """Start: the stream writes to fd 3 and reads fd 4 from its next tick on. A stream
        that is closed already closes the pipes at once."""
        rtp = self._rtp
        if rtp.closed:
            self.close()
            return
        rtp.add_sink(self)
        rtp.add_source(self)
        self._attached = True

    # -- the sink: fd 3 ------------------------------------------------------------------------

    def write_frame(self, frame: Int16Array, rate: int) -> None:
        fd = self._out
        if fd is None:
            return
        data = self._to.encode(frame, rate)
        for start in range(0, len(data), _PIPE_BUF):  # one chunk for any sane frame
            try:
                os.write(fd, data[start : start + _PIPE_BUF])
            except BlockingIOError:
                self.frames_dropped += 1
                return
            except OSError as exc:  # EPIPE: the handler closed fd 3, or exited
                self._end_out(exc)
                return
        self.frames_written += 1

    def _end_out(self, exc: OSError) -> None:
        self.log.debug("audio fd 3 closed by the handler (%s)", exc.strerror or exc)
        self._close_fd("_out")
        self._loop.call_soon(self._detach_ended)

    # -- the live source: fd 4 -----------------------------------------------------------------

    def read_frame(self, samples: int) -> Int16Array | None:
        rate = self._rtp.sample_rate
        fd, pipe = self._in, self._from
        if fd is not None:
            want = pipe.quota(samples, rate)
            if want:
                try:
                    data = os.read(fd, want)
                except BlockingIOError:
                    data = None
                except OSError as exc:
                    self.log.warning("audio fd 4: %s", exc.strerror or exc)
                    data = b""
                if data:
                    pipe.feed(data, rate)
                elif data is not None:  # end of file: the handler closed fd 4, or exited
                    self.log.debug("audio fd 4 closed by the handler")
                    self._close_fd("_in")
                    self._loop.call_soon(self._detach_ended)
        frame = pipe.frame(samples)
        if frame is None:
            if self._in is not None:
                self.underruns += 1
            return None
        self.frames_played += 1
        return frame

    # -- the end -------------------------------------------------------------------------------

    def _detach_ended(self) -> None:
        """After the tick that found a direction closed: leave the stream for what is over
        (the decoding of the far end stops when nobody else listens)."""
        if not self._attached:
            return
        if self._out is None:
            self._rtp.remove_sink(self)
        if self._in is None:  # (less than a frame read and not played: dropped)
            self._rtp.remove_source(self)
        if self._out is None and self._in is None:
            self._attached = False
            self.close()

    def _close_fd(self, name: str) -> None:
        fd = getattr(self, name)
        setattr(self, name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Close both descriptors and log the counters (the stream closes its taps at the
        end of the call; a tap that is both sink and source is closed twice: idempotent)."""
        self._close_fd("_out")
        self._close_fd("_in")
        if self._closed:
            return
        self._closed = True
        self.log.info(
            "audio fds closed: %d frames to the handler, %d dropped (it did not read), "
            "%d frames from it played",
            self.frames_written,
            self.frames_dropped,
            self.frames_played,
        )

    @property
    def closed(self) -> bool:
        return self._closed
