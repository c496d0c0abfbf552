"""Mix the frames of several sources, and keep the ordered set of files a call is playing.

``mix`` sums int16 frames in int32 and clips the sum to the int16 range (hard clipping: two
full-scale files played together distort rather than wrap around; a soft limiter can replace the
clip later without changing the interface). The handler protocol allows several ``PLAY`` at once
(manual page: "Multiple files can be played at the same time") and ``STOP`` stops the one added
last, which is why the players are an ordered list.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from siproc.media.player import FilePlayer

__all__ = ["PlaybackMixer", "mix"]

Int16Array = npt.NDArray[np.int16]


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

    def __len__(self) -> int:
        return len(self._players)

    @property
    def names(self) -> list[str]:
        """The names of the playing files, oldest first."""
        return [player.name for player in self._players]

    def add(self, player: FilePlayer) -> None:
        self._players.append(player)

    def stop_last(self) -> FilePlayer | None:
        """Remove, close and return the player added last; None if nothing plays."""
        if not self._players:
            return None
        player = self._players.pop()
        player.close()
        return player

    def next_frame(self, samples: int) -> tuple[Int16Array | None, list[FilePlayer]]:
        """Pull one frame from every player and mix them.

        Returns the mixed frame (None if no player produced audio) and the players that finished
        during this call, in the order they were added. A player's last (zero-padded) frame is
        part of the mix of the call that reports it finished; finished players are removed and
        closed.
        """
        if not self._players:
            return None, []
        frames: list[Int16Array] = []
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
        """Close and forget every player, reporting nothing."""
        for player in self._players:
            player.close()
        self._players.clear()
