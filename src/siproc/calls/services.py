"""What a call needs from the phone that owns it (`siproc.calls.phone.Phone` provides it).

A module of its own so that the call and its helpers name the phone's services without
importing the phone, and the helpers that take the services (`in_dialog.py`) need not import
`call.py`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from siproc.sdp.offer_answer import CodecSpec
from siproc.sdp.sdes import SrtpMode
from siproc.sip.auth import DigestSession
from siproc.sip.message import Request, Response
from siproc.sip.transaction import (
    ClientTransaction,
    Destination,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
)
from siproc.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from siproc.calls.call import Call

__all__ = ["PhoneServices"]


class PhoneServices(Protocol):
    """What a call needs from the phone (the user agent that owns it)."""

    loop: asyncio.AbstractEventLoop
    handler_argv: list[str]
    rng: random.Random  # the 491 back-off (RFC 3261 section 14.1)

    def send_request(
        self,
        request: Request,
        destination: Destination,
        on_event: Callable[[ResponseReceived | TransactionTimeout], None],
    ) -> ClientTransaction: ...
    def send_ack(self, request: Request, destination: Destination) -> bytes: ...
    def send_raw(self, data: bytes, destination: Destination) -> None: ...
    def respond(self, tx: ServerTransaction, response: Response) -> None: ...
    def destination_for(self, uri: SipUri) -> Destination: ...
    def prelocate(self, uri: SipUri) -> None: ...
    def local_host_for(self, destination: Destination) -> str: ...
    def contact_for(self, destination: Destination) -> SipUri: ...
    def new_token(self) -> str: ...
    def handler_env(self, call: Call) -> dict[str, str]: ...
    def call_changed(self, call: Call) -> None: ...
    def call_finished(self, call: Call) -> None: ...
    @property
    def codecs(self) -> list[CodecSpec]: ...
    @property
    def telephone_event(self) -> CodecSpec | None: ...
    @property
    def srtp(self) -> SrtpMode: ...
    @property
    def srtp_insecure_signalling(self) -> bool: ...
    @property
    def timer_t1(self) -> float: ...
    @property
    def timer_t2(self) -> float: ...
    def auth_session(self) -> DigestSession | None: ...
    def expand_target(self, text: str) -> NameAddr: ...
    def place_referred_call(
        self, target: SipUri, referred_by: str, on_placed: Callable[[Call | None], None]
    ) -> None: ...
    def refer_allowed(self, target: SipUri) -> bool: ...
