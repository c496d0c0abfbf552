"""The phone's account (calls/account.py) in virtual time: faults of the network around siproc
(a registrar name that does not resolve, no answer, a dropped TCP connection, a new local
address) are retried with the registration's backoff and never stop siproc."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from siproc.calls.account import Account
from siproc.sip.headers import make_response
from siproc.sip.message import Request, Response
from siproc.sip.registration import RegistrationState
from siproc.sip.transaction import Destination, ResponseReceived, TransactionTimeout
from siproc.sip.uri import NameAddr, SipUri, parse_name_addr, parse_sip_uri

REGISTRAR = parse_sip_uri("sip:pbx.example.test")
SERVER = Destination("udp", "192.0.2.5", 5060)
TCP_SERVER = Destination("tcp", "192.0.2.5", 5060)


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Virtual time: call_at() timers and create_task() coroutines (which must not suspend:
    the fake locator answers at once) run when the test advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, _Handle, Callable[[], None]]] = []
        self._tasks: list[Coroutine[Any, Any, None]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        self._seq += 1
        self._timers.append((at, self._seq, handle, callback))
        return handle

    def create_task(self, coro: Coroutine[Any, Any, None]) -> _Handle:
        self._tasks.append(coro)
        return _Handle()

    def run_ready(self) -> None:
        while self._tasks:
            coro = self._tasks.pop(0)
            with pytest.raises(StopIteration):
                coro.send(None)

    def next_timer(self) -> float | None:
        live = [t for t in self._timers if not t[2].cancelled]
        return min(live)[0] if live else None

    def advance(self, until: float) -> None:
        """Run every task and timer due up to ``until``, in order, then set the clock there."""
        self.run_ready()
        while True:
            live = sorted(t for t in self._timers if not t[2].cancelled)
            if not live or live[0][0] > until:
                break
            at, _, _handle, callback = live[0]
            self._timers.remove(live[0])
            self.now = max(self.now, at)
            callback()
            self.run_ready()
        self.now = until


class FakeLocator:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.destination: Destination | None = None  # None: the name does not resolve
        self.known = False
        self.lookups: list[float] = []  # when locate() was asked

    def lookup(self, uri: SipUri) -> Destination | None:
        return self.destination if self.known else None

    async def locate(self, uri: SipUri) -> Destination:
        self.lookups.append(self.loop.now)
        if self.destination is None:
            raise OSError(f"cannot resolve {uri.host!r}: Name or service not known")
        self.known = True
        return self.destination


@dataclass
class FakeConfig:
    registrar: SipUri | None = REGISTRAR
    register_expires: int = 600
    public_address: str | None = None
    register_retry: int = 30
    instance_id: str | None = None


@dataclass
class Sent:
    at: float
    request: Request
    destination: Destination
    on_event: Callable[[ResponseReceived | TransactionTimeout], None]


@dataclass
class FakePhone:
    loop: FakeLoop = field(default_factory=FakeLoop)
    config: FakeConfig = field(default_factory=FakeConfig)
    local_host: str = "192.0.2.10"
    sent: list[Sent] = field(default_factory=list)
    fresh_asked: int = 0

    def __post_init__(self) -> None:
        self.locator = FakeLocator(self.loop)
        self._tokens = 0

    def identity(self) -> NameAddr:
        return parse_name_addr("<sip:alice@pbx.example.test>")

    def new_token(self) -> str:
        self._tokens += 1
        return f"tok{self._tokens}"

    def auth_session(self) -> None:
        return None

    def local_host_for(self, destination: Destination, *, fresh: bool = False) -> str:
        self.fresh_asked += fresh
        return self.local_host

    def local_contact(self, destination: Destination) -> SipUri:
        return SipUri("sip", self.local_host, "alice", None, 5070)

    def send_request(
        self,
        request: Request,
        destination: Destination,
        on_event: Callable[[ResponseReceived | TransactionTimeout], None],
    ) -> None:
        self.sent.append(Sent(self.loop.now, request, destination, on_event))


def make_account(**config: Any) -> tuple[Account, FakePhone]:
    phone = FakePhone(config=FakeConfig(**config))
    account = Account(phone)  # type: ignore[arg-type]
    return account, phone


def reply(sent: Sent, status: int, expires: int = 600) -> None:
    """The registrar answers ``sent`` (received=rport as we sent it: no NAT)."""
    request = sent.request
    request.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK{status}")
    headers = [("Expires", str(expires))] if status == 200 else []
    response: Response = make_response(request, status, "OK", to_tag="rt", headers=headers)
    request.headers.remove("Via")
    sent.on_event(ResponseReceived(None, response))  # type: ignore[arg-type]


def contacts(request: Request) -> list[str]:
    return [value for name, value in request.headers if name.lower() == "contact"]


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "registration failed" in r.getMessage()]


def test_a_registrar_name_that_does_not_resolve_is_retried_with_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "siproc.calls.account")
    account, phone = make_account()
    account.start()  # must not raise: siproc keeps serving
    phone.loop.advance(0)
    assert phone.sent == []
    assert failures(caplog) == [
        "registration failed: cannot reach the registrar: cannot resolve 'pbx.example.test': "
        "Name or service not known (next try in 30 s)"
    ]
    phone.loop.advance(100)  # tries at 30 and 90 (30 s, then 60 s)
    assert phone.locator.lookups == [0, 30, 90]
    assert len(failures(caplog)) == 3  # one line per attempt
    assert failures(caplog)[-1].endswith("(next try in 120 s)")
    phone.locator.destination = SERVER  # DNS is up now: registered within one step
    phone.loop.advance(209.9)
    assert phone.sent == []
    phone.loop.advance(210)
    assert [s.at for s in phone.sent] == [210]
    assert phone.sent[0].destination == SERVER
    assert contacts(phone.sent[0].request) == ["<sip:alice@192.0.2.10:5070>;expires=600"]
    reply(phone.sent[0], 200)
    assert account.registration is not None
    assert account.registration.state is RegistrationState.REGISTERED
    assert any("registered as sip:alice@pbx.example.test" in r.getMessage() for r in caplog.records)


def test_the_first_retry_follows_siproc_register_retry() -> None:
    account, phone = make_account(register_retry=2)
    account.start()
    phone.loop.advance(20)
    assert phone.locator.lookups == [0, 2, 6, 14]  # 2, 4, 8 ...


def test_a_registrar_that_stops_answering_is_registered_with_again() -> None:
    account, phone = make_account(register_expires=120)
    phone.locator.destination = SERVER
    account.start()
    phone.loop.advance(0)
    reply(phone.sent[0], 200, expires=120)
    phone.loop.advance(60)  # refresh at 120 - 60
    assert len(phone.sent) == 2
    phone.loop.advance(92)
    phone.sent[1].on_event(TransactionTimeout(None))  # type: ignore[arg-type]  # Timer F
    assert account.registration is not None
    assert account.registration.state is RegistrationState.FAILED
    phone.loop.advance(121.9)
    assert len(phone.sent) == 2
    phone.loop.advance(122)  # 30 s after the timeout
    assert len(phone.sent) == 3
    reply(phone.sent[2], 200, expires=120)
    assert account.registration.state is RegistrationState.REGISTERED
    assert account.registration.failures == 0


def test_a_dropped_tcp_connection_to_the_registrar_registers_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    account, phone = make_account()
    phone.locator.destination = TCP_SERVER
    account.start()
    phone.loop.advance(0)
    reply(phone.sent[0], 200)
    phone.loop.advance(100)
    account.connection_lost(Destination("tcp", "192.0.2.99", 5060))  # not the registrar's
    account.connection_lost(Destination("udp", "192.0.2.5", 5060))
    assert len(phone.sent) == 1
    account.connection_lost(TCP_SERVER)
    assert [s.at for s in phone.sent] == [0, 100]
    assert "connection to the registrar 192.0.2.5:5060 (TCP) lost: registering again" in (
        caplog.text
    )
    # The new connection is refused: the transport's 503, then the backoff.
    reply(phone.sent[1], 503)
    assert account.registration is not None
    assert account.registration.state is RegistrationState.FAILED
    account.connection_lost(TCP_SERVER)  # no second REGISTER while one failure retries
    phone.loop.advance(129)
    assert len(phone.sent) == 2
    phone.loop.advance(130)
    assert len(phone.sent) == 3
    reply(phone.sent[2], 200)
    # A registrar that accepts and drops at once is not hammered: once per retry_min.
    account.connection_lost(TCP_SERVER)
    phone.loop.advance(159)
    assert len(phone.sent) == 3
    phone.loop.advance(160)
    assert len(phone.sent) == 4


def test_a_new_local_address_is_registered_at_the_next_refresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    account, phone = make_account(register_expires=120)
    phone.locator.destination = SERVER
    account.start()
    phone.loop.advance(0)
    reply(phone.sent[0], 200, expires=120)
    phone.loop.advance(60)  # a refresh from the same address: one Contact
    assert contacts(phone.sent[1].request) == ["<sip:alice@192.0.2.10:5070>;expires=120"]
    reply(phone.sent[1], 200, expires=120)
    phone.local_host = "198.51.100.7"  # a new DHCP lease
    phone.loop.advance(120)
    assert contacts(phone.sent[2].request) == ["<sip:alice@198.51.100.7:5070>;expires=120"]
    assert "changed from 192.0.2.10 to 198.51.100.7" in caplog.text
    assert phone.fresh_asked == 3  # the routing table is asked before each fresh REGISTER
    reply(phone.sent[2], 200, expires=120)
    phone.loop.advance(180)
    assert contacts(phone.sent[3].request) == ["<sip:alice@198.51.100.7:5070>;expires=120"]


def test_quitting_while_the_name_does_not_resolve_sends_nothing() -> None:
    account, phone = make_account()
    account.start()
    phone.loop.advance(10)
    account.stop()
    assert account.unregistered.is_set()
    phone.loop.advance(1000)
    assert phone.sent == [] and phone.locator.lookups == [0]
