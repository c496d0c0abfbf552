"""sip/info_dtmf.py: DTMF keys in SIP INFO, one INFO in flight, pure (no clock: an unanswered
INFO is the transaction's timeout, fed in as ``None``)."""

from __future__ import annotations

import pytest

from siproc.sip.info_dtmf import (
    DTMF_RELAY,
    InfoDtmfQueue,
    InfoFailed,
    SendInfo,
    dtmf_relay_body,
    info_dtmf_key,
)


def test_keys_go_one_info_at_a_time_in_order() -> None:
    queue = InfoDtmfQueue()
    assert queue.add("1*") == SendInfo("1")
    assert queue.in_flight
    assert queue.add("#") is None  # the INFO of 1 is not answered yet
    assert queue.response(100, "Trying") is None  # a provisional response changes nothing
    assert queue.response(200, "OK") == SendInfo("*")
    assert queue.response(200, "OK") == SendInfo("#")
    assert queue.response(200, "OK") is None
    assert not queue.in_flight
    assert queue.add("9") == SendInfo("9")  # nothing in flight: at once


def test_a_refused_info_drops_the_queued_keys_once() -> None:
    queue = InfoDtmfQueue()
    queue.add("123")
    assert queue.response(415, "Unsupported Media Type") == InfoFailed(
        "SIP INFO refused by the remote end (415 Unsupported Media Type); 2 more not sent", 2
    )
    assert not queue.in_flight
    assert queue.response(200, "OK") is None  # nothing left to send
    assert queue.add("4") == SendInfo("4")


def test_an_unanswered_info_drops_the_queued_keys() -> None:
    queue = InfoDtmfQueue()
    queue.add("5")
    assert queue.response(None) == InfoFailed("SIP INFO refused by the remote end (no answer)", 0)
    assert queue.add("6") == SendInfo("6")


def test_an_info_that_cannot_be_sent_drops_the_rest() -> None:
    queue = InfoDtmfQueue()
    assert queue.add("78") == SendInfo("7")
    assert queue.unsent("the far end cannot be reached: no such host") == InfoFailed(
        "the far end cannot be reached: no such host; 1 more not sent", 1
    )
    assert not queue.in_flight
    assert queue.add("9") == SendInfo("9")


def test_clear_forgets_the_keys_without_a_failure() -> None:
    queue = InfoDtmfQueue()
    queue.add("12")
    queue.clear()  # the call ended while an INFO was out
    assert not queue.in_flight
    assert queue.response(200, "OK") is None  # its late answer sends nothing more


def test_dtmf_relay_body() -> None:
    assert dtmf_relay_body("#") == b"Signal=#\r\nDuration=160\r\n"
    assert info_dtmf_key(DTMF_RELAY, dtmf_relay_body("#")) == "#"


@pytest.mark.parametrize(
    ("kind", "body", "key"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Duration=100\nsignal = *\n", "*"),  # any order, any case
        ("application/dtmf-relay", b"Duration=100\r\n", None),
        ("application/dtmf-relay", b"Signal=\r\n", None),
        ("application/dtmf", b" 7\r\n", "7"),
        ("application/dtmf", b"", None),
        ("text/plain", b"Signal=5", None),
        (None, b"Signal=5", None),
        ("application/dtmf-relay", b"Signal=\xff", "\ufffd"),  # not UTF-8: no exception
    ],
)
def test_info_dtmf_key(kind: str | None, body: bytes, key: str | None) -> None:
    assert info_dtmf_key(kind, body) == key
