"""The phone's account: its registration at SIPROC_REGISTRAR_URI, kept fresh, and its end.

Theory of operation: `Account` is the asyncio side of the sans-I/O `sip.registration`
state machine (which answers challenges, follows 423 and computes refresh and backoff times),
the way the phone is of the endpoint. It sends each REGISTER the machine builds through the
phone, feeds back every final response or timeout, and acts on the result: send again at once,
refresh at `refresh_at`, retry a failure at `retry_at` (not while siproc stops), or, after the
un-REGISTER of `stop`, set `unregistered`, which the phone's shutdown waits for.

Faults of the network around siproc are not fatal; each is a failed attempt, logged in one
line and retried with the registration's backoff (SIPROC_REGISTER_RETRY doubling to 15 min):

- the registrar's name does not resolve (DNS not up yet at boot, a transient failure): every
  fresh REGISTER (the first, a refresh, a retry) locates the registrar off the loop when its
  address is not known, and registers as soon as it is;
- the registrar does not answer (Timer F) or refuses the TCP connection (a 503 from the
  transport, RFC 3261 section 8.1.3.1);
- the TCP connection to the registrar drops (`connection_lost`): its flow is gone, so the
  registrar could not reach us any more; a new connection is made by registering again at once
  (RFC 5626 section 4.4.1 in spirit), at most once per `retry_min` seconds;
- our address towards the registrar changes (a new DHCP lease, another interface): before each
  fresh REGISTER (each refresh, each retry) the routing table is asked again, and a new address
  is registered as the new Contact. The old binding is left to expire: removing it in the same
  REGISTER could remove the new one at a registrar that rewrites Contacts to the address it
  sees (both would be the same URI).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from siproc.config import Config
from siproc.net.locate import ServerLocator
from siproc.sip.auth import DigestSession
from siproc.sip.message import Request
from siproc.sip.registration import (
    Failed,
    Registered,
    Registration,
    RegistrationResult,
    RegistrationState,
    SendAgain,
    Unregistered,
)
from siproc.sip.transaction import (
    ClientTransaction,
    Destination,
    ResponseReceived,
    TransactionTimeout,
)
from siproc.sip.uri import NameAddr, SipUri, format_host


class AccountServices(Protocol):
    """What the account needs from the phone (`siproc.calls.phone.Phone` provides it)."""

    loop: asyncio.AbstractEventLoop
    config: Config
    locator: ServerLocator

    def send_request(
        self,
        request: Request,
        destination: Destination,
        on_event: Callable[[ResponseReceived | TransactionTimeout], None],
    ) -> ClientTransaction: ...
    def local_host_for(self, destination: Destination, *, fresh: bool = False) -> str: ...
    def local_contact(self, destination: Destination) -> SipUri: ...
    def identity(self) -> NameAddr: ...
    def new_token(self) -> str: ...
    def auth_session(self) -> DigestSession | None: ...


__all__ = ["Account"]

log = logging.getLogger(__name__)


class Account:
    """The registration of the phone's address of record; see the module docstring."""

    def __init__(self, phone: AccountServices) -> None:
        self.phone = phone
        self.registration: Registration | None = None
        self.unregistered = asyncio.Event()  # set once there is no registration to remove
        self.destination: Destination | None = None  # where the last fresh REGISTER went
        self._local_host: str | None = None  # our address the Contact was built from
        self._timer: asyncio.TimerHandle | None = None
        self._locating: asyncio.Task[None] | None = None
        self._last_error: str | None = None
        self._registered_at: float | None = None
        self._stopping = False
        self.on_result: Callable[[bool], None] | None = None  # registered or failed (metrics)

    def start(self) -> None:
        """REGISTER at the configured registrar; without one there is nothing to do."""
        phone = self.phone
        registrar = phone.config.registrar
        if registrar is None:
            self.unregistered.set()
            log.info("no SIPROC_REGISTRAR_URI: not registering; direct calls are taken")
            return
        known = phone.locator.lookup(registrar)
        host = format_host(phone.local_host_for(known)) if known is not None else None
        self.registration = Registration(
            registrar=registrar,
            aor=phone.identity(),
            # The Contact is built from our address towards the registrar before each fresh
            # REGISTER (_send_fresh): the registrar may not even be located yet.
            contact=SipUri("sip", "invalid", "siproc"),
            expires=phone.config.register_expires,
            call_id=phone.new_token() + (f"@{host}" if host else ""),
            from_tag=phone.new_token(),
            auth=phone.auth_session(),
            rewrite_contact=phone.config.public_address is None,
            retry_min=float(phone.config.register_retry),
            instance=phone.config.instance_id,
        )
        self.registration.start()
        self._register()

    def stop(self) -> None:
        """siproc is quitting: un-REGISTER (RFC 3261 section 10.2.2) and retry no failure."""
        self._stopping = True
        self._cancel_timer()
        if self._locating is not None:
            self._locating.cancel()
            self._locating = None
        reg = self.registration
        if reg is not None and reg.stop() and self.destination is not None:
            self._send()
        else:
            self.unregistered.set()

    def connection_lost(self, destination: Destination) -> None:
        """A TCP or TLS connection closed: if it carried our registration, register again over
        a new one (see the module docstring)."""
        reg = self.registration
        if (
            reg is None
            or self._stopping
            or reg.state is not RegistrationState.REGISTERED
            or not _same(destination, self.destination)
        ):
            return  # a REGISTER in flight learns it from its transaction (503)
        now = self.phone.loop.time()
        last = now if self._registered_at is None else self._registered_at
        at = max(now, last + reg.retry_min)
        log.warning(
            "connection to the registrar %s lost: registering again%s",
            _where(destination),
            "" if at <= now else f" in {round(at - now)} s",
        )
        if at <= now:
            self._register()
        else:
            self._schedule(at)

    # -- sending ----------------------------------------------------------------------------

    def _register(self) -> None:
        """A fresh REGISTER (the first, a refresh, a retry): the registrar is located off the
        loop when its address is not known (yet), our address towards it checked, then sent."""
        self._timer = None
        registrar = self.phone.config.registrar
        if self.registration is None or registrar is None or self._stopping:
            return
        destination = self.phone.locator.lookup(registrar)
        if destination is not None:
            self._send_fresh(destination)
        elif self._locating is None:
            self._locating = self.phone.loop.create_task(self._locate_and_register(registrar))

    async def _locate_and_register(self, registrar: SipUri) -> None:
        try:
            destination = await self.phone.locator.locate(registrar)
        except OSError as exc:
            self._locating = None
            reg = self.registration
            if reg is not None and not self._stopping:
                self._on_result(reg.on_transport_error(str(exc), self.phone.loop.time()))
            return
        self._locating = None
        if not self._stopping:
            self._send_fresh(destination)

    def _send_fresh(self, destination: Destination) -> None:
        reg = self.registration
        assert reg is not None
        local = self.phone.local_host_for(destination, fresh=True)
        if local != self._local_host:
            contact = self.phone.local_contact(destination)
            if self._local_host is not None:
                log.warning(
                    "our address towards the registrar changed from %s to %s: registering "
                    "the new Contact %s",
                    self._local_host,
                    local,
                    contact,
                )
            self._local_host = local
            reg.contact = contact
        self.destination = destination
        self._send()

    def _send(self) -> None:
        """The registration's next request, to where the last fresh one went (a challenge
        must be answered to the same server)."""
        reg = self.registration
        assert reg is not None and self.destination is not None
        self._cancel_timer()
        self.phone.send_request(reg.build_request(), self.destination, self._on_event)

    # -- results ----------------------------------------------------------------------------

    def _on_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        reg = self.registration
        assert reg is not None
        if self.unregistered.is_set():
            return  # a late answer to a REGISTER sent before the un-REGISTER ended
        now = self.phone.loop.time()
        if isinstance(event, TransactionTimeout):
            self._on_result(reg.on_timeout(now))
        elif event.response.status >= 200:
            self._on_result(reg.on_response(event.response, now))

    def _on_result(self, result: RegistrationResult) -> None:
        reg = self.registration
        assert reg is not None
        match result:
            case SendAgain(reason=reason):
                log.debug("REGISTER again: %s", reason)
                self._send()
            case Registered(expires=expires, refresh_at=refresh_at):
                if self._last_error is not None or reg.failures == 0:
                    log.info("registered as %s at %s for %d s", reg.aor.uri, reg.registrar, expires)
                self._last_error = None
                if self.on_result is not None:
                    self.on_result(True)
                self._registered_at = self.phone.loop.time()
                self._schedule(refresh_at)
            case Failed(reason=reason, retry_at=retry_at):
                delay = (retry_at - self.phone.loop.time()) if retry_at else 0
                log.error("registration failed: %s (next try in %d s)", reason, round(delay))
                self._last_error = reason
                if self.on_result is not None:
                    self.on_result(False)
                if retry_at is not None and not self._stopping:
                    self._schedule(retry_at)
            case Unregistered(status=status):
                log.info("unregistered (%d)", status)
                self.unregistered.set()

    def _schedule(self, at: float) -> None:
        self._cancel_timer()
        self._timer = self.phone.loop.call_at(at, self._register)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _same(a: Destination, b: Destination | None) -> bool:
    return (
        b is not None
        and a.transport.lower() == b.transport.lower()
        and a.host == b.host
        and a.port == b.port
    )


def _where(destination: Destination) -> str:
    return f"{format_host(destination.host)}:{destination.port} ({destination.transport.upper()})"
