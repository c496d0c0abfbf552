"""G.711 PCMU (mu-law) and PCMA (A-law) with numpy lookup tables, bit-exact with ITU-T G.191.

Theory of operation: G.711 maps a 14-bit (mu-law) or 13-bit (A-law) linear sample to an 8-bit
code. The scalar functions below are a direct transcription of the ITU-T's own reference
implementation, ``ulaw_compress``/``ulaw_expand``/``alaw_compress``/``alaw_expand`` in the G.191
Software Tools Library (STL) ``g711.c``. At import they fill four tables:

* encode: 65536 entries, indexed by the 16-bit sample reinterpreted as unsigned (``uint16``),
* decode: 256 entries, indexed by the code, giving the 16-bit sample (the quantization interval's
  midpoint, left-justified: the classic ``ulaw2linear``/``alaw2linear`` values).

A 16-bit sample is reduced to G.711's resolution by dropping low bits: ``x >> 2`` for mu-law,
``x >> 3`` for A-law (whose encoder then uses only the top 12 of those 13 bits). Negative
samples use the one's complement (``~x``, i.e. ``-x - 1``), which makes the quantizer symmetric
around -0.5, the middle of the two's complement range.

Compatibility (checked over all 65536 inputs in the tests): decoding is identical to the Sun
``g711.c`` functions and to Python's former ``audioop`` (``ulaw2lin``/``alaw2lin``); A-law
encoding is identical to ``audioop.lin2alaw``. ``audioop.lin2ulaw`` differs from the ITU rule in
508 negative inputs, always by one quantization step at an interval boundary: it shifts before
negating (``-(x >> 2)``), which rounds negative magnitudes up. We follow the ITU.

The hot path is one numpy table lookup per frame: about 1 us for 160 samples (decoding uses
``take``, measured about 35% faster than fancy indexing for the 256-entry table).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCMA_PAYLOAD_TYPE",
    "PCMU_PAYLOAD_TYPE",
    "G711Codec",
    "alaw_compress",
    "alaw_expand",
    "decode_alaw",
    "decode_ulaw",
    "encode_alaw",
    "encode_ulaw",
    "ulaw_compress",
    "ulaw_expand",
]

PCMU_PAYLOAD_TYPE: Final = 0  # RFC 3551 section 6, table 4
PCMA_PAYLOAD_TYPE: Final = 8  # RFC 3551 section 6, table 4


# -- scalar reference (ITU-T G.191 STL g711.c), 16-bit two's complement in, code out ------------


def ulaw_compress(x: int) -> int:
    """Encode one 16-bit sample to a mu-law code (G.191 ``ulaw_compress``)."""
    # 14-bit magnitude (one's complement for negatives) plus the bias 33 (= 132 >> 2).
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    # Segment: 1 + the number of significant bits of absno above bit 5.
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x8 - segno
    low_nibble = 0xF - ((absno >> segno) & 0xF)
    code = (high_nibble << 4) | low_nibble
    if x >= 0:
        code |= 0x80
    return code


def ulaw_expand(code: int) -> int:
    """Decode one mu-law code to a 16-bit sample (G.191 ``ulaw_expand``, 14 bits left-justified)."""
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x7
    segment = exponent + 1
    mantissa &= 0xF
    step = 4 << segment  # one quantization step
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def alaw_compress(x: int) -> int:
    """Encode one 16-bit sample to an A-law code (G.191 ``alaw_compress``)."""
    ix = (~x) >> 4 if x < 0 else x >> 4  # 0 <= ix < 2048
    if ix > 15:  # exponent 0 for ix <= 15
        iexp = 1
        while ix > 16 + 15:  # find mantissa and exponent
            ix >>= 1
            iexp += 1
        ix -= 16  # remove the leading 1
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80  # sign bit
    return ix ^ 0x55  # toggle the even bits


def alaw_expand(code: int) -> int:
    """Decode one A-law code to a 16-bit sample (G.191 ``alaw_expand``, 13 bits left-justified)."""
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16  # leading 1
    mant = (mant << 4) + 0x8  # left-justify, add half a quantization step
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


# -- tables ---------------------------------------------------------------------------------------

Int16Array = npt.NDArray[np.int16]


def _encode_table(compress_at_resolution: list[int], shift: int) -> npt.NDArray[np.uint8]:
    """Expand a table over the codec's native resolution (``x >> shift``) to all 65536 inputs,
    ordered by the sample's unsigned reinterpretation (``uint16``), the index the hot path uses."""
    by_signed = np.repeat(np.array(compress_at_resolution, dtype=np.uint8), 1 << shift)
    return np.roll(by_signed, -32768)  # signed order -32768..32767 -> uint16 order 0..65535


def _build_tables() -> tuple[npt.NDArray[np.uint8], Int16Array, npt.NDArray[np.uint8], Int16Array]:
    # Every output depends on x only through x >> 2 (mu-law) or x >> 4 (A-law) (the first step
    # of each compress function; ~x >> n == ~(x >> n)), so evaluating one representative per
    # group is exact and 4-16 times cheaper at import. The tests check all 65536 inputs.
    ulaw = [ulaw_compress(k << 2) for k in range(-8192, 8192)]
    alaw = [alaw_compress(k << 4) for k in range(-2048, 2048)]
    ulaw_enc = _encode_table(ulaw, 2)
    alaw_enc = _encode_table(alaw, 4)
    ulaw_dec = np.array([ulaw_expand(c) for c in range(256)], dtype=np.int16)
    alaw_dec = np.array([alaw_expand(c) for c in range(256)], dtype=np.int16)
    for table in (ulaw_enc, ulaw_dec, alaw_enc, alaw_dec):
        table.flags.writeable = False
    return ulaw_enc, ulaw_dec, alaw_enc, alaw_dec


ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE = _build_tables()


# -- vector API -----------------------------------------------------------------------------------


def _as_index(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint16]:
    if pcm.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, not {pcm.dtype}")
    return pcm.view(np.uint16)


def encode_ulaw(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to mu-law (PCMU) bytes, one per sample."""
    return ULAW_ENCODE[_as_index(pcm)].tobytes()


def decode_ulaw(data: bytes | bytearray | memoryview) -> Int16Array:
    """Decode mu-law (PCMU) bytes to a new int16 array."""
    return ULAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))


def encode_alaw(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to A-law (PCMA) bytes, one per sample."""
    return ALAW_ENCODE[_as_index(pcm)].tobytes()


def decode_alaw(data: bytes | bytearray | memoryview) -> Int16Array:
    """Decode A-law (PCMA) bytes to a new int16 array."""
    return ALAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))


class G711Codec:
    """PCMU or PCMA (RFC 3551 section 4.5.14): 8 kHz, one byte per sample, stateless."""

    __slots__ = ("_decode", "_encode", "name", "payload_type")

    clock_rate: Final = 8000
    sample_rate: Final = 8000
    channels: Final = 1
    #: No state between frames: the media path may encode silence once and resend it.
    stateful: Final = False

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """A codec crosses to a media worker as its parameters: the copy starts fresh (the
        control process never encodes or decodes, so there is no state to carry)."""
        return (G711Codec, (self.name,))

    def __init__(self, name: str) -> None:
        upper = name.upper()
        if upper == "PCMU":
            self._encode, self._decode = encode_ulaw, decode_ulaw
            self.payload_type: int = PCMU_PAYLOAD_TYPE
        elif upper == "PCMA":
            self._encode, self._decode = encode_alaw, decode_alaw
            self.payload_type = PCMA_PAYLOAD_TYPE
        else:
            raise ValueError(f"not a G.711 codec: {name!r}")
        self.name = upper

    def frame_samples(self, ptime_ms: int) -> int:
        """PCM samples (at ``sample_rate``) in a frame of ``ptime_ms`` milliseconds."""
        if ptime_ms <= 0:
            raise ValueError(f"ptime must be positive, not {ptime_ms}")
        return self.sample_rate * ptime_ms // 1000

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return self._encode(pcm)

    def decode(self, data: bytes | bytearray | memoryview) -> Int16Array:
        return self._decode(data)

    def conceal(self, samples: int) -> Int16Array:
        """Audio for ``samples`` lost samples: silence (G.711 Appendix I PLC is not done)."""
        if samples < 0:
            raise ValueError(f"cannot conceal {samples} samples")
        return np.zeros(samples, dtype=np.int16)

    def __repr__(self) -> str:
        return f"G711Codec({self.name!r})"
