"""Who may start something with us, and how fast: the inbound policy and the flood limits.

Pure decisions (no I/O, the time passed in) that the phone asks before it does anything costly
for a request outside a dialog:

- :func:`admits` applies ``SIPROC_INBOUND`` (siproc(1), SECURITY). With a registrar, a request
  that does not come from the registrar's transport address, or is not for our own user, would
  let anyone who can reach our port ring the handler (and, through a REFER in that call, dial
  through the registrar with our credentials): it is refused.
- :class:`TokenBucket` is the classic rate limiter (rate per second, a burst); :class:`RateTable`
  keeps one per source address in a table of bounded size, so that a flood from forged
  addresses cannot grow memory without end (the oldest idle entries go first).
- :func:`refer_allowed` applies ``SIPROC_ACCEPT_REFER`` to a Refer-To target.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import unquote

from siproc.config import InboundPolicy
from siproc.net.hosts import ip_of
from siproc.sip.transaction import Destination
from siproc.sip.uri import SipUri, format_host

__all__ = ["RateTable", "TokenBucket", "admits", "refer_allowed", "same_address"]

#: Source addresses whose call rate is remembered at once; beyond it the least recently seen
#: address is forgotten (it starts again with a full burst, which only favours it).
RATE_TABLE_SIZE = 10_000


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` spends one."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}/{burst}")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= self.burst


class RateTable:
    """One :class:`TokenBucket` per key (a source address), at most ``size`` of them."""

    def __init__(self, rate: float, burst: int, size: int = RATE_TABLE_SIZE) -> None:
        self.rate = rate
        self.burst = burst
        self.size = size
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds (at least 1) until ``key`` may start another call (Retry-After)."""
        bucket = self._buckets.get(key)
        return max(1, int(bucket.wait(now) + 0.999)) if bucket is not None else 1

    def prune(self, now: float) -> None:
        """Forget the addresses whose bucket is full again: they are as good as new."""
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def _same_transport_address(source: Destination, allowed: Destination) -> bool:
    """UDP: address and port. TCP/TLS: the address (a connection the registrar opened to us
    comes from an ephemeral port)."""
    if not same_address(source, allowed):
        return False
    return source.transport != "udp" or source.port == allowed.port


def same_address(source: Destination, known: Destination) -> bool:
    """Whether ``source`` comes from the address of ``known`` (any port or transport)."""
    address = ip_of(source.host)
    return address is not None and address == ip_of(known.host)


def admits(
    policy: InboundPolicy,
    source: Destination,
    *,
    request_user: str | None,
    registrars: Iterable[Destination] = (),
    own_users: Iterable[str] = (),
) -> str | None:
    """None when the policy lets a request outside a dialog from ``source`` in, else why not.

    ``registrars``: the transport addresses the registrar (outbound proxy) resolved to;
    ``own_users``: the user parts of our identity and our registered Contact (compared after
    percent-decoding, RFC 3261 section 19.1.4)."""
    if policy.open:
        return None
    if policy.registrar:
        if not any(_same_transport_address(source, r) for r in registrars):
            return f"{source.host}:{source.port} is not the registrar"
        users = {unquote(u) for u in own_users}
        if unquote(request_user or "") not in users:
            return f"the request is for user {request_user!r}, not ours"
        return None
    address = ip_of(source.host)
    if address is None or not any(address in net for net in policy.networks):
        return f"{source.host} is not in SIPROC_INBOUND"
    return None


def refer_allowed(setting: tuple[str, ...] | bool, target: SipUri) -> bool:
    """``SIPROC_ACCEPT_REFER``: yes (True), no (False), or glob patterns matched against the
    target's ``scheme:user@host[:port]`` (no parameters, user percent-decoded),
    case-insensitively: ``sip:*@pbx.example.com``, ``sip:1??@*``.

    A ``maddr`` parameter sends the request to that host instead (RFC 3263 section 4, RFC 3261
    section 19.1.1): the target must match with the maddr in place of the host as well, or
    ``sip:900@pbx.example.com;maddr=elsewhere`` would pass ``sip:*@pbx.example.com``."""
    if isinstance(setting, bool):
        return setting
    port = f":{target.port}" if target.port else ""
    user = f"{unquote(target.user)}@" if target.user is not None else ""
    hosts = [target.host]
    maddr = target.param("maddr")
    if maddr is not None:
        hosts.append(maddr)
    return all(
        any(
            fnmatch.fnmatchcase(
                f"{target.scheme}:{user}{format_host(host)}{port}".lower(), p.lower()
            )
            for p in setting
        )
        for host in hosts
    )
