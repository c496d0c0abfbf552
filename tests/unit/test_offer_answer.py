"""RFC 3264 offer/answer for one audio stream (siproc.sdp.offer_answer)."""

from __future__ import annotations

import pytest

from siproc.sdp.model import SessionDescription, direction, fmtp, parse_sdp, rtpmap
from siproc.sdp.offer_answer import (
    CodecSpec,
    NegotiatedMedia,
    OfferAnswerError,
    accept_answer,
    answer_offer,
    build_offer,
    choose_telephone_event,
    offer_telephone_events,
)

PCMU = CodecSpec("PCMU", 8000, 1, 0)
PCMA = CodecSpec("PCMA", 8000, 1, 8)
G722 = CodecSpec("G722", 8000, 1, 9)
OPUS = CodecSpec("opus", 48000, 2, 96, "useinbandfec=1")
TE = CodecSpec("telephone-event", 8000, 1, 101, "0-16")


def sdp(text: str) -> SessionDescription:
    return parse_sdp(text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n")


def offer_with(media: str, *, conn: str = "IN IP4 127.0.0.1", session_attrs: str = "") -> str:
    return f"""
v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c={conn}
t=0 0
{session_attrs}{media.strip()}
"""


BARESIP_OFFER = offer_with("""
m=audio 10062 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=rtcp-mux
a=ptime:20
""")


def answer(
    offer: str, codecs: list[CodecSpec] | None = None, **kwargs: object
) -> tuple[SessionDescription, NegotiatedMedia]:
    return answer_offer(
        sdp(offer),
        address=str(kwargs.pop("address", "127.0.0.1")),
        port=int(kwargs.pop("port", 40000)),  # type: ignore[call-overload]
        codecs=codecs if codecs is not None else [PCMU, PCMA],
        session_id=5,
        session_version=6,
        telephone_event=TE,
        **kwargs,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------- answering


def test_answer_baresip_offer() -> None:
    ans, neg = answer(BARESIP_OFFER)
    assert neg == NegotiatedMedia(
        remote_address=("127.0.0.1", 10062),
        codec=PCMU,
        telephone_event_pt=101,
        direction="sendrecv",
        remote_hold=False,
        rtcp_mux=True,
        ptime=20,
        local_payload_type=0,
        local_telephone_event_pt=101,
        telephone_event_rate=8000,
        receive_telephone_events={101: 8000},
    )
    assert ans.serialize() == (
        b"v=0\r\n"
        b"o=- 5 6 IN IP4 127.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=rtcp-mux\r\n"
        b"a=sendrecv\r\n"
    )
    assert parse_sdp(ans.serialize()) == ans


def test_answer_uses_our_priority_not_the_offer_order() -> None:
    _, neg = answer(BARESIP_OFFER, [PCMA, PCMU])
    assert neg.codec == PCMA


def test_answer_only_pcma_offered_when_we_prefer_pcmu() -> None:
    offer = offer_with("""
m=audio 5004 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
""")
    ans, neg = answer(offer)
    assert neg.codec == PCMA
    assert neg.remote_address == ("127.0.0.1", 5004)
    assert ans.media[0].formats == ["8", "101"]
    assert not neg.rtcp_mux  # not offered
    assert not ans.media[0].has_attribute("rtcp-mux")


def test_answer_dynamic_telephone_event_pt_and_static_defaults() -> None:
    # Linphone style: no rtpmap for static types, telephone-event at several rates.
    offer = offer_with("""
m=audio 7078 RTP/AVP 96 0 8 101 99 100
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=ptime:30
""")
    ans, neg = answer(offer)
    assert neg.codec == PCMU
    assert neg.telephone_event_pt == 100
    assert neg.telephone_event_rate == 8000
    assert neg.ptime == 30
    media = ans.media[0]
    # The chosen one first; every telephone-event keeps the offer's own clock rate.
    assert media.formats == ["0", "100", "101", "99"]
    assert rtpmap(media) == {
        0: ("PCMU", 8000, 1),
        100: ("telephone-event", 8000, 1),
        101: ("telephone-event", 48000, 1),
        99: ("telephone-event", 16000, 1),
    }
    assert fmtp(media) == {100: "0-16", 101: "0-16", 99: "0-16"}
    assert neg.receive_telephone_events == {101: 48000, 99: 16000, 100: 8000}


def test_answer_telephone_event_follows_the_codec_clock() -> None:
    offer = offer_with("""
m=audio 7078 RTP/AVP 96 101 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 maxplaybackrate=16000
a=rtpmap:101 telephone-event/48000
a=rtpmap:100 telephone-event/8000
""")
    _, neg = answer(offer, [OPUS, PCMU])
    assert neg.codec == CodecSpec("opus", 48000, 2, 96, "maxplaybackrate=16000")
    assert neg.telephone_event_pt == 101
    ans, _ = answer(offer, [OPUS])
    assert fmtp(ans.media[0])[96] == "useinbandfec=1"  # our fmtp in our SDP


def test_answer_keeps_the_offerers_payload_numbers_and_spelling() -> None:
    offer = offer_with("""
m=audio 5004 RTP/AVP 112 8
a=rtpmap:112 pcmu/8000
""")
    ans, neg = answer(offer)
    assert neg.codec == CodecSpec("pcmu", 8000, 1, 112)
    assert ans.media[0].formats == ["112"]
    assert rtpmap(ans.media[0]) == {112: ("pcmu", 8000, 1)}
    assert neg.telephone_event_pt is None


def test_answers_to_the_same_offer_share_their_codecs_and_keep_the_offers_fmtp() -> None:
    # The codec variants of an answer (the offer's number, spelling and fmtp on our codec) are
    # made once per combination and shared (immutable), with what dataclasses.replace gave.
    offer = offer_with("""
m=audio 5004 RTP/AVP 112 101
a=rtpmap:112 OPUS/48000/2
a=fmtp:112 maxplaybackrate=16000
a=rtpmap:101 telephone-event/48000
""")
    ans, neg = answer(offer, [OPUS])
    again, neg_again = answer(offer, [OPUS])
    assert neg.codec == CodecSpec("OPUS", 48000, 2, 112, "maxplaybackrate=16000")
    assert neg_again.codec is neg.codec
    assert fmtp(ans.media[0]) == {112: "useinbandfec=1", 101: "0-16"}  # ours in our SDP
    assert rtpmap(ans.media[0])[101] == ("telephone-event", 48000, 1)
    assert str(again) == str(ans)
    other = offer.replace("maxplaybackrate=16000", "maxplaybackrate=8000")
    assert answer(other, [OPUS])[1].codec.fmtp == "maxplaybackrate=8000"


def test_answer_without_telephone_event_support() -> None:
    ans, neg = answer_offer(
        sdp(BARESIP_OFFER),
        address="127.0.0.1",
        port=4000,
        codecs=[PCMU],
        session_id=1,
        session_version=1,
    )
    assert neg.telephone_event_pt is None
    assert ans.media[0].formats == ["0"]


def test_answer_rejects_video_keeping_order_and_count() -> None:
    offer = offer_with("""
m=video 9078 RTP/AVP 96
a=rtpmap:96 VP8/90000
m=audio 7078 RTP/AVP 0
m=text 9080 RTP/AVP 98
a=rtpmap:98 t140/1000
""")
    ans, neg = answer(offer)
    assert [(m.media, m.port, m.formats) for m in ans.media] == [
        ("video", 0, ["96"]),
        ("audio", 40000, ["0"]),
        ("text", 0, ["98"]),
    ]
    assert ans.media[0].attributes == []
    assert neg.remote_address == ("127.0.0.1", 7078)
    reparsed = parse_sdp(ans.serialize())
    assert len(reparsed.media) == 3


def test_answer_second_audio_stream_rejected() -> None:
    offer = offer_with("""
m=audio 7078 RTP/AVP 0
m=audio 7080 RTP/AVP 8
""")
    ans, neg = answer(offer)
    assert [m.port for m in ans.media] == [40000, 0]
    assert neg.remote_address[1] == 7078


def test_answer_skips_an_audio_stream_without_common_codec() -> None:
    offer = offer_with("""
m=audio 7078 RTP/AVP 18
m=audio 7080 RTP/AVP 8
""")
    ans, neg = answer(offer)
    assert [m.port for m in ans.media] == [0, 40000]
    assert neg.codec == PCMA


def test_answer_srtp_stream_rejected() -> None:
    offer = offer_with("""
m=audio 7078 RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
""")
    with pytest.raises(OfferAnswerError, match=r"SRTP \(RTP/SAVP\) is off here") as info:
        answer(offer)
    assert info.value.status == 488


def test_answer_no_common_codec_is_488() -> None:
    offer = offer_with("""
m=audio 7078 RTP/AVP 18 3
a=rtpmap:18 G729/8000
""")
    with pytest.raises(OfferAnswerError) as info:
        answer(offer)
    assert info.value.status == 488
    assert "no common codec" in str(info.value)
    assert "G729/8000" in str(info.value)
    assert "GSM/8000" in str(info.value)


def test_answer_video_only_is_488() -> None:
    offer = offer_with("m=video 9078 RTP/AVP 96\na=rtpmap:96 VP8/90000")
    with pytest.raises(OfferAnswerError, match="no audio stream offered") as info:
        answer(offer)
    assert info.value.status == 488


def test_answer_channels_must_match() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 96\na=rtpmap:96 opus/48000")
    with pytest.raises(OfferAnswerError):
        answer(offer, [OPUS])


@pytest.mark.parametrize(
    ("offered", "hold", "ours", "remote_hold"),
    [
        ("sendrecv", False, "sendrecv", False),
        ("sendonly", False, "recvonly", True),
        ("inactive", False, "inactive", True),
        ("recvonly", False, "sendonly", False),
        ("sendrecv", True, "sendonly", False),
        ("sendonly", True, "inactive", True),
        ("recvonly", True, "sendonly", False),
        ("inactive", True, "inactive", True),
    ],
)
def test_answer_directions(offered: str, hold: bool, ours: str, remote_hold: bool) -> None:
    offer = offer_with(f"m=audio 7078 RTP/AVP 0\na={offered}")
    ans, neg = answer(offer, hold=hold)
    assert neg.direction == ours
    assert direction(ans, ans.media[0]) == ours
    assert neg.remote_hold is remote_hold


def test_answer_session_level_direction() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 0", session_attrs="a=sendonly\n")
    _, neg = answer(offer)
    assert neg.direction == "recvonly"
    assert neg.remote_hold


def test_answer_rfc2543_hold_with_zero_address() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 0", conn="IN IP4 0.0.0.0")
    _, neg = answer(offer)
    assert neg.remote_hold
    assert neg.remote_address == ("0.0.0.0", 7078)
    assert neg.direction == "recvonly"


def test_answer_ipv6() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 8 0", conn="IN IP6 ::1")
    ans, neg = answer(offer, address="::1")
    assert neg.remote_address == ("::1", 7078)
    text = ans.serialize()
    assert b"o=- 5 6 IN IP6 ::1\r\n" in text
    assert b"c=IN IP6 ::1\r\n" in text


def test_answer_media_level_connection() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 0\nc=IN IP4 127.0.0.9")
    _, neg = answer(offer)
    assert neg.remote_address == ("127.0.0.9", 7078)


def test_answer_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bad RTP port"):
        answer(BARESIP_OFFER, port=0)


# ---------------------------------------------------------------------------- offering


def test_build_offer() -> None:
    offer = build_offer(
        address="127.0.0.1",
        port=4000,
        codecs=[PCMU, PCMA, OPUS],
        session_id=11,
        session_version=12,
        telephone_event=TE,
    )
    assert offer.serialize() == (
        b"v=0\r\n"
        b"o=- 11 12 IN IP4 127.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 8 96 101 102\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:96 opus/48000/2\r\n"
        b"a=fmtp:96 useinbandfec=1\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=rtpmap:102 telephone-event/48000\r\n"
        b"a=fmtp:102 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=rtcp-mux\r\n"
        b"a=sendrecv\r\n"
    )


def test_build_offer_ipv6_hold_without_mux() -> None:
    offer = build_offer(
        address="::1",
        port=4000,
        codecs=[PCMA],
        session_id=1,
        session_version=2,
        direction="sendonly",
        ptime=40,
        rtcp_mux=False,
    )
    text = offer.serialize()
    assert b"c=IN IP6 ::1\r\n" in text
    assert b"o=- 1 2 IN IP6 ::1\r\n" in text
    assert b"a=ptime:40\r\na=sendonly\r\n" in text
    assert b"rtcp-mux" not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codecs": []}, "at least one codec"),
        ({"port": 0}, "bad RTP port"),
        ({"direction": "both"}, "bad direction"),
        ({"ptime": 0}, "bad ptime"),
        ({"codecs": [PCMU, CodecSpec("X", 8000, 1, 0)]}, "duplicate payload types"),
    ],
)
def test_build_offer_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "address": "127.0.0.1",
        "port": 4000,
        "codecs": [PCMU],
        "session_id": 1,
        "session_version": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_offer(**args)  # type: ignore[arg-type]


def test_codec_spec_validation() -> None:
    assert PCMU.rtpmap == "0 PCMU/8000"
    assert OPUS.rtpmap == "96 opus/48000/2"
    assert PCMU.matches("pcmu", 8000, 1)
    assert not PCMU.matches("PCMU", 16000, 1)
    bad_specs: list[tuple[str, int, int, int, str | None]] = [
        ("", 8000, 1, 0, None),
        ("A B", 8000, 1, 0, None),
        ("PCMU", 0, 1, 0, None),
        ("PCMU", 8000, 0, 0, None),
        ("PCMU", 8000, 1, 128, None),
        ("PCMU", 8000, 1, 0, "a\r\nb"),
    ]
    for name, clock, channels, pt, params in bad_specs:
        with pytest.raises(ValueError):
            CodecSpec(name, clock, channels, pt, params)


# ---------------------------------------------------------------------------- accepting answers


def our_offer(**kwargs: object) -> SessionDescription:
    args: dict[str, object] = {
        "address": "127.0.0.1",
        "port": 4000,
        "codecs": [PCMU, PCMA],
        "session_id": 1,
        "session_version": 1,
        "telephone_event": TE,
    }
    args.update(kwargs)
    return build_offer(**args)  # type: ignore[arg-type]


def test_accept_answer_first_listed_codec() -> None:
    ans = sdp(
        offer_with("""
m=audio 10062 RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-mux
a=ptime:30
""")
    )
    neg = accept_answer(our_offer(), ans, [PCMU, PCMA])
    assert neg == NegotiatedMedia(
        remote_address=("127.0.0.1", 10062),
        codec=PCMA,
        telephone_event_pt=101,
        direction="sendrecv",
        remote_hold=False,
        rtcp_mux=True,
        ptime=30,
        local_payload_type=8,
        local_telephone_event_pt=101,
        telephone_event_rate=8000,
        receive_telephone_events={101: 8000},
    )


def test_accept_answer_with_different_dynamic_numbers() -> None:
    offer = our_offer(codecs=[OPUS, PCMU])
    ans = sdp(
        offer_with("""
m=audio 10062 RTP/AVP 111 100
a=rtpmap:111 OPUS/48000/2
a=fmtp:111 stereo=0
a=rtpmap:100 telephone-event/8000
""")
    )
    neg = accept_answer(offer, ans, [OPUS, PCMU])
    assert neg.codec == CodecSpec("OPUS", 48000, 2, 111, "stereo=0")
    assert neg.local_payload_type == 96
    assert neg.telephone_event_pt == 100
    assert neg.local_telephone_event_pt == 101
    assert not neg.rtcp_mux


def test_accept_answer_skips_codecs_we_did_not_offer() -> None:
    ans = sdp(offer_with("m=audio 10062 RTP/AVP 9 0\na=rtpmap:9 G722/8000"))
    neg = accept_answer(our_offer(), ans, [G722, PCMU, PCMA])
    assert neg.codec == PCMU


def test_accept_answer_without_common_codec() -> None:
    ans = sdp(offer_with("m=audio 10062 RTP/AVP 18\na=rtpmap:18 G729/8000"))
    with pytest.raises(OfferAnswerError, match="no codec we offered"):
        accept_answer(our_offer(), ans, [PCMU, PCMA])


def test_accept_answer_m_line_count_mismatch() -> None:
    ans = sdp(offer_with("m=audio 10062 RTP/AVP 0\nm=video 0 RTP/AVP 96"))
    with pytest.raises(OfferAnswerError, match="2 m-lines, the offer had 1"):
        accept_answer(our_offer(), ans, [PCMU])


def test_accept_answer_media_type_mismatch() -> None:
    ans = sdp(offer_with("m=video 10062 RTP/AVP 96"))
    with pytest.raises(OfferAnswerError, match="answer has 'video'"):
        accept_answer(our_offer(), ans, [PCMU])


def test_accept_answer_rejected_stream() -> None:
    ans = sdp(offer_with("m=audio 0 RTP/AVP 0"))
    neg = accept_answer(our_offer(), ans, [PCMU, PCMA])
    assert neg.rejected
    assert neg.remote_address[1] == 0
    assert neg.direction == "inactive"
    assert neg.codec == PCMU


@pytest.mark.parametrize(
    ("offered", "answered", "ours", "remote_hold"),
    [
        ("sendrecv", "sendrecv", "sendrecv", False),
        ("sendrecv", "sendonly", "recvonly", True),
        ("sendrecv", "recvonly", "sendonly", False),
        ("sendrecv", "inactive", "inactive", True),
        ("sendonly", "recvonly", "sendonly", False),
        ("sendonly", "inactive", "inactive", True),
        ("sendonly", "sendrecv", "sendonly", False),  # a sloppy answerer cannot widen it
        ("recvonly", "sendonly", "recvonly", False),
        ("inactive", "inactive", "inactive", False),
    ],
)
def test_accept_answer_directions(
    offered: str, answered: str, ours: str, remote_hold: bool
) -> None:
    ans = sdp(offer_with(f"m=audio 10062 RTP/AVP 0\na={answered}"))
    neg = accept_answer(our_offer(direction=offered), ans, [PCMU])
    assert neg.direction == ours
    assert neg.remote_hold is remote_hold


def test_accept_answer_zero_address_is_hold() -> None:
    ans = sdp(offer_with("m=audio 10062 RTP/AVP 0", conn="IN IP4 0.0.0.0"))
    neg = accept_answer(our_offer(), ans, [PCMU])
    assert neg.remote_hold
    assert neg.direction == "recvonly"


def test_accept_answer_ipv6() -> None:
    ans = sdp(offer_with("m=audio 10062 RTP/AVP 0", conn="IN IP6 ::1"))
    neg = accept_answer(our_offer(address="::1"), ans, [PCMU])
    assert neg.remote_address == ("::1", 10062)


def test_round_trip_between_two_of_us() -> None:
    offer = our_offer(codecs=[PCMA, PCMU])
    ans, answerer_view = answer_offer(
        parse_sdp(offer.serialize()),
        address="127.0.0.2",
        port=5000,
        codecs=[PCMU, PCMA],
        session_id=9,
        session_version=9,
        telephone_event=TE,
    )
    offerer_view = accept_answer(offer, parse_sdp(ans.serialize()), [PCMA, PCMU])
    assert answerer_view.codec == offerer_view.codec == PCMU
    assert offerer_view.remote_address == ("127.0.0.2", 5000)
    assert answerer_view.remote_address == ("127.0.0.1", 4000)
    assert offerer_view.telephone_event_pt == answerer_view.telephone_event_pt == 101
    assert offerer_view.rtcp_mux and answerer_view.rtcp_mux


def test_negotiated_media_validation() -> None:
    with pytest.raises(ValueError, match="bad direction"):
        NegotiatedMedia(("127.0.0.1", 1), PCMU, None, "both", False, False)
    with pytest.raises(ValueError, match="bad port"):
        NegotiatedMedia(("127.0.0.1", 70000), PCMU, None, "sendrecv", False, False)
    with pytest.raises(ValueError, match="bad ptime"):
        NegotiatedMedia(("127.0.0.1", 1), PCMU, None, "sendrecv", False, False, ptime=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", 20), ("0", 20), ("nan", 20), ("inf", 20), ("20.0", 20), ("10", 10)],
)
def test_remote_ptime_parsing(value: str, expected: int) -> None:
    _, neg = answer(offer_with(f"m=audio 7078 RTP/AVP 0\na=ptime:{value}"))
    assert neg.ptime == expected


def test_telephone_event_in_our_codec_list_is_not_an_audio_codec() -> None:
    offer = offer_with("m=audio 7078 RTP/AVP 101 0\na=rtpmap:101 telephone-event/8000")
    _, neg = answer(offer, [TE, PCMU])
    assert neg.codec == PCMU
    assert neg.telephone_event_pt == 101


def test_answer_needs_a_connection_address() -> None:
    offer = sdp(offer_with("m=audio 7078 RTP/AVP 0"))
    offer.connection = None
    with pytest.raises(OfferAnswerError, match="no c= address") as info:
        answer_offer(
            offer, address="127.0.0.1", port=1, codecs=[PCMU], session_id=1, session_version=1
        )
    assert info.value.status == 400


def test_accept_answer_when_our_offer_has_no_audio() -> None:
    offer = sdp(offer_with("m=video 5000 RTP/AVP 96"))
    with pytest.raises(OfferAnswerError, match="no active audio stream"):
        accept_answer(offer, offer, [PCMU])


def test_accept_answer_rejected_stream_without_a_common_codec() -> None:
    offer = our_offer(codecs=[PCMA])
    neg = accept_answer(offer, sdp(offer_with("m=audio 0 RTP/AVP 0")), [PCMU])
    assert neg.rejected
    assert neg.codec == PCMA  # the first format we offered


# ------------------------------------------------------ telephone-event at several clock rates

#: A WebRTC-style offer (issue 8 item 9): Opus 111 and telephone-event at three clock rates.
THREE_RATE_OFFER = offer_with("""
m=audio 7078 RTP/AVP 111 0 99 100 101
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:99 telephone-event/48000
a=rtpmap:100 telephone-event/16000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
""")


def test_three_rate_offer_answered_with_the_offers_own_rtpmaps() -> None:
    ans, neg = answer(THREE_RATE_OFFER, [OPUS, PCMU])
    assert neg.codec.payload_type == 111
    # We send with the one at Opus' RTP clock (RFC 4733 section 2.1), at its own rate.
    assert (neg.telephone_event_pt, neg.telephone_event_rate) == (99, 48000)
    assert neg.local_telephone_event_pt == 99
    assert neg.receive_telephone_events == {99: 48000, 100: 16000, 101: 8000}
    text = ans.serialize().decode()
    assert "m=audio 40000 RTP/AVP 111 99 100 101\r\n" in text
    assert "a=rtpmap:99 telephone-event/48000\r\n" in text
    assert "a=rtpmap:100 telephone-event/16000\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text
    assert "a=rtpmap:99 telephone-event/8000" not in text  # the bug of issue 8 item 9
    # Every payload type of the answer means in it what it meant in the offer.
    offered = rtpmap(sdp(THREE_RATE_OFFER).media[0])
    for pt, encoding in rtpmap(ans.media[0]).items():
        assert offered[pt][:2] == encoding[:2]


def test_three_rate_offer_with_pcmu_chosen_sends_on_the_8000_one() -> None:
    ans, neg = answer(THREE_RATE_OFFER, [PCMU])
    assert neg.codec == PCMU
    assert (neg.telephone_event_pt, neg.telephone_event_rate) == (101, 8000)
    assert ans.media[0].formats == ["0", "101", "99", "100"]
    assert rtpmap(ans.media[0])[101] == ("telephone-event", 8000, 1)


def test_telephone_event_without_a_matching_rate() -> None:
    # Only 16 kHz events with an 8 kHz codec: the one offered, at its own rate.
    ans, neg = answer(offer_with("m=audio 7078 RTP/AVP 0 98\na=rtpmap:98 telephone-event/16000"))
    assert (neg.telephone_event_pt, neg.telephone_event_rate) == (98, 16000)
    assert rtpmap(ans.media[0])[98] == ("telephone-event", 16000, 1)
    assert choose_telephone_event({97: 16000, 98: 32000}, 48000) == (97, 16000)
    assert choose_telephone_event({97: 16000, 98: 8000}, 48000) == (98, 8000)
    assert choose_telephone_event({}, 8000) is None


def test_telephone_event_on_our_audio_number_is_not_received_as_events() -> None:
    # The answerer renumbers Opus to 111 and puts telephone-event on our Opus number 96:
    # audio the remote sends with our 96 must not be taken for events.
    offer = our_offer(codecs=[OPUS, PCMU])
    ans = sdp(
        offer_with("""
m=audio 10062 RTP/AVP 111 96
a=rtpmap:111 opus/48000/2
a=rtpmap:96 telephone-event/8000
""")
    )
    neg = accept_answer(offer, ans, [OPUS, PCMU])
    assert neg.local_payload_type == 96
    assert neg.telephone_event_pt is None  # nothing left of the answer's
    assert neg.receive_telephone_events == {}  # so in-band detection, not 96 as events


def test_unusable_telephone_event_lines_are_left_out() -> None:
    # A clock rate of 0, and an rtpmap for a type the m= line does not list: no exception.
    offer = offer_with("""
m=audio 7078 RTP/AVP 0 98 101
a=rtpmap:98 telephone-event/0
a=rtpmap:200 telephone-event/8000
a=rtpmap:101 telephone-event/8000
""")
    ans, neg = answer(offer)
    assert ans.media[0].formats == ["0", "101"]
    assert neg.receive_telephone_events == {101: 8000}


def test_offer_telephone_events_one_per_codec_clock() -> None:
    assert offer_telephone_events([PCMU, PCMA], TE) == [TE]
    assert offer_telephone_events([OPUS, PCMU], None) == []
    opus_102 = CodecSpec("opus", 48000, 2, 102)
    events = offer_telephone_events([opus_102, G722, PCMU], TE)
    assert [(e.payload_type, e.clock_rate) for e in events] == [(101, 8000), (103, 48000)]
    assert all(e.fmtp == TE.fmtp for e in events)
    crowded = [CodecSpec(f"X{pt}", 16000, 1, pt) for pt in range(96, 128) if pt != 101]
    assert offer_telephone_events(crowded, TE) == [TE]  # no number left: 8000 only


def test_round_trip_with_opus_when_we_offer() -> None:
    offer = our_offer(codecs=[OPUS, PCMU])
    assert rtpmap(offer.media[0])[102] == ("telephone-event", 48000, 1)
    ans, answerer_view = answer_offer(
        parse_sdp(offer.serialize()),
        address="127.0.0.2",
        port=5000,
        codecs=[OPUS, PCMU],
        session_id=9,
        session_version=9,
        telephone_event=TE,
    )
    assert (answerer_view.telephone_event_pt, answerer_view.telephone_event_rate) == (102, 48000)
    view = accept_answer(offer, parse_sdp(ans.serialize()), [OPUS, PCMU])
    assert view.codec.payload_type == 96
    assert (view.telephone_event_pt, view.telephone_event_rate) == (102, 48000)
    assert view.local_telephone_event_pt == 102
    assert view.receive_telephone_events == {102: 48000, 101: 8000}
    # The same offer answered PCMU: the 8000 Hz one, both ways.
    ans, answerer_view = answer_offer(
        parse_sdp(offer.serialize()),
        address="127.0.0.2",
        port=5000,
        codecs=[PCMU],
        session_id=9,
        session_version=9,
        telephone_event=TE,
    )
    view = accept_answer(offer, parse_sdp(ans.serialize()), [OPUS, PCMU])
    assert (view.telephone_event_pt, view.telephone_event_rate) == (101, 8000)
    assert answerer_view.telephone_event_pt == 101


def test_accept_answer_with_events_at_a_rate_other_than_the_codecs() -> None:
    # An answerer that only does 8 kHz events with Opus, under its own numbers.
    offer = our_offer(codecs=[OPUS, PCMU])
    ans = sdp(
        offer_with("""
m=audio 10062 RTP/AVP 111 100 98
a=rtpmap:111 opus/48000/2
a=rtpmap:100 telephone-event/8000
a=rtpmap:98 telephone-event/22050
""")
    )
    neg = accept_answer(offer, ans, [OPUS, PCMU])
    assert (neg.telephone_event_pt, neg.telephone_event_rate) == (100, 8000)
    assert neg.local_telephone_event_pt == 101
    # 98/22050 was never offered: not ours to receive; its 100 and our 101, 102 are.
    assert neg.receive_telephone_events == {100: 8000, 101: 8000, 102: 48000}
    no_events = sdp(offer_with("m=audio 10062 RTP/AVP 111\na=rtpmap:111 opus/48000/2"))
    neg = accept_answer(offer, no_events, [OPUS, PCMU])
    assert neg.telephone_event_pt is None and neg.receive_telephone_events == {}


def test_negotiated_media_validates_telephone_events() -> None:
    with pytest.raises(ValueError, match="clock rate"):
        NegotiatedMedia(
            ("127.0.0.1", 1), PCMU, 101, "sendrecv", False, False, telephone_event_rate=0
        )
    with pytest.raises(ValueError, match="bad telephone-event"):
        NegotiatedMedia(
            ("127.0.0.1", 1),
            PCMU,
            101,
            "sendrecv",
            False,
            False,
            receive_telephone_events={128: 8000},
        )


def test_huge_numbers_int_cannot_take_are_skipped() -> None:
    """A 5000-digit format (legal for a non-RTP proto, which the model does not check) or
    a=rtcp port once escaped as a ValueError from int(); they are skipped."""
    huge = "9" * 5000
    ans = sdp(
        offer_with(f"""
m=audio 10062 udp {huge} 0
a=rtpmap:0 PCMU/8000
a=rtcp:{huge}
""")
    )
    neg = accept_answer(our_offer(), ans, [PCMU, PCMA])
    assert neg.codec == PCMU
    assert neg.remote_rtcp is None


@pytest.mark.parametrize("conn", ["IN IP4 pbx.example.com", "!IN IP4 092.0.2.198", "X Y z"])
def test_a_c_address_that_is_no_ip_address_is_not_acceptable(conn: str) -> None:
    """siproc resolves no name a peer chose, and a malformed address is no address: 488 (the
    whole-phone fuzz target found a leading-zero address reaching the RTP stream)."""
    offer = offer_with("m=audio 7078 RTP/AVP 0", conn=conn)
    with pytest.raises(OfferAnswerError, match="is not an IP address") as info:
        answer(offer)
    assert info.value.status == 488
