"""calls/out_of_dialog.py: the answer to every request outside a dialog that starts no call."""

from __future__ import annotations

import itertools

import pytest

from siproc.calls.call_state import ALLOW
from siproc.calls.out_of_dialog import REFUSED, answer
from siproc.sip.message import Request, Response, parse_message


def request(method: str, body: bytes = b"") -> Request:
    raw = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKood1\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: ood-1@127.0.0.1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


class Tags:
    """new_tag that counts how often it was asked."""

    def __init__(self) -> None:
        self.made = 0
        self._n = itertools.count(1)

    def __call__(self) -> str:
        self.made += 1
        return f"t{next(self._n)}"


def answer_to(method: str, supported: tuple[str, ...] = ("replaces", "100rel")) -> Response:
    response = answer(request(method), Tags(), supported)
    assert response is not None
    assert response.headers.get("Call-ID") == "ood-1@127.0.0.1"
    assert response.headers.get("CSeq") == f"7 {method}"
    return response


def test_an_invite_is_left_to_the_phone() -> None:
    tags = Tags()
    assert answer(request("INVITE"), tags, ()) is None
    assert tags.made == 0


def test_options_says_what_we_can_do() -> None:
    """RFC 3261 section 11.2: Allow, Accept, Accept-Language and Supported, with a To tag."""
    response = answer_to("OPTIONS")
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers.get("Allow") == ALLOW
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Accept-Language") == "en"
    assert response.headers.get("Supported") == "100rel, replaces"  # sorted
    assert response.headers.get("To") == "<sip:bob@127.0.0.1>;tag=t1"


def test_message_is_taken() -> None:
    response = answer(request("MESSAGE", b"hello"), Tags(), ())
    assert response is not None and response.status == 200
    assert response.headers.get("To") == "<sip:bob@127.0.0.1>;tag=t1"
    assert response.headers.get("Allow") is None


@pytest.mark.parametrize("method", ["BYE", "INFO", "UPDATE"])
def test_dialog_only_requests_get_481_without_a_tag(method: str) -> None:
    tags = Tags()
    response = answer(request(method), tags, ())
    assert response is not None
    assert (response.status, response.reason) == (481, "Call/Transaction Does Not Exist")
    assert response.headers.get("To") == "<sip:bob@127.0.0.1>" and tags.made == 0


def test_notify_without_a_subscription_gets_481() -> None:
    """RFC 6665 section 4.1.3."""
    response = answer_to("NOTIFY")
    assert (response.status, response.reason) == (481, "Subscription Does Not Exist")


def test_refer_outside_a_call_is_forbidden() -> None:
    response = answer_to("REFER")
    assert (response.status, response.reason) == (403, "Forbidden (REFER outside a call)")
    assert response.headers.get("To") == "<sip:bob@127.0.0.1>;tag=t1"


@pytest.mark.parametrize("method", ["SUBSCRIBE", "PUBLISH", "PRACK", "FOO"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    """RFC 3261 section 8.2.1."""
    response = answer_to(method)
    assert (response.status, response.reason) == (405, "Method Not Allowed")
    assert response.headers.get("Allow") == ALLOW


@pytest.mark.parametrize("method", sorted(REFUSED))
def test_the_gate_and_the_answer_refuse_alike(method: str) -> None:
    """The admission gate answers REFUSED statelessly; a request that reached a transaction
    gets the same status and reason from `answer`."""
    response = answer_to(method)
    assert (response.status, response.reason) == (REFUSED[method].status, REFUSED[method].reason)
