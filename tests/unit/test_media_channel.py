"""media_channel: message boundaries, descriptors passed, order kept through a full buffer,
the peer's end noticed once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import struct
from collections.abc import Callable

import pytest

from siproc.net.media_channel import BATCH_FDS, MAX_FDS, Channel, Message, _received_fds


class Ends:
    """Two channels joined by a socket pair, on one loop; what each end received."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        a, b = Channel.pair()
        self.got: list[tuple[Message, list[int]]] = []
        self.closed = {"a": 0, "b": 0}
        self.a = Channel(loop, a, lambda m, f: None, lambda: self._closed("a"))
        self.b = Channel(loop, b, lambda m, f: self.got.append((m, f)), lambda: self._closed("b"))

    def _closed(self, end: str) -> None:
        self.closed[end] += 1


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_messages_arrive_whole_and_in_order() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        for i in range(100):
            ends.a.send(("verb", i, "x" * i, {"nested": [i]}))
        await _until(lambda: len(ends.got) == 100)
        assert [m for m, _ in ends.got] == [
            ("verb", i, "x" * i, {"nested": [i]}) for i in range(100)
        ]
        assert all(fds == [] for _, fds in ends.got)
        ends.a.close()
        ends.b.close()

    asyncio.run(main())


def test_descriptors_cross_and_the_sender_closes_its_copies() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        fd = udp.detach()
        ends.a.send(("open", 1), [fd])
        await _until(lambda: len(ends.got) == 1)
        message, fds = ends.got[0]
        assert message == ("open", 1) and len(fds) == 1
        received = socket.socket(fileno=fds[0])
        assert received.getsockname() == ("127.0.0.1", port)
        received.close()
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", port))  # free: the channel closed the sender's copy once sent
        again.close()
        ends.a.close()
        ends.b.close()

    asyncio.run(main())


def test_a_full_buffer_queues_in_order_without_blocking() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        big = b"\0" * 100_000
        for i in range(200):  # 20 MB: far more than the socket buffers hold
            ends.a.send((i, big))
        assert ends.a.pending > 0  # queued, the loop was not blocked
        await _until(lambda: len(ends.got) == 200, timeout=20)
        assert [m[0] for m, _ in ends.got] == list(range(200))
        assert ends.a.pending == 0
        ends.a.close()
        ends.b.close()

    asyncio.run(main())


def test_the_peer_closing_is_reported_once_and_later_sends_close_their_fds() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        ends.b.close()  # our own close: no callback for b
        await _until(lambda: ends.closed["a"] == 1)
        await asyncio.sleep(0.05)
        assert ends.closed == {"a": 1, "b": 0}
        assert ends.a.closed
        r, w = os.pipe()
        ends.a.send(("late",), [r])
        with pytest.raises(OSError):
            os.fstat(r)
        os.close(w)

    asyncio.run(main())


def test_too_many_descriptors_is_our_bug() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        with pytest.raises(ValueError, match="descriptors"):
            ends.a.send(("x",), list(range(MAX_FDS + 1)))
        ends.a.close()
        ends.b.close()

    asyncio.run(main())


def _udp_fds(n: int) -> tuple[list[int], list[int]]:
    """``n`` bound UDP sockets, detached: (descriptors, their ports)."""
    fds, ports = [], []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        fds.append(sock.detach())
    return fds, ports


def test_one_turn_of_the_loop_goes_out_as_one_datagram_and_each_message_gets_its_fds() -> None:
    """A call set up sends ~10 messages: one system call and one wake-up of the worker, and
    the descriptors of each message still reach that message."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, raw = Channel.pair()
        sender = Channel(loop, a, lambda m, f: None, lambda: None)
        fds, ports = _udp_fds(6)
        for i in range(3):
            sender.send(("open", i), fds[2 * i : 2 * i + 2])
            sender.send(("configure", i))
        await asyncio.sleep(0.05)
        raw.setblocking(False)
        datagrams = []
        with contextlib.suppress(BlockingIOError):
            while True:
                datagrams.append(raw.recvmsg(1 << 20, socket.CMSG_SPACE(64 * 4)))
        assert len(datagrams) == 1
        data, ancillary, _flags, _ = datagrams[0]
        got: list[tuple[Message, list[int]]] = []
        receiver = Channel(loop, raw, lambda m, f: got.append((m, f)), lambda: None)
        receiver._deliver(data, _received_fds(ancillary), lost_fds=False)
        assert [m for m, _ in got] == [
            ("open", 0), ("configure", 0), ("open", 1), ("configure", 1), ("open", 2),
            ("configure", 2),
        ]  # fmt: skip
        for i in range(3):
            names = []
            for fd in got[2 * i][1]:
                sock = socket.socket(fileno=fd)
                names.append(sock.getsockname()[1])
                sock.close()
            assert names == ports[2 * i : 2 * i + 2]
        assert all(f == [] for _, f in got[1::2])
        sender.close()
        receiver.close()

    asyncio.run(main())


def test_more_descriptors_than_a_datagram_takes_split_over_several() -> None:
    async def main() -> None:
        ends = Ends(asyncio.get_running_loop())
        n = BATCH_FDS // 2 + 8  # two descriptors each: more than one datagram holds
        fds, ports = _udp_fds(2 * n)
        for i in range(n):
            ends.a.send(("open", i), fds[2 * i : 2 * i + 2])
        await _until(lambda: len(ends.got) == n)
        for i, (message, got) in enumerate(ends.got):
            assert message == ("open", i)
            names = []
            for fd in got:
                sock = socket.socket(fileno=fd)
                names.append(sock.getsockname()[1])
                sock.close()
            assert names == ports[2 * i : 2 * i + 2]
        ends.a.close()
        ends.b.close()

    asyncio.run(main())


def test_an_undecodable_frame_is_dropped_and_the_next_ones_arrive() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        raw, b = Channel.pair()
        got: list[Message] = []
        end = Channel(loop, b, lambda m, f: got.append(m), lambda: None)
        good = pickle.dumps(("after",))
        frames = struct.pack("!IB", 3, 0) + b"\x80\x05?" + struct.pack("!IB", len(good), 0) + good
        raw.send(frames)
        await _until(lambda: got == [("after",)])
        raw.close()
        end.close()

    asyncio.run(main())


def test_a_paced_receiver_holds_the_rest_in_order_and_stops_reading_until_resumed() -> None:
    """A media worker (net/media_worker.py) takes no command while its tick is near: the
    rest of the datagram waits, nothing new is read (no busy loop on a readable socket), and
    each resumption hands out at least one message, so commands always move."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = Channel.pair()
        got: list[Message] = []
        resumes: list[Callable[[], None]] = []
        budget = {"left": 3}

        def pause_when() -> bool:
            budget["left"] -= 1
            return budget["left"] < 0

        sender = Channel(loop, a, lambda m, f: None, lambda: None)
        receiver = Channel(
            loop,
            b,
            lambda m, f: got.append(m),
            lambda: None,
            pause_when=pause_when,
            resume_later=resumes.append,
        )
        for i in range(10):
            sender.send(("close", i))
        await _until(lambda: resumes)
        assert got == [("close", i) for i in range(3)]
        assert receiver.paused == 1
        sender.send(("late", 0))  # a second datagram: not read while paused
        await asyncio.sleep(0.02)
        assert len(got) == 3 and len(resumes) == 1
        for expected in range(3, 10):  # the tick is always near now: one message per resume
            resumes.pop()()
            assert got[-1] == ("close", expected)
        budget["left"] = 100  # the next tick is far: the rest goes at once
        resumes.pop()()
        await _until(lambda: got[-1] == ("late", 0))
        assert got == [("close", i) for i in range(10)] + [("late", 0)]
        assert not resumes
        sender.close()
        receiver.close()

    asyncio.run(main())


def test_a_paced_receiver_closed_while_holding_closes_the_held_descriptors() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = Channel.pair()
        got: list[tuple[Message, list[int]]] = []
        resumes: list[Callable[[], None]] = []
        sender = Channel(loop, a, lambda m, f: None, lambda: None)
        receiver = Channel(
            loop,
            b,
            lambda m, f: got.append((m, f)),
            lambda: None,
            pause_when=lambda: True,
            resume_later=resumes.append,
        )
        fds, _ports = _udp_fds(4)
        sender.send(("open", 0), fds[:2])
        sender.send(("open", 1), fds[2:])
        await _until(lambda: resumes)
        assert len(got) == 0  # the tick was near at once: nothing yet
        resumes.pop()()
        assert [m for m, _ in got] == [("open", 0)]
        for fd in got[0][1]:
            os.close(fd)
        before = len(os.listdir("/proc/self/fd"))
        receiver.close()  # its socket, and the second open's two descriptors, held
        assert len(os.listdir("/proc/self/fd")) == before - 3
        resumes.pop()()  # a late resumption after close does nothing
        assert [m for m, _ in got] == [("open", 0)]
        sender.close()

    asyncio.run(main())


def test_pause_when_and_resume_later_go_together() -> None:
    a, b = Channel.pair()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="go together"):
            Channel(loop, a, lambda m, f: None, lambda: None, pause_when=lambda: False)
    finally:
        a.close()
        b.close()
        loop.close()
