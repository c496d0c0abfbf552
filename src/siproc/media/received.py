"""The far end's audio, decoded once per media tick, for whoever listens (RECORD, ARECORD).

Theory of operation: the media edge pushes every received RTP packet of the call's audio
payload type into :class:`ReceivedAudio` (the payload is copied into a :class:`JitterBuffer`) and
pulls one decoded frame per media tick. A missing frame is concealed: for a stateless codec
(G.711) by :class:`LossConcealer` (the previous frame at -6 dB, then silence), for a stateful
one by the codec's own concealment for one frame (libopus PLC keeps the decoder in step), then
silence. So the listeners see a continuous PCM stream at the codec's rate, on the call's
timeline, and each packet is decoded exactly once however many listeners there are: the call
recording (:mod:`siproc.media.recorder`) and the sound-card playback of ARECORD
(:mod:`siproc.net.alsa`) share one instance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from siproc.media.codecs import AudioCodec
from siproc.media.jitter import JitterBuffer, LossConcealer, PushResult

__all__ = ["ReceivedAudio"]

Int16Array = npt.NDArray[np.int16]


class ReceivedAudio:
    """RTP payloads -> jitter buffer -> decode -> loss concealment, one frame per tick."""

    __slots__ = ("_plc", "_stateful_concealed", "jitter")

    def __init__(self, frame_ts: int, frame_samples: int) -> None:
        self.jitter = JitterBuffer(frame_ts)
        self._plc = LossConcealer(frame_samples)
        self._stateful_concealed = True  # nothing to conceal before the first frame

    def push(self, seq: int, timestamp: int, ssrc: int, payload: bytes | memoryview) -> PushResult:
        """One received RTP packet of the audio codec (the payload is copied)."""
        return self.jitter.push(seq, timestamp, ssrc, payload)

    def pull(self, codec: AudioCodec, frame_ts: int, frame_samples: int) -> Int16Array:
        """The next frame of the far end's audio, decoded with ``codec`` (or concealed), for
        one tick of ``frame_ts`` RTP timestamp units and ``frame_samples`` samples. The array
        may be a reused buffer: valid until the next call; copy it to keep it."""
        if frame_ts != self.jitter.frame_ts:
            self.jitter.reset(frame_ts)
        if frame_samples != self._plc.frame_samples:
            self._plc = LossConcealer(frame_samples)
        payload = self.jitter.pop()
        if payload is not None:
            self._stateful_concealed = False
            return self._plc.conceal(codec.decode(payload))
        if codec.stateful and not self._stateful_concealed:
            self._stateful_concealed = True
            self._plc.reset()
            return codec.conceal(frame_samples)
        return self._plc.conceal(None)
