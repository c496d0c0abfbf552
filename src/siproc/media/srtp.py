"""SRTP and SRTCP for one stream (RFC 3711) through libsrtp (pylibsrtp).

Theory of operation. A stream has two crypto contexts: the send context protects our RTP and
RTCP with *our* master key (the one in our SDP), the receive context checks and decrypts the
peer's with *theirs* (RFC 4568 section 6.1). Each is a libsrtp session with one wildcard policy
(``ssrc_any_outbound`` / ``ssrc_any_inbound``), so a peer that changes its SSRC is followed;
libsrtp adds a per-SSRC stream only after a packet for it has authenticated, so packets forged
without the key cost no memory.

Receiving never raises for what arrives from the network: a packet that fails authentication,
is replayed or too old for the replay window (RFC 3711 section 3.3.2), or is malformed, makes
:meth:`SrtpContext.unprotect` return None and is counted in :attr:`SrtpContext.drops`. Sending
raises :class:`SrtpError` (our own packet: a bug, or a key used up), which is a local fault.

Per packet, pylibsrtp's ``Session`` methods check the type, allocate a length cell, copy the
packet into a buffer the session owns, and return a new ``bytes``: a third of the cost of a
packet is that Python around libsrtp. The media hot paths call libsrtp through pylibsrtp's cffi
binding directly instead: :meth:`SrtpContext.protect` reuses its own buffer and length cell,
and :meth:`SrtpContext.unprotect_in_place` checks and decrypts a received packet where it lies,
in the stream's receive buffer, so a packet in costs no copy and no new object. Where the
binding is not what this module expects (another pylibsrtp), the ``Session`` methods serve, the
same packets at the old cost. Figures: ``bench/srtp.py``. No key is ever logged; the
context's ``repr`` names only the suite.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Final

import pylibsrtp

from siproc.sdp.crypto import CryptoSuite, MasterKey
from siproc.sdp.sdes import SrtpParams

__all__ = ["REPLAY_WINDOW", "SrtpContext", "SrtpDrops", "SrtpError"]

#: Replay window in packets (RFC 3711 section 3.3.2 asks for at least 64; libsrtp's default).
REPLAY_WINDOW = 128

_PROFILES = {
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
# libsrtp's error texts (pylibsrtp.ERRORS) by what they mean for a received packet.
_AUTH_FAILED = "authentication failure"
_REPLAYED = ("replay check failed (bad index)", "replay check failed (index too old)")
_BUFFER: Final = 1500  # bytes, as pylibsrtp's own buffer: the packet and libsrtp's trailer
# The largest RTP packet protected: what pylibsrtp takes (room for libsrtp's largest trailer,
# tag and MKI); a larger one goes to pylibsrtp, which refuses it (a local error).
_MAX_PROTECT: Final = _BUFFER - int(getattr(pylibsrtp, "SRTP_MAX_TRAILER_LEN", 144))

_ffi: Any = None  # libsrtp itself, through pylibsrtp's binding (see the module's docstring)
_srtp_protect: Any = None
_srtp_unprotect: Any = None
with contextlib.suppress(ImportError, AttributeError):  # else another pylibsrtp: its methods
    _binding = importlib.import_module("pylibsrtp._binding")
    _srtp_protect, _srtp_unprotect = _binding.lib.srtp_protect, _binding.lib.srtp_unprotect
    _ffi = _binding.ffi


class SrtpError(RuntimeError):
    """Protecting one of our own packets failed (a local fault, never the peer's)."""


@dataclass(slots=True)
class SrtpDrops:
    """Received packets dropped, by reason (RTP and RTCP together)."""

    auth: int = 0  # the authentication tag did not verify (wrong key, tampered, forged)
    replay: int = 0  # seen before, or older than the replay window
    malformed: int = 0  # too short, too long, or otherwise not SRTP/SRTCP

    @property
    def total(self) -> int:
        return self.auth + self.replay + self.malformed


class SrtpContext:
    """One stream's send and receive SRTP/SRTCP contexts (RFC 3711 section 3.2)."""

    __slots__ = (
        "_bound",
        "_bound_to",
        "_cbuf",
        "_cview",
        "_length",
        "_local_key",
        "_remote_key",
        "_rx",
        "_rx_ctx",
        "_tx",
        "_tx_ctx",
        "drops",
        "suite",
    )

    def __init__(self, suite: CryptoSuite, local_key: MasterKey, remote_key: MasterKey) -> None:
        self.suite = suite
        self._local_key = local_key
        self._remote_key = remote_key
        self._tx = pylibsrtp.Session(_policy(suite, local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._rx = pylibsrtp.Session(_policy(suite, remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.drops = SrtpDrops()
        self._tx_ctx: Any = None  # libsrtp's srtp_t of each session: the direct calls
        self._rx_ctx: Any = None
        self._bound: Any = None  # unprotect_in_place(): the receive buffer as a cffi pointer
        self._bound_to: bytearray | None = None
        if _ffi is not None:
            with contextlib.suppress(AttributeError, TypeError):  # else another pylibsrtp
                self._tx_ctx, self._rx_ctx = self._tx._srtp[0], self._rx._srtp[0]
            self._cbuf: Any = _ffi.new("char[]", _BUFFER)
            self._cview: Any = _ffi.buffer(self._cbuf)
            self._length: Any = _ffi.new("int *")

    @classmethod
    def from_params(cls, params: SrtpParams) -> SrtpContext:
        """The contexts for what offer/answer negotiated (:class:`SrtpParams`)."""
        return cls(params.suite, params.local_key, params.remote_key)

    def replaced(self, params: SrtpParams) -> SrtpContext:
        """The contexts after a new offer/answer (a re-INVITE): a direction whose suite and key
        stay the same keeps its context (its rollover counter and replay window, RFC 4568
        section 7.1.4: unchanged keys continue the crypto context); a changed one starts anew.
        The drop counters carry over."""
        fresh = SrtpContext.from_params(params)
        if params.suite is self.suite:
            if params.local_key == self._local_key:
                fresh._tx, fresh._tx_ctx = self._tx, self._tx_ctx
            if params.remote_key == self._remote_key:
                fresh._rx, fresh._rx_ctx = self._rx, self._rx_ctx
        fresh.drops = self.drops
        return fresh

    # -- sending --------------------------------------------------------------------------

    def protect(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one of our RTP packets (RFC 3711 section 3.3)."""
        ctx = self._tx_ctx
        size = len(packet)
        if ctx is not None and size <= _MAX_PROTECT:  # libsrtp directly, in our buffer
            view = self._cview
            view[0:size] = packet
            length = self._length
            length[0] = size
            status = _srtp_protect(ctx, self._cbuf, length)
            if status:
                raise SrtpError(f"cannot protect an RTP packet of {size} bytes: {_text(status)}")
            return view[0 : length[0]]  # type: ignore[no-any-return]
        try:
            return self._tx.protect(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(f"cannot protect an RTP packet of {size} bytes: {exc}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one of our RTCP compound packets (RFC 3711 section 3.4)."""
        try:
            return self._tx.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(
                f"cannot protect an RTCP packet of {len(packet)} bytes: {exc}"
            ) from None

    # -- receiving ------------------------------------------------------------------------

    def unprotect(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        """The RTP packet inside an SRTP packet, or None (dropped and counted)."""
        try:
            return self._rx.unprotect(packet if type(packet) is bytes else bytes(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            self._count(exc)
            return None

    def unprotect_in_place(self, buf: bytearray, size: int) -> int:
        """Check and decrypt the SRTP packet in ``buf[:size]`` where it lies (the receive path:
        ``buf`` is a stream's reused receive buffer, the same one every time): the size of the
        RTP packet now in ``buf``, or -1 (dropped and counted, as :meth:`unprotect`)."""
        ctx = self._rx_ctx
        if ctx is None or size > len(buf):  # pragma: no cover - another pylibsrtp
            plain = self.unprotect(memoryview(buf)[:size])
            if plain is None:
                return -1
            buf[: len(plain)] = plain
            return len(plain)
        if self._bound_to is not buf:
            self._bound = _ffi.from_buffer(buf, require_writable=True)
            self._bound_to = buf
        length = self._length
        length[0] = size
        status = _srtp_unprotect(ctx, self._bound, length)
        if status:
            self._count(pylibsrtp.Error(_text(status)))
            return -1
        return length[0]  # type: ignore[no-any-return]

    def unprotect_rtcp(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        """The RTCP compound packet inside an SRTCP packet, or None (dropped and counted)."""
        try:
            return self._rx.unprotect_rtcp(packet if type(packet) is bytes else bytes(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            self._count(exc)
            return None

    def _count(self, exc: Exception) -> None:
        reason = str(exc)
        if reason == _AUTH_FAILED:
            self.drops.auth += 1
        elif reason in _REPLAYED:
            self.drops.replay += 1
        else:
            self.drops.malformed += 1

    def __repr__(self) -> str:
        return f"SrtpContext({self.suite.value}, drops={self.drops})"


def _text(status: int) -> str:
    """libsrtp's text for an error status (as pylibsrtp raises it)."""
    errors = getattr(pylibsrtp, "ERRORS", ())
    return str(errors[status]) if 0 <= status < len(errors) else f"libsrtp error {status}"


def _policy(suite: CryptoSuite, key: MasterKey, ssrc_type: int) -> pylibsrtp.Policy:
    policy = pylibsrtp.Policy(key=key.key_salt, ssrc_type=ssrc_type, srtp_profile=_PROFILES[suite])
    policy.window_size = REPLAY_WINDOW
    return policy
