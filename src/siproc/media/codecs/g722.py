"""G.722 wideband audio (ITU-T G.722, 64 kbit/s mode) through the ``g722`` package.

Theory of operation: G.722 is sub-band ADPCM. A QMF filter bank splits 16 kHz audio into a low
and a high band; each band is ADPCM-coded (6 + 2 bits per pair of input samples in the 64 kbit/s
mode), so one 20 ms frame of 320 samples becomes 160 bytes. Both the QMF filters and the ADPCM
predictors carry state from one frame to the next: an encoder and a decoder belong to exactly
one RTP stream, and :func:`siproc.media.codecs.get_codec` makes a new :class:`G722Codec` per
call. (The encoder and decoder states inside one instance are separate, so one instance serves
both directions of a stream.)

RTP (RFC 3551 section 4.5.2): payload type 9, and the RTP clock rate is 8000 Hz although the
audio is sampled at 16 kHz, "for historical reasons" (an error in RFC 1890 that stuck). So a
20 ms packet carries 320 samples but advances the RTP timestamp by 160: ``sample_rate`` is
16000 and ``clock_rate`` is 8000 here, and the media path uses each where it belongs.

The implementation is the PyPI package ``g722`` (import name ``G722``; Sippy Software's
libg722, Steve Underwood's public-domain code, bit-exact with the ITU test vectors). It is
imported lazily: without it siproc still runs, and :func:`probe` says why G.722 is unusable.
An encoder/decoder pair costs about 10 us per 20 ms frame.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from siproc.media.codecs.errors import CodecUnavailableError

__all__ = [
    "BIT_RATE",
    "G722_PAYLOAD_TYPE",
    "G722Codec",
    "probe",
]

G722_PAYLOAD_TYPE: Final = 9  # RFC 3551 section 6, table 4
SAMPLE_RATE: Final = 16000  # ITU-T G.722 section 1: 50-7000 Hz audio sampled at 16 kHz
CLOCK_RATE: Final = 8000  # RFC 3551 section 4.5.2: the RTP clock is 8000 Hz nonetheless
BIT_RATE: Final = 64000  # mode 1, the only one RFC 3551 section 4.5.2 defines for RTP
MODULE: Final = "G722"  # import name of the PyPI distribution "g722"

Int16Array = npt.NDArray[np.int16]


@functools.cache
def _module() -> Any:
    """The ``G722`` extension module; raises :class:`CodecUnavailableError` if it is missing."""
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:  # not installed, or built for another interpreter
        raise CodecUnavailableError(
            f"the g722 Python package is not installed (pip install g722): {exc}"
        ) from None


class G722Codec:
    """G.722 at 64 kbit/s (RFC 3551 section 4.5.2): 16 kHz PCM, 8 kHz RTP clock, stateful.

    Raises :class:`CodecUnavailableError` when the ``g722`` package cannot be imported.
    """

    __slots__ = ("_impl",)

    name: Final = "G722"
    payload_type: Final = G722_PAYLOAD_TYPE
    sample_rate: Final = SAMPLE_RATE
    clock_rate: Final = CLOCK_RATE
    channels: Final = 1
    #: Encoder and decoder carry state between frames (QMF and ADPCM predictors): the media
    #: path must encode every frame, silence included, rather than resend a cached payload.
    stateful: Final = True

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """A codec crosses to a media worker as its parameters: the copy starts fresh (the
        control process never encodes or decodes, so there is no state to carry)."""
        return (G722Codec, (self.name,))

    def __init__(self, name: str = "G722") -> None:
        if name.upper() != "G722":
            raise ValueError(f"not G.722: {name!r}")
        self._impl = _module().G722(SAMPLE_RATE, BIT_RATE)

    def frame_samples(self, ptime_ms: int) -> int:
        """PCM samples at 16 kHz in a frame of ``ptime_ms`` milliseconds (320 for 20 ms)."""
        if ptime_ms <= 0:
            raise ValueError(f"ptime must be positive, not {ptime_ms}")
        return SAMPLE_RATE * ptime_ms // 1000

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode an even number of 16 kHz int16 samples to one byte per sample pair."""
        if pcm.dtype != np.int16:
            raise TypeError(f"G.722 encodes int16 samples, not {pcm.dtype}")
        if pcm.ndim != 1 or pcm.size % 2:
            raise ValueError(f"G.722 encodes a 1-D frame of an even length, not {pcm.shape}")
        # The extension reads an int16 ndarray's buffer directly: it must be contiguous.
        data: bytes = self._impl.encode(np.ascontiguousarray(pcm))
        return data

    def decode(self, data: bytes | bytearray | memoryview) -> Int16Array:
        """Decode a payload to a new int16 array of two samples per byte at 16 kHz."""
        raw = data if isinstance(data, bytes) else bytes(data)  # the extension takes bytes only
        if not raw:
            return np.zeros(0, dtype=np.int16)
        # array('h') by default, or an ndarray when the optional G722-numpy add-on is there.
        return np.frombuffer(self._impl.decode(raw), dtype=np.int16)

    def conceal(self, samples: int) -> Int16Array:
        """Audio for ``samples`` lost samples: silence (G.722 defines no concealment; its
        Appendix III/IV PLC is not in libg722). The decoder state is left as it was."""
        if samples < 0:
            raise ValueError(f"cannot conceal {samples} samples")
        return np.zeros(samples, dtype=np.int16)

    def __repr__(self) -> str:
        return "G722Codec()"


@functools.cache
def probe() -> tuple[bool, str]:
    """(usable, reason): the package imports and a 20 ms 1 kHz tone survives a round trip.

    Cached: the answer cannot change while the process runs. Never raises.
    """
    try:
        codec = G722Codec()
        t = np.arange(4 * 320) / SAMPLE_RATE
        tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        out = np.concatenate([codec.decode(codec.encode(f)) for f in tone.reshape(4, 320)])
    except CodecUnavailableError as exc:
        return False, str(exc)
    except Exception as exc:  # a broken build: say what happened, keep siproc running
        return False, f"g722 package failed its self-test: {exc!r}"
    if out.shape != tone.shape or not 2000 < float(np.sqrt(np.mean(out[320:] ** 2.0))) < 8000:
        return False, "g722 package failed its self-test: the decoded tone is wrong"
    import importlib.metadata  # here: it loads the email package, which nothing else needs

    try:
        version = " " + importlib.metadata.version("g722")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree
        version = ""
    return True, f"G.722 64 kbit/s, g722 package{version}"
