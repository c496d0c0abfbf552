"""SRTP/SRTCP contexts of one stream (siproc.media.srtp, RFC 3711 through libsrtp)."""

from __future__ import annotations

import pytest

from siproc.media.rtcp import SenderReport
from siproc.media.rtp import RtpHeader
from siproc.media.srtp import REPLAY_WINDOW, SrtpContext, SrtpError
from siproc.sdp.crypto import CryptoSuite, MasterKey
from siproc.sdp.sdes import SrtpParams

SUITES = list(CryptoSuite)
TAG = {CryptoSuite.AES_CM_128_HMAC_SHA1_80: 10, CryptoSuite.AES_CM_128_HMAC_SHA1_32: 4}
SRTCP_TRAILER = 4 + 10  # E flag + index, then an 80-bit tag for both suites (RFC 3711 3.4)


def pair(suite: CryptoSuite) -> tuple[SrtpContext, SrtpContext]:
    """Two ends of one call: each sends with its own key, receives with the other's."""
    a, b = MasterKey.generate(suite), MasterKey.generate(suite)
    return SrtpContext(suite, a, b), SrtpContext.from_params(SrtpParams(suite, b, a, 1))


def rtp(sequence: int, payload: bytes = b"\xd5" * 160, ssrc: int = 0x1234ABCD) -> bytes:
    return RtpHeader(8, sequence, sequence * 160, ssrc).pack() + payload


def rtcp(count: int) -> bytes:
    return SenderReport(0x1234ABCD, 1 << 40, 1000, count, count * 160).pack()


@pytest.mark.parametrize("suite", SUITES)
def test_rtp_round_trip_encrypts_and_adds_the_suites_tag(suite: CryptoSuite) -> None:
    alice, bob = pair(suite)
    for seq in range(65530, 65536 + 40):  # across a sequence number wrap (the ROC, RFC 3711 3.3.1)
        packet = rtp(seq % 65536, bytes([seq % 256]) * 160)
        protected = alice.protect(packet)
        assert len(protected) == len(packet) + TAG[suite]
        assert protected[:12] == packet[:12]  # the header is authenticated, not encrypted
        assert protected[12:172] != packet[12:]
        assert bob.unprotect(protected) == packet
    assert bob.drops.total == 0


@pytest.mark.parametrize("suite", SUITES)
def test_rtcp_round_trip_both_ways(suite: CryptoSuite) -> None:
    alice, bob = pair(suite)
    for count in range(5):
        packet = rtcp(count)
        protected = alice.protect_rtcp(packet)
        assert len(protected) == len(packet) + SRTCP_TRAILER
        assert protected[8:28] != packet[8:28]  # the sender info is encrypted
        assert bob.unprotect_rtcp(protected) == packet
        assert alice.unprotect_rtcp(bob.protect_rtcp(packet)) == packet
    assert alice.drops.total == bob.drops.total == 0


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("where", [1, 5, 20, 100, -1])  # header, payload, tag
def test_tampering_is_detected_and_dropped(suite: CryptoSuite, where: int) -> None:
    alice, bob = pair(suite)
    protected = alice.protect(rtp(7))
    tampered = bytearray(protected)
    tampered[where] ^= 0x01
    assert bob.unprotect(bytes(tampered)) is None
    assert (bob.drops.auth, bob.drops.replay, bob.drops.malformed) == (1, 0, 0)
    assert bob.unprotect(protected) == rtp(7)  # the forgery did not burn the real packet's index


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_srtcp_is_dropped(suite: CryptoSuite) -> None:
    alice, bob = pair(suite)
    tampered = bytearray(alice.protect_rtcp(rtcp(1)))
    tampered[10] ^= 0x80
    assert bob.unprotect_rtcp(bytes(tampered)) is None
    assert bob.drops.auth == 1


@pytest.mark.parametrize("suite", SUITES)
def test_replays_are_dropped_reordering_in_the_window_is_not(suite: CryptoSuite) -> None:
    alice, bob = pair(suite)
    sent = [alice.protect(rtp(seq)) for seq in range(100, 100 + REPLAY_WINDOW + 50)]
    assert bob.unprotect(sent[1]) == rtp(101)
    assert bob.unprotect(sent[0]) == rtp(100)  # late but new: accepted
    assert bob.unprotect(sent[1]) is None  # the same packet again
    assert bob.drops.replay == 1
    for packet in sent[2:]:
        assert bob.unprotect(packet) is not None
    assert bob.unprotect(sent[5]) is None  # now older than the replay window
    assert (bob.drops.auth, bob.drops.replay, bob.drops.malformed) == (0, 2, 0)


@pytest.mark.parametrize("suite", SUITES)
def test_srtcp_replay_is_dropped(suite: CryptoSuite) -> None:
    alice, bob = pair(suite)
    protected = alice.protect_rtcp(rtcp(1))
    assert bob.unprotect_rtcp(protected) == rtcp(1)
    assert bob.unprotect_rtcp(protected) is None
    assert bob.drops.replay == 1


def test_wrong_key_or_wrong_suite_is_an_authentication_drop() -> None:
    alice, _ = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    stranger, _ = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    assert stranger.unprotect(alice.protect(rtp(1))) is None
    assert stranger.drops.auth == 1
    key = MasterKey.generate()
    sender80 = SrtpContext(CryptoSuite.AES_CM_128_HMAC_SHA1_80, key, key)
    receiver32 = SrtpContext(CryptoSuite.AES_CM_128_HMAC_SHA1_32, key, key)
    assert receiver32.unprotect(sender80.protect(rtp(2))) is None
    assert receiver32.drops.auth == 1


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x80", b"\x80\x08\x00\x01", b"\x80" * 11, bytes(3000), bytes(1500)],
)
def test_malformed_packets_are_dropped_never_raised(junk: bytes) -> None:
    _, bob = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    assert bob.unprotect(junk) is None
    assert bob.unprotect_rtcp(junk) is None
    assert bob.drops.total == 2
    assert bob.drops.replay == 0


def test_views_of_received_buffers_are_accepted() -> None:
    alice, bob = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_32)
    buffer = bytearray(2048)
    protected = alice.protect(rtp(3))
    buffer[: len(protected)] = protected
    assert bob.unprotect(memoryview(buffer)[: len(protected)]) == rtp(3)
    assert bob.unprotect_rtcp(bytearray(alice.protect_rtcp(rtcp(2)))) == rtcp(2)


def test_a_new_ssrc_from_the_peer_is_followed() -> None:
    alice, bob = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    assert bob.unprotect(alice.protect(rtp(10, ssrc=1))) == rtp(10, ssrc=1)
    assert bob.unprotect(alice.protect(rtp(500, ssrc=2))) == rtp(500, ssrc=2)
    assert bob.drops.total == 0


def test_protecting_an_impossible_packet_is_a_local_error() -> None:
    alice, _ = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    with pytest.raises(SrtpError, match="RTP packet of 1500 bytes"):
        alice.protect(rtp(1, bytes(1488)))
    with pytest.raises(SrtpError, match="RTCP packet"):
        alice.protect_rtcp(bytes(1500))


def test_repr_shows_no_key() -> None:
    key = MasterKey.generate()
    context = SrtpContext(CryptoSuite.AES_CM_128_HMAC_SHA1_80, key, key)
    text = repr(context)
    assert key.base64() not in text and key.key_salt.hex()[:8] not in text
    assert "AES_CM_128_HMAC_SHA1_80" in text


def test_a_reinvite_with_the_same_keys_keeps_the_crypto_context() -> None:
    """RFC 4568 7.1.4: past a sequence wrap, a fresh context (ROC 0) could not decrypt."""
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    a, b = MasterKey.generate(suite), MasterKey.generate(suite)
    alice, bob = SrtpContext(suite, a, b), SrtpContext(suite, b, a)
    sent = [alice.protect(rtp(seq % 65536)) for seq in range(65530, 65540)]  # ROC is now 1
    assert all(bob.unprotect(packet) is not None for packet in sent)
    bob = bob.replaced(SrtpParams(suite, b, a, 1))
    assert bob.unprotect(alice.protect(rtp(4))) == rtp(4)
    assert bob.unprotect(sent[-1]) is None and bob.drops.replay == 1  # the window is kept
    # A new remote key starts a new receive context; the send context is kept.
    c = MasterKey.generate(suite)
    carol = SrtpContext(suite, c, b)
    bob2 = bob.replaced(SrtpParams(suite, b, c, 1))
    assert bob2.unprotect(carol.protect(rtp(1))) == rtp(1)
    assert bob2.unprotect(alice.protect(rtp(5))) is None  # the old key no longer works
    assert bob2.drops is bob.drops and bob2.drops.auth == 1
    assert alice.unprotect(bob2.protect(rtp(9))) == rtp(9)


@pytest.mark.parametrize("suite", SUITES)
def test_unprotect_in_place_decrypts_in_the_receive_buffer_and_drops_like_unprotect(
    suite: CryptoSuite,
) -> None:
    """The receive path's call: the packet is decrypted where it lies; what fails is -1 and
    counted by reason, as unprotect() counts it; the same buffer serves every packet."""
    alice, bob = pair(suite)
    buf = bytearray(4096)
    packets = [alice.protect(rtp(seq, bytes([seq]) * 160)) for seq in range(1, 40)]
    for seq, protected in enumerate(packets, 1):
        buf[: len(protected)] = protected
        size = bob.unprotect_in_place(buf, len(protected))
        assert bytes(buf[:size]) == rtp(seq, bytes([seq]) * 160)
    buf[: len(packets[5])] = packets[5]  # a replay
    assert bob.unprotect_in_place(buf, len(packets[5])) == -1
    forged = bytearray(alice.protect(rtp(50)))
    forged[20] ^= 1
    buf[: len(forged)] = forged
    assert bob.unprotect_in_place(buf, len(forged)) == -1
    buf[:3] = b"\x80\x00\x00"
    assert bob.unprotect_in_place(buf, 3) == -1  # too short for an RTP header
    assert (bob.drops.replay, bob.drops.auth, bob.drops.total) == (1, 1, 3)
    other = bytearray(4096)  # another buffer (a stream's, after a re-INVITE): bound anew
    fresh = alice.protect(rtp(60))
    other[: len(fresh)] = fresh
    assert bytes(other[: bob.unprotect_in_place(other, len(fresh))]) == rtp(60)


@pytest.mark.parametrize("suite", SUITES)
def test_protect_through_libsrtp_directly_is_what_the_session_gives(suite: CryptoSuite) -> None:
    """SrtpContext.protect calls libsrtp itself (no pylibsrtp method per packet): same bytes
    as pylibsrtp's Session with the same key, packet after packet (the buffer is reused)."""
    key, other = MasterKey.generate(suite), MasterKey.generate(suite)
    ours = SrtpContext(suite, key, other)
    reference = SrtpContext(suite, key, other)._tx  # the pylibsrtp Session of that key
    for seq in (1, 2, 3, 65535, 0):
        packet = rtp(seq, bytes([seq % 256]) * (20 + seq % 7))
        assert ours.protect(packet) == reference.protect(packet)
    largest = rtp(9, bytes(1500 - 144 - 12))  # the most pylibsrtp took: the same here
    assert ours.protect(largest) == reference.protect(largest)
    with pytest.raises(SrtpError, match="1357 bytes"):
        ours.protect(largest + b"\x00")


@pytest.mark.parametrize("suite", SUITES)
def test_without_the_binding_the_session_methods_give_the_same_packets(suite: CryptoSuite) -> None:
    """Another pylibsrtp (no libsrtp context reachable): protect and unprotect_in_place fall
    back to the Session methods, with the same packets, results and drop counters."""
    key, other = MasterKey.generate(suite), MasterKey.generate(suite)
    direct, fallback = SrtpContext(suite, key, other), SrtpContext(suite, key, other)
    fallback._tx_ctx = fallback._rx_ctx = None
    peer = SrtpContext(suite, other, key)
    for seq in (1, 2, 3):
        assert fallback.protect(rtp(seq)) == direct.protect(rtp(seq))
    buf = bytearray(4096)
    one, two, three = (peer.protect(rtp(seq)) for seq in (1, 2, 3))
    for packet in (one, three[:-1], two, one):  # good, cut short, good, replayed
        results = []
        for context in (direct, fallback):
            buf[: len(packet)] = packet
            size = context.unprotect_in_place(buf, len(packet))
            results.append(bytes(buf[:size]) if size >= 0 else None)
        assert results[0] == results[1]
    assert results[0] is None
    assert fallback.drops == direct.drops
    assert (direct.drops.auth, direct.drops.replay, direct.drops.total) == (1, 1, 2)
