"""Fuzz media/rtp.py (and the RFC 4733 payload parser behind it) with random and mutated packets.

Invariants: ``parse_rtp`` raises nothing but ``PacketParseError``; a header without CSRCs, extension
or padding survives pack -> parse; the payload view lies inside the packet; a telephone-event
payload parses or raises ``ValueError`` (its documented error).
"""

from __future__ import annotations

import contextlib
import random
import struct

from hypothesis import given

from siproc.media.dtmf import pack_event, parse_event
from siproc.media.rtp import PacketParseError, RtpSender, is_rtcp, parse_rtp
from tests.fuzz.mutations import inputs
from tests.fuzz.profiles import count, fuzz_settings


def _seeds() -> tuple[bytes, ...]:
    sender = RtpSender(0, random.Random(3550))
    plain = sender.packet(b"\xff" * 160, 160)
    marked = sender.packet(pack_event(5, False, 10, 160), 0, marker=True, payload_type=101)
    # V=2 with 2 CSRCs, a header extension of one word and 4 octets of padding
    header = struct.pack("!BBHII", 0xB2, 8, 7, 1234, 99) + struct.pack("!II", 1, 2)
    extended = header + struct.pack("!HHI", 0xBEDE, 1, 0) + b"\xd5" * 160 + b"\x00\x00\x00\x04"
    return (plain, marked, extended)


SEEDS = _seeds()


@fuzz_settings()
@given(inputs(SEEDS))
def test_parse_rtp(data: bytes) -> None:
    count("media.rtp")
    is_rtcp(data)
    try:
        header, payload = parse_rtp(data)
    except PacketParseError:
        return
    assert len(payload) <= len(data) - 12
    if header.csrc_count == 0 and not header.extension and not header.padding:
        again, same = parse_rtp(header.pack() + bytes(payload))
        assert again == header
        assert bytes(same) == bytes(payload)
    with contextlib.suppress(ValueError):
        parse_event(payload)
