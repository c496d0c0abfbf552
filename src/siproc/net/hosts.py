"""Host names to addresses without stalling SIP: a cache filled off the event loop.

Theory of operation: ``socket.getaddrinfo`` blocks, for seconds when a DNS server is slow or
gone, and a blocked event loop stops every call's signalling and every handler pipe. So names
are resolved in the loop's executor (``loop.getaddrinfo``) before they are needed: the
registrar's when siproc starts, a ``CALL`` target's before its INVITE is built. The signalling
code then asks :meth:`HostCache.lookup`, which never blocks. getaddrinfo does not tell the DNS
TTL, so an address is used for :data:`TTL` seconds and then refreshed in the background while
the old one goes on serving: a name in use (the registrar, a proxy) is never resolved on the
loop again, and a DNS outage does not take away an address that worked (the refresh failure is
logged). IP literals need no cache.

What is left for the blocking path (:meth:`HostCache.resolve_now`) is a name first seen in a
place that cannot wait, such as a hop of a dialog or a REFER target; it is logged.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["IPV6_SOURCE_PREFIX", "RESOLVE_TIMEOUT", "TTL", "HostCache", "ip_literal", "ip_of",
           "source_key"]  # fmt: skip

log = logging.getLogger(__name__)

TTL: Final = 300.0  # seconds an address is used without a new lookup
RESOLVE_TIMEOUT: Final = 10.0  # seconds for one name (the resolver's own retries included)


def ip_literal(host: str) -> str | None:
    """``host`` as a normalised IP address if it is one (brackets allowed), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` is, if it is one (brackets and an IPv6 zone allowed), with an
    IPv4-mapped IPv6 address as the IPv4 address it stands for; else None."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: The per-source limits (calls, TCP connections) count an IPv6 source by its /64: one site
#: (one attacker) has a whole /64 of addresses to pick from.
IPV6_SOURCE_PREFIX: Final = 64


@functools.lru_cache(maxsize=4096)  # asked for every accepted connection and every INVITE
def source_key(host: str) -> str:
    """What the per-source limits count by: the IPv4 address (also when IPv4-mapped), or the
    IPv6 /64 it is in; anything that is no address counts as itself."""
    address = ip_of(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))


def _reason(exc: Exception) -> str:
    """A resolver failure in a few words (an over-long label raises UnicodeError)."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    return f"not a valid host name ({exc})"


def _first_address(infos: Sequence[tuple[object, ...]], host: str) -> str:
    if not infos:
        raise OSError(f"cannot resolve {host!r}: no address")
    address = infos[0][4]
    assert isinstance(address, tuple)
    return str(address[0])


class HostCache:
    """Addresses of host names, resolved off the loop and cached (see the module docstring).
    ``clock`` is the loop's time by default (tests pass their own)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        ttl: float = TTL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self.ttl = ttl
        self._clock = clock if clock is not None else loop.time
        self._entries: dict[str, tuple[str, float]] = {}  # host -> (address, resolved at)
        self._pending: dict[str, asyncio.Future[str]] = {}
        self.blocking_lookups = 0  # names resolved on the loop (resolve_now), since creation

    def lookup(self, host: str) -> str | None:
        """The address of ``host`` if it is a literal or cached; never blocks. An address older
        than the TTL is returned still, and refreshed in the background."""
        literal = ip_literal(host)
        if literal is not None:
            return literal
        key = host.lower()
        entry = self._entries.get(key)
        if entry is None:
            return None
        address, resolved_at = entry
        if self._clock() - resolved_at > self.ttl and key not in self._pending:
            self._refresh(key)
        return address

    async def resolve(self, host: str) -> str:
        """The address of ``host``, resolved off the loop when it is not cached. Raises OSError
        with a one-line reason naming the host. Concurrent callers share one lookup."""
        cached = self.lookup(host)
        if cached is not None:
            return cached
        key = host.lower()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._loop.create_task(self._fetch(key))
            self._pending[key] = pending
        return await asyncio.shield(pending)

    def resolve_now(self, host: str) -> str:
        """The address of ``host``, blocking the loop if it is not cached (the last resort of
        code that cannot wait). Raises OSError naming the host."""
        cached = self.lookup(host)
        if cached is not None:
            return cached
        self.blocking_lookups += 1
        log.info("resolving %s on the event loop (first seen where siproc cannot wait)", host)
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise OSError(f"cannot resolve {host!r}: {_reason(exc)}") from None
        address = _first_address(infos, host)
        self._entries[host.lower()] = (address, self._clock())
        return address

    async def _fetch(self, key: str) -> str:
        try:
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(key, None, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT
            )
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise OSError(f"cannot resolve {key!r}: {_reason(exc)}") from None
        except TimeoutError:
            raise OSError(f"cannot resolve {key!r}: no answer in {RESOLVE_TIMEOUT:g} s") from None
        finally:
            self._pending.pop(key, None)
        address = _first_address(infos, key)
        self._entries[key] = (address, self._clock())
        return address

    def _refresh(self, key: str) -> None:
        """A background refresh: on failure the old address goes on serving."""
        pending = self._loop.create_task(self._fetch(key))
        self._pending[key] = pending

        def done(task: asyncio.Task[str]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s (keeping the address found before)", task.exception())

        pending.add_done_callback(done)
