"""Print how fast the sans-I/O core handles one message: parse, parse+validate, serialize,
and a whole OPTIONS through the endpoint (parse, checks, transaction, 200 OK bytes).

    python bench/sip_core.py [--seconds 1.0]

A figure per line, in microseconds per operation and operations per second of one core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from siproc.sip.endpoint import Endpoint
from siproc.sip.headers import make_response, message_info
from siproc.sip.message import Request, parse_message, serialize
from siproc.sip.transaction import Destination

INVITE = (
    b"INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@127.0.0.1>\r\n'
    b'From: "Alice" <sip:alice@127.0.0.1>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 128\r\n\r\n"
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=sendrecv\r\n"
)


def measure(name: str, seconds: float, fn: Callable[[int], None]) -> None:
    count = 0
    batch = 200
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += batch
    elapsed = time.perf_counter() - start
    per_op = elapsed / count * 1e6
    print(f"{name:<40} {per_op:8.1f} us/op {count / elapsed:12,.0f} ops/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    seconds = parser.parse_args().seconds
    message = parse_message(INVITE)
    assert isinstance(message, Request)

    def parse(_: int) -> None:
        for _ in range(200):
            parse_message(INVITE)

    def parse_validate(_: int) -> None:
        for _ in range(200):
            message_info(parse_message(INVITE))

    def build(_: int) -> None:
        for _ in range(200):
            serialize(make_response(message, 180, "Ringing", to_tag="abc"))

    endpoint = Endpoint(allow=["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"])
    source = Destination("udp", "127.0.0.1", 5070)

    def options(start: int) -> None:
        for i in range(start, start + 200):
            data = (
                "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{i};rport\r\n"
                "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                f"Call-ID: {i}@x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            for event in endpoint.receive(data, source, "127.0.0.1", 0.0):
                tx = getattr(event, "transaction", None)
                request = getattr(event, "request", None)
                if tx is not None and request is not None:
                    endpoint.respond(tx, make_response(request, 200, "OK", to_tag="t"), 0.0)

    print(f"siproc SIP core, one core, {seconds:.1f} s per figure")
    measure("parse INVITE with SDP", seconds, parse)
    measure("parse + validate mandatory headers", seconds, parse_validate)
    measure("build + serialize a 180 response", seconds, build)
    measure("OPTIONS through the endpoint to 200 OK", seconds, options)


if __name__ == "__main__":
    main()
