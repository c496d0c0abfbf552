"""The SIP transport edge: UDP, TCP and TLS over IPv4 and IPv6 (RFC 3261 sections 18, 26.2).

Theory of operation: one `SipTransport` owns a UDP socket and a TCP listener per address family,
all on the same port number, so that the port in Via and Contact is right for either transport.

- UDP is received with `loop.add_reader` and drained with `recvfrom` in bounded batches
  (DESIGN.md section 2: asyncio datagram endpoints cost about 4x the CPU per packet). Each
  datagram goes up whole to `on_datagram`; the sans-I/O core parses it. Sending uses the
  listening socket of the destination's family, so the source port is our SIP port and symmetric
  responses (RFC 3581) come back to it.
- TCP runs one `_StreamConnection` protocol per connection, cutting messages with `StreamFramer`
  (sip/framing.py) and handing them to `on_stream_message`. Connections live in one pool keyed by
  the peer's address, whoever opened them, so that responses and in-dialog requests reuse the
  connection a request came on (RFC 3261 section 18.2.2).
- Limits that make the TCP listener safe on the open internet, all in `_StreamConnection` and
  its framer so that a TLS transport built on the same protocol class inherits them: a message
  over `limits.max_message_size` is answered 513 if it is a request whose headers allow a
  response, then the connection is closed (lingering: our side is shut, the peer's remaining
  octets are read and discarded for up to `LINGER_TIMEOUT`, so that the 513 is not lost to a
  reset); a connection a peer opened must deliver a complete message within
  `limits.first_message_timeout`, and every message must be complete within
  `limits.message_timeout` of its first octet; a connection without traffic either way (RFC 5626
  CRLFCRLF pings count) is closed after `idle_timeout`; at most `max_connections_per_source`
  connections from one source (an IPv4 address, an IPv6 /64) and `max_connections` in all.
  One timer per connection serves all its deadlines. A UDP datagram over the size limit is
  answered 513 if it is a request whose headers allow it (RFC 3261 section 18.1.1 lets the client
  retry over TCP), else dropped.
- TLS (net/tls.py builds the contexts) runs the same `_StreamConnection` over asyncio's TLS
  transport (`create_connection(ssl=..., server_hostname=...)`, `create_server(ssl=...)`), so
  framing, limits and keep-alive pongs are those of TCP; its connections live in a pool of
  their own, so a `tls` destination is never sent over a plain TCP connection to the same
  address. A connection we open verifies the server's certificate and name before a single
  octet of SIP goes out (the queued messages wait for the handshake); when it fails, the
  requests waiting on it fail with the ssl library's reason (`on_transport_error`), and
  nothing is ever sent in clear instead. With a server context, a TLS listener runs on
  `tls_port` beside UDP and TCP. `keep_alive(destination, interval)` sends RFC 5626 CRLFCRLF
  pings on the connection to `destination` (the registrar's flow) every `interval` seconds.
- `local_address_for(host)` answers "which of our addresses does the kernel use to reach host",
  the address to advertise in Via, Contact and SDP (DESIGN.md section 5).

Nothing here raises towards the caller once started: send failures are logged and reported
through `on_transport_error`, which is always called from the event loop, never from inside
`send()`, so the caller is not re-entered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Final, cast

from siproc.config import DEFAULT_TCP_IDLE_TIMEOUT, DEFAULT_TCP_MAX_PER_SOURCE
from siproc.net import hosts
from siproc.net.tls import describe_ssl_error
from siproc.sip.errors import ParseError
from siproc.sip.framing import StreamFramer, StreamLimits, too_large_error
from siproc.sip.message import Message
from siproc.sip.transaction import Destination

_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
DatagramCallback = Callable[[bytes, Destination, str], None]
StreamMessageCallback = Callable[[Message | ParseError, Destination, str], None]
TransportErrorCallback = Callable[[Destination, str], None]
ConnectionLostCallback = Callable[[Destination], None]

UDP_RECV_SIZE = 65_535  # the largest datagram IPv4 or IPv6 (without jumbograms) can carry
MAX_DATAGRAMS_PER_WAKEUP = 256  # bounded batch: a flood cannot starve the loop
MAX_CONNECTIONS = 4096
# Connections from one source address (an IPv6 /64): more are closed at once.
MAX_CONNECTIONS_PER_SOURCE = DEFAULT_TCP_MAX_PER_SOURCE
# Seconds without traffic before a connection is closed (SIPROC_TCP_IDLE_TIMEOUT).
TCP_IDLE_TIMEOUT = DEFAULT_TCP_IDLE_TIMEOUT
LINGER_TIMEOUT = 2.0  # seconds to drain a peer's octets after our 513 or 400, before closing
LINGER_MAX_OCTETS = 1 << 20  # octets discarded while lingering, at most; then reset
WARNING_INTERVAL = 10.0  # seconds between two warnings of one kind about peers (then a count)
TCP_CONNECT_TIMEOUT = 10.0
MAX_WRITE_BUFFER = 1 << 20  # bytes queued for a peer that does not read; then we give up on it
PORT_RETRIES = 20  # port 0: attempts at a port free for UDP and TCP in every family
KEEPALIVE_PONG = b"\r\n"  # RFC 5626 section 3.5.1: a CRLF answers a double-CRLF ping
KEEPALIVE_PING = b"\r\n\r\n"  # RFC 5626 section 3.5.1: the client's ping
LOCAL_ADDRESS_CACHE_SIZE = 1024
# The bytes a SIP message can start with: a token character (RFC 3261 section 25.1: alphanum and
# -.!%*_+`'~) opens a request's method, "S" a response. Not CR, LF or STUN's 0x00/0x01.
_SIP_FIRST_BYTES = frozenset(
    bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
)
_DISCARD_PORT = 9  # any port will do: connect() on UDP only asks for a route


@functools.lru_cache(maxsize=4096)
def _canonical_ip(host: str) -> str | None:
    """The canonical text of an IP literal (brackets allowed), or None if it is not one."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _ipv6_available() -> bool:
    """Whether this kernel can open IPv6 sockets at all (it may be disabled at boot)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::", 0))
    except OSError:
        return False
    return True


class _RateLimitedWarning:
    """A warning logged at most once per `interval` seconds; the next one counts the rest."""

    def __init__(self, interval: float = WARNING_INTERVAL) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def warn(self, log: _Log, now: float, message: str, *args: object) -> None:
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" (and {self._suppressed} more like it in the last {self.interval:g} s)"
            self._suppressed = 0
        self._next = now + self.interval
        log.warning(message, *args)


def _describe(exc: OSError) -> str:
    """The system's words for an error (asyncio's own texts hide ECONNREFUSED and friends)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class _PortTaken(Exception):
    """Port 0 only: the port picked for the first socket is taken for another one."""


class _StreamConnection(asyncio.Protocol):
    """One stream connection: framing, limits, keep-alive pongs, a queue while connecting.

    The framing and every limit work on any asyncio stream transport: TLS connections run
    this protocol class too (``name`` "tls"); asyncio calls `connection_made` only once the
    TLS handshake is done, so what is queued before that is never sent in clear.
    """

    def __init__(
        self, owner: SipTransport, outbound: Destination | None, name: str = "tcp"
    ) -> None:
        self._owner = owner
        self._loop = owner._loop
        self.name = name  # "tcp" or "tls": the transport of `source`
        self.ping_interval: float | None = None  # RFC 5626 keep-alive pings we send
        self.next_ping = 0.0
        self.outbound = outbound  # the destination we connect to; None if the peer connected
        self.key: tuple[str, int] | None = None  # the peer's address, the pool key
        self.source: Destination | None = None
        self.local_host = ""
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        now = self._loop.time()
        # A peer that connects to us must send a complete message in time; our own connections
        # wait for answers without that deadline.
        self.framer = StreamFramer(owner.limits, now=now, accepted=outbound is None)
        self.last_activity = now
        self.source_key: str | None = None  # counted against the per-source cap
        self.closed = False
        self.lingering = False  # shut down after answering a broken stream; draining the peer
        self._discarded = 0
        self._sends = 0
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self.connect_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __repr__(self) -> str:
        return f"{self.name.upper()} {self.peer_text()}"

    def peer_text(self) -> str:
        if self.key is None:
            return "(unconnected)"
        host, port = self.key
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        host = _canonical_ip(peer[0]) or peer[0]
        if self.key is None:  # an outbound connection keeps the key it was pooled under
            self.key = (host, int(peer[1]))
        self.source = Destination(self.name, self.key[0], self.key[1])
        self.local_host = (_canonical_ip(local[0]) or local[0]) if local else ""
        if self.outbound is None and not self._owner._accept(self):
            transport.close()
            return
        self.last_activity = self._loop.time()
        self._arm_timer()
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.source is None or self.transport is None:
            return
        if self.lingering:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_OCTETS:
                self.transport.abort()
            return
        now = self._loop.time()
        self.last_activity = now
        framer = self.framer
        before = framer.keepalives
        items = framer.feed(data, now)
        pings = framer.keepalives - before
        if pings > 0 and not self.transport.is_closing():
            self.transport.write(KEEPALIVE_PONG * pings)
        sends = self._sends
        for item in items:
            self._owner._deliver_stream(item, self.source, self.local_host)
        if framer.broken:
            self._close_broken(framer.broken, answered=self._sends != sends)
        else:
            self._arm_timer()

    def _close_broken(self, reason: str, *, answered: bool) -> None:
        """Close a connection whose stream broke; lingering if we answered its last message.

        Closing with unread octets makes the kernel reset the connection, and a reset can
        destroy our answer before the peer reads it: so after a 513 or 400 our side is shut
        and the peer's octets are drained for up to LINGER_TIMEOUT (RFC 7230 section 6.6 does
        the same for HTTP). TLS cannot half-close: it just closes after the answer.
        """
        transport = self.transport
        assert transport is not None
        self._owner._warn_peer("closing %r: %s", self, reason)
        if not answered or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        self.lingering = True
        transport.write_eof()
        self._cancel_timer()
        self._timer_at = self._loop.time() + LINGER_TIMEOUT
        self._timer = self._loop.call_at(self._timer_at, self._on_timer)

    def eof_received(self) -> bool | None:
        return None  # close our side too: SIP has no use for half-open connections

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._owner.log.info("%r connection lost: %s", self, exc)
        else:
            self._owner.log.debug("%r connection closed", self)
        self._finish()

    # used by SipTransport

    def send(self, data: bytes, destination: Destination) -> None:
        self.last_activity = self._loop.time()
        self._sends += 1
        limit = self._owner.max_write_buffer
        if self.transport is None:
            if self.pending_size + len(data) > limit:
                self._owner._report_error(destination, "TCP connect queue full")
                return
            self.pending.append(data)
            self.pending_size += len(data)
            return
        if self.transport.get_write_buffer_size() + len(data) > limit:
            self._owner._report_error(
                destination, f"peer {self.peer_text()} does not read: {limit} bytes queued"
            )
            self.transport.abort()
            return
        self.transport.write(data)

    @property
    def usable(self) -> bool:
        return not self.closed and (self.transport is None or not self.transport.is_closing())

    def close(self) -> None:
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()  # it may not have started: finish here, not there
        if self.transport is not None:
            self.transport.close()
        else:
            self._finish()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self.pending.clear()
        self._owner._forget(self)
        if self.transport is not None and self.source is not None:  # it was connected
            self._owner._report_lost(self.source)
        if not self.lost.done():
            self.lost.set_result(None)

    # the one timer: the framer's deadlines, the idle timeout, the lingering close

    def _arm_timer(self) -> None:
        """Have the timer fire by the earliest deadline (an early firing just re-arms)."""
        deadline = self.last_activity + self._owner.idle_timeout
        if self.ping_interval is not None and self.next_ping < deadline:
            deadline = self.next_ping
        framer_deadline = self.framer.next_deadline()
        if framer_deadline is not None and framer_deadline < deadline:
            deadline = framer_deadline
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self.transport is None:
            return
        if self.lingering:
            self.transport.abort()  # the peer neither closed nor stopped sending in time
            return
        now = self._loop.time()
        reason = self.framer.handle_timer(now)
        if reason is not None:
            self._owner._warn_peer("closing %r: %s", self, reason)
            self.transport.close()
        elif now >= self.last_activity + self._owner.idle_timeout:
            self._owner.log.info("closing idle connection %r", self)
            self.transport.close()
        else:
            if self.ping_interval is not None and now >= self.next_ping:
                self.ping(now)
            self._arm_timer()

    def ping(self, now: float) -> None:
        """An RFC 5626 section 4.4.1 keep-alive: CRLFCRLF, answered by the peer's CRLF."""
        assert self.ping_interval is not None
        self.next_ping = now + self.ping_interval
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(KEEPALIVE_PING)
            self.last_activity = now
            self._owner.log.debug("keep-alive ping to %r", self)


class SipTransport:
    """UDP + TCP listeners on one port, a pool of TCP connections, and the local-address oracle.

    `on_datagram(data, source, local_host)` gets each UDP datagram whole;
    `on_stream_message(message, source, local_host)` gets each message framed from a TCP stream,
    or the `ParseError` of one that could not be framed or parsed or is too large (a UDP datagram
    over the size limit comes this way too, as a `ParseError` of status 513). `source` is where
    it came from (the peer's address; for TCP the pool key responses reuse), `local_host` our
    address it arrived on. `on_transport_error(destination, reason)`, when set, hears of sends
    that failed; `on_connection_lost(source)` of a TCP or TLS connection that was up and closed.
    `tls_client` (a verifying `ssl.SSLContext`, net/tls.py) lets it send to `tls` destinations;
    `tls_server` makes `start()` listen for TLS on `tls_port` too.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_datagram: DatagramCallback,
        on_stream_message: StreamMessageCallback,
        log: _Log | None = None,
    ) -> None:
        self._loop = loop
        self.on_datagram = on_datagram
        self.on_stream_message = on_stream_message
        self.on_transport_error: TransportErrorCallback | None = None
        self.on_connection_lost: ConnectionLostCallback | None = None
        self.tls_client: ssl.SSLContext | None = None  # None: SIP over TLS cannot be sent
        self.tls_server: ssl.SSLContext | None = None  # None: no TLS listener
        self.tls_port = 0  # the TLS listener's port once started (0: none)
        self.log = log if log is not None else logging.getLogger(__name__)
        self.port = 0
        self.bind_host: str | None = None  # the specific address bound, None for all addresses
        # Limits: set them before start() (connections take the values they find when made).
        self.limits = StreamLimits()  # message size (UDP and TCP), TCP message deadlines
        self.idle_timeout = TCP_IDLE_TIMEOUT
        self.connect_timeout = TCP_CONNECT_TIMEOUT
        self.max_connections = MAX_CONNECTIONS
        self.max_connections_per_source = MAX_CONNECTIONS_PER_SOURCE
        self.max_datagrams_per_wakeup = MAX_DATAGRAMS_PER_WAKEUP
        self.max_write_buffer = MAX_WRITE_BUFFER
        self.datagrams_received = 0
        self.datagrams_ignored = 0  # empty, keep-alive, STUN or other non-SIP datagrams
        self.datagrams_too_large = 0
        self._udp: dict[socket.AddressFamily, socket.socket] = {}
        self._servers: list[asyncio.Server] = []
        self._pool: dict[tuple[str, int], _StreamConnection] = {}  # TCP
        self._tls_pool: dict[tuple[str, int], _StreamConnection] = {}
        self._connections: set[_StreamConnection] = set()
        self._local_addresses: dict[str, str] = {}
        self._per_source: dict[str, int] = {}  # accepted connections by hosts.source_key
        self._limit_warned = False
        self._source_warning = _RateLimitedWarning()
        self._peer_warning = _RateLimitedWarning()
        self._started = False
        self._closed = False

    # lifecycle

    async def start(self, bind_host: str | None, port: int, tls_port: int = 0) -> None:
        """Bind UDP and TCP on `port` (0: a free one, the same for all) on `bind_host` or on all,
        and with `tls_server` set, TLS on `tls_port` (0: a free one).

        With `bind_host` None both 0.0.0.0 and :: (IPV6_V6ONLY) are bound, the latter only where
        the kernel has IPv6. A port in use raises OSError(EADDRINUSE) saying what to change.
        """
        if self._started:
            raise RuntimeError("SipTransport.start() called twice")
        if not 0 <= port <= 65_535:
            raise ValueError(f"invalid SIP port {port}")
        hosts = await self._hosts_to_bind(bind_host)
        if port != 0:
            sockets = self._bind_all(hosts, port)
        else:
            for _ in range(PORT_RETRIES):
                try:
                    sockets = self._bind_all(hosts, 0)
                    break
                except _PortTaken:
                    continue
            else:
                where = ", ".join(hosts)
                raise OSError(
                    errno.EADDRINUSE,
                    f"found no port free for both UDP and TCP on {where} in {PORT_RETRIES} tries",
                )
        self.port = sockets[0].getsockname()[1]
        try:
            for sock in sockets:
                if sock.type == socket.SOCK_DGRAM:
                    self._udp[sock.family] = sock
                    self._loop.add_reader(sock.fileno(), self._on_udp_readable, sock)
                else:
                    server = await self._loop.create_server(
                        self._accepted_connection, sock=sock, backlog=socket.SOMAXCONN
                    )
                    self._servers.append(server)
            if self.tls_server is not None:
                await self._start_tls(hosts, tls_port)
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            for sock in self._udp.values():
                self._loop.remove_reader(sock.fileno())
            self._udp.clear()
            for sock in sockets:
                sock.close()
            raise
        self._started = True
        self.log.info(
            "SIP transport listening on %s port %d (UDP, TCP)", " and ".join(hosts), self.port
        )
        if self.tls_port:
            self.log.info(
                "SIP transport listening on %s TLS port %d", " and ".join(hosts), self.tls_port
            )

    async def _start_tls(self, hosts: list[str], port: int) -> None:
        """The TLS listeners, on `port` (0: one free on every host). The handshake must end
        within the first-message deadline: a peer that stalls it holds no slot for long."""
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                try:
                    sock = _listening_socket(host, socket.SOCK_STREAM, port)
                except OSError as exc:
                    raise _bind_error(exc, host, socket.SOCK_STREAM, port, tls=True) from exc
                sockets.append(sock)
                port = sock.getsockname()[1]
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self.tls_port = port
        for sock in sockets:
            server = await self._loop.create_server(
                self._accepted_tls_connection,
                sock=sock,
                backlog=socket.SOMAXCONN,
                ssl=self.tls_server,
                ssl_handshake_timeout=max(1.0, self.limits.first_message_timeout or 60.0),
            )
            self._servers.append(server)

    async def close(self) -> None:
        """Close the listeners and every connection (queued TCP data is flushed if it can be)."""
        if self._closed:
            return
        self._closed = True
        for sock in self._udp.values():
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        waiting = [conn.lost for conn in connections if not conn.lost.done()]
        if waiting:
            _, still_open = await asyncio.wait(waiting, timeout=1.0)
            for conn in connections:
                if not conn.closed and conn.transport is not None:
                    conn.transport.abort()
            if still_open:
                await asyncio.wait(still_open, timeout=1.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # sending

    def send(self, data: bytes, destination: Destination) -> None:
        """Send one message; never blocks and never raises (failures go to on_transport_error)."""
        if self._closed or not self._started:
            self.log.warning("SIP transport not running: dropped a message to %s", destination)
            return
        transport = destination.transport.lower()
        if transport == "udp":
            self._send_udp(data, destination)
        elif transport in ("tcp", "tls"):
            self._send_stream(data, destination, transport)
        else:
            self._report_error(destination, f"unknown transport {destination.transport!r}")

    def _send_udp(self, data: bytes, destination: Destination) -> None:
        ip = _canonical_ip(destination.host)
        if ip is None:
            self._report_error(destination, f"not an IP address: {destination.host!r}")
            return
        family = _family(ip)
        sock = self._udp.get(family)
        if sock is None:
            version = 6 if family == socket.AF_INET6 else 4
            self._report_error(
                destination, f"no IPv{version} UDP socket (bound to {self.bind_host})"
            )
            return
        try:
            sock.sendto(data, (ip, destination.port))
        except (BlockingIOError, InterruptedError):
            # A full socket buffer: UDP is lossy anyway and transactions retransmit.
            self.log.warning("UDP send buffer full: dropped %d bytes to %s", len(data), destination)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.log.warning("UDP: no buffer space, dropped a message to %s", destination)
                return
            self._report_error(destination, f"UDP send failed: {_describe(exc)}")

    def _send_stream(self, data: bytes, destination: Destination, name: str) -> None:
        ip = _canonical_ip(destination.host)
        if ip is None:
            self._report_error(destination, f"not an IP address: {destination.host!r}")
            return
        if name == "tls" and self.tls_client is None:
            self._report_error(destination, "SIP over TLS is not set up")
            return
        pool = self._tls_pool if name == "tls" else self._pool
        key = (ip, destination.port)
        conn = pool.get(key)
        if conn is not None and conn.usable and _verified_for(conn, destination):
            conn.send(data, destination)
            return
        if len(self._connections) >= self.max_connections:
            self._warn_limit()
            self._report_error(destination, f"too many TCP connections ({self.max_connections})")
            return
        conn = _StreamConnection(self, destination, name)
        conn.key = key
        pool[key] = conn
        self._connections.add(conn)
        conn.send(data, destination)
        conn.connect_task = self._loop.create_task(self._connect(conn, destination))

    async def _connect(self, conn: _StreamConnection, destination: Destination) -> None:
        assert conn.key is not None
        ip, port = conn.key
        local_addr = (self.bind_host, 0) if self.bind_host is not None else None
        tls = conn.name == "tls"
        # RFC 5922 section 4: the certificate must name the URI's host (an IP: its IP SAN).
        server_name = destination.server_name or ip
        what = "TLS" if tls else "TCP"
        try:
            async with asyncio.timeout(self.connect_timeout):
                if tls:
                    await self._loop.create_connection(
                        lambda: conn,
                        ip,
                        port,
                        local_addr=local_addr,
                        ssl=self.tls_client,
                        server_hostname=server_name,
                        ssl_handshake_timeout=self.connect_timeout,
                    )
                else:
                    await self._loop.create_connection(
                        lambda: conn, ip, port, local_addr=local_addr
                    )
        except asyncio.CancelledError:
            conn._finish()
            raise
        except TimeoutError:
            conn._finish()
            self._report_error(
                destination, f"{what} connect timed out after {self.connect_timeout}s"
            )
        except ssl.SSLError as exc:
            conn._finish()
            self._report_error(
                destination, f"TLS with {server_name} failed: {describe_ssl_error(exc)}"
            )
        except (OSError, ValueError) as exc:  # ValueError: a server name ssl refuses
            conn._finish()
            reason = _describe(exc) if isinstance(exc, OSError) else str(exc)
            self._report_error(destination, f"{what} connect failed: {reason}")
        finally:
            conn.connect_task = None

    def _report_error(self, destination: Destination, reason: str) -> None:
        # The owner's callback logs it in its own words (once, not twice).
        level = logging.DEBUG if self.on_transport_error is not None else logging.WARNING
        self.log.log(level, "cannot send to %s: %s", destination, reason)
        if self.on_transport_error is not None:
            self._loop.call_soon(self._call_error_callback, destination, reason)

    def _report_lost(self, source: Destination) -> None:
        """A TCP or TLS connection that was up has closed (either side, or broken): tell the
        owner (the account registers again when it carried the registration), from the loop."""
        if self.on_connection_lost is not None and not self._closed:
            self._loop.call_soon(self._call_lost_callback, source)

    def _call_lost_callback(self, source: Destination) -> None:
        callback = self.on_connection_lost
        if callback is None or self._closed:
            return
        try:
            callback(source)
        except Exception:
            self._log_callback_error("on_connection_lost", source)

    def keep_alive(self, destination: Destination, interval: float | None) -> bool:
        """Send RFC 5626 CRLFCRLF pings every `interval` seconds on the connection to
        `destination` (None: stop); False if there is no such connection."""
        pool = self._tls_pool if destination.transport == "tls" else self._pool
        ip = _canonical_ip(destination.host)
        conn = pool.get((ip, destination.port)) if ip is not None else None
        if conn is None or not conn.usable:
            return False
        if conn.ping_interval != interval:
            conn.ping_interval = interval
            if interval is not None:
                conn.next_ping = self._loop.time() + interval
                conn._arm_timer()
        return True

    def _call_error_callback(self, destination: Destination, reason: str) -> None:
        callback = self.on_transport_error
        if callback is None:
            return
        try:
            callback(destination, reason)
        except Exception:
            self._log_callback_error("on_transport_error", destination)

    # receiving

    def _on_udp_readable(self, sock: socket.socket) -> None:
        """Drain up to `max_datagrams_per_wakeup` datagrams; the loop calls again if more wait."""
        recvfrom = sock.recvfrom
        bound = self.bind_host
        for _ in range(self.max_datagrams_per_wakeup):
            try:
                data, address = recvfrom(UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. a queued ICMP error; the socket stays usable
                if sock.fileno() < 0:  # closed by a callback
                    return
                self.log.debug("UDP receive error on port %d: %s", self.port, exc)
                continue
            # SIP starts with a method (a token, RFC 3261 section 25.1) or "SIP/": CRLF
            # keep-alives, STUN (RFC 5626 section 4.4.2) and stray bytes start otherwise.
            if data[:1] not in _SIP_FIRST_BYTES or not address[1]:  # port 0 cannot be answered
                self.datagrams_ignored += 1
                continue
            self.datagrams_received += 1
            source = Destination("udp", address[0], address[1])
            try:
                local_host = bound if bound is not None else self.local_address_for(address[0])
                if len(data) > self.limits.max_message_size:
                    self._datagram_too_large(data, source, local_host)
                else:
                    self.on_datagram(data, source, local_host)
            except Exception:
                self._log_callback_error("on_datagram", source)

    def _datagram_too_large(self, data: bytes, source: Destination, local_host: str) -> None:
        """513 to a request over the size limit whose headers allow it; else it is dropped."""
        self.datagrams_too_large += 1
        self._warn_peer(
            "UDP datagram of %d octets from %s:%d is over the limit of %d",
            len(data),
            source.host,
            source.port,
            self.limits.max_message_size,
        )
        self._deliver_stream(
            too_large_error(data, self.limits.max_message_size), source, local_host
        )

    def _deliver_stream(
        self, item: Message | ParseError, source: Destination, local_host: str
    ) -> None:
        try:
            self.on_stream_message(item, source, local_host)
        except Exception:
            self._log_callback_error("on_stream_message", source)

    def _warn_peer(self, message: str, *args: object) -> None:
        """A rate-limited warning about a peer that broke a rule: a flood must not flood the log."""
        self._peer_warning.warn(self.log, self._loop.time(), message, *args)

    def _log_callback_error(self, name: str, destination: Destination) -> None:
        self.log.error("%s raised for %s (traceback at debug level)", name, destination)
        self.log.debug("%s traceback", name, exc_info=True)

    # the connection pool

    def _accepted_connection(self) -> _StreamConnection:
        return _StreamConnection(self, None)

    def _accepted_tls_connection(self) -> _StreamConnection:
        return _StreamConnection(self, None, "tls")

    def _accept(self, conn: _StreamConnection) -> bool:
        """Register a connection a peer opened; False if it must be refused."""
        if self._closed:
            return False
        if len(self._connections) >= self.max_connections:
            self._warn_limit()
            return False
        assert conn.key is not None
        source_key = hosts.source_key(conn.key[0])
        count = self._per_source.get(source_key, 0)
        if count >= self.max_connections_per_source:
            self._source_warning.warn(
                self.log,
                self._loop.time(),
                "TCP connections from %s over the limit of %d per source: refusing more",
                source_key,
                self.max_connections_per_source,
            )
            return False
        self._per_source[source_key] = count + 1
        conn.source_key = source_key
        self._connections.add(conn)
        pool = self._tls_pool if conn.name == "tls" else self._pool
        old = pool.get(conn.key)
        if old is None or not old.usable or old.transport is None:
            pool[conn.key] = conn
        self.log.debug("accepted %s connection from %s", conn.name.upper(), conn.peer_text())
        return True

    def _forget(self, conn: _StreamConnection) -> None:
        self._connections.discard(conn)
        if conn.source_key is not None:
            left = self._per_source.pop(conn.source_key, 1) - 1
            if left > 0:
                self._per_source[conn.source_key] = left
            conn.source_key = None
        pool = self._tls_pool if conn.name == "tls" else self._pool
        if conn.key is not None and pool.get(conn.key) is conn:
            del pool[conn.key]
        if len(self._connections) < self.max_connections:
            self._limit_warned = False

    def _warn_limit(self) -> None:
        if not self._limit_warned:
            self._limit_warned = True
            self.log.warning(
                "TCP connection limit (%d) reached: refusing new connections", self.max_connections
            )

    @property
    def connection_count(self) -> int:
        """TCP connections open or being opened."""
        return len(self._connections)

    # addresses

    def local_address_for(self, host: str, *, fresh: bool = False) -> str:
        """Our address the kernel would use to reach `host` (for Via, Contact and SDP).

        Bound to one address, that address. Otherwise the routing table is asked by connecting
        a throwaway UDP socket (no packet is sent); the answer is cached per host (``fresh``:
        asked again, and the cache updated: our address may have changed). With no route,
        the wildcard address of the host's family is returned (and not cached).
        """
        if self.bind_host is not None:
            return self.bind_host
        if fresh:
            self._local_addresses.pop(host, None)
        cached = self._local_addresses.get(host)
        if cached is not None:
            return cached
        ip = _canonical_ip(host)
        if ip is None:
            self.log.debug("local_address_for: %r is not an IP address", host)
            return "0.0.0.0"
        family = _family(ip)
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((ip, _DISCARD_PORT))
                local = str(sock.getsockname()[0])
        except OSError as exc:
            self.log.debug("no route to %s: %s", host, exc)
            return "::" if family == socket.AF_INET6 else "0.0.0.0"
        local = local.partition("%")[0]  # a zone index is not advertisable
        if len(self._local_addresses) >= LOCAL_ADDRESS_CACHE_SIZE:
            self._local_addresses.clear()
        self._local_addresses[host] = local
        return local

    # binding

    async def _hosts_to_bind(self, bind_host: str | None) -> list[str]:
        if bind_host is None:
            return ["0.0.0.0", "::"] if _ipv6_available() else ["0.0.0.0"]
        ip = _canonical_ip(bind_host)
        if ip is None:
            infos = await self._loop.getaddrinfo(bind_host, None, type=socket.SOCK_DGRAM)
            if not infos:
                raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve bind address {bind_host!r}")
            ip = str(infos[0][4][0])
        if ip not in ("0.0.0.0", "::"):
            self.bind_host = ip
        return [ip]

    def _bind_all(self, hosts: list[str], port: int) -> list[socket.socket]:
        """UDP and TCP sockets on every host, on `port` or (port 0) on one port picked for all."""
        sockets: list[socket.socket] = []
        pick = port == 0
        try:
            for host in hosts:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    try:
                        sockets.append(_listening_socket(host, kind, port))
                    except OSError as exc:
                        if exc.errno == errno.EADDRINUSE and sockets and pick:
                            raise _PortTaken from exc
                        raise _bind_error(exc, host, kind, port) from exc
                    if pick:
                        port = sockets[0].getsockname()[1]
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets


def _verified_for(conn: _StreamConnection, destination: Destination) -> bool:
    """Whether a pooled connection may carry a message for `destination`: always over TCP;
    over TLS, only if its server's certificate was checked for the name `destination` needs
    (a connection verified for one name is not reused for another one at the same address).
    A destination without a name (an IP address: responses, a Contact) may use a connection
    the peer opened to us (RFC 3261 section 18.2.2, RFC 5923)."""
    if conn.name != "tls":
        return True
    if conn.outbound is None:
        return not destination.server_name
    return conn.outbound.server_name == destination.server_name


def _listening_socket(host: str, kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Not on UDP: there SO_REUSEADDR would let two processes share the port silently.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            _widen_receive_buffer(sock)
        sock.setblocking(False)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


UDP_RECEIVE_BUFFER: Final = 1 << 20  # bytes asked for (Linux doubles it, capped by rmem_max)


def _widen_receive_buffer(sock: socket.socket) -> None:
    """Room for a burst of requests on the one SIP UDP socket: the kernel's default (208 KiB:
    about 100 INVITEs with their accounting) overflowed while the loop was busy setting up 150
    SRTP calls a second (bench/load.py --srtp: 579-868 kernel drops, each a retransmission).
    Best effort: the kernel caps it at net.core.rmem_max."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


def _bind_error(
    exc: OSError, host: str, kind: socket.SocketKind, port: int, *, tls: bool = False
) -> OSError:
    proto = "TLS" if tls else "UDP" if kind == socket.SOCK_DGRAM else "TCP"
    where = f"[{host}]" if ":" in host else host
    variable = "SIPROC_TLS_PORT" if tls else "SIPROC_TRANSPORT_PORT"
    if exc.errno == errno.EADDRINUSE:
        message = f"SIP port {port} is in use on {where} ({proto}): set {variable}"
    elif exc.errno == errno.EACCES:
        message = f"no permission to bind SIP port {port} on {where} ({proto}): use a port >= 1024"
    elif exc.errno == errno.EADDRNOTAVAIL:
        message = f"{host} is not an address of this machine (binding SIP port {port}, {proto})"
    else:
        message = f"cannot bind SIP port {port} on {where} ({proto}): {exc.strerror or exc}"
    return OSError(exc.errno, message)
