"""The far end of an RtpStream in unit tests: a UDP socket on loopback and ways to read RTP
from it (tests/unit/conftest.py makes it the ``peer`` fixture)."""

from __future__ import annotations

import socket

import pytest

from siproc.media.rtp import RtpHeader, parse_rtp

HOST = "127.0.0.1"
TIMEOUT = 1.0  # seconds a recv waits: loopback delivers at once, so only a bug waits this long


def udp_peer() -> socket.socket:
    """A UDP socket bound to a free port of 127.0.0.1, reads time out after :data:`TIMEOUT`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(TIMEOUT)
    return sock


def receive_rtp(sock: socket.socket, count: int) -> list[tuple[RtpHeader, bytes]]:
    """The next ``count`` RTP packets of ``sock``, parsed (the payload copied)."""
    packets = []
    for _ in range(count):
        header, payload = parse_rtp(sock.recv(2048))
        packets.append((header, bytes(payload)))
    return packets


def drain_rtp(sock: socket.socket, count: int) -> list[tuple[RtpHeader, bytes]]:
    """Exactly ``count`` RTP packets (loopback delivers them at once): :func:`receive_rtp`, then
    check that no more are queued."""
    packets = receive_rtp(sock, count)
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(2048)
    sock.settimeout(TIMEOUT)
    return packets
