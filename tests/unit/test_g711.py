"""G.711 tables against an independent scalar reference, over every input and every code."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from siproc.media.codecs import available_codecs, get_codec
from siproc.media.codecs.g711 import (
    ALAW_DECODE,
    G711Codec,
    decode_alaw,
    decode_ulaw,
    encode_alaw,
    encode_ulaw,
)

# -- independent reference: the Sun g711.c segment-table algorithm on 16-bit samples -------------
# (BIAS 0x84, CLIP 32635, seg_end table), with the negative magnitude taken as the one's
# complement (-x - 1) as the ITU-T G.191 STL does. The module under test transcribes the G.191
# bit-loop form instead; both must agree everywhere.

BIAS = 0x84
CLIP = 32635
SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)


def _search(value: int) -> int:
    for seg, end in enumerate(SEG_END):
        if value <= end:
            return seg
    return len(SEG_END)


def ref_linear2ulaw(pcm: int) -> int:
    if pcm < 0:
        mag, mask = -pcm - 1, 0x7F
    else:
        mag, mask = pcm, 0xFF
    mag = min(mag, CLIP) + BIAS
    seg = _search(mag)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((mag >> (seg + 3)) & 0xF)) ^ mask


def ref_ulaw2linear(code: int) -> int:
    code = ~code & 0xFF
    t = ((code & 0x0F) << 3) + BIAS
    t <<= (code & 0x70) >> 4
    return BIAS - t if code & 0x80 else t - BIAS


def ref_linear2alaw(pcm: int) -> int:
    if pcm >= 0:
        mag, mask = pcm, 0xD5
    else:
        mag, mask = -pcm - 1, 0x55
    seg = _search(mag)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (mag >> 4) & 0xF if seg < 2 else (mag >> (seg + 3)) & 0xF
    return aval ^ mask


def ref_alaw2linear(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if code & 0x80 else -t


ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


@pytest.fixture(scope="module")
def ref_ulaw() -> bytes:
    return bytes(ref_linear2ulaw(int(x)) for x in ALL_PCM)


@pytest.fixture(scope="module")
def ref_alaw() -> bytes:
    return bytes(ref_linear2alaw(int(x)) for x in ALL_PCM)


def test_known_vectors() -> None:
    pcm = np.array([0, -1, 1, 32767, -32768, 8, -8, 1000, -1000], dtype=np.int16)
    assert encode_ulaw(pcm)[:5] == bytes([0xFF, 0x7F, 0xFF, 0x80, 0x00])
    assert encode_alaw(pcm)[:5] == bytes([0xD5, 0x55, 0xD5, 0xAA, 0x2A])
    assert decode_ulaw(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert decode_alaw(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


def test_ulaw_encode_all_inputs(ref_ulaw: bytes) -> None:
    assert encode_ulaw(ALL_PCM) == ref_ulaw


def test_alaw_encode_all_inputs(ref_alaw: bytes) -> None:
    assert encode_alaw(ALL_PCM) == ref_alaw


def test_decode_all_codes() -> None:
    assert decode_ulaw(ALL_CODES).tolist() == [ref_ulaw2linear(c) for c in ALL_CODES]
    assert decode_alaw(ALL_CODES).tolist() == [ref_alaw2linear(c) for c in ALL_CODES]


@pytest.mark.parametrize(
    ("encode", "decode"), [(encode_ulaw, decode_ulaw), (encode_alaw, decode_alaw)]
)
def test_round_trip_is_idempotent(
    encode: Callable[[np.ndarray], bytes], decode: Callable[[bytes], np.ndarray]
) -> None:
    once = decode(ALL_CODES)
    assert np.array_equal(decode(encode(once)), once)


def test_ulaw_round_trip_codes() -> None:
    # Every code survives decode -> encode, except mu-law's negative zero (0x7F decodes to 0,
    # which encodes as positive zero 0xFF).
    again = encode_ulaw(decode_ulaw(ALL_CODES))
    assert [c for c in range(256) if again[c] != c] == [0x7F]
    assert encode_alaw(decode_alaw(ALL_CODES)) == ALL_CODES


def test_encode_is_monotonic() -> None:
    assert np.all(np.diff(decode_ulaw(encode_ulaw(ALL_PCM)).astype(np.int32)) >= 0)
    assert np.all(np.diff(decode_alaw(encode_alaw(ALL_PCM)).astype(np.int32)) >= 0)


def test_quantization_error_bounded() -> None:
    for encode, decode in ((encode_ulaw, decode_ulaw), (encode_alaw, decode_alaw)):
        err = np.abs(decode(encode(ALL_PCM)).astype(np.int32) - ALL_PCM)
        # Half of the top segment's step (1024) or the clipping above the largest level.
        assert err.max() <= 644  # at -32768 vs -32124


def test_audioop_compatibility() -> None:
    """Decoding and A-law encoding equal the old audioop; its mu-law encoder rounds some
    negative samples one step away from the ITU rule (documented in the module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    raw = ALL_PCM.astype("<i2").tobytes()
    assert audioop.ulaw2lin(ALL_CODES, 2) == decode_ulaw(ALL_CODES).astype("<i2").tobytes()
    assert audioop.alaw2lin(ALL_CODES, 2) == decode_alaw(ALL_CODES).astype("<i2").tobytes()
    assert audioop.lin2alaw(raw, 2) == encode_alaw(ALL_PCM)
    theirs = np.frombuffer(audioop.lin2ulaw(raw, 2), dtype=np.uint8)
    ours = np.frombuffer(encode_ulaw(ALL_PCM), dtype=np.uint8)
    differ = np.nonzero(theirs != ours)[0]
    assert len(differ) == 508
    assert np.all(ALL_PCM[differ] < 0)
    step = np.abs(
        decode_ulaw(theirs[differ].tobytes()).astype(np.int32)
        - decode_ulaw(ours[differ].tobytes()).astype(np.int32)
    )
    # one quantization step: adjacent codes
    assert np.all(np.abs(theirs[differ].astype(int) - ours[differ].astype(int)) == 1)
    assert np.all(step > 0)


def test_encode_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError):
        encode_ulaw(np.zeros(160, dtype=np.float32))  # type: ignore[arg-type]


def test_encode_accepts_strided_views() -> None:
    stereo = np.arange(-320, 320, dtype=np.int16).reshape(-1, 2)
    assert encode_alaw(stereo[:, 0]) == encode_alaw(np.ascontiguousarray(stereo[:, 0]))


def test_tables_read_only() -> None:
    with pytest.raises(ValueError):
        ALAW_DECODE[0] = 1


def test_codec_interface() -> None:
    pcmu = get_codec("pcmu")
    pcma = get_codec("PCMA")
    assert isinstance(pcmu, G711Codec)
    assert (pcmu.name, pcmu.payload_type, pcmu.clock_rate, pcmu.sample_rate) == (
        "PCMU",
        0,
        8000,
        8000,
    )
    assert (pcma.name, pcma.payload_type) == ("PCMA", 8)
    assert pcmu.frame_samples(20) == 160
    assert pcma.frame_samples(30) == 240
    frame = (np.sin(np.arange(160) / 5) * 10000).astype(np.int16)
    assert pcmu.encode(frame) == encode_ulaw(frame)
    assert np.array_equal(pcma.decode(pcma.encode(frame)), decode_alaw(encode_alaw(frame)))
    assert available_codecs() == ("PCMU", "PCMA", "G722", "OPUS")
    assert (pcmu.stateful, pcma.stateful) == (False, False)
    assert np.array_equal(pcmu.conceal(160), np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="unsupported codec"):
        get_codec("G729")
    with pytest.raises(ValueError):
        pcmu.frame_samples(0)
