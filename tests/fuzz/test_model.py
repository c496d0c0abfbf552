"""Fuzz sdp/model.py: generated and mutated SDP bodies.

Invariants: ``parse_sdp`` raises nothing but ``SdpError``; the helpers the offer/answer code
uses (rtpmap, fmtp, direction, connection_address) never raise on a parsed description; and a
parsed description serializes, and its serialization is a fixed point (parse -> serialize ->
parse -> serialize gives the same bytes).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siproc.sdp.model import SdpError, connection_address, direction, fmtp, parse_sdp, rtpmap
from tests.fuzz.mutations import inputs, sdp_bodies, sdp_seeds
from tests.fuzz.profiles import count, fuzz_settings


def check_sdp(data: bytes) -> None:
    count("sdp.model")
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    for media in sdp.media:
        rtpmap(media)
        fmtp(media)
        direction(sdp, media)
        connection_address(sdp, media)
    wire = sdp.serialize()
    assert parse_sdp(wire).serialize() == wire


@fuzz_settings(cost=2)
@given(st.one_of(inputs(sdp_seeds()), sdp_bodies()))
def test_parse_sdp(data: bytes) -> None:
    check_sdp(data)
