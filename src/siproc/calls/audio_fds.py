"""``SIPROC_AUDIO_FDS``: the handler's audio pipes, on the call's side (siproc(1), AUDIO FDS).

With ``SIPROC_AUDIO_FDS=yes`` every handler starts with two more descriptors: fd 3, from which
it reads the far end's decoded audio, and fd 4, to which it writes audio for the far end
(mixed with ``PLAY`` files), both 16-bit little-endian mono PCM at
:data:`~siproc.media.pcm_pipe.PIPE_RATE` Hz (the handler's environment says it:
``SIPROC_AUDIO_RATE``). The idea is Asterisk's EAGI, for handlers that run speech models
themselves.

Why a setting and not a command: descriptors are handed to a program when it starts, and a
handler's first line may already want them (a bot that greets the caller); a command would
come too late for fd numbers that every handler can rely on. A handler that does not want the
audio of its call closes both, and siproc stops at the next tick.

:class:`HandlerPipes` makes the two pipes before the handler starts (:data:`~siproc.net.
audio_pipes.PIPE_BYTES` each), gives the handler its ends as 3 and 4, closes them here once it
runs, and hands siproc's ends to the call's `MediaStream` (``audio_fds``), which takes them
to where its audio runs: the media worker (``RemoteStream``: over its channel, which closes
its copies once sent), or a :class:`~siproc.net.audio_pipes.HandlerAudio` on the stream here
(``RtpStream``). Every path closes every descriptor: a handler that could not start, a call
whose media closed meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from siproc.media.pcm_pipe import PIPE_RATE
from siproc.net.audio_pipes import PIPE_BYTES
from siproc.net.media_stream import MediaStream

__all__ = ["HandlerPipes"]

FD_FAR_END = 3  # the handler reads the far end's audio here
FD_TO_SEND = 4  # and writes what is to be sent here


class HandlerPipes:
    """The two pipes of one handler, from before it starts until they are handed over."""

    @classmethod
    def wanted(cls, enabled: bool, env: dict[str, str]) -> HandlerPipes | None:
        """The pipes for a handler about to start, if ``enabled`` (SIPROC_AUDIO_FDS);
        ``env``, the handler's environment, then says their rate."""
        if not enabled:
            return None
        env["SIPROC_AUDIO_RATE"] = str(PIPE_RATE)
        return cls()

    def __init__(self) -> None:
        self._fds: list[int] = []
        far_read, far_write = self._pipe()  # siproc -> handler (fd 3)
        send_read, send_write = self._pipe()  # handler (fd 4) -> siproc
        self.child_fds = {FD_FAR_END: far_read, FD_TO_SEND: send_write}
        self.ours = (far_write, send_read)

    def _pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self._fds += (read, write)
        with contextlib.suppress(OSError):  # over the user's pipe allowance: the default size
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return read, write

    def hand_over(self, stream: MediaStream, started: bool) -> None:
        """The handler has started (or failed to): close its ends here; give ours to the
        call's media, or close them too when there is no handler or no media any more."""
        for fd in self.child_fds.values():
            self._close(fd)
        to_handler, from_handler = self.ours
        if not started or stream.closed:
            self.close()
            return
        self._fds.clear()  # ours belong to the media from here on
        stream.audio_fds(to_handler, from_handler)

    def _close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        for fd in list(self._fds):
            self._close(fd)
