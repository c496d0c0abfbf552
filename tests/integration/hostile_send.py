"""Send hostile INVITEs to a siproc over UDP and print, as JSON, what came back.

Run inside the test's loopback-only network namespace (`ip netns exec NAME python3 THIS PORT`) by
`test_hostile_peer.py`. Independent of siproc's own SIP code, so that a parser bug in siproc
cannot hide in the checker.

Each case is one INVITE from its own socket. After a 2xx the case's ``ack`` says what to do:
``ok`` ACKs it (with the case's answer SDP when siproc offered), ``none`` sends nothing (a peer
that vanished), ``bad-sdp`` ACKs with a broken SDP. A BYE from siproc is answered 200. Collecting
ends 1 s after the last datagram, or after a hard limit.

Output: {"CASE": {"statuses": [int ...], "bye": bool}}
"""

from __future__ import annotations

import json
import re
import secrets
import select
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

QUIET = 1.0  # seconds without a datagram that end a case
HARD_LIMIT = 8.0  # seconds at most per case

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)
HUGE = "9" * 5000

# name -> (header edits, SDP body or None, what to do after a 2xx)
CASES: dict[str, tuple[dict[str, str], str | None, str]] = {
    "from-nul-escaped": ({"From": "<sip:%00@127.0.0.1>;tag=f1"}, OFFER, "ok"),
    "from-nul-raw": ({"From": '"a\x00b" <sip:alice@127.0.0.1>;tag=f1'}, OFFER, "ok"),
    "to-nul-raw": ({"To": "<sip:bob\x00@127.0.0.1>"}, OFFER, "ok"),
    "x-header-nul-raw": ({"X-Note": "hello\x00world"}, OFFER, "ok"),
    "x-header-bare-cr": ({"X-Note": "hello\rworld"}, OFFER, "ok"),
    "x-header-escaped-nul": ({"X-Note": "hello%00world"}, OFFER, "ok"),
    "user-dotdot": ({"From": "<sip:..@127.0.0.1>;tag=f1"}, OFFER, "ok"),
    "user-slash": ({"From": "<sip:..%2F..%2Fetc%2Fpasswd@127.0.0.1>;tag=f1"}, OFFER, "ok"),
    "huge-cseq": ({"CSeq": f"{HUGE} INVITE"}, OFFER, "ok"),
    "huge-max-forwards": ({"Max-Forwards": HUGE}, OFFER, "ok"),
    "sdp-huge-port": ({}, OFFER.replace("m=audio {port}", f"m=audio {HUGE}"), "ok"),
    "sdp-huge-payload-type": ({}, OFFER.replace("RTP/AVP 0 101", f"RTP/AVP 0 {HUGE}"), "ok"),
    "sdp-huge-version": ({}, OFFER.replace("o=- 1 1", f"o=- 1 {HUGE}"), "ok"),
    "sdp-control-in-rtpmap": ({}, OFFER.replace("PCMU/8000", "PC\x01MU/8000"), "ok"),
    "sdp-cr-in-fmtp": ({}, OFFER.replace("0-16\r\n", "0-\r16\r\n"), "ok"),
    "contact-unresolvable-no-ack": (
        {"Contact": "<sip:ghost@no-such-host.invalid>"},
        OFFER,
        "none",
    ),
    "contact-unresolvable-acked": ({"Contact": "<sip:ghost@no-such-host.invalid>"}, OFFER, "ok"),
    "ack-bad-sdp": ({}, None, "bad-sdp"),
}


def invite(case: str, port: int, target: int, call_id: str) -> tuple[bytes, dict[str, str]]:
    edits, body, _ = CASES[case]
    headers = {
        "Via": f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        "Max-Forwards": "70",
        "From": f"<sip:{case}@127.0.0.1>;tag={secrets.token_hex(4)}",
        "To": f"<sip:siproc@127.0.0.1:{target}>",
        "Call-ID": call_id,
        "CSeq": "1 INVITE",
        "Contact": f"<sip:{case}@127.0.0.1:{port}>",
    }
    headers.update(edits)
    sdp = (body or "").replace("{port}", str(port + 1))
    if sdp:
        headers["Content-Type"] = "application/sdp"
    headers["Content-Length"] = str(len(sdp.encode()))
    lines = [f"INVITE sip:siproc@127.0.0.1:{target} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + sdp).encode(), headers


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}[ \t]*:[ \t]*(.*?)\r?$", message, re.M | re.I)
    return match.group(1) if match else ""


def ack_for(ok: str, sent: dict[str, str], target: int, port: int, body: str) -> bytes:
    to = header(ok, "To") or header(ok, "t")
    contact = re.search(r"<([^>]+)>", header(ok, "Contact") or header(ok, "m"))
    uri = contact.group(1) if contact else f"sip:siproc@127.0.0.1:{target}"
    lines = [
        f"ACK {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        "Max-Forwards: 70",
        f"From: {sent['From']}",
        f"To: {to}",
        f"Call-ID: {sent['Call-ID']}",
        "CSeq: 1 ACK",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def ok_for(request: str) -> bytes:
    names = ("Via", "From", "To", "Call-ID", "CSeq")
    lines = ["SIP/2.0 200 OK"] + [f"{n}: {header(request, n)}" for n in names]
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


def run_case(case: str, target: int) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    call_id = f"{case}-{secrets.token_hex(6)}"
    data, sent = invite(case, port, target, call_id)
    sock.sendto(data, ("127.0.0.1", target))
    statuses: list[int] = []
    bye = acked = False
    start = last = time.monotonic()
    while time.monotonic() - last < QUIET and time.monotonic() - start < HARD_LIMIT:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if not ready:
            continue
        raw, source = sock.recvfrom(65535)
        last = time.monotonic()
        text = raw.decode("utf-8", "replace")
        if text.startswith("SIP/2.0 "):
            status = int(text.split()[1])
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            action = CASES[case][2]
            if 200 <= status < 300 and action != "none" and not acked:
                body = ""
                if action == "bad-sdp":
                    body = "v=0\r\nm=audio 99999999999999999999999 RTP/AVP 0\r\n"
                elif CASES[case][1] is None:
                    body = OFFER.replace("{port}", str(port + 1))
                sock.sendto(ack_for(text, sent, target, port, body), source)
                acked = True
        elif text.startswith("BYE "):
            bye = True
            sock.sendto(ok_for(text), source)
    sock.close()
    return {"statuses": statuses, "bye": bye}


def main() -> None:
    target = int(sys.argv[1])
    names = sys.argv[2:] or list(CASES)
    with ThreadPoolExecutor(4) as pool:  # siproc under test takes 5 calls at once
        results = dict(zip(names, pool.map(lambda n: run_case(n, target), names), strict=True))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
