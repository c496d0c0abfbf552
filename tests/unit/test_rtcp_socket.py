"""RTCP in RtpStream on 127.0.0.1 sockets: reports both ways, loss seen by the peer, round-trip
time, rtcp-mux, a=rtcp, BYE at close (RFC 3550 section 6, RFC 5761, RFC 3605).

The streams run on a `VirtualLoop` (tests/virtual_loop.py): the media clock's 20 ms ticks and
the RTCP intervals pass in virtual time, as fast as the CPU goes, while the datagrams still go
through real loopback sockets (a send on loopback has arrived when it returns, so the receive
phase of the same tick sees it). Arrival times follow the virtual clock too (`virtual` below):
the kernel's receive timestamps are real time and would make every 20 ms of virtual media look
like jitter."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from siproc.media.codecs import get_codec
from siproc.media.rtcp import Bye, ReceiverReport, SenderReport, SourceDescription, parse_rtcp
from siproc.net import rtp_socket
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import Address, RtpStream
from tests.virtual_loop import VirtualLoop

HOST = "127.0.0.1"
PORTS = (40000, 49999)
INTERVAL = 0.2  # RTCP minimum interval for the tests (RFC 3550 says 5 s)


@pytest.fixture
def virtual(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualLoop]:
    """A virtual loop whose clock the streams also take their arrival times from."""
    loop = VirtualLoop()
    monkeypatch.setattr(rtp_socket, "_enable_timestamps", lambda sock: False)
    monkeypatch.setattr(rtp_socket, "_wall_time", lambda: loop.time() + 1_700_000_000.0)
    yield loop
    loop.close()
    assert loop.errors == []


def run(loop: VirtualLoop, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        asyncio.set_event_loop(None)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for ``condition``, at most ``timeout`` seconds of (virtual) loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def receive(sock: socket.socket) -> bytes:
    """The next datagram of the non-blocking ``sock``, waiting in loop time."""
    got: list[bytes] = []

    def ready() -> bool:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return False
        return True

    await until(ready)
    return got[0]


def pair(
    loop: asyncio.AbstractEventLoop, clock: MediaClock, *, mux: bool = False
) -> tuple[RtpStream, RtpStream]:
    a = RtpStream.open(loop, clock, HOST, PORTS, random.Random(1), rtcp_interval=INTERVAL)
    b = RtpStream.open(loop, clock, HOST, PORTS, random.Random(2), rtcp_interval=INTERVAL)
    a.configure((HOST, b.local_port), get_codec("PCMU"), 0, None, "sendrecv")
    b.configure((HOST, a.local_port), get_codec("PCMU"), 0, None, "sendrecv")
    a.configure_rtcp(mux=mux)
    b.configure_rtcp(mux=mux)
    return a, b


def drop_every(stream: RtpStream, nth: int) -> list[int]:
    """A shim on the sending side: every ``nth`` RTP packet is lost on the way."""
    send = stream._send
    count = [0]

    def lossy(packet: bytes, dest: Address) -> None:
        count[0] += 1
        if count[0] % nth:
            send(packet, dest)

    stream._send = lossy  # type: ignore[method-assign]
    return count


@pytest.mark.parametrize("mux", [False, True])
def test_reports_both_ways_rtt_and_bye(virtual: VirtualLoop, mux: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        a, b = pair(loop, clock, mux=mux)
        try:
            expected_rtcp = (HOST, b.local_port if mux else b.local_port + 1)
            assert a.rtcp_address == expected_rtcp
            a.start()
            b.start()
            await asyncio.sleep(1.0)
            await until(lambda: a.stats.rtt_ms is not None and b.stats.rtt_ms is not None)
            for me, peer in ((a, b), (b, a)):
                session = me.stats.rtcp
                assert session is not None
                assert session.remote_sr is not None  # the peer's SR arrived ...
                assert session.remote_sr.ssrc == peer.ssrc
                assert session.peer_cname is not None
                rtt = me.stats.rtt_ms
                assert rtt is not None and 0 <= rtt < 50  # ... and echoed ours: RTT
                assert me.stats.rtcp_sent >= 2 and me.stats.rtcp_received >= 2
                assert me.stats.rtcp_invalid == 0
                assert me.stats.packets_received >= 40
                assert me.stats.lost == 0 and me.stats.fraction_lost == 0.0
                assert me.stats.remote_lost == 0 and me.stats.remote_fraction_lost == 0.0
                assert me.stats.jitter_ms < 20
                remote_jitter = me.stats.remote_jitter_ms
                assert remote_jitter is not None and remote_jitter < 20
            assert not b.stats.bye_received
            a.close()
            await until(lambda: b.stats.bye_received)
        finally:
            a.close()
            b.close()

    run(virtual, main)


def test_loss_reported_by_the_receiver(virtual: VirtualLoop) -> None:
    """Every 10th RTP packet of A is dropped on the way: B counts 10 % lost and says so in its
    reports, so A sees its stream's loss from B's side."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        a, b = pair(loop, clock)
        drop_every(a, 10)
        try:
            a.start()
            b.start()
            await asyncio.sleep(1.2)
            await until(lambda: (a.stats.remote_lost or 0) >= 3)
        finally:
            a.close()
            b.close()
        reception = b.stats.rtcp.reception if b.stats.rtcp is not None else None
        assert reception is not None
        assert reception.expected >= 50
        assert b.stats.lost == pytest.approx(reception.expected / 10, abs=1.5)
        assert 0.07 <= b.stats.fraction_lost <= 0.13
        remote_lost = a.stats.remote_lost
        assert remote_lost is not None and remote_lost >= 3
        assert a.stats.lost == 0  # B's stream to A lost nothing
        assert b.stats.remote_lost == 0

    run(virtual, main)


def test_rtcp_goes_to_the_sdp_rtcp_attribute_and_follows_the_source(virtual: VirtualLoop) -> None:
    """a=rtcp (RFC 3605) names the peer's RTCP port; once the peer's RTCP arrives from
    elsewhere, reports follow it (symmetric RTCP, RFC 4961)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        a, b = pair(loop, clock)
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((HOST, 0))
        listener.setblocking(False)
        try:
            a.configure_rtcp(mux=False, remote=listener.getsockname())
            assert a.rtcp_address == listener.getsockname()
            a.start()
            data = await receive(listener)
            packets = parse_rtcp(data)
            assert isinstance(packets[0], SenderReport | ReceiverReport)
            assert isinstance(packets[1], SourceDescription)
            b.start()  # B's RTP and then its RTCP (from port + 1) reach A
            await until(lambda: a.stats.rtcp_received >= 1 and a.stats.packets_received > 2)
            await until(lambda: a.rtcp_address == (HOST, b.local_port + 1))
            # An unusable a=rtcp is ignored: back to port + 1 of the RTP address.
            a.configure_rtcp(mux=False, remote=("::1", 9))
            assert a.rtcp_address == (HOST, b.local_port + 1)
        finally:
            a.close()
            b.close()
            listener.close()

    run(virtual, main)


def test_garbage_rtcp_is_counted_and_dropped(virtual: VirtualLoop) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        a, b = pair(loop, clock)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(b"\x80\xc9\x00\x05garbage!", (HOST, a.local_port + 1))
            sender.sendto(b"\x80\xc8\x00\x01", (HOST, a.local_port))  # muxed, too short
            await until(lambda: a.stats.rtcp_received == 2)
            assert a.stats.rtcp_invalid == 2
            assert a.stats.packets_invalid == 0
        finally:
            a.close()
            b.close()
            sender.close()

    run(virtual, main)


def test_no_bye_without_having_sent_anything(virtual: VirtualLoop) -> None:
    """RFC 3550 section 6.3.7: a participant that never sent RTP or RTCP sends no BYE."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((HOST, 0))
        listener.setblocking(False)
        a = RtpStream.open(loop, clock, HOST, PORTS, random.Random(3), rtcp_interval=INTERVAL)
        try:
            a.configure(listener.getsockname(), get_codec("PCMU"), 0, None, "recvonly")
            a.configure_rtcp(mux=True)
            a.close()
            with pytest.raises(BlockingIOError):
                listener.recv(2048)
            b = RtpStream.open(loop, clock, HOST, PORTS, random.Random(4), rtcp_interval=INTERVAL)
            b.configure(listener.getsockname(), get_codec("PCMU"), 0, None, "sendrecv")
            b.configure_rtcp(mux=True)
            b.tick(loop.time())  # one RTP packet
            b.close()
            await asyncio.sleep(0.05)
            assert len(listener.recv(2048)) == 172
            packets = parse_rtcp(listener.recv(2048))
            assert isinstance(packets[0], SenderReport)
            assert packets[-1] == Bye((b.ssrc,))
        finally:
            a.close()
            listener.close()

    run(virtual, main)
