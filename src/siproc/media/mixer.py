"""Mix the frames of several sources, and keep the ordered set of files a call is playing.

``mix`` sums int16 frames in int32 and clips the sum to the int16 range (hard clipping: two
full-scale files played together distort rather than wrap around; a soft limiter can replace the
clip later without changing the interface). The handler protocol allows several ``PLAY`` at once
(manual page: "Multiple files can be played at the same time") and ``STOP`` stops the one added
last, which is why the players are an ordered list.

Besides files, a call can mix *live sources*: audio that does not end by itself, such as a sound
card's capture (APLAY, :mod:`siproc.net.alsa`). A live source is not a file: ``STOP`` does not
stop it, it never reports ``STOPPED``, and its name is not in :attr:`PlaybackMixer.names`; its
owner adds and removes it. A tick on which a live source has nothing (an underrun) contributes
nothing to the mix.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from siproc.media.player import FilePlayer

__all__ = ["LiveSource", "PlaybackMixer", "mix"]

Int16Array = npt.NDArray[np.int16]


class LiveSource(Protocol):
    """Audio mixed into what a call sends until its owner removes it (see the module doc)."""

    def read_frame(self, samples: int) -> Int16Array | None:
        """The next frame of exactly ``samples`` int16 samples at the stream's rate (one media
        tick's worth), or None when nothing is available this tick."""
        ...


def mix(frames: list[Int16Array]) -> Int16Array:
    """Sum equally long int16 frames in int32 and clip to [-32768, 32767].

    A single frame is returned as is (no copy), so the common one-file case costs nothing.
    """
    if not frames:
        raise ValueError("mix() needs at least one frame")
    if len(frames) == 1:
        return frames[0]
    acc = frames[0].astype(np.int32)
    for frame in frames[1:]:
        acc += frame
    np.clip(acc, -32768, 32767, out=acc)
    return acc.astype(np.int16)


class PlaybackMixer:
    """The files one call is playing, oldest first."""

    def __init__(self) -> None:
        self._players: list[FilePlayer] = []
        self._sources: list[LiveSource] = []

    def __len__(self) -> int:
        return len(self._players)

    @property
    def names(self) -> list[str]:
        """The names of the playing files, oldest first."""
        return [player.name for player in self._players]

    def add(self, player: FilePlayer) -> None:
        self._players.append(player)

    @property
    def sources(self) -> list[LiveSource]:
        """The live sources, oldest first (a copy)."""
        return list(self._sources)

    def add_source(self, source: LiveSource) -> None:
        """Mix ``source`` from the next frame on (see :class:`LiveSource`)."""
        if source not in self._sources:
            self._sources.append(source)

    def remove_source(self, source: LiveSource) -> bool:
        """Stop mixing ``source``; False if it was not mixed. The owner closes it."""
        if source not in self._sources:
            return False
        self._sources.remove(source)
        return True

    def stop_last(self) -> FilePlayer | None:
        """Remove, close and return the player added last; None if nothing plays."""
        if not self._players:
            return None
        player = self._players.pop()
        player.close()
        return player

    def prefetch(self, samples: int) -> None:
        """Read ahead in every file (FilePlayer.prefetch), for the next ``next_frame``."""
        for player in self._players:
            player.prefetch(samples)

    def stop(self, player: FilePlayer) -> bool:
        """Remove and close ``player``; False if it was not playing (it ended already)."""
        if player not in self._players:
            return False
        self._players.remove(player)
        player.close()
        return True

    def next_frame(self, samples: int) -> tuple[Int16Array | None, list[FilePlayer]]:
        """Pull one frame from every live source and player and mix them.

        Returns the mixed frame (None if nothing produced audio) and the players that finished
        during this call, in the order they were added. A player's last (zero-padded) frame is
        part of the mix of the call that reports it finished; finished players are removed and
        closed.
        """
        if not self._players and not self._sources:
            return None, []
        frames: list[Int16Array] = []
        for source in self._sources:
            live = source.read_frame(samples)
            if live is not None:
                frames.append(live)
        finished: list[FilePlayer] = []
        for player in self._players:
            frame = player.read_frame(samples)
            if frame is not None:
                frames.append(frame)
            if frame is None or player.exhausted:
                finished.append(player)
        if finished:
            for player in finished:
                player.close()
            self._players = [p for p in self._players if p not in finished]
        return (mix(frames) if frames else None), finished

    def close(self) -> None:
        """Close and forget every player, reporting nothing (live sources are their owner's
        to close; they are forgotten)."""
        self._sources.clear()
        for player in self._players:
            player.close()
        self._players.clear()
