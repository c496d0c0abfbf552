"""The inbound policy, the flood limiters and SIPROC_ACCEPT_REFER (calls/inbound.py), in
virtual time."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.calls.inbound import RateTable, TokenBucket, admits, refer_allowed
from siproc.config import InboundPolicy
from siproc.sip.transaction import Destination
from siproc.sip.uri import parse_sip_uri

REGISTRAR = InboundPolicy(registrar=True, networks=(), reject=403)
PBX = [Destination("udp", "192.0.2.10", 5060), Destination("tcp", "192.0.2.11", 5060)]


def test_token_bucket_bursts_then_paces() -> None:
    bucket = TokenBucket(10, 20, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(100)) == 20
    assert bucket.wait(0.0) == pytest.approx(0.1)
    assert not bucket.take(0.05)
    assert bucket.take(0.1)
    assert sum(bucket.take(1.1) for _ in range(100)) == 10  # 1 s refills 10
    assert bucket.full(100.0)


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_rate_plus_burst(times: list[float]) -> None:
    bucket = TokenBucket(10, 20, now=0.0)
    taken = sum(bucket.take(t) for t in sorted(times))
    assert taken <= 20 + 10 * max(times) + 1e-9


def test_rate_table_is_per_source_and_bounded() -> None:
    table = RateTable(1, 2, size=3)
    assert [table.take("a", 0) for _ in range(3)] == [True, True, False]
    assert table.take("b", 0)  # another address has its own burst
    assert table.retry_after("a", 0) == 1
    for key in "cde":
        table.take(key, 0)
    assert len(table) == 3  # the oldest were forgotten
    table.prune(10.0)
    assert len(table) == 0


def test_open_policy_admits_anyone() -> None:
    policy = InboundPolicy(registrar=False, networks=(), reject=403)
    assert admits(policy, Destination("udp", "203.0.113.9", 5060), request_user="x") is None


def test_registrar_policy_checks_the_transport_address_and_the_user() -> None:
    def check(source: Destination, user: str | None) -> str | None:
        return admits(
            REGISTRAR, source, request_user=user, registrars=PBX, own_users=["alice", "siproc"]
        )

    assert check(Destination("udp", "192.0.2.10", 5060), "alice") is None
    assert check(Destination("udp", "192.0.2.10", 5060), "siproc") is None
    assert check(Destination("udp", "192.0.2.10", 5060), "%61lice") is None  # RFC 3261 19.1.4
    assert "not the registrar" in (check(Destination("udp", "192.0.2.10", 5099), "alice") or "")
    assert "not the registrar" in (check(Destination("udp", "198.51.100.1", 5060), "alice") or "")
    assert "user '100'" in (check(Destination("udp", "192.0.2.10", 5060), "100") or "")
    assert check(Destination("udp", "192.0.2.10", 5060), None) is not None
    # TCP: the registrar may open its own connection, from any port
    assert check(Destination("tcp", "192.0.2.11", 40123), "alice") is None
    assert check(Destination("tcp", "::ffff:192.0.2.11", 40123), "alice") is None


def test_network_policy() -> None:
    policy = InboundPolicy(
        registrar=False,
        networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
        reject=None,
    )
    assert admits(policy, Destination("udp", "10.1.2.3", 5060), request_user=None) is None
    assert admits(policy, Destination("udp", "2001:db8::5", 5060), request_user=None) is None
    assert admits(policy, Destination("udp", "11.0.0.1", 5060), request_user=None) is not None
    assert admits(policy, Destination("udp", "not-an-ip", 5060), request_user=None) is not None


@pytest.mark.parametrize(
    ("setting", "target", "allowed"),
    [
        (True, "sip:900@evil.example", True),
        (False, "sip:100@pbx.example.com", False),
        (("sip:*@pbx.example.com",), "sip:100@pbx.example.com;transport=tcp", True),
        (("sip:*@pbx.example.com",), "sip:100@PBX.example.com", True),
        (("sip:*@pbx.example.com",), "sip:100@pbx.example.com.evil.net", False),
        (("sip:1??@*",), "sip:123@10.0.0.1:5060", True),
        (("sip:1??@*",), "sip:0900123@10.0.0.1", False),
    ],
)
def test_refer_allowed(setting: tuple[str, ...] | bool, target: str, allowed: bool) -> None:
    assert refer_allowed(setting, parse_sip_uri(target)) is allowed


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("sip:100@pbx.example.com", True),
        ("sip:100@pbx.example.com;maddr=pbx.example.com", True),
        ("sip:100@pbx.example.com;maddr=198.51.100.7", False),
        ("sip:100@pbx.example.com;MADDR=198.51.100.7", False),
    ],
)
def test_refer_allowed_checks_the_maddr_too(target: str, allowed: bool) -> None:
    """maddr is where the INVITE goes (RFC 3263 section 4): it is a target host as well."""
    assert refer_allowed(("sip:*@pbx.example.com",), parse_sip_uri(target)) is allowed
