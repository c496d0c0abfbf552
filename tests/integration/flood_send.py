"""An INVITE flood from one address while another address pings with OPTIONS; prints JSON.

Run inside the test's loopback-only network namespace by `test_flood.py`:
`python3 THIS PORT COUNT SECONDS`. The flood sends COUNT INVITEs (each a new call, with SDP) from
127.0.0.2 at an even pace over SECONDS, never ACKs or answers anything, and counts the final
responses by status. Meanwhile OPTIONS go from 127.0.0.4 every 20 ms; each round trip is measured
(a lost one counts as 1 s). Both loops are bounded in count and time.

Output: {"sent": int, "seconds": float, "statuses": {status: count}, "retry_after": [str ...],
"options_ms": [float ...]}
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from collections import Counter

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def request(method: str, target: int, host: str, port: int, body: str = "") -> bytes:
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    lines = [
        f"{method} sip:siproc@127.0.0.1:{target} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:flood@{host}>;tag={tag}",
        f"To: <sip:siproc@127.0.0.1:{target}>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:flood@{host}:{port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def flood(target: int, count: int, seconds: float, out: dict[str, object]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    port = sock.getsockname()[1]
    sock.settimeout(0)
    statuses: Counter[int] = Counter()
    retry_after: list[str] = []
    start = time.monotonic()

    def drain() -> None:
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            first, _, rest = data.partition(b"\r\n")
            status = int(first.split()[1])
            if status >= 200:
                statuses[status] += 1
            if status == 503 and len(retry_after) < 5:
                for line in rest.split(b"\r\n"):
                    if line.lower().startswith(b"retry-after:"):
                        retry_after.append(line.split(b":", 1)[1].strip().decode())

    for i in range(count):
        due = start + seconds * i / count
        while time.monotonic() < due:
            drain()
            time.sleep(0.0005)
        sock.sendto(request("INVITE", target, "127.0.0.2", port, SDP), ("127.0.0.1", target))
    sent_for = time.monotonic() - start
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        drain()
        time.sleep(0.01)
    out.update(sent=count, seconds=sent_for, statuses=dict(statuses), retry_after=retry_after)


def ping(target: int, stop: threading.Event, out: dict[str, object]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.4", 0))
    port = sock.getsockname()[1]
    rtts: list[float] = []
    for _ in range(1000):  # bounded: 1000 pings at most
        if stop.is_set():
            break
        sock.settimeout(1.0)
        sent = time.monotonic()
        sock.sendto(request("OPTIONS", target, "127.0.0.4", port), ("127.0.0.1", target))
        try:
            while b"OPTIONS" not in sock.recv(65535).split(b"\r\n\r\n")[0]:
                pass
            rtts.append((time.monotonic() - sent) * 1000)
        except TimeoutError:
            rtts.append(1000.0)
        time.sleep(0.02)
    out["options_ms"] = rtts


def main() -> None:
    target, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    out: dict[str, object] = {}
    stop = threading.Event()
    pinger = threading.Thread(target=ping, args=(target, stop, out))
    pinger.start()
    flood(target, count, seconds, out)
    stop.set()
    pinger.join()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
