"""SDES keying in offer/answer (RFC 4568 section 5, 7): which transport profile to offer, which
``a=crypto`` to answer with, and what an answer to our offer settled.

Theory of operation. In SDES each side's ``a=crypto`` carries the key *it sends with* (RFC 4568
section 6.1): we protect with our own key and unprotect with the peer's. :class:`SrtpParams`
holds the outcome for one stream (the suite, our key, their key).

:class:`SrtpMode` is the policy (``SIPROC_SRTP``):

- ``off``: offer plain ``RTP/AVP`` without keys; answer ``RTP/AVP`` offers plainly (ignoring any
  ``a=crypto`` in them, which tells a best-effort offerer to fall back to RTP); an ``RTP/SAVP``
  stream is not acceptable.
- ``optional``: offer ``RTP/AVP`` *with* ``a=crypto`` (the "best-effort SRTP" many phones and
  PBXes use: a peer without SRTP ignores the keys and answers plainly); accept ``RTP/SAVP``
  with keys, ``RTP/AVP`` with keys (answered with keys: SRTP) and plain ``RTP/AVP``.
- ``mandatory``: offer ``RTP/SAVP`` with keys (RFC 4568 section 5.1.1); accept only streams
  with a usable ``a=crypto`` (``RTP/SAVP``, or a best-effort ``RTP/AVP`` offer, answered with
  keys so the media is encrypted either way); anything else is refused (488 at the call layer).

Our offers list AES_CM_128_HMAC_SHA1_80 (tag 1) before AES_CM_128_HMAC_SHA1_32 (tag 2). As
answerer we take the first usable attribute in the offer's order (RFC 4568 section 7.1.1: the
offerer lists its preference) and answer with the same tag and suite and a fresh key of our own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from siproc.sdp.crypto import (
    CryptoAttribute,
    CryptoParseError,
    CryptoSuite,
    MasterKey,
    crypto_attributes,
    parse_crypto,
)
from siproc.sdp.model import MediaDescription

__all__ = [
    "OFFERED_SUITES",
    "AnswerKeying",
    "KeyingError",
    "SrtpMode",
    "SrtpParams",
    "accept_keying",
    "answer_keying",
    "offer_keying",
]

#: What our offers list, in our order of preference (RFC 4568 section 6.2: 80-bit tags first).
OFFERED_SUITES = (CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32)
_AVP = "RTP/AVP"
_SAVP = "RTP/SAVP"


class SrtpMode(Enum):
    """``SIPROC_SRTP``: whether media is protected with SRTP (see the module docstring)."""

    OFF = "off"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"


class KeyingError(ValueError):
    """The peer's keying in an answer is unusable (the message never quotes a key)."""


@dataclass(frozen=True, slots=True)
class SrtpParams:
    """The SRTP settings one stream negotiated: ``local_key`` protects what we send (it is in
    our SDP), ``remote_key`` unprotects what we receive (RFC 4568 section 6.1). Both reprs are
    masked (:class:`~siproc.sdp.crypto.MasterKey`)."""

    suite: CryptoSuite
    local_key: MasterKey
    remote_key: MasterKey
    tag: int


@dataclass(frozen=True, slots=True)
class AnswerKeying:
    """How we answer one offered stream: ``attribute`` goes into our answer (None: none), and
    ``params`` is the SRTP outcome (None: plain RTP)."""

    attribute: CryptoAttribute | None
    params: SrtpParams | None


def offer_keying(mode: SrtpMode) -> tuple[str, list[CryptoAttribute]]:
    """The transport profile and the ``a=crypto`` attributes (fresh keys) of our offer."""
    if mode is SrtpMode.OFF:
        return _AVP, []
    attributes = [
        CryptoAttribute.generate(tag, suite) for tag, suite in enumerate(OFFERED_SUITES, 1)
    ]
    return (_SAVP if mode is SrtpMode.MANDATORY else _AVP), attributes


def answer_keying(media: MediaDescription, mode: SrtpMode) -> AnswerKeying | str:
    """How to answer the offered ``media`` under ``mode``, or why it is not acceptable.

    ``media.proto`` must be ``RTP/AVP`` or ``RTP/SAVP`` (the caller checks).
    """
    secure = media.proto == _SAVP
    if mode is SrtpMode.OFF:
        if secure:
            return "SRTP (RTP/SAVP) is off here"
        return AnswerKeying(None, None)
    usable, problems = crypto_attributes(media)
    if not usable:
        if secure or mode is SrtpMode.MANDATORY:
            why = "; ".join(problems) if problems else "no a=crypto offered"
            return f"SRTP is required and no a=crypto is usable ({why})"
        return AnswerKeying(None, None)
    chosen = usable[0]
    ours = CryptoAttribute.generate(chosen.tag, chosen.suite)
    return AnswerKeying(ours, SrtpParams(chosen.suite, ours.key, chosen.key, chosen.tag))


def accept_keying(offered: MediaDescription, answered: MediaDescription) -> SrtpParams | None:
    """The SRTP outcome of our ``offered`` stream from its ``answered`` one (RFC 4568 section
    7.1.2 and 7.1.3): None for plain RTP; raises :class:`KeyingError`.

    Our keys are read back from our own offer, so the caller keeps no extra state.
    """
    ours, _ = crypto_attributes(offered)
    if not ours:
        if answered.proto == _SAVP:
            raise KeyingError("the answer uses RTP/SAVP but we offered plain RTP/AVP")
        return None  # keys in an answer to a plain offer mean nothing; RTP it is
    if answered.proto != offered.proto:
        raise KeyingError(f"the answer uses {answered.proto}, we offered {offered.proto}")
    values = answered.attribute_values("crypto")
    if not values:
        if offered.proto == _SAVP:
            raise KeyingError("the answer has no a=crypto for RTP/SAVP")
        return None  # our best-effort (optional) offer was answered plainly
    if len(values) > 1:
        raise KeyingError(f"the answer has {len(values)} a=crypto lines, not one")
    try:
        theirs = parse_crypto(values[0] or "")
    except CryptoParseError as exc:
        raise KeyingError(f"the answer's a=crypto is malformed: {exc}") from None
    if theirs is None:
        raise KeyingError("the answer's a=crypto has a crypto-suite we did not offer")
    mine = next((a for a in ours if a.tag == theirs.tag), None)
    if mine is None:
        raise KeyingError(f"the answer's crypto tag {theirs.tag} was not offered")
    if mine.suite is not theirs.suite:
        raise KeyingError(
            f"the answer's crypto tag {theirs.tag} is {theirs.suite.value}, "
            f"we offered {mine.suite.value}"
        )
    reason = theirs.unsupported()
    if reason is not None:
        raise KeyingError(f"the answer's crypto tag {theirs.tag}: {reason}")
    return SrtpParams(theirs.suite, mine.key, theirs.key, theirs.tag)
