"""SipTransport on loopback: UDP and TCP, IPv4 and IPv6, framing, pooling, errors, floods.

Everything binds to and talks to 127.0.0.1 and ::1 only (DESIGN.md section 5).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from siproc.net.sip_transport import SipTransport
from siproc.sip.errors import ParseError
from siproc.sip.message import Message, Request, Response, parse_message
from siproc.sip.transaction import Destination

LOG = logging.getLogger("test_sip_transport")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def run(coro: Coroutine[Any, Any, None], timeout: float = 15.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def request(
    n: int = 1, body: bytes = b"", method: str = "OPTIONS", host: str = "127.0.0.1"
) -> bytes:
    head = (
        f"{method} sip:bob@{host} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {host}:5060;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:alice@{host}>;tag=a{n}\r\n"
        f"To: <sip:bob@{host}>\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} {method}\r\n"
        "Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def response(n: int = 1) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{n}\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Recorder:
    datagrams: list[tuple[bytes, Destination, str]] = field(default_factory=list)
    messages: list[tuple[Message | ParseError, Destination, str]] = field(default_factory=list)
    errors: list[tuple[Destination, str]] = field(default_factory=list)

    def on_datagram(self, data: bytes, source: Destination, local_host: str) -> None:
        self.datagrams.append((data, source, local_host))

    def on_stream_message(
        self, message: Message | ParseError, source: Destination, local_host: str
    ) -> None:
        self.messages.append((message, source, local_host))

    def on_error(self, destination: Destination, reason: str) -> None:
        self.errors.append((destination, reason))


async def make(host: str = "127.0.0.1", port: int = 0) -> tuple[SipTransport, Recorder]:
    rec = Recorder()
    transport = SipTransport(
        asyncio.get_running_loop(), rec.on_datagram, rec.on_stream_message, LOG
    )
    transport.on_transport_error = rec.on_error
    await transport.start(host, port)
    return transport, rec


def with_transports(
    count: int, host: str = "127.0.0.1"
) -> Callable[[Callable[..., Awaitable[None]]], Callable[[], Coroutine[Any, Any, None]]]:
    """Run the test body with `count` started transports, closing them afterwards."""

    def wrap(body: Callable[..., Awaitable[None]]) -> Callable[[], Coroutine[Any, Any, None]]:
        async def runner() -> None:
            made = [await make(host) for _ in range(count)]
            try:
                await body(*made)
            finally:
                for transport, _ in made:
                    await transport.close()

        return runner

    return wrap


# UDP


def _udp_round_trip(host: str) -> None:
    @with_transports(2, host)
    async def body(a: tuple[SipTransport, Recorder], b: tuple[SipTransport, Recorder]) -> None:
        (ta, ra), (tb, rb) = a, b
        assert ta.port != 0 and tb.port != 0
        ta.send(request(1, host=host), Destination("udp", host, tb.port))
        await until(lambda: len(rb.datagrams) == 1)
        data, source, local_host = rb.datagrams[0]
        assert data == request(1, host=host)
        # The source port is A's SIP port: symmetric responses (RFC 3581) reach A's listener.
        assert source == Destination("udp", host, ta.port)
        assert local_host == host
        tb.send(response(1), source)
        await until(lambda: len(ra.datagrams) == 1)
        data, source, local_host = ra.datagrams[0]
        assert isinstance(parse_message(data), Response)
        assert source == Destination("udp", host, tb.port)
        assert ra.errors == [] and rb.errors == []

    run(body())


def test_udp_round_trip_ipv4() -> None:
    _udp_round_trip("127.0.0.1")


@needs_ipv6
def test_udp_round_trip_ipv6() -> None:
    _udp_round_trip("::1")


def test_udp_ignores_keepalives_stun_and_empty_datagrams() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (
                b"\r\n\r\n",
                b"\r\n",
                b"",
                b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
            ):
                sock.sendto(junk, ("127.0.0.1", transport.port))
            sock.sendto(request(7), ("127.0.0.1", transport.port))
            await until(lambda: len(rec.datagrams) == 1)
        assert rec.datagrams[0][0] == request(7)
        assert transport.datagrams_ignored == 4

    run(body())


def test_udp_callback_exception_does_not_stop_the_reader(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        seen: list[bytes] = []

        def on_datagram(data: bytes, source: Destination, local_host: str) -> None:
            seen.append(data)
            if len(seen) == 1:
                raise RuntimeError("boom")

        rec = Recorder()
        transport = SipTransport(
            asyncio.get_running_loop(), on_datagram, rec.on_stream_message, LOG
        )
        await transport.start("127.0.0.1", 0)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(request(1), ("127.0.0.1", transport.port))
                await until(lambda: len(seen) == 1)
                sock.sendto(request(2), ("127.0.0.1", transport.port))
                await until(lambda: len(seen) == 2)
        finally:
            await transport.close()

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        run(body())
    assert any("on_datagram raised" in r.getMessage() for r in caplog.records)


def _enlarge_receive_buffer(sock: socket.socket, size: int) -> None:
    """Room for the whole flood, so that it is queued at once (SO_RCVBUFFORCE needs root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)  # capped by rmem_max


def test_udp_flood_does_not_starve_the_loop() -> None:
    """10k garbage datagrams queued at once: a 10 ms timer still fires within 100 ms.

    Each datagram that goes up costs the callback 40 us (parsing and the transaction layer cost
    that order), so draining the whole queue in one reader callback would hold the loop for
    about 300 ms; the bounded batch gives the timer its turn every few milliseconds.
    """

    async def body() -> None:
        loop = asyncio.get_running_loop()
        delivered = 0
        requests: list[bytes] = []

        def slow_on_datagram(data: bytes, source: Destination, local_host: str) -> None:
            nonlocal delivered
            delivered += 1
            if data.startswith(b"OPTIONS"):
                requests.append(data)
            deadline = time.perf_counter() + 40e-6
            while time.perf_counter() < deadline:
                pass

        rec = Recorder()
        transport = SipTransport(loop, slow_on_datagram, rec.on_stream_message, LOG)
        await transport.start("127.0.0.1", 0)
        try:
            _enlarge_receive_buffer(transport._udp[socket.AF_INET], 32 << 20)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                for i in range(10_000):  # the loop is blocked meanwhile: all of it queues up
                    junk = os.urandom(100)
                    # Three in four start with a letter and go up; the rest are dropped early.
                    sock.sendto(
                        (b"X" + junk) if i % 4 else (b"\x00" + junk), ("127.0.0.1", transport.port)
                    )
            timer_fired: list[tuple[float, int]] = []
            scheduled = loop.time() + 0.01
            loop.call_at(scheduled, lambda: timer_fired.append((loop.time(), delivered)))
            await until(lambda: bool(timer_fired), timeout=5)
            fired_at, delivered_then = timer_fired[0]
            assert fired_at - scheduled < 0.1, f"timer {1000 * (fired_at - scheduled):.0f} ms late"
            # Still serving afterwards, and the timer ran between batches, not after the flood.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(request(9), ("127.0.0.1", transport.port))
            await until(lambda: requests == [request(9)], timeout=10)
            if delivered > 3 * transport.max_datagrams_per_wakeup:
                assert delivered_then < delivered
        finally:
            await transport.close()

    run(body(), timeout=60)


# TCP


async def _connect(
    port: int, host: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def test_tcp_message_in_three_fragments_arrives_framed() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        _, writer = await _connect(transport.port)
        data = request(1, body=b"v=0\r\n")
        cuts = (0, 17, len(data) - 3, len(data))
        for start, end in itertools.pairwise(cuts):
            writer.write(data[start:end])
            await writer.drain()
            await asyncio.sleep(0.02)
            if end != len(data):
                assert rec.messages == []
        await until(lambda: len(rec.messages) == 1)
        message, source, local_host = rec.messages[0]
        assert isinstance(message, Request)
        assert message.method == "OPTIONS" and message.body == b"v=0\r\n"
        assert source == Destination("tcp", "127.0.0.1", writer.get_extra_info("sockname")[1])
        assert local_host == "127.0.0.1"
        writer.close()

    run(body())


def test_tcp_two_messages_in_one_write_arrive_as_two() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        _, writer = await _connect(transport.port)
        writer.write(request(1) + request(2, body=b"hello"))
        await until(lambda: len(rec.messages) == 2)
        first, second = (m for m, _, _ in rec.messages)
        assert isinstance(first, Request) and first.headers.get("Call-ID") == "call-1"
        assert isinstance(second, Request) and second.body == b"hello"
        writer.close()

    run(body())


def test_tcp_reply_goes_back_on_the_peers_connection() -> None:
    """RFC 3261 section 18.2.2: the response rides the connection the request came on."""

    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        reader, writer = await _connect(transport.port)
        writer.write(request(1))
        await until(lambda: len(rec.messages) == 1)
        _, source, _ = rec.messages[0]
        transport.send(response(1), source)
        reply = await asyncio.wait_for(reader.readexactly(len(response(1))), 2)
        assert reply == response(1)
        assert transport.connection_count == 1
        writer.close()

    run(body())


def _tcp_pool_reuse(host: str) -> None:
    @with_transports(2, host)
    async def body(a: tuple[SipTransport, Recorder], b: tuple[SipTransport, Recorder]) -> None:
        (ta, ra), (tb, rb) = a, b
        server = Destination("tcp", host, tb.port)
        ta.send(request(1, host=host), server)  # queued while connecting
        ta.send(request(2, host=host), server)
        await until(lambda: len(rb.messages) == 2)
        assert ta.connection_count == 1 and tb.connection_count == 1
        _, client_source, local_host = rb.messages[0]
        assert rb.messages[1][1] == client_source
        assert client_source.port != ta.port  # an ephemeral port: only the pool can answer it
        assert local_host == host
        tb.send(response(1), client_source)
        await until(lambda: len(ra.messages) == 1)
        message, source, _ = ra.messages[0]
        assert isinstance(message, Response)
        assert source == server
        # No new connection either way: B answered on A's connection, A keeps using it.
        ta.send(request(3, host=host), server)
        await until(lambda: len(rb.messages) == 3)
        assert rb.messages[2][1] == client_source
        assert ta.connection_count == 1 and tb.connection_count == 1
        assert ra.errors == [] and rb.errors == []

    run(body())


def test_tcp_pool_reuse_ipv4() -> None:
    _tcp_pool_reuse("127.0.0.1")


@needs_ipv6
def test_tcp_pool_reuse_ipv6() -> None:
    _tcp_pool_reuse("::1")


def test_tcp_connect_refused_reports_transport_error() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
            closed.bind(("127.0.0.1", 0))  # bound, never listening: connect is refused
            destination = Destination("tcp", "127.0.0.1", closed.getsockname()[1])
            transport.send(request(1), destination)
            await until(lambda: len(rec.errors) == 1)
        error_destination, reason = rec.errors[0]
        assert error_destination == destination
        assert "refused" in reason.lower()
        assert transport.connection_count == 0

    run(body())


def test_tls_is_reported_not_raised() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        destination = Destination("tls", "127.0.0.1", 5061)
        transport.send(request(1), destination)
        assert rec.errors == []  # never from inside send()
        await until(lambda: len(rec.errors) == 1)
        assert rec.errors[0][0] == destination and "TLS" in rec.errors[0][1]

    run(body())


def test_tcp_keepalive_ping_gets_a_pong() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        reader, writer = await _connect(transport.port)
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        writer.write(request(1))
        await until(lambda: len(rec.messages) == 1)
        writer.close()

    run(body())


def test_tcp_unframeable_stream_is_reported_and_closed() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        reader, writer = await _connect(transport.port)
        no_length = b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nCall-ID: x\r\n\r\n"
        writer.write(no_length)
        await until(lambda: len(rec.messages) == 1)
        assert isinstance(rec.messages[0][0], ParseError)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        await until(lambda: transport.connection_count == 0)
        writer.close()

    run(body())


def test_tcp_idle_connection_is_closed() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        transport.idle_timeout = 0.2
        reader, writer = await _connect(transport.port)
        writer.write(request(1))
        await until(lambda: len(rec.messages) == 1)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert time.monotonic() - started >= 0.1
        await until(lambda: transport.connection_count == 0)
        writer.close()

    run(body())


def test_tcp_connection_limit() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, rec = a
        transport.max_connections = 1
        _, first = await _connect(transport.port)
        first.write(request(1))
        await until(lambda: len(rec.messages) == 1)
        second_reader, second = await _connect(transport.port)
        assert await asyncio.wait_for(second_reader.read(), 2) == b""
        assert transport.connection_count == 1
        transport.send(request(2), Destination("tcp", "127.0.0.1", 9))  # over the limit too
        await until(lambda: len(rec.errors) == 1)
        first.close()
        second.close()

    run(body())


def test_close_releases_everything() -> None:
    async def body() -> None:
        (ta, _), (tb, rb) = await make(), await make()
        ta.send(request(1), Destination("tcp", "127.0.0.1", tb.port))
        await until(lambda: len(rb.messages) == 1)
        await ta.close()
        await tb.close()
        assert ta.connection_count == 0 and tb.connection_count == 0
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", tb.port))  # free again
        ta.send(request(2), Destination("udp", "127.0.0.1", tb.port))  # logged, not raised

    run(body())


def test_close_while_connecting() -> None:
    async def body() -> None:
        (ta, ra), (tb, _) = await make(), await make()
        ta.send(request(1), Destination("tcp", "127.0.0.1", tb.port))  # connect not started yet
        assert ta.connection_count == 1
        await asyncio.wait_for(ta.close(), 1.0)
        assert ta.connection_count == 0
        await tb.close()
        assert ra.errors == []

    run(body())


@needs_ipv6
def test_all_addresses_mode_serves_both_families_on_one_port() -> None:
    """bind_host None binds 0.0.0.0 and ::; here the same code path on 127.0.0.1 and ::1."""

    async def body() -> None:
        rec = Recorder()
        transport = SipTransport(asyncio.get_running_loop(), rec.on_datagram, rec.on_stream_message)

        async def loopback_hosts(bind_host: str | None) -> list[str]:
            assert bind_host is None
            return ["127.0.0.1", "::1"]  # DESIGN.md section 5: no wildcard binds in tests

        transport._hosts_to_bind = loopback_hosts  # type: ignore[method-assign]
        await transport.start(None, 0)
        try:
            assert transport.bind_host is None
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(family, socket.SOCK_DGRAM) as peer:
                    peer.bind((host, 0))
                    peer.settimeout(2)
                    peer.sendto(request(1, host=host), (host, transport.port))
                    await until(lambda: len(rec.datagrams) == 1)
                    _, source, local_host = rec.datagrams.pop()
                    assert source == Destination("udp", host, peer.getsockname()[1])
                    assert local_host == host  # from local_address_for, not the bind address
                    transport.send(response(1), source)
                    data, address = await asyncio.to_thread(peer.recvfrom, 65535)
                    assert data == response(1) and address[1] == transport.port
                reader, writer = await _connect(transport.port, host)
                writer.write(request(2, host=host))
                await until(lambda: len(rec.messages) == 1)
                _, source, local_host = rec.messages.pop()
                assert local_host == host
                transport.send(response(2), source)
                assert await asyncio.wait_for(reader.readexactly(len(response(2))), 2) == response(
                    2
                )
                writer.close()
        finally:
            await transport.close()

    run(body())


# binding and addresses


def test_port_zero_picks_one_port_for_udp_and_tcp() -> None:
    @with_transports(1)
    async def body(a: tuple[SipTransport, Recorder]) -> None:
        transport, _ = a
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock, pytest.raises(OSError):
                sock.bind(("127.0.0.1", transport.port))

    run(body())


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_port_in_use_error_names_port_host_and_setting(kind: socket.SocketKind) -> None:
    async def body() -> None:
        with socket.socket(socket.AF_INET, kind) as holder:
            holder.bind(("127.0.0.1", 0))
            if kind == socket.SOCK_STREAM:
                holder.listen()
            port = holder.getsockname()[1]
            transport = SipTransport(
                asyncio.get_running_loop(), Recorder().on_datagram, Recorder().on_stream_message
            )
            with pytest.raises(OSError) as info:
                await transport.start("127.0.0.1", port)
            proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
            expected = (
                f"SIP port {port} is in use on 127.0.0.1 ({proto}): set SIPROC_TRANSPORT_PORT"
            )
            assert expected in str(info.value)
            # Nothing stays bound after the failure.
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, other) as sock:
                sock.bind(("127.0.0.1", port))

    run(body())


def test_local_address_for_loopback() -> None:
    async def body() -> None:
        rec = Recorder()
        transport = SipTransport(asyncio.get_running_loop(), rec.on_datagram, rec.on_stream_message)
        assert transport.local_address_for("127.0.0.1") == "127.0.0.1"
        if _has_ipv6_loopback():
            assert transport.local_address_for("::1") == "::1"
        await transport.start("127.0.0.1", 0)
        try:
            assert transport.local_address_for("127.0.0.2") == "127.0.0.1"  # the bound address
        finally:
            await transport.close()

    run(body())
