"""Audio codecs behind one small interface, so that G.722, Opus and friends slot in later.

A codec turns int16 PCM frames at ``sample_rate`` into RTP payloads and back. ``clock_rate`` is
the RTP timestamp rate, which can differ from the PCM rate (G.722: 16 kHz audio, 8 kHz clock,
RFC 3551 section 4.5.2). ``get_codec`` returns a fresh instance per call because codecs with
state (G.722, Opus) need one per stream; stateless G.711 simply does not care.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from siproc.media.codecs.g711 import G711Codec

__all__ = ["AudioCodec", "G711Codec", "available_codecs", "get_codec"]


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

    def frame_samples(self, ptime_ms: int) -> int:
        """PCM samples per frame of ``ptime_ms`` milliseconds."""
        ...

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame of mono int16 PCM at ``sample_rate``."""
        ...

    def decode(self, data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
        """Decode one payload to mono int16 PCM at ``sample_rate``."""
        ...


_FACTORIES: dict[str, Callable[[str], AudioCodec]] = {"PCMU": G711Codec, "PCMA": G711Codec}


def available_codecs() -> tuple[str, ...]:
    """Encoding names ``get_codec`` accepts, in our default preference order."""
    return tuple(_FACTORIES)


def get_codec(name: str) -> AudioCodec:
    """A new codec instance for an encoding name (case-insensitive, as in SDP)."""
    factory = _FACTORIES.get(name.upper())
    if factory is None:
        raise ValueError(f"unsupported codec {name!r} (supported: {', '.join(_FACTORIES)})")
    return factory(name)
