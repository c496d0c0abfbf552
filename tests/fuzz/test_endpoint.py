"""Fuzz the receive path of sip/endpoint.py: mutated datagrams into a sans-I/O endpoint.

A fake transaction user answers every new request (486 to INVITE, 200 to the rest) and a
virtual clock runs the timers. Invariants: ``receive`` never raises; a datagram into a fresh
endpoint produces a response or an event, or is counted as dropped; every datagram the endpoint
sends parses; and 64*T1 after the last input every transaction is gone.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from siproc.sip.endpoint import Endpoint, Output, RequestReceived
from siproc.sip.headers import make_response
from siproc.sip.message import parse_message
from siproc.sip.transaction import DEFAULT_TIMERS, Destination, Send, TransactionState
from tests.fuzz.mutations import inputs, sip_messages, sip_seeds
from tests.fuzz.profiles import count, fuzz_settings

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "MESSAGE", "REFER", "NOTIFY")
SOURCES = {
    "udp": Destination("udp", "127.0.0.1", 5999),
    "tcp": Destination("tcp", "127.0.0.1", 40000),
}
LOCAL = "127.0.0.1"
_OPEN = (TransactionState.TRYING, TransactionState.PROCEEDING)


def _answer(endpoint: Endpoint, outputs: list[Output], now: float) -> list[Output]:
    """The fake transaction user: a final response to every new request."""
    out: list[Output] = []
    for item in outputs:
        if isinstance(item, RequestReceived) and item.transaction.state in _OPEN:
            status = 486 if item.request.method == "INVITE" else 200
            response = make_response(item.request, status, "Fuzz", to_tag="fuzz")
            out += endpoint.respond(item.transaction, response, now)
    return out


def _check_sends(outputs: list[Output]) -> None:
    for item in outputs:
        if isinstance(item, Send):
            parse_message(item.data)  # what we send is always a message


def run(datagrams: list[bytes], transport: str) -> None:
    endpoint = Endpoint(allow=ALLOW, rng=random.Random(8), supported=("replaces",))
    source = SOURCES[transport]
    now = 0.0
    for index, data in enumerate(datagrams):
        count("sip.endpoint")
        dropped = endpoint.dropped
        outputs = endpoint.receive(data, source, LOCAL, now)
        if index == 0:
            assert outputs or endpoint.dropped > dropped, "input neither answered nor dropped"
        outputs += _answer(endpoint, outputs, now)
        _check_sends(outputs)
        now += 0.1
    limit = now + 64 * DEFAULT_TIMERS.t1 + 1
    for _ in range(10_000):
        deadline = endpoint.next_deadline()
        if deadline is None or deadline > limit:
            break
        now = max(now, deadline)
        _check_sends(endpoint.handle_timer(now))
    assert endpoint.transaction_count == 0, "a transaction outlived 64*T1"
    assert endpoint.next_deadline() is None


@fuzz_settings(cost=1.5)
@given(st.lists(inputs(sip_seeds()), min_size=1, max_size=3), st.sampled_from(sorted(SOURCES)))
def test_receive_mutated(datagrams: list[bytes], transport: str) -> None:
    run(datagrams, transport)


@fuzz_settings(cost=9)
@given(st.lists(sip_messages(), min_size=1, max_size=3), st.sampled_from(sorted(SOURCES)))
def test_receive_structured(datagrams: list[bytes], transport: str) -> None:
    run(datagrams, transport)
