"""Print what SRTP costs per packet: protect and unprotect of one G.711 packet, RTP and RTCP.

    python bench/srtp.py [--packets 20000] [--calls 1000]

Each packet is a 12-byte RTP header and a 160-byte G.711 payload (20 ms at 8 kHz), protected
with a fresh key through siproc.media.srtp (pylibsrtp, libsrtp bundled in its wheel), for both
suites of RFC 4568. Figures are CPU microseconds per packet in this process (one core), the
best of three runs, and what ``--calls`` concurrent calls add every 20 ms (each call protects
one packet and unprotects one), as a share of one core. An SRTCP packet goes every 5 s per
call, so its cost is shown per packet only. The figures include the harness (a lambda and a
``next()`` per packet, printed as "loop"), so they err on the high side. "in place" is the
receive path's call (:meth:`SrtpContext.unprotect_in_place`: the packet decrypted in the
stream's receive buffer, a copy into that buffer counted in), and the per-call total takes it
with ``protect``: those are what the media workers run per packet.

Measured (2 CPUs, shared, pylibsrtp 1.0.0; CPU us per packet, AES_CM_128_HMAC_SHA1_80): through
pylibsrtp's Session methods protect 1.16, unprotect 1.20 (2.36 ms per 20 ms for 1000 calls,
11.8% of a core); calling libsrtp directly (media/srtp.py) protect 0.80-0.85, unprotect in
place 0.91 with the copy into the buffer (1.76 ms per 20 ms for 1000 calls, 8.8% of a core).
SRTCP, once per 5 s per call, stays on the Session methods: 1.1 us.

Target: the SRTP work of 1000 calls takes at most 15% of one core (3 ms of every 20 ms tick,
spread over the media workers); exit status 1 above ``--budget``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from siproc.media.rtcp import SenderReport
from siproc.media.rtp import RtpHeader
from siproc.media.srtp import SrtpContext
from siproc.sdp.crypto import CryptoSuite, MasterKey

PAYLOAD = bytes(range(160))  # a G.711 frame: 20 ms at 8000 Hz, one byte per sample
FRAME_S = 0.020


def per_packet(work: Callable[[], None], packets: int) -> float:
    """Microseconds of CPU per call of ``work``: the best of three runs of ``packets``."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(packets):
            work()
        best = min(best, (time.process_time() - start) / packets)
    return best * 1e6


def measure(suite: CryptoSuite, packets: int) -> dict[str, float]:
    a, b = MasterKey.generate(suite), MasterKey.generate(suite)
    sender, receiver = SrtpContext(suite, a, b), SrtpContext(suite, b, a)
    total = packets * 3 + 10
    plain = [RtpHeader(8, n % 65536, n * 160, 0x1234ABCD).pack() + PAYLOAD for n in range(total)]
    protected = [sender.protect(p) for p in plain]  # the receiver needs ever new indices
    feed = iter(protected)
    send_one = iter(plain)
    sender2 = SrtpContext(suite, a, b)

    figures = {
        "protect": per_packet(lambda: sender2.protect(next(send_one)), packets),
        "unprotect": per_packet(lambda: receiver.unprotect(next(feed)), packets),
    }
    # The receive path's call: the datagram is in the stream's buffer (recvmsg_into put it
    # there; here a slice assignment does, which is counted) and is decrypted where it lies.
    receiver2 = SrtpContext(suite, b, a)
    buf = bytearray(4096)
    feed2 = iter(protected)

    def in_place() -> None:
        packet = next(feed2)
        size = len(packet)
        buf[:size] = packet
        receiver2.unprotect_in_place(buf, size)

    figures["in_place"] = per_packet(in_place, packets)
    assert receiver.drops.total == 0 and receiver2.drops.total == 0, receiver2.drops
    report = SenderReport(0x1234ABCD, 1 << 40, 1000, 10, 1600).pack()
    srtcp = [sender.protect_rtcp(report) for _ in range(total)]
    rtcp_feed = iter(srtcp)
    figures["protect_rtcp"] = per_packet(lambda: sender.protect_rtcp(report), packets)
    figures["unprotect_rtcp"] = per_packet(
        lambda: receiver.unprotect_rtcp(next(rtcp_feed)), packets
    )
    assert receiver.drops.total == 0, receiver.drops
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=15.0, help="percent of one core")
    args = parser.parse_args()
    worst = 0.0
    print(f"{args.packets} packets of {12 + len(PAYLOAD)} bytes, best of 3, CPU us per packet")
    empty = iter(range(args.packets * 3 + 10))
    print(f"loop (harness only): {per_packet(lambda: next(empty), args.packets):.2f}")
    for suite in CryptoSuite:
        f = measure(suite, args.packets)
        per_call_frame = f["protect"] + f["in_place"]  # us per call per 20 ms (the hot paths)
        share = args.calls * per_call_frame * 1e-6 / FRAME_S * 100
        worst = max(worst, share)
        print(
            f"{suite.value}: protect {f['protect']:.2f}  unprotect {f['unprotect']:.2f} "
            f"(in place {f['in_place']:.2f})  "
            f"SRTCP protect {f['protect_rtcp']:.2f}  unprotect {f['unprotect_rtcp']:.2f}  | "
            f"{args.calls} calls: {args.calls * per_call_frame / 1000:.2f} ms CPU per 20 ms = "
            f"{share:.1f}% of one core"
        )
    if worst > args.budget:
        print(f"OVER BUDGET: {worst:.1f}% > {args.budget:.1f}% of one core", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
