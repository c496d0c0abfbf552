"""Audio codecs behind one small interface: G.711 (PCMU, PCMA), G.722 and Opus.

A codec turns int16 PCM frames at ``sample_rate`` into RTP payloads and back. ``clock_rate`` is
the RTP timestamp rate, which can differ from the PCM rate (G.722: 16 kHz audio, 8 kHz clock,
RFC 3551 section 4.5.2). ``get_codec`` returns a fresh instance per call because codecs with
state (G.722, Opus: ``stateful``) need one per stream, used for every frame of that stream
only; stateless G.711 simply does not care. One instance serves both directions: its encoder
and decoder states are separate.

G.722 needs the ``g722`` package and Opus the system libopus. Both are loaded lazily, so siproc
runs without them; ``get_codec`` then raises :class:`CodecUnavailableError`, and the catalogue
(:mod:`siproc.media.codecs.catalog`) never offers a codec whose library fails its self-test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from siproc.media.codecs.errors import CodecUnavailableError
from siproc.media.codecs.g711 import G711Codec
from siproc.media.codecs.g722 import G722Codec
from siproc.media.codecs.opus import OpusCodec

__all__ = [
    "AudioCodec",
    "CodecUnavailableError",
    "G711Codec",
    "G722Codec",
    "OpusCodec",
    "available_codecs",
    "get_codec",
]


class AudioCodec(Protocol):
    """What the media path needs from a codec."""

    @property
    def name(self) -> str:
        """Encoding name as in SDP ``a=rtpmap`` (RFC 4566), upper case: ``PCMU``."""
        ...

    @property
    def sample_rate(self) -> int:
        """PCM rate of ``encode`` input and ``decode`` output, Hz."""
        ...

    @property
    def clock_rate(self) -> int:
        """RTP timestamp rate, Hz (the rtpmap rate)."""
        ...

    @property
    def payload_type(self) -> int | None:
        """Static payload type (RFC 3551 table 4), or None for a dynamic one."""
        ...

    @property
    def stateful(self) -> bool:
        """True when frames depend on earlier ones (G.722, Opus): every frame must go through
        ``encode``, silence included. False (G.711): an encoded frame may be cached and resent."""
        ...

    def frame_samples(self, ptime_ms: int) -> int:
        """PCM samples per frame of ``ptime_ms`` milliseconds."""
        ...

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame of mono int16 PCM at ``sample_rate``."""
        ...

    def decode(self, data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
        """Decode one payload to a new mono int16 array at ``sample_rate``. Its length is what
        the payload holds (Opus packets may be 2.5-120 ms). Never raises for peer data."""
        ...

    def conceal(self, samples: int) -> npt.NDArray[np.int16]:
        """``samples`` samples standing in for lost packets (packet loss concealment): libopus
        PLC for Opus, silence for G.711 and G.722. Opus rounds up to 2.5 ms steps."""
        ...


_FACTORIES: dict[str, Callable[[str, str | None], AudioCodec]] = {
    "PCMU": lambda name, fmtp: G711Codec(name),
    "PCMA": lambda name, fmtp: G711Codec(name),
    "G722": lambda name, fmtp: G722Codec(name),
    "OPUS": lambda name, fmtp: OpusCodec(name, fmtp),
}


def available_codecs() -> tuple[str, ...]:
    """Encoding names ``get_codec`` accepts, in our default preference order."""
    return tuple(_FACTORIES)


def get_codec(name: str, fmtp: str | None = None) -> AudioCodec:
    """A new codec instance for an encoding name (case-insensitive, as in SDP, RFC 4855
    section 3). ``fmtp`` is the remote's ``a=fmtp`` for it (what it wants to receive; Opus
    uses it, RFC 7587 section 6.1). Raises ValueError for an unknown name and
    :class:`CodecUnavailableError` when the codec's library is missing."""
    factory = _FACTORIES.get(name.upper())
    if factory is None:
        raise ValueError(f"unsupported codec {name!r} (supported: {', '.join(_FACTORIES)})")
    return factory(name, fmtp)
