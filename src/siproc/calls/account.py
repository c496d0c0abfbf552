"""The phone's account: its registration at SIPROC_REGISTRAR_URI, kept fresh, and its end.

Theory of operation: `Account` is the asyncio side of the sans-I/O `sip.registration`
state machine (which answers challenges, follows 423 and computes refresh and backoff times),
the way the phone is of the endpoint. It sends each REGISTER the machine builds through the
phone, feeds back every final response or timeout, and acts on the result: send again at once,
refresh at `refresh_at`, retry a failure at `retry_at` (not while siproc stops), or, after the
un-REGISTER of `stop`, set `unregistered`, which the phone's shutdown waits for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from siproc.sip.registration import (
    Failed,
    Registered,
    Registration,
    RegistrationResult,
    RegistrationState,
    SendAgain,
    Unregistered,
)
from siproc.sip.transaction import Destination, ResponseReceived, TransactionTimeout
from siproc.sip.uri import format_host

if TYPE_CHECKING:
    from siproc.calls.phone import Phone

__all__ = ["Account"]

log = logging.getLogger(__name__)

RELOST_INTERVAL = 5.0  # seconds between two re-registrations after a lost connection


class Account:
    """The registration of the phone's address of record; see the module docstring."""

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.registration: Registration | None = None
        self.unregistered = asyncio.Event()  # set once there is no registration to remove
        self._timer: asyncio.TimerHandle | None = None
        self._last_error: str | None = None
        self._stopping = False
        self._lost_at = float("-inf")  # when a lost registrar connection was last replaced

    def start(self) -> None:
        """REGISTER at the configured registrar; without one there is nothing to do."""
        phone = self.phone
        registrar = phone.config.registrar
        if registrar is None:
            self.unregistered.set()
            log.info("no SIPROC_REGISTRAR_URI: not registering; direct calls are taken")
            return
        destination = phone.destination_for(registrar)
        identity = phone.identity()
        contact = phone.contact_for(destination)
        self.registration = Registration(
            registrar=registrar,
            aor=identity,
            contact=contact,
            expires=phone.config.register_expires,
            call_id=f"{phone.new_token()}@{format_host(phone.local_host_for(destination))}",
            from_tag=phone.new_token(),
            auth=phone.auth_session(),
            rewrite_contact=phone.config.public_address is None,
        )
        self.registration.start()
        self._send()

    def stop(self) -> None:
        """siproc is quitting: un-REGISTER (RFC 3261 section 10.2.2) and retry no failure."""
        self._stopping = True
        if self.registration is not None and self.registration.stop():
            self._send()
        else:
            self.unregistered.set()

    def connection_lost(self, destination: Destination) -> None:
        """A TCP or TLS connection closed: if it carried our registration, register again at
        once over a new one (RFC 5626 section 4.4.1 in spirit), at most once per
        RELOST_INTERVAL seconds (a registrar that drops every connection is not hammered)."""
        reg = self.registration
        registrar = self.phone.config.registrar
        if reg is None or registrar is None or self._stopping:
            return
        if reg.state is not RegistrationState.REGISTERED:
            return  # a REGISTER in flight learns it from its transaction (503)
        if destination != self.phone.locator.lookup(registrar):
            return
        now = self.phone.loop.time()
        at = max(now, self._lost_at + RELOST_INTERVAL)
        self._lost_at = at
        log.warning(
            "connection to the registrar %s:%d (%s) lost: registering again%s",
            destination.host,
            destination.port,
            destination.transport.upper(),
            "" if at <= now else f" in {round(at - now)} s",
        )
        self._schedule(at)

    def _send(self) -> None:
        reg = self.registration
        registrar = self.phone.config.registrar
        assert reg is not None and registrar is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        destination = self.phone.destination_for(registrar)
        self.phone.send_request(reg.build_request(), destination, self._on_event)

    def _on_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        reg = self.registration
        assert reg is not None
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
                self._schedule(refresh_at)
            case Failed(reason=reason, retry_at=retry_at):
                delay = (retry_at - self.phone.loop.time()) if retry_at else 0
                log.error("registration failed: %s (next try in %d s)", reason, round(delay))
                self._last_error = reason
                if retry_at is not None and not self._stopping:
                    self._schedule(retry_at)
            case Unregistered(status=status):
                log.info("unregistered (%d)", status)
                self.unregistered.set()

    def _schedule(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.phone.loop.call_at(at, self._send)
