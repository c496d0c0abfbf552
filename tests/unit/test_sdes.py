"""SDES keying in offer/answer (siproc.sdp.sdes through siproc.sdp.offer_answer, RFC 4568)."""

from __future__ import annotations

import base64

import pytest

from siproc.sdp.crypto import CryptoSuite, MasterKey, parse_crypto
from siproc.sdp.model import MediaDescription, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import (
    CodecSpec,
    NegotiatedMedia,
    OfferAnswerError,
    accept_answer,
    answer_offer,
    build_offer,
)
from siproc.sdp.sdes import SrtpMode

PCMU = CodecSpec("PCMU", 8000, 1, 0)
TE = CodecSpec("telephone-event", 8000, 1, 101, "0-16")
AES80 = CryptoSuite.AES_CM_128_HMAC_SHA1_80
AES32 = CryptoSuite.AES_CM_128_HMAC_SHA1_32
KEY_A = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"  # RFC 4568 section 4
KEY_B = base64.b64encode(bytes(range(30))).decode()
OFF, OPTIONAL, MANDATORY = SrtpMode.OFF, SrtpMode.OPTIONAL, SrtpMode.MANDATORY


def sdp(media: str) -> SessionDescription:
    text = f"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n{media.strip()}\n"
    return parse_sdp(text.replace("\n", "\r\n").encode())


def offer(mode: SrtpMode) -> SessionDescription:
    made = build_offer(
        address="127.0.0.1",
        port=40000,
        codecs=[PCMU],
        session_id=1,
        session_version=1,
        telephone_event=TE,
        srtp=mode,
    )
    return parse_sdp(made.serialize())  # what the peer sees


def answer(
    offered: SessionDescription, mode: SrtpMode
) -> tuple[SessionDescription, NegotiatedMedia]:
    made, negotiated = answer_offer(
        offered,
        address="127.0.0.1",
        port=41000,
        codecs=[PCMU],
        session_id=2,
        session_version=1,
        telephone_event=TE,
        srtp=mode,
    )
    return parse_sdp(made.serialize()), negotiated


def cryptos(media: MediaDescription) -> list[tuple[int, CryptoSuite, MasterKey]]:
    out = []
    for value in media.attribute_values("crypto"):
        attr = parse_crypto(value or "")
        assert attr is not None
        out.append((attr.tag, attr.suite, attr.key))
    return out


# ------------------------------------------------------------------------------- offers


def test_mandatory_offer_is_savp_with_both_suites_80_first_and_fresh_keys() -> None:
    first, second = offer(MANDATORY), offer(MANDATORY)
    media = first.media[0]
    assert media.proto == "RTP/SAVP"
    lines = cryptos(media)
    assert [(tag, suite) for tag, suite, _ in lines] == [(1, AES80), (2, AES32)]
    keys = {key for _, _, key in lines} | {key for _, _, key in cryptos(second.media[0])}
    assert len(keys) == 4  # every offer, every suite: a new key


def test_optional_offer_is_avp_with_keys_and_off_has_none() -> None:
    media = offer(OPTIONAL).media[0]
    assert media.proto == "RTP/AVP"
    assert [(tag, suite) for tag, suite, _ in cryptos(media)] == [(1, AES80), (2, AES32)]
    plain = offer(OFF).media[0]
    assert plain.proto == "RTP/AVP" and not plain.has_attribute("crypto")


# ------------------------------------------------------------------------------ answers


SAVP_OFFER = f"""
m=audio 7078 RTP/SAVP 0 101
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}
"""


@pytest.mark.parametrize("mode", [OPTIONAL, MANDATORY])
def test_answer_takes_first_crypto_with_same_tag_and_its_own_fresh_key(mode: SrtpMode) -> None:
    ans, neg = answer(sdp(SAVP_OFFER), mode)
    media = ans.media[0]
    assert media.proto == "RTP/SAVP" and media.port == 41000
    [(tag, suite, key)] = cryptos(media)
    assert (tag, suite) == (1, AES80)
    assert neg.srtp is not None
    assert neg.srtp.suite is AES80 and neg.srtp.tag == 1
    assert neg.srtp.remote_key == MasterKey(base64.b64decode(KEY_A))  # they send with theirs
    assert neg.srtp.local_key == key  # we send with the key in our answer
    assert key not in (MasterKey(base64.b64decode(KEY_A)), MasterKey(base64.b64decode(KEY_B)))
    assert neg.codec == PCMU and neg.telephone_event_pt == 101


def test_answer_skips_crypto_it_cannot_use_in_offer_order() -> None:
    offered = sdp(f"""
m=audio 7078 RTP/SAVP 0
a=crypto:1 AEAD_AES_256_GCM inline:whatever
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20|1:4
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:tooshort
a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} UNENCRYPTED_SRTP
a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B} KDR=0
a=crypto:6 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}
""")
    ans, neg = answer(offered, MANDATORY)
    [(tag, suite, _)] = cryptos(ans.media[0])
    assert (tag, suite) == (5, AES32)
    assert neg.srtp is not None and neg.srtp.remote_key.base64() == KEY_B


PLAIN_OFFER = """
m=audio 7078 RTP/AVP 0
"""
BEST_EFFORT_OFFER = f"""
m=audio 7078 RTP/AVP 0
a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}
"""


def test_mandatory_refuses_a_plain_offer_with_488() -> None:
    with pytest.raises(OfferAnswerError, match="SRTP is required") as info:
        answer(sdp(PLAIN_OFFER), MANDATORY)
    assert info.value.status == 488


def test_mandatory_refuses_savp_without_usable_keys_and_says_why() -> None:
    offered = sdp(f"m=audio 7078 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1:4")
    with pytest.raises(OfferAnswerError, match="crypto tag 1: an MKI is not supported") as info:
        answer(offered, MANDATORY)
    assert info.value.status == 488 and KEY_A not in str(info.value)
    with pytest.raises(OfferAnswerError, match="no a=crypto offered"):
        answer(sdp("m=audio 7078 RTP/SAVP 0"), OPTIONAL)


@pytest.mark.parametrize("mode", [OPTIONAL, MANDATORY])
def test_best_effort_offer_is_answered_with_keys(mode: SrtpMode) -> None:
    ans, neg = answer(sdp(BEST_EFFORT_OFFER), mode)
    assert ans.media[0].proto == "RTP/AVP"
    [(tag, suite, key)] = cryptos(ans.media[0])
    assert (tag, suite) == (7, AES32)
    assert neg.srtp is not None and neg.srtp.local_key == key


def test_optional_answers_a_plain_offer_plainly() -> None:
    ans, neg = answer(sdp(PLAIN_OFFER), OPTIONAL)
    assert ans.media[0].proto == "RTP/AVP" and not ans.media[0].has_attribute("crypto")
    assert neg.srtp is None


def test_off_ignores_keys_in_a_plain_offer_and_refuses_savp() -> None:
    ans, neg = answer(sdp(BEST_EFFORT_OFFER), OFF)
    assert not ans.media[0].has_attribute("crypto") and neg.srtp is None
    with pytest.raises(OfferAnswerError, match="is off here") as info:
        answer(sdp(SAVP_OFFER), OFF)
    assert info.value.status == 488


def test_savp_and_avp_alternatives_pick_per_mode() -> None:
    two = sdp(SAVP_OFFER + "m=audio 7080 RTP/AVP 0\n")
    ans, neg = answer(two, OFF)
    assert [m.port for m in ans.media] == [0, 41000] and neg.srtp is None
    ans, neg = answer(two, OPTIONAL)
    assert [m.port for m in ans.media] == [41000, 0] and neg.srtp is not None
    assert ans.media[1].proto == "RTP/AVP" and not ans.media[1].has_attribute("crypto")


# ------------------------------------------------------------------- accepting answers


@pytest.mark.parametrize("mode", [OPTIONAL, MANDATORY])
def test_offer_answer_round_trip_mirrors_the_keys(mode: SrtpMode) -> None:
    ours = offer(mode)
    ans, theirs = answer(ours, mode)
    neg = accept_answer(ours, ans, [PCMU])
    assert neg.srtp is not None and theirs.srtp is not None
    assert neg.srtp.suite is theirs.srtp.suite is AES80
    assert neg.srtp.local_key == theirs.srtp.remote_key
    assert neg.srtp.remote_key == theirs.srtp.local_key
    assert neg.srtp.local_key == cryptos(ours.media[0])[0][2]


def test_optional_offer_answered_plainly_is_plain_rtp() -> None:
    ours = offer(OPTIONAL)
    ans, theirs = answer(ours, OFF)
    assert theirs.srtp is None
    assert accept_answer(ours, ans, [PCMU]).srtp is None


def test_answer_with_keys_to_a_plain_offer_stays_plain() -> None:
    ours = offer(OFF)
    ans = sdp(f"m=audio 9000 RTP/AVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")
    assert accept_answer(ours, ans, [PCMU]).srtp is None


def answer_text(proto: str, *crypto: str) -> SessionDescription:
    lines = "".join(f"a=crypto:{c}\n" for c in crypto)
    return sdp(f"m=audio 9000 {proto} 0\n{lines}")


@pytest.mark.parametrize(
    ("mode", "answered", "message"),
    [
        (MANDATORY, answer_text("RTP/SAVP"), "no a=crypto for RTP/SAVP"),
        (MANDATORY, answer_text("RTP/AVP"), "the answer uses RTP/AVP, we offered RTP/SAVP"),
        (OFF, answer_text("RTP/SAVP"), "we offered plain RTP/AVP"),
        (MANDATORY, answer_text("RTP/SAVP", f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"), "tag 3"),
        (
            MANDATORY,
            answer_text("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
            "is AES_CM_128_HMAC_SHA1_80, we offered AES_CM_128_HMAC_SHA1_32",
        ),
        (
            MANDATORY,
            answer_text(
                "RTP/SAVP",
                f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}",
                f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}",
            ),
            "2 a=crypto lines",
        ),
        (MANDATORY, answer_text("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"), "is 3 bytes"),
        (MANDATORY, answer_text("RTP/SAVP", f"1 AEAD_AES_128_GCM inline:{KEY_A}"), "did not offer"),
        (
            OPTIONAL,
            answer_text("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1:4"),
            "MKI is not supported",
        ),
    ],
)
def test_unusable_keying_in_an_answer_is_an_offer_answer_error(
    mode: SrtpMode, answered: SessionDescription, message: str
) -> None:
    with pytest.raises(OfferAnswerError, match=message) as info:
        accept_answer(offer(mode), answered, [PCMU])
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value)


def test_negotiated_media_and_sdp_reprs_mask_the_keys() -> None:
    ours = offer(MANDATORY)
    ans, neg = answer(ours, MANDATORY)
    assert neg.srtp is not None
    texts = [repr(neg), str(neg), repr(ours), repr(ans)]
    for secret in (neg.srtp.local_key.base64(), neg.srtp.remote_key.base64()):
        assert all(secret not in text for text in texts)
    assert neg.srtp.local_key.base64() in ans.serialize().decode()  # the SDP itself has it
