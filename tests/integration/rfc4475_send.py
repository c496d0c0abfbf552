"""Send RFC 4475 torture messages to a siproc over UDP and print what came back, as JSON.

Run inside the test's loopback-only network namespace (`ip netns exec NAME python3 THIS ...`) by
`test_rfc4475_wire.py`; it has no dependency on siproc, so that a parser bug in siproc cannot hide
in the checker.

For every file: the response to a UDP request goes to the packet's source address and, as the
torture messages carry no `rport` (but mpart01), to the port of the top Via's sent-by (default
5060, RFC 3261 section 18.2.2). So the message is sent from a socket bound on 127.0.0.1 at that
port, which also receives the responses. Collecting ends 0.2 s after a final response that
carries the message's Call-ID, or after 0.5 s without such a response when no provisional one
came, or after a hard limit. Every datagram received is reported, with `mine` telling whether
its Call-ID is the message's (retransmitted final responses of earlier INVITEs are not).

Finally, unless --no-final-options, a well-formed OPTIONS (with rport) checks that siproc still
answers.

Output: {"files": [{"file", "port", "bound", "call_id", "responses": [{"t", "source", "mine",
"text"}]}], "final_options": {"t", "text"} | null}
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import sys
import time
from pathlib import Path

SILENCE = 0.5  # seconds without a datagram that end the wait when nothing provisional came
AFTER_FINAL = 0.2  # seconds to linger after a final response, to catch duplicates
HARD_LIMIT = 6.0  # seconds at most per message

_FOLD = re.compile(rb"\r?\n[ \t]+")
_VIA_NAME = re.compile(rb"^(?:via|v)[ \t]*:", re.I)
_CALL_ID_NAME = re.compile(rb"^(?:call-id|i)[ \t]*:", re.I)
_SENT_BY = re.compile(
    rb"SIP\s*/\s*\d+\.\d+\s*/\s*[A-Za-z0-9]+\s+(\[[0-9A-Fa-f:.]+\]|[^\s;:,]+)(?:\s*:\s*(\d+))?"
)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def header_lines(data: bytes) -> list[bytes]:
    """The header lines of a message, folded lines joined (RFC 3261 section 7.3.1)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return _FOLD.sub(b" ", head).split(b"\r\n")[1:]


def call_id(data: bytes) -> str | None:
    for line in header_lines(data):
        if _CALL_ID_NAME.match(line):
            return line.split(b":", 1)[1].strip().decode("utf-8", "replace")
    return None


def sent_by_port(data: bytes) -> int:
    """The port of the top Via's sent-by; 5060 when it has none or cannot be read."""
    for line in header_lines(data):
        if _VIA_NAME.match(line):
            match = _SENT_BY.search(line.split(b":", 1)[1])
            if match and match.group(2):
                port = int(match.group(2))
                if 0 < port < 65536:
                    return port
            return 5060
    return 5060


def open_socket(port: int) -> tuple[socket.socket, bool]:
    """A UDP socket on 127.0.0.1:port, or on an ephemeral port if that one is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        sock.bind(("127.0.0.1", port))
        return sock, True
    except OSError:
        sock.bind(("127.0.0.1", 0))
        return sock, False


def exchange(data: bytes, target: tuple[str, int], port: int) -> dict[str, object]:
    sock, bound = open_socket(port)
    mine_id = call_id(data)
    responses: list[dict[str, object]] = []
    try:
        start = time.monotonic()
        sock.sendto(data, target)
        last = start
        final_at: float | None = None
        provisional = False
        while True:
            now = time.monotonic()
            if final_at is not None:
                deadline = final_at + AFTER_FINAL
            elif provisional:
                deadline = start + HARD_LIMIT
            else:
                deadline = last + SILENCE
            deadline = min(deadline, start + HARD_LIMIT)
            if now >= deadline:
                break
            ready, _, _ = select.select([sock], [], [], deadline - now)
            if not ready:
                continue
            packet, source = sock.recvfrom(65535)
            now = time.monotonic()
            mine = call_id(packet) == mine_id
            if mine:
                last = now
            responses.append(
                {
                    "t": round(now - start, 3),
                    "source": list(source),
                    "mine": mine,
                    "text": packet.decode("utf-8", "replace"),
                }
            )
            status = _STATUS.match(packet)
            if mine and status:
                if int(status.group(1)) >= 200:
                    final_at = final_at or now
                else:
                    provisional = True
    finally:
        sock.close()
    return {
        "port": port,
        "bound": bound,
        "call_id": mine_id,
        "responses": responses,
    }


def final_options(target: tuple[str, int]) -> dict[str, object] | None:
    """One well-formed OPTIONS from an ephemeral port with rport; its response or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        host, siproc_port = target
        tag = time.time_ns()
        message = (
            f"OPTIONS sip:siproc@{host}:{siproc_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKfinal{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:tester@127.0.0.1>;tag=f{tag}\r\n"
            f"To: <sip:siproc@{host}:{siproc_port}>\r\n"
            f"Call-ID: final-options-{tag}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        start = time.monotonic()
        sock.sendto(message, target)
        deadline = start + 5.0
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                break
            packet, _ = sock.recvfrom(65535)
            if call_id(packet) == f"final-options-{tag}@127.0.0.1":
                return {
                    "t": round(time.monotonic() - start, 3),
                    "text": packet.decode("utf-8", "replace"),
                }
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="siproc's HOST:PORT")
    parser.add_argument("--no-final-options", action="store_true")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    target = (host, int(port))
    results = []
    for path in args.files:
        result = exchange(path.read_bytes(), target, sent_by_port(path.read_bytes()))
        results.append({"file": path.name, **result})
    output = {
        "files": results,
        "final_options": None if args.no_final_options else final_options(target),
    }
    json.dump(output, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
