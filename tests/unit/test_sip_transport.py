"""The pure helpers of net/sip_transport.py: the rate-limited warning (the sockets are
exercised in tests/integration; the per-source key is net/hosts.py's)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from siproc.net import sip_transport
from siproc.net.sip_transport import _RateLimitedWarning

LOG = logging.getLogger("test_sip_transport_unit")


def test_rate_limited_warning_logs_once_per_interval_then_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warning = _RateLimitedWarning(interval=10.0)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        warning.warn(LOG, 100.0, "peer %s misbehaved", "a")
        warning.warn(LOG, 101.0, "peer %s misbehaved", "b")
        warning.warn(LOG, 109.9, "peer %s misbehaved", "c")
        warning.warn(LOG, 110.0, "peer %s misbehaved", "d")
        warning.warn(LOG, 111.0, "peer %s misbehaved", "e")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "peer a misbehaved",
        "peer d misbehaved (and 2 more like it in the last 10 s)",
    ]


def test_the_sip_udp_socket_has_room_for_a_burst() -> None:
    """The SIP UDP socket asks for a 1 MiB receive buffer (the kernel reports it doubled,
    capped by net.core.rmem_max): a busy loop's burst of requests is queued, not dropped."""
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    sock = sip_transport._listening_socket("127.0.0.1", socket.SOCK_DGRAM, 0)
    with sock:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert got >= 2 * min(sip_transport.UDP_RECEIVE_BUFFER, cap)
