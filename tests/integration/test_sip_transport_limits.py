"""SipTransport's limits on loopback: what keeps its TCP listener safe on the open internet.

A real SipTransport on 127.0.0.1 with a real Endpoint answering what it can (so that a 513
really goes out): an oversized message gets 513 and the connection closes, the per-source cap
refuses extra connections, a silent connection is closed at the first-message deadline, a slow
drip of a header is cut at the message deadline, a keep-alive ping gets exactly one pong, and a
UDP datagram over the limit gets 513 or is dropped. Deadlines are configured short in the test.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from siproc.net.sip_transport import SipTransport
from siproc.sip.endpoint import Endpoint
from siproc.sip.errors import ParseError
from siproc.sip.framing import StreamLimits
from siproc.sip.message import Message, Response, parse_message
from siproc.sip.transaction import Destination, Send
from tests.integration.test_sip_transport import (
    LOG,
    Recorder,
    _connect,
    request,
    response,
    run,
    until,
)

LIMIT = 2000


async def answering(limits: StreamLimits) -> tuple[SipTransport, Recorder]:
    """A started transport whose stream errors reach an Endpoint, which answers them."""
    rec = Recorder()
    endpoint = Endpoint(allow=["OPTIONS"])
    loop = asyncio.get_running_loop()

    def on_stream_message(item: Message | ParseError, source: Destination, local: str) -> None:
        rec.on_stream_message(item, source, local)
        for output in endpoint.receive_message(item, source, local, loop.time()):
            if isinstance(output, Send):
                transport.send(output.data, output.destination)

    transport = SipTransport(loop, rec.on_datagram, on_stream_message, LOG)
    transport.limits = limits
    transport.on_transport_error = rec.on_error
    await transport.start("127.0.0.1", 0)
    return transport, rec


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 3.0) -> bytes:
    """What the transport still sends before it closes (a reset counts as a close)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


def big(size: int) -> bytes:
    """A request of `size` octets whose headers (Via, CSeq) allow a response."""
    pad = size - len(request(9)) + len(b"Max-Forwards: 70\r\n")
    return request(9).replace(b"Max-Forwards: 70\r\n", b"X-Pad: " + b"a" * (pad - 9) + b"\r\n")


def test_oversized_request_gets_513_then_close() -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits(max_message_size=LIMIT))
        try:
            reader, writer = await _connect(transport.port)
            # Far more than the socket buffers hold: we stop parsing, yet the 513 must survive
            # (our side lingers, draining the rest, rather than resetting the connection).
            writer.write(big(LIMIT + 1) + b"x" * 300_000)
            await writer.drain()
            answer = parse_message(await closed_by_peer(reader))
            assert isinstance(answer, Response)
            assert answer.status == 513 and answer.reason.startswith("Message Too Large")
            assert answer.headers.get("CSeq") == "9 OPTIONS"
            writer.close()
            await until(lambda: transport.connection_count == 0)
            [(error, _, _)] = rec.messages
            assert isinstance(error, ParseError) and error.status == 513
        finally:
            await transport.close()

    run(body())


def test_message_at_the_limit_is_accepted() -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits(max_message_size=LIMIT))
        try:
            _, writer = await _connect(transport.port)
            writer.write(big(LIMIT))
            await until(lambda: len(rec.messages) == 1)
            assert not isinstance(rec.messages[0][0], ParseError)
            assert transport.connection_count == 1
            writer.close()
        finally:
            await transport.close()

    run(body())


def test_oversized_garbage_is_just_closed() -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits(max_message_size=LIMIT))
        try:
            reader, writer = await _connect(transport.port)
            writer.write(b"NOT SIP AT ALL " * 200)
            assert await closed_by_peer(reader) == b""  # nothing to answer
            await until(lambda: transport.connection_count == 0)
            [(error, _, _)] = rec.messages
            assert isinstance(error, ParseError) and error.status == 513
            assert error.headers is None
            writer.close()
        finally:
            await transport.close()

    run(body())


def test_connections_per_source_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits())
        transport.max_connections_per_source = 2
        try:
            writers = []
            for n in (1, 2):
                _, writer = await _connect(transport.port)
                writer.write(request(n))
                writers.append(writer)
            await until(lambda: len(rec.messages) == 2)
            with caplog.at_level(logging.WARNING, logger=LOG.name):
                for _ in range(3):
                    reader, extra = await _connect(transport.port)
                    assert await closed_by_peer(reader, 2) == b""  # closed at once
                    extra.close()
            assert transport.connection_count == 2
            warnings = [r for r in caplog.records if "per source" in r.getMessage()]
            assert len(warnings) == 1  # rate-limited: one line for the three
            assert "127.0.0.1" in warnings[0].getMessage()
            writers.pop().close()  # a slot frees up when one of them goes
            await until(lambda: transport.connection_count == 1)
            _, again = await _connect(transport.port)
            again.write(request(3))
            await until(lambda: len(rec.messages) == 3)
            assert transport.connection_count == 2
            for writer in [*writers, again]:
                writer.close()
        finally:
            await transport.close()

    run(body())


def test_silent_connection_is_closed_at_the_first_message_deadline() -> None:
    async def body() -> None:
        limits = StreamLimits(first_message_timeout=0.3, message_timeout=5.0)
        transport, rec = await answering(limits)
        try:
            reader, writer = await _connect(transport.port)
            started = time.monotonic()
            writer.write(b"\r\n\r\n")  # pings are answered but are no message
            assert await closed_by_peer(reader) == b"\r\n"
            assert 0.25 <= time.monotonic() - started < 2.5
            await until(lambda: transport.connection_count == 0)
            assert rec.messages == []
            writer.close()
        finally:
            await transport.close()

    run(body())


def test_slow_drip_of_a_header_is_cut_at_the_message_deadline() -> None:
    async def body() -> None:
        limits = StreamLimits(first_message_timeout=5.0, message_timeout=0.4)
        transport, rec = await answering(limits)
        try:
            reader, writer = await _connect(transport.port)
            writer.write(request(1))  # the first message meets its deadline
            await until(lambda: len(rec.messages) == 1)
            drip = request(2)
            started = time.monotonic()
            closed = False
            for octet in drip:  # 20 octets a second: the whole header would take 13 s
                try:
                    writer.write(bytes([octet]))
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if reader.at_eof():
                    closed = True
                    break
                await asyncio.sleep(0.05)
                assert time.monotonic() - started < 3.0, "the drip was not cut"
            assert closed
            assert 0.35 <= time.monotonic() - started < 3.0
            await until(lambda: transport.connection_count == 0)
            assert len(rec.messages) == 1
            writer.close()
        finally:
            await transport.close()

    run(body())


def test_keepalive_ping_gets_one_pong_and_a_lone_crlf_none() -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits())
        try:
            reader, writer = await _connect(transport.port)
            writer.write(b"\r\n")  # a lone CRLF ...
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"\r\n\r")  # ... then a CRLFCRLF ping cut over two segments
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"\n" + request(1))
            await until(lambda: len(rec.messages) == 1)
            _, source, _ = rec.messages[0]
            transport.send(response(1), source)
            # Exactly one pong, then the response: no pong for the lone CRLF.
            got = await asyncio.wait_for(reader.readexactly(2 + len(response(1))), 2)
            assert got == b"\r\n" + response(1)
            writer.close()
        finally:
            await transport.close()

    run(body())


def test_udp_datagram_over_the_limit_gets_513_or_is_dropped() -> None:
    async def body() -> None:
        transport, rec = await answering(StreamLimits(max_message_size=LIMIT))
        loop = asyncio.get_running_loop()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                oversized = big(LIMIT + 500).replace(b"SIP/2.0/TCP", b"SIP/2.0/UDP")
                oversized = oversized.replace(b"branch=", b"rport;branch=")
                await loop.sock_sendto(sock, oversized, ("127.0.0.1", transport.port))
                data = await asyncio.wait_for(loop.sock_recv(sock, 65_535), 2)
                answer = parse_message(data)
                assert isinstance(answer, Response) and answer.status == 513
                assert answer.headers.get("CSeq") == "9 OPTIONS"
                garbage = b"OPTIONS " + b"x" * (LIMIT + 10)  # no header to answer with
                await loop.sock_sendto(sock, garbage, ("127.0.0.1", transport.port))
                await until(lambda: transport.datagrams_too_large == 2)
                await asyncio.sleep(0.05)
                with pytest.raises(BlockingIOError):
                    sock.recv(65_535)
            assert rec.datagrams == []  # neither reached the normal datagram path
        finally:
            await transport.close()

    run(body())
