"""SDES: the SDP ``a=crypto`` attribute for SRTP (RFC 4568).

``a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]`` (RFC 4568 section 9.1),
where for SRTP (section 6.1) every key-param is
``inline:<base64(master key || master salt)>[|<lifetime>][|<MKI>:<MKI length>]``.

Two suites are understood: ``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32`` (RFC
4568 section 6.2.1 and 6.2.2; both take a 16-byte master key and a 14-byte master salt, so the
inline value decodes to exactly 30 bytes). :func:`parse_crypto` returns None for any other
(well-formed) suite: the offer/answer layer skips it (section 5.1.1, the answerer picks among
the attributes it supports). Anything malformed raises :class:`CryptoParseError`, whose message
never quotes the key.

Key material never shows in text that could reach a log: :class:`MasterKey`, :class:`InlineKey`
and :class:`CryptoAttribute` have a ``repr`` (and ``str``) that masks it; only
:attr:`CryptoAttribute.value` (what goes into the SDP) and :meth:`MasterKey.base64` spell it
out. :func:`mask_crypto` masks the keys of ``a=crypto`` lines in a whole SDP or SIP message text.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from enum import Enum

from siproc.sdp.model import MediaDescription, SdpError

__all__ = [
    "MAX_LIFETIME",
    "MAX_MKI_LENGTH",
    "MAX_TAG",
    "CryptoAttribute",
    "CryptoParseError",
    "CryptoSuite",
    "InlineKey",
    "MasterKey",
    "crypto_attributes",
    "mask_crypto",
    "parse_crypto",
]

#: RFC 4568 section 9.1: ``tag = 1*9DIGIT``.
MAX_TAG = 999_999_999
#: RFC 4568 section 6.2.1/6.2.2: the maximum SRTP key lifetime of both AES_CM suites is 2^48
#: packets (and the default when the lifetime is left out, section 6.1).
MAX_LIFETIME = 2**48
#: RFC 4568 section 6.1: ``mki-length = 1*3DIGIT ; range 1..128``.
MAX_MKI_LENGTH = 128
#: RFC 4568 section 6.3.1: KDR is 0 (no key derivation rate) or 1..24 (2^n).
_MAX_KDR = 24
#: RFC 4568 section 6.3.7: the replay window size hint is at least 64.
_MIN_WSH = 64
# Digit limits for the integers we accept (a 5000-digit number is refused before int()).
_MAX_LIFETIME_DIGITS = 15  # 2^48 has 15 decimal digits
_MAX_MKI_DIGITS = 309  # 128 bytes = 1024 bits < 10^309
_MAX_PARAM_DIGITS = 9

_CRYPTO_LINE = re.compile(r"(?im)^a=crypto:([^\r\n]*)")
_TAG_AND_SUITE = re.compile(r"([0-9]{1,9}) +([A-Za-z0-9_]{1,64})(?= )")


class CryptoParseError(SdpError):
    """A malformed ``a=crypto`` attribute (RFC 4568 section 9.1); the message names the field
    and never quotes key material."""


class CryptoSuite(Enum):
    """The SRTP crypto-suites we use (RFC 4568 section 6.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"  # RFC 4568 section 6.2.1
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"  # RFC 4568 section 6.2.2

    @property
    def key_length(self) -> int:
        """Master key length in bytes (128 bits for both suites)."""
        return 16

    @property
    def salt_length(self) -> int:
        """Master salt length in bytes (112 bits for both suites)."""
        return 14

    @property
    def key_salt_length(self) -> int:
        """Length of the inline value after base64 decoding: key || salt."""
        return self.key_length + self.salt_length

    @property
    def tag_length(self) -> int:
        """SRTP authentication tag length in bytes (80 or 32 bits; SRTCP always uses 80)."""
        return 10 if self is CryptoSuite.AES_CM_128_HMAC_SHA1_80 else 4


@dataclass(frozen=True, slots=True, repr=False)
class MasterKey:
    """An SRTP master key concatenated with its master salt (RFC 4568 section 6.1).

    ``repr``/``str``/``format`` never show the bytes; :meth:`base64` does, for the SDP only.
    """

    key_salt: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_salt, bytes) or len(self.key_salt) != 30:
            raise ValueError("an SRTP master key and salt is 30 bytes")

    @classmethod
    def generate(cls, suite: CryptoSuite = CryptoSuite.AES_CM_128_HMAC_SHA1_80) -> MasterKey:
        """A fresh random key and salt from the OS's CSPRNG (``secrets``, RFC 4568 section
        8.1 and RFC 4086: keys must be unpredictable)."""
        return cls(secrets.token_bytes(suite.key_salt_length))

    @property
    def key(self) -> bytes:
        return self.key_salt[:16]

    @property
    def salt(self) -> bytes:
        return self.key_salt[16:]

    def base64(self) -> str:
        """The key and salt as the ``inline:`` value spells them (RFC 4648 section 4)."""
        return base64.b64encode(self.key_salt).decode("ascii")

    def __repr__(self) -> str:
        return "MasterKey(<masked>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class InlineKey:
    """One ``inline:`` key-param (RFC 4568 section 6.1): the key, its lifetime in packets (None:
    the suite's default) and its MKI as (value, length in bytes) (None: no MKI)."""

    key: MasterKey
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.lifetime is not None and not 1 <= self.lifetime <= MAX_LIFETIME:
            raise ValueError(f"SRTP key lifetime {self.lifetime} is out of range 1..2^48")
        if self.mki is not None:
            value, length = self.mki
            if not 1 <= length <= MAX_MKI_LENGTH:
                raise ValueError(f"MKI length {length} is out of range 1..{MAX_MKI_LENGTH}")
            if not 0 <= value < 256**length:
                raise ValueError(f"MKI value does not fit in {length} bytes")

    def text(self, key_text: str) -> str:
        out = f"inline:{key_text}"
        if self.lifetime is not None:
            power = self.lifetime.bit_length() - 1
            exact = self.lifetime == 1 << power
            out += f"|2^{power}" if exact and power > 0 else f"|{self.lifetime}"
        if self.mki is not None:
            out += f"|{self.mki[0]}:{self.mki[1]}"
        return out


@dataclass(frozen=True, slots=True, repr=False)
class CryptoAttribute:
    """One ``a=crypto`` line for an SRTP suite (RFC 4568 sections 4, 6).

    ``keys`` holds one key, or several that all carry an MKI of the same length (section 6.1).
    ``session_params`` are kept as written (section 6.3).
    """

    tag: int
    suite: CryptoSuite
    keys: tuple[InlineKey, ...]
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= MAX_TAG:
            raise ValueError(f"crypto tag {self.tag} is out of range 0..{MAX_TAG}")
        if not self.keys:
            raise ValueError("a crypto attribute needs a key")
        if len(self.keys) > 1:
            lengths = {k.mki[1] if k.mki is not None else None for k in self.keys}
            if None in lengths:
                raise ValueError("several keys in one crypto attribute need an MKI each")
            if len(lengths) != 1:
                raise ValueError("the keys of one crypto attribute must have one MKI length")
            values = [k.mki[0] for k in self.keys if k.mki is not None]
            if len(set(values)) != len(values):
                raise ValueError("two keys of one crypto attribute have the same MKI")
        for param in self.session_params:
            if not param or not all("\x21" <= c <= "\x7e" for c in param):
                raise ValueError("a session parameter must be visible ASCII characters")

    @classmethod
    def generate(cls, tag: int, suite: CryptoSuite) -> CryptoAttribute:
        """An attribute with one fresh key (:meth:`MasterKey.generate`), no lifetime, no MKI."""
        return cls(tag, suite, (InlineKey(MasterKey.generate(suite)),))

    @property
    def key(self) -> MasterKey:
        """The first (usually the only) key."""
        return self.keys[0].key

    @property
    def value(self) -> str:
        """The attribute value for ``a=crypto:`` (contains the key: for the SDP only)."""
        return self._text(masked=False)

    def masked(self) -> str:
        """The attribute value with every key replaced by ``<masked>``: safe to log."""
        return self._text(masked=True)

    def _text(self, *, masked: bool) -> str:
        keys = ";".join(k.text("<masked>" if masked else k.key.base64()) for k in self.keys)
        params = [_mask_param(p) if masked else p for p in self.session_params]
        return " ".join([str(self.tag), self.suite.value, keys, *params])

    def unsupported(self) -> str | None:
        """Why we cannot use this attribute (None: we can).

        libsrtp gets one master key per direction, with no MKI, no key derivation rate and
        both encryption and authentication on; so several keys, an MKI, a KDR other than 0,
        ``UNENCRYPTED_*``/``UNAUTHENTICATED_SRTP``, ``FEC_KEY`` and any session parameter we
        do not know make the attribute unusable (RFC 4568 section 6.3: an answerer must not
        accept a crypto attribute with a session parameter it does not support).
        """
        if len(self.keys) > 1:
            return "several master keys (MKI) are not supported"
        if self.keys[0].mki is not None:
            return "an MKI is not supported"
        for param in self.session_params:
            name, _, arg = param.partition("=")
            if name == "KDR" and arg == "0":
                continue
            if name in ("WSH", "FEC_ORDER"):  # a hint; the order only matters with FEC
                continue
            return f"session parameter {name} is not supported"
        return None

    def __repr__(self) -> str:
        return f"CryptoAttribute({self.masked()})"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------
# Parsing


def parse_crypto(value: str) -> CryptoAttribute | None:
    """Parse an ``a=crypto`` value (RFC 4568 section 9.1, SRTP key-params section 6.1).

    Returns None for a well-formed attribute of a crypto-suite we do not know (its key-params
    are not looked at: their syntax belongs to that suite). Raises :class:`CryptoParseError`.
    """
    if not value.isascii() or not all(c == " " or "\x21" <= c <= "\x7e" for c in value):
        raise CryptoParseError("a=crypto contains a control or non-ASCII character")
    fields = value.split(" ")
    fields = [f for f in fields if f]
    if len(fields) < 3:
        raise CryptoParseError("a=crypto needs <tag> <crypto-suite> <key-params>")
    tag_text, suite_text, key_params, *session_params = fields
    if not (tag_text.isdigit() and 1 <= len(tag_text) <= 9):
        raise CryptoParseError("a=crypto tag must be 1 to 9 digits")
    tag = int(tag_text)
    if not all(c.isalnum() or c == "_" for c in suite_text):
        raise CryptoParseError(f"crypto tag {tag}: bad crypto-suite name")
    try:
        suite = CryptoSuite(suite_text)
    except ValueError:
        return None
    keys = tuple(_parse_key_param(tag, suite, p) for p in key_params.split(";"))
    for param in session_params:
        _check_session_param(tag, param)
    try:
        return CryptoAttribute(tag, suite, keys, tuple(session_params))
    except ValueError as exc:
        raise CryptoParseError(f"crypto tag {tag}: {exc}") from None


def _parse_key_param(tag: int, suite: CryptoSuite, text: str) -> InlineKey:
    method, colon, info = text.partition(":")
    if not colon or method.lower() != "inline":
        raise CryptoParseError(f"crypto tag {tag}: SRTP key-params must be inline:<key>")
    key_text, *rest = info.split("|")
    if len(rest) > 2:
        raise CryptoParseError(f"crypto tag {tag}: too many '|' fields in the key")
    try:
        raw = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoParseError(f"crypto tag {tag}: the inline key is not base64") from None
    if len(raw) != suite.key_salt_length:
        raise CryptoParseError(
            f"crypto tag {tag}: the inline key is {len(raw)} bytes, "
            f"{suite.value} needs {suite.key_salt_length}"
        )
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for index, field in enumerate(rest):
        if ":" in field:
            if index != len(rest) - 1:
                raise CryptoParseError(f"crypto tag {tag}: the MKI must come last")
            mki = _parse_mki(tag, field)
        elif index == 0:
            lifetime = _parse_lifetime(tag, field)
        else:
            raise CryptoParseError(f"crypto tag {tag}: bad key field after the lifetime")
    try:
        return InlineKey(MasterKey(raw), lifetime, mki)
    except ValueError as exc:
        raise CryptoParseError(f"crypto tag {tag}: {exc}") from None


def _parse_lifetime(tag: int, text: str) -> int:
    """``lifetime = ["2^"] 1*(DIGIT)`` (RFC 4568 section 6.1), at most 2^48."""
    power = text.startswith("2^")
    digits = text[2:] if power else text
    if not digits.isdigit() or len(digits) > _MAX_LIFETIME_DIGITS:
        raise CryptoParseError(f"crypto tag {tag}: bad key lifetime")
    if power:
        if int(digits) > 48:
            raise CryptoParseError(f"crypto tag {tag}: key lifetime out of range 1..2^48")
        lifetime: int = 1 << int(digits)
    else:
        lifetime = int(digits)
    if not 1 <= lifetime <= MAX_LIFETIME:
        raise CryptoParseError(f"crypto tag {tag}: key lifetime out of range 1..2^48")
    return lifetime


def _parse_mki(tag: int, text: str) -> tuple[int, int]:
    """``mki = mki-value ":" mki-length`` (RFC 4568 section 6.1); a bad length makes the whole
    attribute invalid."""
    value_text, _, length_text = text.partition(":")
    if not (value_text.isdigit() and len(value_text) <= _MAX_MKI_DIGITS):
        raise CryptoParseError(f"crypto tag {tag}: bad MKI value")
    if not (length_text.isdigit() and len(length_text) <= 3):
        raise CryptoParseError(f"crypto tag {tag}: bad MKI length")
    value, length = int(value_text), int(length_text)
    if not 1 <= length <= MAX_MKI_LENGTH:
        raise CryptoParseError(f"crypto tag {tag}: MKI length out of range 1..128")
    if value >= 256**length:
        raise CryptoParseError(f"crypto tag {tag}: MKI value does not fit in {length} bytes")
    return value, length


def _check_session_param(tag: int, param: str) -> None:
    """Validate the SRTP session parameters we know (RFC 4568 section 6.3); others are kept
    (and make the attribute unusable, :meth:`CryptoAttribute.unsupported`)."""
    name, eq, arg = param.partition("=")
    if name in ("KDR", "WSH"):
        if not eq or not arg.isdigit() or len(arg) > _MAX_PARAM_DIGITS:
            raise CryptoParseError(f"crypto tag {tag}: bad {name} session parameter")
        if name == "KDR" and int(arg) > _MAX_KDR:
            raise CryptoParseError(f"crypto tag {tag}: KDR out of range 0..{_MAX_KDR}")
        if name == "WSH" and int(arg) < _MIN_WSH:
            raise CryptoParseError(f"crypto tag {tag}: WSH below {_MIN_WSH}")
    elif name == "FEC_ORDER" and arg not in ("FEC_SRTP", "SRTP_FEC"):
        raise CryptoParseError(f"crypto tag {tag}: bad FEC_ORDER session parameter")
    elif name in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP") and eq:
        raise CryptoParseError(f"crypto tag {tag}: {name} takes no value")


def _mask_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    if name in ("KDR", "WSH", "FEC_ORDER") or not eq:
        return param
    return f"{name}=<masked>"  # FEC_KEY carries key material; unknown ones might


_SUITE_NAMES = frozenset(suite.value for suite in CryptoSuite)

# --------------------------------------------------------------------------------------------
# Helpers


def crypto_attributes(media: MediaDescription) -> tuple[list[CryptoAttribute], list[str]]:
    """The usable ``a=crypto`` attributes of ``media`` in order, and why the others are not.

    Malformed attributes, unknown suites and attributes we cannot use
    (:meth:`CryptoAttribute.unsupported`) are skipped with a reason; so is a second attribute
    with a tag already seen (RFC 4568 section 4.1: tags are unique within a media line).
    """
    usable: list[CryptoAttribute] = []
    problems: list[str] = []
    seen: set[int] = set()
    for value in media.attribute_values("crypto"):
        try:
            attribute = parse_crypto(value or "")
        except CryptoParseError as exc:
            problems.append(str(exc))
            continue
        if attribute is None:
            problems.append("unknown crypto-suite")
            continue
        if attribute.tag in seen:
            problems.append(f"crypto tag {attribute.tag} appears twice")
            continue
        seen.add(attribute.tag)
        reason = attribute.unsupported()
        if reason is not None:
            problems.append(f"crypto tag {attribute.tag}: {reason}")
            continue
        usable.append(attribute)
    return usable, problems


def mask_crypto(text: str) -> str:
    """``text`` (an SDP, or a SIP message carrying one) with the key-params of every
    ``a=crypto`` line replaced by ``<masked>``: safe to log."""
    return _CRYPTO_LINE.sub(_masked_line, text)


def _masked_line(match: re.Match[str]) -> str:
    """Keep the tag and the suite only when the suite is one we know (so that a malformed line
    cannot show a key where the suite should be)."""
    head = _TAG_AND_SUITE.match(match.group(1).lstrip(" "))
    if head is None or head.group(2) not in _SUITE_NAMES:
        return "a=crypto:<masked>"
    return f"a=crypto:{head.group(1)} {head.group(2)} <masked>"
