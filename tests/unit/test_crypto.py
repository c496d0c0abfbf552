"""SDES a=crypto attributes (siproc.sdp.crypto, RFC 4568): parsing, serializing, masking."""

from __future__ import annotations

import base64
import logging
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sdp.crypto import (
    MAX_LIFETIME,
    CryptoAttribute,
    CryptoParseError,
    CryptoSuite,
    InlineKey,
    MasterKey,
    crypto_attributes,
    mask_crypto,
    parse_crypto,
)
from siproc.sdp.model import MediaDescription, SdpError, parse_sdp

AES80 = CryptoSuite.AES_CM_128_HMAC_SHA1_80
AES32 = CryptoSuite.AES_CM_128_HMAC_SHA1_32
# RFC 4568 section 4's example key (30 bytes: 16 key + 14 salt).
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_BYTES = base64.b64decode(RFC_KEY)


def test_rfc_4568_example_with_lifetime_and_mki() -> None:
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32")
    assert attr is not None
    assert attr.tag == 1 and attr.suite is AES80
    assert attr.keys == (InlineKey(MasterKey(RFC_BYTES), lifetime=2**20, mki=(1, 32)),)
    assert attr.key.key == RFC_BYTES[:16] and attr.key.salt == RFC_BYTES[16:]
    assert attr.value == f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32"
    assert attr.unsupported() == "an MKI is not supported"


def test_plain_key_as_phones_send_it_round_trips() -> None:
    value = f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}"
    attr = parse_crypto(value)
    assert attr is not None
    assert attr.suite is AES32 and attr.keys[0].lifetime is None and attr.keys[0].mki is None
    assert attr.value == value
    assert attr.unsupported() is None
    assert parse_crypto(attr.value) == attr


def test_decimal_lifetime_and_method_case() -> None:
    attr = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_80 INLINE:{RFC_KEY}|1000")
    assert attr is not None and attr.keys[0].lifetime == 1000
    assert attr.value.endswith("|1000") and "inline:" in attr.value


def test_several_keys_need_mki_of_one_length() -> None:
    other = base64.b64encode(bytes(range(30))).decode()
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4;inline:{other}|2:4")
    assert attr is not None and len(attr.keys) == 2
    assert attr.unsupported() == "several master keys (MKI) are not supported"
    for bad in (
        f"inline:{RFC_KEY};inline:{other}",  # no MKI
        f"inline:{RFC_KEY}|1:4;inline:{other}|2:2",  # MKI lengths differ
        f"inline:{RFC_KEY}|1:4;inline:{other}|1:4",  # same MKI twice
    ):
        with pytest.raises(CryptoParseError):
            parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 {bad}")


def test_unknown_suite_is_skipped_not_fatal() -> None:
    assert parse_crypto("3 AEAD_AES_256_GCM inline:whatever-its-syntax-is") is None
    assert parse_crypto("3 F8_128_HMAC_SHA1_80 inline:x|y|z;foo:bar") is None


def test_session_parameters() -> None:
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=0 WSH=128")
    assert attr is not None and attr.session_params == ("KDR=0", "WSH=128")
    assert attr.unsupported() is None
    for param, reason in (
        ("KDR=1", "session parameter KDR is not supported"),
        ("UNENCRYPTED_SRTP", "session parameter UNENCRYPTED_SRTP is not supported"),
        ("UNAUTHENTICATED_SRTP", "session parameter UNAUTHENTICATED_SRTP is not supported"),
        ("FEC_KEY=inline:" + RFC_KEY, "session parameter FEC_KEY is not supported"),
        ("X_VENDOR=1", "session parameter X_VENDOR is not supported"),
    ):
        attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} {param}")
        assert attr is not None and attr.unsupported() == reason


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "needs <tag>"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs <tag>"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag must be 1 to 9 digits"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag must be 1 to 9 digits"),
        (f"1 AES-CM inline:{RFC_KEY}", "bad crypto-suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "must be inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY[:-4], "is 27 bytes"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY + "AAAA", "is 33 bytes"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY[:-1] + "!", "not base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^49", "lifetime out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|0", "lifetime out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{'9' * 5000}", "bad key lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^x", "bad key lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:0", "MKI length out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:129", "MKI length out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|256:1", "does not fit in 1 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:", "bad MKI length"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4|2^20", "MKI must come last"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|2^20", "bad key field"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1|2|3:4", "too many '|'"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=25", "KDR out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=x", "bad KDR"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=63", "WSH below 64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_ORDER=X", "bad FEC_ORDER"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP=1", "takes no value"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}\x00", "control"),
        (f"1 AES_CM_128_HMAC_SHA1_80\tinline:{RFC_KEY}", "control"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} é", "non-ASCII"),
    ],
)
def test_malformed_attributes_are_refused_without_quoting_the_key(value: str, message: str) -> None:
    with pytest.raises(CryptoParseError, match=message) as info:
        parse_crypto(value)
    assert isinstance(info.value, SdpError)
    assert RFC_KEY[:12] not in str(info.value)


def test_reprs_never_show_key_material() -> None:
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20 FEC_KEY=inline:{RFC_KEY}")
    assert attr is not None
    texts = [
        repr(attr),
        str(attr),
        f"{attr}",
        attr.masked(),
        repr(attr.keys),
        repr(attr.key),
        str(attr.key),
        f"{attr.key}",
        repr((attr, [attr.key])),
    ]
    for text in texts:
        assert RFC_KEY not in text and RFC_KEY[:8] not in text
        assert repr(RFC_BYTES)[2:14] not in text and RFC_BYTES.hex()[:8] not in text
    assert attr.masked() == "1 AES_CM_128_HMAC_SHA1_80 inline:<masked>|2^20 FEC_KEY=<masked>"


def test_logging_an_attribute_at_any_level_masks_it(caplog: pytest.LogCaptureFixture) -> None:
    attr = CryptoAttribute.generate(1, AES80)
    secret = attr.key.base64()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("offer %s %r", attr, attr.key)
    assert caplog.text and secret not in caplog.text and "<masked>" in caplog.text


def test_generated_keys_are_fresh_and_the_right_length() -> None:
    keys = {MasterKey.generate(suite).key_salt for suite in CryptoSuite for _ in range(50)}
    assert len(keys) == 100 and all(len(k) == 30 for k in keys)
    attr = CryptoAttribute.generate(5, AES32)
    parsed = parse_crypto(attr.value)
    assert parsed == attr and attr.value.startswith("5 AES_CM_128_HMAC_SHA1_32 inline:")
    assert pickle.loads(pickle.dumps(attr)) == attr  # it crosses the media worker channel


def test_constructors_validate() -> None:
    with pytest.raises(ValueError):
        MasterKey(b"\x00" * 29)
    with pytest.raises(ValueError):
        InlineKey(MasterKey(RFC_BYTES), lifetime=MAX_LIFETIME + 1)
    with pytest.raises(ValueError):
        InlineKey(MasterKey(RFC_BYTES), mki=(256, 1))
    with pytest.raises(ValueError):
        CryptoAttribute(1_000_000_000, AES80, (InlineKey(MasterKey(RFC_BYTES)),))
    with pytest.raises(ValueError):
        CryptoAttribute(1, AES80, ())
    with pytest.raises(ValueError):
        CryptoAttribute(1, AES80, (InlineKey(MasterKey(RFC_BYTES)),), ("A B",))


def test_suite_lengths() -> None:
    assert AES80.key_salt_length == AES32.key_salt_length == 30
    assert AES80.tag_length == 10 and AES32.tag_length == 4


def media_with(*crypto: str, proto: str = "RTP/SAVP") -> MediaDescription:
    media = MediaDescription("audio", 4000, proto, ["0"])
    media.attributes += [("crypto", value) for value in crypto]
    return media


def test_crypto_attributes_keeps_usable_ones_in_order_with_reasons() -> None:
    media = media_with(
        f"1 AEAD_AES_128_GCM inline:{RFC_KEY}AAAA",
        f"2 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4",
        "3 AES_CM_128_HMAC_SHA1_80 inline:short",
        f"4 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}",
        f"4 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
        f"5 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
    )
    usable, problems = crypto_attributes(media)
    assert [(a.tag, a.suite) for a in usable] == [(4, AES32), (5, AES80)]
    assert problems == [
        "unknown crypto-suite",
        "crypto tag 2: an MKI is not supported",
        "crypto tag 3: the inline key is not base64",
        "crypto tag 4 appears twice",
    ]
    assert not any(RFC_KEY in p for p in problems)


def test_mask_crypto_in_sdp_and_sip_text() -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20\r\n"
        f"A=CRYPTO:2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} KDR=0\r\n"
        f"a=crypto:3 {RFC_KEY}\r\n"
        f"a=crypto:inline:{RFC_KEY}\r\n"
        "a=sendrecv\r\n"
    )
    masked = mask_crypto(sdp)
    assert RFC_KEY not in masked
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 <masked>\r\n" in masked
    assert "a=crypto:2 AES_CM_128_HMAC_SHA1_32 <masked>\r\n" in masked
    assert masked.count("a=crypto:<masked>") == 2
    assert masked.endswith("a=sendrecv\r\n")
    parsed = parse_sdp(sdp.replace("A=CRYPTO", "a=crypto").encode())
    assert RFC_KEY not in repr(parsed) and RFC_KEY not in repr(parsed.media[0])
    assert "m=audio 4000 RTP/SAVP 0" in masked


_ANY = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x80), max_size=80)
_NEAR = st.builds(
    lambda suite, key, tail: f"1 {suite} inline:{key}{tail}",
    st.sampled_from([s.value for s in CryptoSuite]),
    st.sampled_from([RFC_KEY, RFC_KEY[:-2], RFC_KEY + "==", ""]),
    st.text(alphabet="|:^;= 0123456789KDRWSHinline", max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(_ANY | _NEAR)
def test_fuzz_parse_crypto_raises_only_parse_errors(value: str) -> None:
    """Parse it or raise CryptoParseError (which never quotes the key); nothing else."""
    try:
        attr = parse_crypto(value)
    except CryptoParseError as exc:
        assert RFC_KEY not in str(exc)
        return
    if attr is not None:
        assert parse_crypto(attr.value) == attr
        assert RFC_KEY not in repr(attr)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(CryptoSuite)),
    st.integers(0, 999_999_999),
    st.binary(min_size=30, max_size=30),
    st.none() | st.integers(1, MAX_LIFETIME),
)
def test_round_trip_property(
    suite: CryptoSuite, tag: int, raw: bytes, lifetime: int | None
) -> None:
    attr = CryptoAttribute(tag, suite, (InlineKey(MasterKey(raw), lifetime),))
    assert parse_crypto(attr.value) == attr
