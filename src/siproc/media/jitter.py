"""A jitter buffer for one received RTP stream, driven by the media clock; and loss concealment.

Theory of operation (RFC 3550 sections 5.1 and 6.4.1 for the header fields, RFC 3551 for the
20 ms audio frame):

* The buffer holds encoded payloads (bytes) in a small ring of frame slots. A packet's slot is
  its **frame number**: its RTP timestamp, unwrapped (32-bit, modulo arithmetic around the newest
  timestamp seen, so reordering and wrap-around at 2**32 both work) and counted in frames of
  ``frame_ts`` timestamp units from the first packet of the stream. Playout follows the
  timestamps, never arrival order: reordered packets land in their slots.
* **Time is the media clock.** :meth:`JitterBuffer.pop` is called once per tick and returns the
  payload of the next frame, or None (lost, or nothing sent: the caller conceals). The buffer's
  notion of "now" is its own count of pops, which is why :meth:`~JitterBuffer.push` takes no clock
  argument: a packet's arrival tick is the pop count when it is pushed. The core stays pure and
  its tests need no time at all.
* **Fixed target delay.** The first packet of a stream (or after a resync) is played
  ``target_frames`` ticks after it arrived (default 3: 60 ms at 20 ms frames): room for 60 ms of
  network jitter and reordering, little enough for a recording's timeline to stay within a few
  frames of the other direction. The delay does not grow with jitter (a recording is not a
  conversation; what arrives later than the target is dropped, see below), but it is *kept*:
  once per :data:`TRIM_WINDOW` ticks, if the buffer never held fewer than ``target_frames +``
  :data:`TRIM_SLACK` frames during the window (the sender's clock runs fast, or a burst left the
  buffer deep), one frame is dropped to bring the delay back. A slow sender clock makes packets
  late instead, which the late-run rule below resynchronises.
* **Late packets** (behind the playout point) are dropped and counted. A duplicate of a frame
  still buffered is dropped too (the first copy wins).
* **Timestamp jumps and restarts.** A packet more than ``max_early_frames`` beyond the target is
  a forward timestamp jump (packets cannot arrive early because of the network): the buffer
  resynchronises to it if its sequence number directly follows the previous packet's (16-bit
  wrap), otherwise it is dropped as a stray, and the next packet in sequence after it triggers
  the resync (a two-packet probation in the spirit of RFC 3550 appendix A.1). A backward jump
  makes every packet late; when late packets in sequence keep arriving for
  :data:`LATE_RESYNC_TICKS` ticks with nothing on time in between, the buffer resynchronises.
  A burst after a network stall (late packets arriving all at once, then punctual ones) is not a
  jump: its late part is dropped and the timeline stays. A new SSRC (RFC 3550 section 8: a new
  source) resets the buffer at once. A resync costs ``target_frames`` ticks of silence.
* **Bounded memory**: ``target_frames + max_early_frames + 1`` slots, whatever arrives.

Limitation: one packet is one frame of ``frame_ts`` (20 ms: the ``a=ptime`` we offer, and what
baresip, SIPp and most phones send). A second packet for the same 20 ms slot (a 10 ms packet
stream) counts as a duplicate.

:class:`LossConcealer` turns the popped, decoded frames into a continuous PCM stream: a missing
frame right after a real one repeats it at half amplitude (-6 dB), then silence follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_EARLY_FRAMES",
    "DEFAULT_TARGET_FRAMES",
    "JitterBuffer",
    "JitterStats",
    "LossConcealer",
    "PushResult",
]

DEFAULT_TARGET_FRAMES: Final = 3  # playout delay in frames (60 ms at the 20 ms tick)
DEFAULT_MAX_EARLY_FRAMES: Final = 10  # beyond target + this, a packet is a timestamp jump
LATE_RESYNC_TICKS: Final = 5  # late packets in sequence for this many ticks: the timeline moved
TRIM_WINDOW: Final = 25  # ticks (0.5 s) over which the minimum buffer depth is observed
TRIM_SLACK: Final = 2  # frames above the target tolerated before one frame is dropped

_TS_MOD: Final = 1 << 32  # RTP timestamp modulus, RFC 3550 section 5.1
_TS_HALF: Final = 1 << 31
_SEQ_MASK: Final = 0xFFFF  # RTP sequence numbers are 16 bits, RFC 3550 section 5.1
_EMPTY: Final = -(1 << 62)  # tag of an empty slot (no frame number is this small)


class PushResult(Enum):
    """What :meth:`JitterBuffer.push` did with a packet."""

    STORED = "stored"  # buffered for playout
    RESYNC = "resync"  # the buffer (re)started its timeline on this packet and stored it
    DUPLICATE = "duplicate"  # its frame is already buffered
    LATE = "late"  # behind the playout point
    EARLY = "early"  # implausibly far ahead and not in sequence: dropped as a stray


@dataclass(slots=True)
class JitterStats:
    """Counters of one buffer since it was created (resets do not clear them)."""

    pushed: int = 0  # packets offered
    played: int = 0  # frames popped with a payload
    missing: int = 0  # frames popped empty between received ones (lost, late, or not sent)
    late: int = 0  # packets dropped behind the playout point
    duplicates: int = 0
    early: int = 0  # strays dropped far ahead of the playout point
    trimmed: int = 0  # frames dropped to bring the delay back to the target
    resyncs: int = 0  # timeline restarts (first packet, jumps, SSRC changes)
    ssrc_changes: int = 0


class JitterBuffer:
    """Reorders one RTP stream's payloads onto the media clock; see the module docstring.

    ``frame_ts`` is the RTP timestamp increment of one frame (160 for 20 ms at 8000 Hz).
    """

    __slots__ = (
        "_ext_ref",
        "_late_seq",
        "_late_tick",
        "_newest",
        "_play",
        "_seq_last",
        "_size",
        "_slots",
        "_ssrc",
        "_tags",
        "_tick",
        "_ts_ref",
        "_window_min",
        "_window_ticks",
        "frame_ts",
        "max_early_frames",
        "stats",
        "target_frames",
    )

    def __init__(
        self,
        frame_ts: int,
        target_frames: int = DEFAULT_TARGET_FRAMES,
        max_early_frames: int = DEFAULT_MAX_EARLY_FRAMES,
    ) -> None:
        if frame_ts <= 0:
            raise ValueError(f"frame_ts must be positive, not {frame_ts}")
        if target_frames < 0:
            raise ValueError(f"target_frames must not be negative, not {target_frames}")
        if max_early_frames < 1:
            raise ValueError(f"max_early_frames must be at least 1, not {max_early_frames}")
        self.frame_ts = frame_ts
        self.target_frames = target_frames
        self.max_early_frames = max_early_frames
        self.stats = JitterStats()
        self._size = target_frames + max_early_frames + 1
        self._slots: list[bytes | None] = [None] * self._size
        self._tags: list[int] = [_EMPTY] * self._size
        self._tick = 0  # pops so far: the buffer's clock
        self._ssrc: int | None = None
        self._play: int | None = None  # frame number of the next pop; None: no stream yet
        self._newest = 0  # highest frame number stored
        self._ts_ref = 0  # raw timestamp of the newest packet ...
        self._ext_ref = 0  # ... and its unwrapped value relative to the stream's first packet
        self._seq_last: int | None = None  # sequence number of the last packet pushed
        self._late_seq: int | None = None  # last late packet of a run in sequence ...
        self._late_tick = 0  # ... and the tick at which that run started
        self._window_min = 0
        self._window_ticks = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        """The SSRC being played, or None before the first packet."""
        return self._ssrc

    @property
    def depth(self) -> int:
        """Frames from the playout point to the newest buffered frame (gaps included)."""
        return 0 if self._play is None else max(0, self._newest - self._play + 1)

    def __len__(self) -> int:
        """Packets buffered now."""
        return sum(1 for tag in self._tags if tag != _EMPTY)

    def reset(self, frame_ts: int | None = None) -> None:
        """Forget the stream (the next packet starts a new timeline); optionally change
        ``frame_ts`` (a new codec clock rate). Statistics are kept."""
        if frame_ts is not None:
            if frame_ts <= 0:
                raise ValueError(f"frame_ts must be positive, not {frame_ts}")
            self.frame_ts = frame_ts
        self._clear()
        self._ssrc = None
        self._play = None
        self._seq_last = None

    def _clear(self) -> None:
        for i in range(self._size):
            self._slots[i] = None
            self._tags[i] = _EMPTY
        self._late_seq = None
        self._window_min = self._size
        self._window_ticks = 0

    # -- packets in -----------------------------------------------------------------------------

    def push(self, seq: int, timestamp: int, ssrc: int, payload: bytes | memoryview) -> PushResult:
        """Offer one received packet (its header fields and payload; the payload is copied, so
        a view of a reused receive buffer is fine). Returns what became of it."""
        stats = self.stats
        stats.pushed += 1
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                stats.ssrc_changes += 1
            return self._restart(seq, timestamp, ssrc, payload)
        play = self._play
        assert play is not None  # set together with _ssrc
        delta = (timestamp - self._ts_ref + _TS_HALF) % _TS_MOD - _TS_HALF  # signed, wraps
        ext = self._ext_ref + delta
        frame = ext // self.frame_ts
        lead = frame - play
        in_sequence = self._seq_last is not None and seq == (self._seq_last + 1) & _SEQ_MASK
        self._seq_last = seq
        if lead < 0:
            return self._late(seq, timestamp, ssrc, payload)
        if lead > self.target_frames + self.max_early_frames:
            if in_sequence:  # a forward timestamp jump: follow it
                return self._restart(seq, timestamp, ssrc, payload)
            stats.early += 1
            return PushResult.EARLY
        self._late_seq = None
        index = frame % self._size
        if self._tags[index] == frame:
            stats.duplicates += 1
            return PushResult.DUPLICATE
        self._tags[index] = frame
        self._slots[index] = bytes(payload)
        if frame > self._newest:
            self._newest = frame
            self._ts_ref = timestamp
            self._ext_ref = ext
        return PushResult.STORED

    def _late(self, seq: int, timestamp: int, ssrc: int, payload: bytes | memoryview) -> PushResult:
        """A packet behind the playout point: drop it, unless late packets in sequence have kept
        coming for LATE_RESYNC_TICKS ticks (the sender's timeline moved back)."""
        if self._late_seq is not None and seq == (self._late_seq + 1) & _SEQ_MASK:
            if self._tick - self._late_tick >= LATE_RESYNC_TICKS:
                return self._restart(seq, timestamp, ssrc, payload)
        else:
            self._late_tick = self._tick
        self._late_seq = seq
        self.stats.late += 1
        return PushResult.LATE

    def _restart(
        self, seq: int, timestamp: int, ssrc: int, payload: bytes | memoryview
    ) -> PushResult:
        """Start a new timeline on this packet: it plays ``target_frames`` ticks from now."""
        self._clear()
        self.stats.resyncs += 1
        self._ssrc = ssrc
        self._seq_last = seq
        self._ts_ref = timestamp
        self._ext_ref = 0
        self._newest = 0
        self._play = -self.target_frames
        self._tags[0] = 0
        self._slots[0] = bytes(payload)
        return PushResult.RESYNC

    # -- frames out -----------------------------------------------------------------------------

    def pop(self) -> bytes | None:
        """The next frame's payload, once per media tick; None when it is missing (lost, late,
        not sent, or no stream yet): the caller conceals it."""
        self._tick += 1
        play = self._play
        if play is None:
            return None
        depth = self._newest - play + 1
        if depth < self._window_min:
            self._window_min = depth
        self._window_ticks += 1
        if self._window_ticks >= TRIM_WINDOW:
            if self._window_min > self.target_frames + TRIM_SLACK:
                self._take(play)  # drop the oldest frame: the delay shrinks by one frame
                self.stats.trimmed += 1
                play += 1
            self._window_min = self._size
            self._window_ticks = 0
        self._play = play + 1
        payload = self._take(play)
        if payload is not None:
            self.stats.played += 1
        elif 0 <= play <= self._newest:  # (frames before 0 are the start's target delay)
            self.stats.missing += 1
        return payload

    def _take(self, frame: int) -> bytes | None:
        index = frame % self._size
        if self._tags[index] != frame:
            return None
        payload = self._slots[index]
        self._slots[index] = None
        self._tags[index] = _EMPTY
        return payload


Int16Array = npt.NDArray[np.int16]


class LossConcealer:
    """Packet loss concealment for decoded frames (a receiver-only scheme in the spirit of
    RFC 3550 section 1's "repair" and RFC 2198's motivation): a missing frame right after a
    real one is the previous frame at half amplitude, further missing frames are silence.

    :meth:`conceal` returns arrays that are valid until its next call (reused buffers).
    """

    __slots__ = ("_last", "_plc", "_silence", "frame_samples")

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, not {frame_samples}")
        self.frame_samples = frame_samples
        self._silence: Int16Array = np.zeros(frame_samples, dtype=np.int16)
        self._silence.flags.writeable = False
        self._plc: Int16Array = np.zeros(frame_samples, dtype=np.int16)
        self._last: Int16Array | None = None

    def conceal(self, frame: Int16Array | None) -> Int16Array:
        """``frame`` itself when present; otherwise the concealment frame."""
        if frame is not None:
            self._last = frame
            return frame
        last = self._last
        self._last = None
        if last is None or len(last) != self.frame_samples:
            return self._silence
        np.right_shift(last, 1, out=self._plc)  # -6 dB, arithmetic shift keeps the sign
        return self._plc

    def reset(self) -> None:
        self._last = None
