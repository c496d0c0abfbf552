"""Fuzz media/rtcp.py: random and mutated compound packets.

Invariants: ``parse_rtcp`` raises nothing but ``PacketParseError``; what it returns packs back
into a compound packet that parses to the same packets.
"""

from __future__ import annotations

from hypothesis import given

from siproc.media.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_rtcp,
)
from siproc.media.rtp import PacketParseError
from tests.fuzz.mutations import inputs
from tests.fuzz.profiles import count, fuzz_settings

_BLOCK = ReportBlock(0x1234, 12, -3, 70000, 45, 0x10002000, 0x8000)
SEEDS = (
    build_compound(
        [
            SenderReport(0xDEADBEEF, 0xE5A1B2C3D4E5F607, 160000, 50, 8000, (_BLOCK,)),
            SourceDescription((SdesChunk(0xDEADBEEF, ((1, "alice@192.0.2.10"), (6, "siproc"))),)),
        ]
    ),
    build_compound(
        [
            ReceiverReport(7, (_BLOCK, _BLOCK)),
            SourceDescription((SdesChunk(7, ((1, "bob@example.org"),)),)),
            App(3, 7, b"TEST", b"\x00\x01\x02\x03"),
            Bye((7, 8), "hung up"),
        ]
    ),
)


@fuzz_settings()
@given(inputs(SEEDS))
def test_parse_rtcp(data: bytes) -> None:
    count("media.rtcp")
    try:
        packets = parse_rtcp(data)
    except PacketParseError:
        return
    assert parse_rtcp(build_compound(packets)) == packets
