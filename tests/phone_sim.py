"""A whole siproc `Phone` in virtual time, with fake handlers, fake media and a fake network.

`PhoneSim` runs the real `Phone` (endpoint, transactions, calls, commands, limits) on a
`VirtualLoop`: an asyncio event loop whose clock jumps to the next timer instead of waiting for
it, so 64*T1 of SIP timers pass in milliseconds and a test is deterministic. What would leave
the process is replaced:

- the SIP transport: datagrams go in with :meth:`PhoneSim.receive`, and what siproc sends is
  collected in :attr:`PhoneSim.sent` (parsed, with its destination);
- media: every call gets a :class:`FakeStream` that records what the call layer asks of it;
- handlers: :class:`FakeHandler` runs a little script (``ANSWER``, ``RINGING``, ``PROGRESS``,
  ``HANGUP``, ``EXIT``...) instead of a process, and exits when siproc terminates it;
- DNS: only IP literals are located (a name fails at once, as an NXDOMAIN would).

Used by the call-layer tests and by the whole-phone fuzz target (tests/fuzz/test_phone.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siproc.calls import call as call_module
from siproc.calls.phone import Phone
from siproc.config import load_config
from siproc.net.hosts import ip_literal
from siproc.net.rtp_state import RtpStats
from siproc.sip.message import Message, Response, parse_message
from siproc.sip.transaction import Destination
from siproc.sip.uri import SipUri
from tests.virtual_loop import VirtualLoop

LOCAL = "127.0.0.1"
PEER = Destination("udp", "127.0.0.1", 5099)


class FakeStream:
    """A call's media as the call layer sees it; records what it is asked to do."""

    instances: list[FakeStream] = []

    def __init__(self, port: int) -> None:
        self.local_port = port
        self.stats = RtpStats()
        self.closed = False
        self.started = False
        self.configured: list[tuple[Any, ...]] = []
        self.proven = False
        self.on_stopped: Callable[[str], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_error: Callable[[str, str], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.on_rtp_timeout: Callable[[], None] | None = None
        self.telephone_event_pt: int | None = None
        self.sample_rate = 8000
        self._when_closed: list[Callable[[], None]] = []
        self._playing: list[str] = []
        self._recording: str | None = None
        self.bot: tuple[Any, Callable[[str, str], None]] | None = None  # STREAM: spec, report
        FakeStream.instances.append(self)

    def configure(self, remote: tuple[str, int], codec: object, pt: int, te: int | None,
                  direction: str, **kwargs: object) -> None:  # fmt: skip
        if not 0 <= pt < 128 or (te is not None and not 0 <= te < 128):
            raise ValueError(f"bad payload type {pt}/{te}")
        if ip_literal(remote[0]) is None or not 0 <= remote[1] <= 65535:
            raise ValueError(f"bad remote {remote}")
        self.telephone_event_pt = te
        self.configured.append((remote, pt, te, direction))

    def configure_rtcp(self, *, mux: bool, remote: object = None) -> None:
        pass

    def configure_srtp(self, params: object) -> None:
        pass

    def latch_from(self, hosts: Sequence[str]) -> None:
        pass

    def guard_unproven(self, packets: int) -> None:
        pass

    def prove(self) -> None:
        self.proven = True

    def watch_rtp(self, seconds: float) -> None:
        pass

    def log_as(self, call: str) -> None:
        pass

    def start(self) -> None:
        if self.closed:
            raise RuntimeError("start() after close()")
        self.started = True

    def play(self, path: str) -> None:
        self._playing.append(path)

    def stop_last(self) -> str | None:
        return self._playing.pop() if self._playing else None

    def start_recording(self, path: str, stereo: bool = False) -> None:
        self._recording = path

    def stop_recording(self) -> str | None:
        path, self._recording = self._recording, None
        return path

    def send_dtmf(self, digits: str) -> None:
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event negotiated with the remote end")

    def sound_card(self, verb: str, device: str) -> None:
        raise ValueError("no sound cards in the simulator")

    def bot_start(self, spec: Any, report: Callable[[str, str], None]) -> None:
        self.bot = (spec, report)

    def bot_stop(self) -> None:
        if self.bot is not None:  # as the bot's edge does: stop, then the report
            self.bot[1]("STOPPED", "handler")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            callbacks, self._when_closed = self._when_closed, []
            loop = asyncio.get_running_loop()
            for callback in callbacks:
                loop.call_soon(callback)

    def when_closed(self, callback: Callable[[], None]) -> None:
        if self.closed:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._when_closed.append(callback)


@dataclass
class FakeHandler:
    """A handler process: runs ``script`` (command lines, sent one per loop turn) when it
    starts, records the events it gets, and exits when it is terminated or runs ``EXIT``."""

    script: Sequence[str]
    on_line: Callable[[str], None]
    on_exit: Callable[[int], None]
    env: dict[str, str]
    events: list[str] = field(default_factory=list)
    exited: bool = False
    pid: int = 4242

    def run_script(self) -> None:
        loop = asyncio.get_running_loop()
        for delay, line in enumerate(self.script):
            if line == "EXIT":
                loop.call_later(0.01 * (delay + 1), self._exit)
            else:
                loop.call_later(0.01 * (delay + 1), self._line, line)

    def _line(self, line: str) -> None:
        if not self.exited:
            self.on_line(line)

    def _exit(self) -> None:
        if not self.exited:
            self.exited = True
            self.on_exit(0)

    # -- what siproc does to a handler ----------------------------------------------------------

    def send(self, line: str) -> None:
        assert "\n" not in line.rstrip("\n"), line
        self.events.append(line.rstrip("\n"))

    def close_stdin(self) -> None:
        pass

    def terminate(self, grace: float) -> None:
        asyncio.get_running_loop().call_later(0.05, self._exit)

    def kill(self) -> None:
        self._exit()


class _NoTrim:
    """In place of the phone's MemoryTrim where a test makes hundreds of phones (the fuzzer):
    the trim's full garbage collection 33 virtual seconds after each session's last call took
    most of the harness's time. net/memory_trim.py has its own tests, and test_phone checks
    when the real one runs."""

    def busy(self) -> None:
        pass

    def quiet(self) -> None:
        pass

    def prime(self) -> None:
        pass

    def close(self) -> None:
        pass


class PhoneSim:
    """One `Phone` on a `VirtualLoop`; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        script: Callable[[dict[str, str]], Sequence[str]] = lambda env: ("ANSWER",),
        *,
        memory_trim: bool = True,
    ) -> None:
        random.seed(0)  # calls/session.py draws its 491 back-off from the global generator
        self.loop = VirtualLoop()
        asyncio.set_event_loop(self.loop)
        self.script = script
        self.handlers: list[FakeHandler] = []
        self.far_ends = 0  # FarEnd numbers, for their Call-IDs and tags
        self.stderr = io.StringIO()
        self.streams: list[FakeStream] = []
        self.sent: list[tuple[Message, Destination]] = []
        self.unparseable_sent: list[bytes] = []
        base = {
            "SIPROC_MEDIA_WORKERS": "0",
            "SIPROC_BIND_ADDRESS": LOCAL,
            "SIPROC_TIMER_T1": "500",
            "SIPROC_RING_TIMEOUT": "20",
        }
        config = load_config({**base, **(env or {})})
        self.phone = self.loop.run_until_complete(self._make(config))
        if not memory_trim:  # a full collection per example: the fuzzer's hours, not a finding
            self.phone.memory.close()
            self.phone.memory = _NoTrim()  # type: ignore[assignment]
        self._next_port = 20000

    async def _make(self, config: Any) -> Phone:
        phone = Phone(config, ["fake-handler"], env={})
        phone.rng = random.Random(1)  # tags, branches and ports the same in every run
        phone.endpoint.rng = random.Random(2)
        transport = phone.transport
        transport.port = 5060  # type: ignore[misc]
        transport.send = self._send  # type: ignore[method-assign]
        transport.local_address_for = lambda host, **kw: LOCAL  # type: ignore[method-assign]
        phone._open_stream = self._open_stream  # type: ignore[method-assign]
        phone.locator = _Locator()  # type: ignore[assignment]
        return phone

    # -- the fakes ------------------------------------------------------------------------------

    def _send(self, data: bytes, destination: Destination) -> None:
        try:
            self.sent.append((parse_message(data), destination))
        except Exception:
            self.unparseable_sent.append(data)

    def _open_stream(self, local_host: str) -> FakeStream:
        self._next_port += 2
        stream = FakeStream(self._next_port)
        self.streams.append(stream)
        # as the phone keeps a stream it runs itself while a media pool has no worker ready
        self.phone._inline.add(stream)  # type: ignore[arg-type]
        return stream

    @contextlib.contextmanager
    def _fake_handlers(self) -> Iterator[None]:
        sim = self

        class _Spawner:
            @classmethod
            async def spawn(
                cls,
                argv: list[str],
                env: dict[str, str],
                cwd: str | None,
                on_line: Callable[[str], None],
                on_exit: Callable[[int], None],
                log: object,
                **kwargs: object,
            ) -> FakeHandler:
                for name, value in env.items():  # what exec would refuse
                    if "\x00" in name or "\x00" in value or "=" in name:
                        raise ValueError(f"embedded null byte or '=' in {name!r}")
                handler = FakeHandler(list(sim.script(env)), on_line, on_exit, env)
                handler.pid = 10000 + len(sim.handlers)
                sim.handlers.append(handler)
                handler.run_script()
                return handler

        original = call_module.HandlerProcess
        call_module.HandlerProcess = _Spawner  # type: ignore[assignment,misc]
        try:
            yield
        finally:
            call_module.HandlerProcess = original  # type: ignore[misc]

    # -- driving it -----------------------------------------------------------------------------

    def _run(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` inside the loop (as the transport's callbacks run), then what it started."""

        async def inside() -> None:
            fn()
            await asyncio.sleep(0)

        with self._fake_handlers():
            self.loop.run_until_complete(inside())

    def receive(self, data: bytes, source: Destination = PEER) -> None:
        """A datagram from the network."""
        self._run(lambda: self.phone._on_datagram(data, source, LOCAL))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (timers fire, handlers run)."""
        with self._fake_handlers():
            self.loop.run_until_complete(asyncio.sleep(seconds))

    def command(self, line: str) -> None:
        """A line on siproc's main stdin (CALL ..., QUIT)."""
        with contextlib.redirect_stderr(self.stderr):  # siproc's own lines about CALLs
            self._run(lambda: self.phone.on_stdin_line(line.encode()))

    def responses(self, call_id: str | None = None) -> list[Response]:
        return [
            m
            for m, _ in self.sent
            if isinstance(m, Response) and (call_id is None or m.headers.get("Call-ID") == call_id)
        ]

    def idle(self) -> list[str]:
        """What is still held (empty when everything is released)."""
        held = []
        if self.phone.calls:
            held.append(
                f"{len(self.phone.calls)} calls: {[c.state.value for c in self.phone.calls]}"
            )
        if self.phone.endpoint.transaction_count:
            held.append(f"{self.phone.endpoint.transaction_count} transactions")
        open_streams = [s for s in self.streams if not s.closed]
        if open_streams:
            held.append(f"{len(open_streams)} open streams")
        if self.phone._inline:  # a finished call's stream held, and with it the call
            held.append(f"{len(self.phone._inline)} streams counted as run here")
        running = [h for h in self.handlers if not h.exited]
        if running:
            held.append(f"{len(running)} running handlers")
        return held

    def close(self) -> None:
        self.loop.close()
        asyncio.set_event_loop(None)

    def __enter__(self) -> PhoneSim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Locator:
    """Locates IP literals only; a name fails at once (as NXDOMAIN would)."""

    def lookup(self, uri: SipUri) -> Destination | None:
        address = ip_literal(uri.param("maddr") or uri.host)
        if address is None:
            return None
        return Destination(uri.transport, address, uri.port or 5060)

    def locate_now(self, uri: SipUri) -> Destination:
        found = self.lookup(uri)
        if found is None:
            raise OSError(f"cannot resolve {uri.host!r}")
        return found

    async def locate(self, uri: SipUri) -> Destination:
        return self.locate_now(uri)

    def known_destinations(self, uri: SipUri) -> list[Destination]:
        found = self.lookup(uri)
        return [] if found is None else [found]

    def unreachable(self, destination: Destination) -> None:
        pass


def quiet_logs() -> None:
    """The simulator runs thousands of calls: keep siproc's INFO lines out of the test log."""
    logging.getLogger("siproc").setLevel(logging.WARNING)


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)


class FarEnd:
    """The caller in a simulated call: builds its requests with the dialog's identifiers."""

    def __init__(self, sim: PhoneSim, user: str = "alice", source: Destination = PEER) -> None:
        sim.far_ends += 1
        self.n = n = sim.far_ends
        self.sim = sim
        self.source = source
        self.call_id = f"call{n}@far"
        self.from_ = f"<sip:{user}@{source.host}>;tag=ft{n}"
        self.to = f"<sip:siproc@{LOCAL}>"
        self.cseq = 0
        self.branch = 0
        self.invite_branch = ""

    def request(
        self,
        method: str,
        body: str = "",
        *,
        cseq: int | None = None,
        branch: str | None = None,
        headers: Sequence[str] = (),
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        if branch is None:
            self.branch += 1
            branch = f"z9hG4bKfar{self.n}x{self.branch}"
        if method == "INVITE" and not self.invite_branch:
            self.invite_branch = branch
        lines = [
            f"{method} sip:siproc@{LOCAL}:5060 SIP/2.0",
            f"Via: SIP/2.0/UDP {self.source.host}:{self.source.port};branch={branch}",
            "Max-Forwards: 70",
            f"From: {self.from_}",
            f"To: {self.to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",  # ACK and CANCEL: pass the INVITE's cseq
            f"Contact: <sip:far@{self.source.host}:{self.source.port}>",
            *headers,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def send(self, method: str, body: str = "", **kwargs: Any) -> None:
        self.sim.receive(self.request(method, body, **kwargs), self.source)

    def connect(self, offer: str = OFFER) -> None:
        """INVITE, and ACK the 200 the handler's ANSWER brings: the call is connected."""
        self.send("INVITE", offer)
        self.sim.advance(0.1)
        self.learn_tag()
        self.send("ACK", cseq=1)
        self.sim.advance(0.1)

    def learn_tag(self) -> None:
        """Take siproc's To tag from its latest response (the dialog is established)."""
        for message in reversed(self.sim.responses(self.call_id)):
            to = message.headers.get("To") or ""
            if ";tag=" in to:
                self.to = to
                return
