"""Opus (RFC 6716) over RTP (RFC 7587) through a small ctypes binding to the system libopus.

Theory of operation:

* RTP side (RFC 7587): the RTP clock is always 48 kHz and the SDP always says ``opus/48000/2``
  (section 7), whatever is really sent: the ``/2`` only says that the stream *may* be stereo.
  We encode mono (``sprop-stereo`` defaults to 0, section 6.1), and decode to mono: a libopus
  decoder created with one channel downmixes a stereo stream itself (section 3.4: every Opus
  decoder can output mono). One packet carries one 20 ms frame (960 samples); the RTP
  timestamp advances by the packet's duration at 48 kHz (section 4.1). Peers may send other
  durations (2.5-120 ms): :meth:`OpusCodec.decode` returns whatever the packet holds.
* Encoder: ``OPUS_APPLICATION_VOIP`` (tuned for speech), 32 kbit/s VBR, voice signal hint,
  complexity 5 (about a third of the CPU of 10 for a small loss in quality), no DTX (a packet
  every 20 ms keeps NAT bindings and RTP-timeout watchers happy, as with G.711). The remote's
  ``a=fmtp`` (what it wants to receive, RFC 7587 section 6.1) adjusts this: ``maxaveragebitrate``
  caps the bitrate, ``maxplaybackrate`` limits the audio bandwidth, ``cbr=1`` turns VBR off and
  ``useinbandfec=1`` turns on in-band FEC (with a 5 % expected loss, so that libopus spends
  bits on it).
* Decoder: a lost packet is concealed by ``decode(None)`` or :meth:`OpusCodec.conceal` (libopus
  PLC); :meth:`OpusCodec.decode_fec` recovers a lost packet from the in-band FEC of the next
  one. An undecodable packet from the peer never raises: it is counted and concealed.
* Both states carry history (SILK/CELT predictors, the resampler): one :class:`OpusCodec` per
  RTP stream, made by :func:`siproc.media.codecs.get_codec` for every call.

The binding: ``ctypes.util.find_library("opus")`` then ``CDLL``, with argument and result types
declared for every function used. Encoder and decoder states are allocated by Python
(``opus_*_get_size`` + ``opus_*_init``) so the garbage collector frees them: nothing to close.
The ``*_ctl`` functions are variadic; they are called with plain ``int`` arguments, which the
SysV x86-64 and AArch64 Linux ABIs pass the same way as for a non-variadic call.

Without libopus siproc still runs: :func:`probe` says why Opus is unusable, and the catalogue
never offers it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from siproc.media.codecs.errors import CodecUnavailableError

__all__ = [
    "DEFAULT_BITRATE",
    "DEFAULT_COMPLEXITY",
    "OpusCodec",
    "OpusSettings",
    "parse_fmtp",
    "probe",
]

SAMPLE_RATE: Final = 48000  # RFC 7587 section 4.1: the RTP clock is 48 kHz for every mode
CLOCK_RATE: Final = 48000
DEFAULT_BITRATE: Final = 32000  # bit/s: wideband/super-wideband speech (RFC 7587 section 3.1.1)
DEFAULT_COMPLEXITY: Final = 5  # 0-10; pjsip's default too
FEC_LOSS_PERCENT: Final = 5  # expected loss told to the encoder when in-band FEC is on
MIN_BITRATE: Final = 6000  # RFC 7587 section 6.1: maxaveragebitrate is 6000-510000
MAX_BITRATE: Final = 510000
MAX_PACKET: Final = 1500  # bytes of one encoded packet (libopus: at most 1275 per frame + TOC)
MAX_FRAME: Final = 5760  # samples: 120 ms at 48 kHz, the longest Opus packet (RFC 6716 3.2.5)
PLC_STEP: Final = 120  # samples: PLC durations must be multiples of 2.5 ms

# opus_defines.h
_OPUS_OK: Final = 0
_OPUS_APPLICATION_VOIP: Final = 2048
_OPUS_SIGNAL_VOICE: Final = 3001
_OPUS_SET_BITRATE: Final = 4002
_OPUS_GET_BITRATE: Final = 4003
_OPUS_SET_MAX_BANDWIDTH: Final = 4004
_OPUS_SET_VBR: Final = 4006
_OPUS_SET_COMPLEXITY: Final = 4010
_OPUS_SET_INBAND_FEC: Final = 4012
_OPUS_SET_PACKET_LOSS_PERC: Final = 4014
_OPUS_SET_DTX: Final = 4016
_OPUS_SET_SIGNAL: Final = 4024
#: maxplaybackrate (Hz) -> the narrowest Opus bandwidth that covers it (RFC 7587 section 6.1).
_BANDWIDTHS: Final = ((8000, 1101), (12000, 1102), (16000, 1103), (24000, 1104))
_FULLBAND: Final = 1105

Int16Array = npt.NDArray[np.int16]
_c_int = ctypes.c_int
_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p
_SIGNATURES: Final[dict[str, tuple[Any, list[Any]]]] = {
    "opus_get_version_string": (_c_char_p, []),
    "opus_strerror": (_c_char_p, [_c_int]),
    "opus_encoder_get_size": (_c_int, [_c_int]),
    "opus_encoder_init": (_c_int, [_c_void_p, ctypes.c_int32, _c_int, _c_int]),
    "opus_encode": (ctypes.c_int32, [_c_void_p, _c_void_p, _c_int, _c_void_p, ctypes.c_int32]),
    "opus_encoder_ctl": (_c_int, []),  # variadic: no argtypes
    "opus_decoder_get_size": (_c_int, [_c_int]),
    "opus_decoder_init": (_c_int, [_c_void_p, ctypes.c_int32, _c_int]),
    "opus_decode": (_c_int, [_c_void_p, _c_char_p, ctypes.c_int32, _c_void_p, _c_int, _c_int]),
}


@functools.cache
def _library() -> Any:
    """The loaded libopus with typed functions; raises :class:`CodecUnavailableError`."""
    name = ctypes.util.find_library("opus")
    if name is None:
        raise CodecUnavailableError("libopus not found (install libopus0 or the system's libopus)")
    try:
        lib = ctypes.CDLL(name)
        for function, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, function)
            func.restype = restype
            if argtypes:
                func.argtypes = argtypes
    except (OSError, AttributeError) as exc:
        raise CodecUnavailableError(f"libopus ({name}) cannot be used: {exc}") from None
    return lib


def _error(lib: Any, code: int) -> str:
    text = lib.opus_strerror(code)
    return text.decode("ascii", "replace") if text else f"error {code}"


def version() -> str:
    """libopus's version string (``libopus 1.3.1``); raises if the library is missing."""
    text: bytes = _library().opus_get_version_string()
    return text.decode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """Encoder settings, from our defaults and the remote's fmtp (RFC 7587 section 6.1)."""

    bitrate: int = DEFAULT_BITRATE
    complexity: int = DEFAULT_COMPLEXITY
    inband_fec: bool = False
    cbr: bool = False
    max_bandwidth: int = _FULLBAND

    def __post_init__(self) -> None:
        if not MIN_BITRATE <= self.bitrate <= MAX_BITRATE:
            raise ValueError(f"Opus bitrate {self.bitrate} is outside {MIN_BITRATE}-{MAX_BITRATE}")
        if not 0 <= self.complexity <= 10:
            raise ValueError(f"Opus complexity {self.complexity} is outside 0-10")


def parse_fmtp(fmtp: str | None) -> dict[str, str]:
    """``a=fmtp`` parameters (``key=value;key=value``, RFC 7587 section 6.1) as a dict with
    lower-case keys; malformed items are ignored (the remote's SDP must not break the call)."""
    params: dict[str, str] = {}
    for item in (fmtp or "").split(";"):
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key and eq and value:
            params[key] = value
    return params


def settings_for(fmtp: str | Mapping[str, str] | None) -> OpusSettings:
    """Our encoder settings for a remote that asked for ``fmtp`` (what it wants to receive)."""
    params = fmtp if isinstance(fmtp, Mapping) else parse_fmtp(fmtp)

    def number(key: str) -> int | None:
        value = params.get(key, "")
        # At most 10 digits: a peer's 5000-digit number is ignored, not a failing int().
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 10 else None

    bitrate = DEFAULT_BITRATE
    cap = number("maxaveragebitrate")
    if cap is not None:
        bitrate = min(bitrate, max(MIN_BITRATE, cap))
    bandwidth = _FULLBAND
    playback = number("maxplaybackrate")
    if playback is not None:
        bandwidth = next((bw for rate, bw in _BANDWIDTHS if playback <= rate), _FULLBAND)
    return OpusSettings(
        bitrate=bitrate,
        inband_fec=params.get("useinbandfec") == "1",
        cbr=params.get("cbr") == "1",
        max_bandwidth=bandwidth,
    )


class OpusCodec:
    """Opus for one RTP stream (RFC 7587): 48 kHz mono PCM, 48 kHz RTP clock, stateful.

    ``fmtp`` is the remote's ``a=fmtp`` for the payload type (what it wants to receive); it
    tunes the encoder (see the module notes). Raises :class:`CodecUnavailableError` when
    libopus is missing.
    """

    __slots__ = (
        "_dec",
        "_enc",
        "_lib",
        "_out",
        "_out_addr",
        "_pcm",
        "_pcm_addr",
        "decode_errors",
        "last_samples",
        "settings",
    )

    name: Final = "opus"
    payload_type: Final = None  # dynamic (RFC 7587 section 7): the SDP assigns it
    sample_rate: Final = SAMPLE_RATE
    clock_rate: Final = CLOCK_RATE
    channels: Final = 1  # PCM channels; the SDP's "/2" is RFC 7587 section 7's fixed spelling
    #: Encoder and decoder carry history: every frame must be encoded, silence included.
    stateful: Final = True

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """A codec crosses to a media worker as its parameters: the copy starts fresh (the
        control process never encodes or decodes, so there is no state to carry)."""
        return (OpusCodec, (self.name, None, self.settings))

    def __init__(
        self, name: str = "opus", fmtp: str | None = None, settings: OpusSettings | None = None
    ) -> None:
        if name.lower() != "opus":
            raise ValueError(f"not Opus: {name!r}")
        lib = self._lib = _library()
        self.settings = settings if settings is not None else settings_for(fmtp)
        self._enc = ctypes.create_string_buffer(lib.opus_encoder_get_size(1))
        err = lib.opus_encoder_init(self._enc, SAMPLE_RATE, 1, _OPUS_APPLICATION_VOIP)
        if err != _OPUS_OK:
            raise CodecUnavailableError(f"opus_encoder_init failed: {_error(lib, err)}")
        self._dec = ctypes.create_string_buffer(lib.opus_decoder_get_size(1))
        err = lib.opus_decoder_init(self._dec, SAMPLE_RATE, 1)
        if err != _OPUS_OK:
            raise CodecUnavailableError(f"opus_decoder_init failed: {_error(lib, err)}")
        s = self.settings
        for request, value in (
            (_OPUS_SET_BITRATE, s.bitrate),
            (_OPUS_SET_COMPLEXITY, s.complexity),
            (_OPUS_SET_SIGNAL, _OPUS_SIGNAL_VOICE),
            (_OPUS_SET_VBR, 0 if s.cbr else 1),
            (_OPUS_SET_DTX, 0),
            (_OPUS_SET_INBAND_FEC, 1 if s.inband_fec else 0),
            (_OPUS_SET_PACKET_LOSS_PERC, FEC_LOSS_PERCENT if s.inband_fec else 0),
            (_OPUS_SET_MAX_BANDWIDTH, s.max_bandwidth),
        ):
            err = lib.opus_encoder_ctl(self._enc, _c_int(request), ctypes.c_int32(value))
            if err != _OPUS_OK:
                raise CodecUnavailableError(f"opus_encoder_ctl({request}) failed: {err}")
        self._out = ctypes.create_string_buffer(MAX_PACKET)
        self._out_addr = ctypes.addressof(self._out)
        self._pcm = np.zeros(MAX_FRAME, dtype=np.int16)
        self._pcm_addr = self._pcm.ctypes.data
        #: Samples in the last decoded packet: the length ``decode(None)`` conceals.
        self.last_samples = 960
        #: Packets from the peer that libopus refused (each concealed instead).
        self.decode_errors = 0

    @property
    def bitrate(self) -> int:
        """The encoder's target bitrate, read back from libopus (bit/s)."""
        value = ctypes.c_int32()
        self._lib.opus_encoder_ctl(self._enc, _c_int(_OPUS_GET_BITRATE), ctypes.byref(value))
        return value.value

    def frame_samples(self, ptime_ms: int) -> int:
        """PCM samples at 48 kHz in a frame of ``ptime_ms`` ms (960 for 20 ms)."""
        if ptime_ms <= 0:
            raise ValueError(f"ptime must be positive, not {ptime_ms}")
        return SAMPLE_RATE * ptime_ms // 1000

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame of 48 kHz mono int16 PCM: 2.5, 5, 10, 20, 40 or 60 ms long."""
        if pcm.dtype != np.int16:
            raise TypeError(f"Opus encodes int16 samples, not {pcm.dtype}")
        if pcm.ndim != 1:
            raise ValueError(f"Opus encodes a 1-D mono frame, not shape {pcm.shape}")
        pcm = np.ascontiguousarray(pcm)
        size = self._lib.opus_encode(
            self._enc, pcm.ctypes.data, pcm.size, self._out_addr, MAX_PACKET
        )
        if size < 0:  # OPUS_BAD_ARG for a frame size Opus does not have: our bug
            raise ValueError(f"opus_encode of {pcm.size} samples: {_error(self._lib, size)}")
        return ctypes.string_at(self._out_addr, size)

    def decode(self, data: bytes | bytearray | memoryview | None) -> Int16Array:
        """Decode one packet to a new 48 kHz mono int16 array (its length is the packet's
        duration). ``None`` or an empty payload is a lost packet: concealed (PLC) for the
        length of the last one. An invalid packet is concealed too, and counted."""
        if not data:
            return self.conceal(self.last_samples)
        raw = data if isinstance(data, bytes) else bytes(data)
        count = self._lib.opus_decode(self._dec, raw, len(raw), self._pcm_addr, MAX_FRAME, 0)
        if count < 0:
            self.decode_errors += 1
            return self.conceal(self.last_samples)
        self.last_samples = count
        return self._pcm[:count].copy()

    def decode_fec(self, data: bytes | bytearray | memoryview, samples: int) -> Int16Array:
        """Recover the packet lost just before ``data`` from ``data``'s in-band FEC (RFC 6716
        section 2.1.7); ``samples`` is the lost duration. libopus falls back to PLC when
        ``data`` carries no FEC. Decode ``data`` itself with :meth:`decode` afterwards."""
        samples = self._plc_length(samples)
        raw = data if isinstance(data, bytes) else bytes(data)
        if samples == 0:
            return np.zeros(0, dtype=np.int16)
        count = self._lib.opus_decode(self._dec, raw, len(raw), self._pcm_addr, samples, 1)
        if count < 0:
            self.decode_errors += 1
            return self.conceal(samples)
        return self._pcm[:count].copy()

    def conceal(self, samples: int) -> Int16Array:
        """Packet loss concealment: ``samples`` samples (rounded up to 2.5 ms steps) that
        continue the decoded signal smoothly, and keep the decoder in step."""
        samples = self._plc_length(samples)
        out = np.empty(samples, dtype=np.int16)
        done = 0
        while done < samples:
            step = min(samples - done, MAX_FRAME)
            count = self._lib.opus_decode(self._dec, None, 0, self._pcm_addr, step, 0)
            if count <= 0:  # cannot happen for a valid length; stay silent rather than fail
                out[done:] = 0
                break
            out[done : done + count] = self._pcm[:count]
            done += count
        return out

    @staticmethod
    def _plc_length(samples: int) -> int:
        if samples < 0:
            raise ValueError(f"cannot conceal {samples} samples")
        return -(-samples // PLC_STEP) * PLC_STEP

    def __repr__(self) -> str:
        return f"OpusCodec(bitrate={self.settings.bitrate})"


@functools.cache
def probe() -> tuple[bool, str]:
    """(usable, reason): libopus loads and a 1 kHz tone survives an encode/decode round trip.

    Cached for the life of the process. Never raises.
    """
    try:
        codec = OpusCodec()
        t = np.arange(10 * 960) / SAMPLE_RATE
        tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        out = np.concatenate([codec.decode(codec.encode(f)) for f in tone.reshape(10, 960)])
        lib_version = version()
    except CodecUnavailableError as exc:
        return False, str(exc)
    except Exception as exc:  # a broken library: say what happened, keep siproc running
        return False, f"libopus failed its self-test: {exc!r}"
    level = float(np.sqrt(np.mean(out[4800:].astype(np.float64) ** 2)))
    if out.shape != tone.shape or not 2000 < level < 8000:
        return False, f"libopus failed its self-test: decoded tone of {out.shape} at {level:.0f}"
    return True, f"Opus 48 kHz mono, {lib_version}"
