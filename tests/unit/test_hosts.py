"""net/hosts.py: names resolved off the loop, cached, refreshed in the background."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from siproc.net.hosts import HostCache, source_key


class FakeResolver:
    """loop.getaddrinfo and socket.getaddrinfo stand-ins: an address book and a call log."""

    def __init__(self, book: dict[str, str]) -> None:
        self.book = book
        self.calls: list[str] = []
        self.delay = 0.0

    def answer(self, host: str) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        if host not in self.book:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (self.book[host], 0))]

    async def getaddrinfo(self, host: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        await asyncio.sleep(self.delay)
        return self.answer(host)


def _cache(monkeypatch: pytest.MonkeyPatch, book: dict[str, str], now: list[float]) -> Any:
    loop = asyncio.get_running_loop()
    resolver = FakeResolver(book)
    monkeypatch.setattr(loop, "getaddrinfo", resolver.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: resolver.answer(host))
    return HostCache(loop, ttl=300, clock=lambda: now[0]), resolver


def test_literals_need_no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        hosts, resolver = _cache(monkeypatch, {}, [0.0])
        assert hosts.lookup("127.0.0.1") == "127.0.0.1"
        assert hosts.lookup("[::1]") == "::1"
        assert await hosts.resolve("10.0.0.1") == "10.0.0.1"
        assert resolver.calls == []

    asyncio.run(main())


def test_a_name_is_resolved_once_off_the_loop_and_then_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        hosts, resolver = _cache(monkeypatch, {"pbx.example": "192.0.2.7"}, [0.0])
        assert hosts.lookup("pbx.example") is None  # never blocks, never guesses
        resolver.delay = 0.05
        first, second = await asyncio.gather(
            hosts.resolve("pbx.example"), hosts.resolve("PBX.example")
        )
        assert first == second == "192.0.2.7"
        assert resolver.calls == ["pbx.example"]  # one lookup shared by both
        assert hosts.lookup("pbx.example") == "192.0.2.7"
        assert hosts.resolve_now("pbx.example") == "192.0.2.7"
        assert hosts.blocking_lookups == 0

    asyncio.run(main())


def test_an_old_address_serves_while_it_is_refreshed_and_survives_a_failed_refresh(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        now = [0.0]
        book = {"pbx.example": "192.0.2.7"}
        hosts, resolver = _cache(monkeypatch, book, now)
        await hosts.resolve("pbx.example")
        now[0] = 301.0
        book["pbx.example"] = "192.0.2.8"  # the provider moved
        assert hosts.lookup("pbx.example") == "192.0.2.7"  # at once, the old one
        await asyncio.sleep(0.01)
        assert hosts.lookup("pbx.example") == "192.0.2.8"
        now[0] = 700.0
        del book["pbx.example"]  # DNS is down
        assert hosts.lookup("pbx.example") == "192.0.2.8"
        await asyncio.sleep(0.01)
        assert hosts.lookup("pbx.example") == "192.0.2.8"  # still: it worked before
        assert resolver.calls == ["pbx.example"] * 3
        assert "cannot resolve 'pbx.example'" in caplog.text

    asyncio.run(main())


def test_failures_name_the_host_and_a_first_sight_blocks_only_as_the_last_resort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        hosts, _ = _cache(monkeypatch, {"proxy.example": "198.51.100.1"}, [0.0])
        with pytest.raises(OSError, match=r"cannot resolve 'nowhere\.example': Name or service"):
            await hosts.resolve("nowhere.example")
        assert hosts.resolve_now("proxy.example") == "198.51.100.1"  # a dialog's hop, say
        assert hosts.blocking_lookups == 1
        with pytest.raises(OSError, match=r"nowhere\.example"):
            hosts.resolve_now("nowhere.example")

    asyncio.run(main())


def test_a_name_the_resolver_cannot_even_encode_is_an_oserror() -> None:
    """An over-long label (from a peer's Contact, say) raises UnicodeError in the resolver;
    it must reach the caller as the usual one-line OSError."""

    async def main() -> None:
        hosts = HostCache(asyncio.get_running_loop())
        name = "a" * 64 + ".example"
        with pytest.raises(OSError, match="not a valid host name"):
            hosts.resolve_now(name)
        with pytest.raises(OSError, match="not a valid host name"):
            await hosts.resolve(name)

    asyncio.run(main())


# -- what the per-source limits count by (calls, TCP connections) ---------------------------


def test_source_key_is_the_ipv4_address_or_the_ipv6_64() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:ffff::9") == source_key("2001:db8:1:2::1")
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::1") == "::/64"


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1:2", "2001:db8::/64"),
        ("[2001:db8:0:1::1]", "2001:db8:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_source_key_counts_ipv6_by_its_64(host: str, key: str) -> None:
    assert source_key(host) == key
