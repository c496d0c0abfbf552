"""Fuzz sdp/offer_answer.py in both roles, with our codecs from the catalog.

Answerer: a generated or mutated offer goes through ``parse_sdp`` and ``answer_offer``.
Offerer: our own offer (``build_offer``) meets a generated or mutated answer in
``accept_answer``. Invariants: only ``SdpError`` or ``OfferAnswerError`` come out; our answer
serializes and parses; and the negotiated codec can be built (``get_codec`` with the peer's
fmtp), as the call does next.
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from siproc.media.codecs import get_codec
from siproc.media.codecs.catalog import KNOWN_CODECS, TELEPHONE_EVENT, codec_availability
from siproc.sdp.model import SdpError, parse_sdp
from siproc.sdp.offer_answer import (
    NegotiatedMedia,
    OfferAnswerError,
    accept_answer,
    answer_offer,
    build_offer,
)
from tests.fuzz.mutations import inputs, sdp_bodies, sdp_seeds
from tests.fuzz.profiles import count, fuzz_settings

CODECS = [
    KNOWN_CODECS[name]
    for name in ("opus/48000/2", "G722/16000/1", "PCMU/8000/1", "PCMA/8000/1")
    if codec_availability()[name][0]
]
TELEPHONE = KNOWN_CODECS[TELEPHONE_EVENT]
BODIES = st.one_of(inputs(sdp_seeds()), sdp_bodies())


def _use(negotiated: NegotiatedMedia) -> None:
    if not negotiated.rejected:
        get_codec(negotiated.codec.name, negotiated.codec.fmtp)


@fuzz_settings(cost=3)
@given(BODIES, st.booleans())
def test_answer_offer(data: bytes, hold: bool) -> None:
    count("sdp.offer_answer")
    try:
        offer = parse_sdp(data)
        answer, negotiated = answer_offer(
            offer,
            address="192.0.2.5",
            port=40000,
            codecs=CODECS,
            session_id=7,
            session_version=1,
            telephone_event=TELEPHONE,
            hold=hold,
        )
    except (SdpError, OfferAnswerError):
        return
    _use(negotiated)
    parse_sdp(answer.serialize())
    with contextlib.suppress(OfferAnswerError):  # the offerer's view of our answer
        accept_answer(offer, answer, CODECS)


@fuzz_settings(cost=3)
@given(BODIES, st.sampled_from(["192.0.2.5", "2001:db8::5"]))
def test_accept_answer(data: bytes, address: str) -> None:
    count("sdp.offer_answer")
    offer = build_offer(
        address=address,
        port=40000,
        codecs=CODECS,
        session_id=7,
        session_version=1,
        telephone_event=TELEPHONE,
    )
    try:
        negotiated = accept_answer(offer, parse_sdp(data), CODECS)
    except (SdpError, OfferAnswerError):
        return
    _use(negotiated)
