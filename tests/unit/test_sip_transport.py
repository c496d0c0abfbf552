"""The pure helpers of net/sip_transport.py: what the per-source cap counts by, and the
rate-limited warning (the sockets are exercised in tests/integration)."""

from __future__ import annotations

import logging

import pytest

from siproc.net.sip_transport import _RateLimitedWarning, _source_key

LOG = logging.getLogger("test_sip_transport_unit")


def test_source_key_is_the_ipv4_address_or_the_ipv6_64() -> None:
    assert _source_key("192.0.2.7") == "192.0.2.7"
    assert _source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert _source_key("2001:db8:1:2:ffff::9") == _source_key("2001:db8:1:2::1")
    assert _source_key("2001:db8:1:3::1") != _source_key("2001:db8:1:2::1")
    assert _source_key("::1") == "::/64"


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
