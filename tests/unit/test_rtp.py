"""RTP fixed header: parse, build, sender sequencing (RFC 3550 section 5.1)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.media.rtp import PacketParseError, RtpHeader, RtpSender, is_rtcp, parse_rtp

# A PCMU packet as a real peer sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, SSRC.
SAMPLE = bytes.fromhex("8080 1234 deadbeef 01020304".replace(" ", "")) + b"\xff" * 160


def test_parse_sample() -> None:
    header, payload = parse_rtp(SAMPLE)
    assert header == RtpHeader(
        payload_type=0, sequence=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304, marker=True
    )
    assert bytes(payload) == b"\xff" * 160
    assert header.pack() == SAMPLE[:12]


def test_parse_csrc_extension_padding() -> None:
    csrcs = struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 2) + b"\x00" * 8
    pad = b"\x00\x00\x03"
    data = bytes([0x80 | 0x20 | 0x10 | 2, 8]) + struct.pack("!HII", 7, 8, 9)
    data += csrcs + ext + b"abc" + pad
    header, payload = parse_rtp(data)
    assert (header.csrc_count, header.extension, header.padding) == (2, True, True)
    assert (header.payload_type, header.sequence, header.timestamp, header.ssrc) == (8, 7, 8, 9)
    assert bytes(payload) == b"abc"


def test_parse_accepts_memoryview_and_bytearray() -> None:
    for data in (bytearray(SAMPLE), memoryview(SAMPLE)):
        header, payload = parse_rtp(data)
        assert header.sequence == 0x1234
        assert len(payload) == 160


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (SAMPLE[:11], "too short"),
        (b"\x40" + SAMPLE[1:], "version"),
        (b"\x00" + SAMPLE[1:], "version"),
        (b"\x8f" + SAMPLE[1:12] + b"\x00" * 8, "CSRC"),  # 15 CSRCs, 8 bytes follow
        (b"\x90" + SAMPLE[1:12], "extension"),
        (b"\x90" + SAMPLE[1:12] + struct.pack("!HH", 0, 5) + b"\x00" * 4, "extension"),
        (b"\xa0" + SAMPLE[1:12] + b"\x00\x00", "padding"),  # pad count 0
        (b"\xa0" + SAMPLE[1:12] + b"\x00\x09", "padding"),  # more padding than bytes
    ],
)
def test_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(PacketParseError, match=reason):
        parse_rtp(data)


def test_parse_error_is_value_error() -> None:
    assert issubclass(PacketParseError, ValueError)


@given(st.binary(max_size=80))
def test_parse_never_raises_anything_else(data: bytes) -> None:
    try:
        header, payload = parse_rtp(data)
    except PacketParseError:
        return
    assert header.version == 2
    assert len(payload) <= len(data) - 12


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    payload=st.binary(max_size=200),
)
def test_header_round_trip(
    pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes
) -> None:
    header = RtpHeader(payload_type=pt, sequence=seq, timestamp=ts, ssrc=ssrc, marker=marker)
    parsed, body = parse_rtp(header.pack() + payload)
    assert parsed == header
    assert bytes(body) == payload


def test_header_validates() -> None:
    with pytest.raises(ValueError):
        RtpHeader(payload_type=128, sequence=0, timestamp=0, ssrc=0)
    with pytest.raises(ValueError):
        RtpHeader(payload_type=0, sequence=65536, timestamp=0, ssrc=0)
    with pytest.raises(ValueError):
        RtpHeader(payload_type=0, sequence=0, timestamp=1 << 32, ssrc=0)
    with pytest.raises(ValueError):
        RtpHeader(payload_type=0, sequence=0, timestamp=0, ssrc=0, version=1)


def test_sender_sequences_and_wraps() -> None:
    sender = RtpSender(0, random.Random(1))
    sender.sequence = 0xFFFE
    sender.timestamp = 0xFFFFFF00
    packets = [sender.packet(b"\x00" * 160, 160, marker=(i == 0)) for i in range(4)]
    headers = [parse_rtp(p)[0] for p in packets]
    assert [h.sequence for h in headers] == [0xFFFE, 0xFFFF, 0, 1]
    assert [h.timestamp for h in headers] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]
    assert [h.marker for h in headers] == [True, False, False, False]
    assert {h.ssrc for h in headers} == {sender.ssrc}
    assert all(len(p) == 172 for p in packets)


def test_sender_skip_and_payload_type_override() -> None:
    sender = RtpSender(8, random.Random(2))
    first = parse_rtp(sender.packet(b"x", 160))[0]
    sender.skip(320)
    second, payload = parse_rtp(sender.packet(b"\x01\x02", 0, payload_type=101))
    assert second.sequence == (first.sequence + 1) % 65536
    assert second.timestamp == (first.timestamp + 480) % (1 << 32)
    assert (first.payload_type, second.payload_type) == (8, 101)
    assert bytes(payload) == b"\x01\x02"


def test_sender_random_origins_differ_and_are_reproducible() -> None:
    a, b = RtpSender(0, random.Random(5)), RtpSender(0, random.Random(5))
    assert (a.ssrc, a.sequence, a.timestamp) == (b.ssrc, b.sequence, b.timestamp)
    c = RtpSender(0)  # SystemRandom
    assert 0 <= c.ssrc < 1 << 32
    assert RtpSender(0, ssrc=42).ssrc == 42


def test_sender_packets_are_independent() -> None:
    sender = RtpSender(0, random.Random(3))
    one = sender.packet(b"\x01" * 160, 160)
    two = sender.packet(b"\x02" * 10, 160)
    assert one[12:] == b"\x01" * 160
    assert two[12:] == b"\x02" * 10


def test_sender_rejects_oversize() -> None:
    with pytest.raises(ValueError):
        RtpSender(0, random.Random(0)).packet(b"\x00" * 1500, 1500)


def test_is_rtcp() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")  # sender report, PT 200
    assert is_rtcp(b"\x81\xc9\x00\x07")  # receiver report, PT 201
    assert not is_rtcp(SAMPLE)
    assert not is_rtcp(b"\x80")


def test_media_is_sans_io() -> None:
    """DESIGN.md rule 1: siproc.media never imports asyncio, socket, subprocess or time."""
    import ast
    from pathlib import Path

    import siproc.media

    forbidden = {"asyncio", "socket", "subprocess", "time", "selectors"}
    root = Path(siproc.media.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
