"""The phone: one SIP user agent with its account, call table and main stdin.

Theory of operation: the phone is the asyncio side of the sans-I/O `Endpoint`. Bytes from the
`SipTransport` go into the endpoint; what comes out is sent (`Send`) or dispatched: responses and
timeouts to whoever started the client transaction (a call, the registration in `account.py`),
new requests to the call they belong to (by dialog id) or to the out-of-dialog handling here
(INVITE starts a call, OPTIONS is answered, MESSAGE is logged). After each batch the one
endpoint timer is re-armed at `endpoint.next_deadline()`.

Main stdin takes `CALL <uri>`, `DRAIN` and `QUIT`; its end is not QUIT (a daemon started with
stdin on /dev/null keeps serving). QUIT, SIGINT and SIGTERM shut down gracefully: every call gets
its BYE/CANCEL/480, every handler its SIGTERM, the account its un-REGISTER, then exit 0. DRAIN
and SIGUSR1 stop taking new calls and quit when the last one has ended (calls/drain.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import unquote

from siproc import __version__
from siproc.calls import out_of_dialog, protocol
from siproc.calls.account import Account
from siproc.calls.call import ALLOW, INSECURE_SRTP_REASON, Call, CallState
from siproc.calls.control import ControlError, Dial, Quit, StartDrain, parse_control_line
from siproc.calls.drain import Drain, DrainState
from siproc.calls.environment import base_environment, handler_environment
from siproc.calls.environment import file_safe_user as file_safe_user  # re-exported
from siproc.calls.environment import header_variable as header_variable  # re-exported
from siproc.calls.handler import HandlerSpawnError
from siproc.calls.inbound import RateTable, TokenBucket, admits, refer_allowed, same_address
from siproc.calls.monitoring import Monitoring
from siproc.calls.services import CallView
from siproc.config import SIP_TRACE_LEVEL, Config, TlsSettings
from siproc.logs import worth_logging
from siproc.media.codecs.catalog import enabled_codecs, telephone_event_spec
from siproc.net.clock import MediaClock
from siproc.net.hosts import HostCache, ip_literal, source_key
from siproc.net.locate import ServerLocator, dns_srv
from siproc.net.media_pool import MediaPool, MediaStream
from siproc.net.memory_trim import MemoryTrim
from siproc.net.rtp_socket import RtpStream
from siproc.net.sip_transport import SipTransport
from siproc.net.tls import client_context, server_context
from siproc.net.tts import TextToSpeech
from siproc.sdp.model import SdpError
from siproc.sdp.offer_answer import CodecSpec, OfferAnswerError
from siproc.sdp.sdes import SrtpMode
from siproc.sip.auth import DigestSession
from siproc.sip.endpoint import (
    AckFor2xx,
    Endpoint,
    Output,
    Refuse,
    RequestReceived,
    StrayResponse,
)
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.framing import StreamLimits
from siproc.sip.headers import MessageInfo, make_response
from siproc.sip.message import Message, Request, Response
from siproc.sip.registration import RegistrationState
from siproc.sip.transaction import (
    ClientTransaction,
    Destination,
    ResponseReceived,
    Send,
    ServerTransaction,
    Timers,
    TransactionTerminated,
    TransactionTimeout,
)
from siproc.sip.uri import NameAddr, SipUri, format_host, parse_name_addr, parse_uri

log = logging.getLogger(__name__)

RATE_PRUNE_INTERVAL = 60.0  # seconds between two prunings of the per-source call rates
SHUTDOWN_TIMEOUT = 5.0  # seconds to wait for BYEs, CANCELs and the un-REGISTER on QUIT
# RFC 5626 section 4.4.1: CRLFCRLF pings on the registrar's TCP/TLS connection, every this many
# seconds, or as its Flow-Timer says (then at 80 to 100 % of it, at random)
KEEPALIVE_INTERVAL = 30.0
TxCallback = Callable[[ResponseReceived | TransactionTimeout], None]


class Phone:
    """The user agent; see the module docstring."""

    def __init__(
        self, config: Config, handler_argv: list[str], *, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.handler_argv = handler_argv
        self.base_env = base_environment(os.environ if env is None else env)
        self.loop = asyncio.get_running_loop()
        self.rng: random.Random = random.SystemRandom()
        self.tts = TextToSpeech(config.tts, env=self.base_env)  # SAY (calls/say.py)
        self.timers = Timers(t1=config.timer_t1)
        self.endpoint = Endpoint(
            allow=[m.strip() for m in ALLOW.split(",")],
            timers=self.timers,
            user_agent=config.user_agent,
        )
        self.endpoint.trace = config.log_level >= SIP_TRACE_LEVEL
        self.endpoint.admit = self._admit
        self.transport = SipTransport(self.loop, self._on_datagram, self._on_stream_message, log)
        self.transport.on_transport_error = self._on_transport_error
        self.transport.limits = StreamLimits(
            max_message_size=config.max_message_size,
            first_message_timeout=config.tcp_message_timeout,
            message_timeout=config.tcp_message_timeout,
        )
        self.transport.max_connections_per_source = config.tcp_max_per_source
        self.transport.idle_timeout = config.tcp_idle_timeout
        self.transport.on_connection_lost = self._on_connection_lost
        self.clock = MediaClock(self.loop)  # the media of calls when there are no workers
        # Servers located (RFC 3263: SRV, then A/AAAA) off the loop and cached: net/locate.py
        self.locator = ServerLocator(self.loop, HostCache(self.loop), dns_srv, rng=self.rng)
        self.media: MediaPool | None = None
        self._inline: set[RtpStream] = set()  # streams run here although there is a pool
        if config.media_workers:
            self.media = MediaPool(
                self.loop,
                config.media_workers,
                config.log_level,
                priority=config.media_priority,
                idle=config.media_idle,
                log_format=config.log_format,
            )
        self._codecs = enabled_codecs(list(config.codecs))
        self._telephone_event = telephone_event_spec(list(config.codecs))
        self._owners: dict[ClientTransaction, TxCallback] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.calls: set[Call] = set()
        self._by_dialog: dict[tuple[str, str, str], Call] = {}
        self._by_call_id: dict[str, Call] = {}
        self._by_invite_tx: dict[object, Call] = {}
        self._invite_tx_of: dict[Call, object] = {}  # the other way (one INVITE per call)
        self.account = Account(self)
        self._stopping = False
        self._done = asyncio.Event()
        self._all_calls_gone = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()  # prelocate() lookups
        # Flood limits (calls/inbound.py): new calls per source address, handler starts
        limits = config.limits
        self._call_rates = RateTable(limits.call_rate, limits.call_burst)
        self._spawns = TokenBucket(limits.spawn_rate, max(1.0, limits.spawn_rate), self.loop.time())
        self._refused_inbound = 0  # requests SIPROC_INBOUND refused (logged at powers of ten)
        self._flood_refused = 0  # INVITEs refused by the flood limits (likewise)
        self._prune_at = 0.0  # next RateTable.prune()
        self._all_calls_gone.set()
        # memory of a busy spell handed back when the last call's transactions are over (64*T1)
        self.memory = MemoryTrim(self.loop, 64 * config.timer_t1 + 1.0)
        self.drain = Drain(config.drain_timeout)  # DRAIN, SIGUSR1 (calls/drain.py)
        self._drain_timer: asyncio.TimerHandle | None = None
        # SIPROC_CDR and SIPROC_METRICS (calls/monitoring.py): raises ConfigError at start-up
        self.monitor = Monitoring(self)
        self.account.on_result = self.monitor.registration
        if self.media is not None and self.monitor.metrics is not None:
            self.media.on_clock = self.monitor.clock_report

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stdin: int | None = 0) -> int:
        # first: SIGUSR1's default action kills; a drain asked for while starting quits once up
        self.loop.add_signal_handler(signal.SIGUSR1, self.start_drain, "SIGUSR1")
        if not self.config.tls.verify:
            log.warning(
                "SIPROC_TLS_VERIFY=no: TLS servers' certificates and names are NOT checked; "
                "anyone on the path can read and change SIP over TLS and the SRTP keys in it"
            )
        # TLS (net/tls.py): we always verify servers unless SIPROC_TLS_VERIFY=no; we listen
        # for TLS only with a certificate. The files (and the system's CA store, tens of ms)
        # are read here, before anything is served, not when the first TLS call is made.
        tls = self.config.tls
        self.transport.tls_client = client_context(tls.ca_file, verify=tls.verify)
        if tls.cert_file is not None and tls.key_file is not None:
            self.transport.tls_server = server_context(tls.cert_file, tls.key_file)
        await self.transport.start(
            self.config.bind_address, self.config.sip_port, tls_port=tls.port
        )
        if self.media is not None:
            await self.media.started()  # SIPROC_MEDIA_IDLE=0; otherwise they start with calls
        await self.monitor.start()
        log.info("siproc %s ready on SIP port %d", __version__, self.transport.port)
        self.memory.prime()
        # The registrar is located off the loop; a name that does not resolve yet is retried
        # with the registration's backoff while siproc serves (calls/account.py).
        self.account.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.request_shutdown, sig.name)
        if stdin is not None:
            self._start_stdin_reader(stdin)
        await self._done.wait()
        await self._shutdown()
        return 0

    def request_shutdown(self, why: str = "QUIT") -> None:
        if not self._done.is_set():
            log.info("shutting down (%s)", why)
            self._done.set()

    def start_drain(self, why: str = "DRAIN") -> None:
        """DRAIN or SIGUSR1: no new calls; quit when the last one has ended (calls/drain.py)."""
        if self._done.is_set():
            return
        if not self.drain.start(self.loop.time(), len(self.calls)):
            log.info("%s: already draining (%d call(s) up)", why, len(self.calls))
            return
        log.info("%s: draining, taking no new calls; %d call(s) up", why, len(self.calls))
        deadline = self.drain.next_deadline()
        if deadline is not None:
            self._drain_timer = self.loop.call_at(deadline, self._on_drain_deadline)
        if self.drain.state is DrainState.DONE:  # no call was up
            self.request_shutdown(self.drain.why)

    def _on_drain_deadline(self) -> None:
        self._drain_timer = None
        if self.drain.handle_timer(self.loop.time()):
            self.request_shutdown(self.drain.why)

    async def _shutdown(self) -> None:
        self._stopping = True
        self.memory.close()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        for call in list(self.calls):
            call.shutdown()
        self.account.stop()
        try:
            await asyncio.wait_for(
                asyncio.gather(self._all_calls_gone.wait(), self.account.unregistered.wait()),
                SHUTDOWN_TIMEOUT,
            )
        except TimeoutError:
            log.warning(
                "shutdown: gave up waiting for %d call(s) to end%s",
                len(self.calls),
                "" if self.account.unregistered.is_set() else " and for the un-REGISTER",
            )
            for call in list(self.calls):
                call.stream.close()  # finishes a recording that is still open
                if call.handler is not None and not call.handler_done:
                    call.handler.kill()
        await self.monitor.stop(list(self.calls))  # the records of calls still up
        self.clock.close()
        if self.media is not None:
            await self.media.close()  # the workers finish their recordings
        await self.transport.close()

    # -- main stdin -----------------------------------------------------------------------------

    def _start_stdin_reader(self, fd: int) -> None:
        """Read main stdin in a thread: works for pipes, files, /dev/null and terminals alike."""

        def reader() -> None:
            try:
                with open(fd, "rb", buffering=0, closefd=False) as raw:
                    buffered = open(raw.fileno(), "rb", closefd=False)  # noqa: SIM115
                    for line in buffered:
                        self.loop.call_soon_threadsafe(self.on_stdin_line, line)
            except (OSError, ValueError) as exc:
                log.debug("stdin unusable: %s", exc)
            self.loop.call_soon_threadsafe(self._on_stdin_eof)

        threading.Thread(target=reader, name="siproc-stdin", daemon=True).start()

    def _on_stdin_eof(self) -> None:
        if self._done.is_set():
            return
        log.info(
            "end of standard input: still serving incoming calls (send QUIT or SIGTERM to stop)"
        )

    def on_stdin_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        try:
            command = parse_control_line(line)
        except ControlError as exc:
            print(f"siproc: ignoring input line: {exc}", file=sys.stderr, flush=True)
            return
        match command:
            case Quit():
                self.request_shutdown("QUIT")
            case StartDrain():
                self.start_drain("DRAIN")
            case Dial(target=target, headers=headers):
                self.place_call(target, headers)
            case None:
                pass

    # -- SIP plumbing ---------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: Destination, local_host: str) -> None:
        self._process(self.endpoint.receive(data, source, local_host, self.loop.time()))

    def _on_stream_message(
        self, message: Message | ParseError, source: Destination, local_host: str
    ) -> None:
        self._process(self.endpoint.receive_message(message, source, local_host, self.loop.time()))

    def _on_transport_error(self, destination: Destination, reason: str) -> None:
        # The registration says it in its own failure line: one line per attempt.
        registrar = self.account.destination == destination
        log.log(
            logging.DEBUG if registrar else logging.WARNING,
            "cannot send to %s:%d (%s): %s",
            destination.host,
            destination.port,
            destination.transport,
            reason,
        )
        self._process(self.endpoint.transport_error(destination, reason))

    def _on_connection_lost(self, destination: Destination) -> None:
        """A TCP or TLS connection closed: requests still waiting for an answer over it end
        with a 503 (RFC 3261 section 17.1.4), not after Timer B or F, and the account
        registers again if it was the registrar's."""
        self._process(self.endpoint.transport_error(destination, "connection lost"))
        self.account.connection_lost(destination)

    def _process(self, outputs: list[Output]) -> None:
        for item in outputs:
            try:
                self._dispatch(item)
            except Exception as exc:
                call = self._call_of(item)
                if call is None:
                    log.exception("internal error handling %s", type(item).__name__)
                else:  # whatever went wrong inside a call ends that call, cleanly
                    try:
                        call.abort(exc)
                    except Exception:
                        log.exception("internal error ending call %s", call.call_id)
        self._rearm()

    def _call_of(self, item: Output) -> Call | None:
        """The call that an endpoint output is about (by Call-ID), if any."""
        match item:
            case RequestReceived(info=info) | AckFor2xx(info=info) | StrayResponse(info=info):
                return self._by_call_id.get(info.call_id)
            case ResponseReceived(transaction=tx) | TransactionTimeout(transaction=tx):
                return self._by_call_id.get(tx.request.headers.get("Call-ID") or "")
        return None

    def _dispatch(self, item: Output) -> None:
        match item:
            case Send(data=data, destination=destination):
                self.transport.send(data, destination)
            case ResponseReceived(transaction=tx) | TransactionTimeout(transaction=tx) if (
                isinstance(tx, ClientTransaction)
            ):
                if isinstance(item, TransactionTimeout) or item.response.status == 503:
                    self.locator.unreachable(tx.destination)  # RFC 3263 4.3: next SRV target
                elif tx.request.method == "REGISTER" and 200 <= item.response.status < 300:
                    self._keep_alive(tx.destination, item.response)
                callback = self._owners.get(tx)
                if callback is not None:
                    callback(item)
            case TransactionTerminated(transaction=tx):
                if isinstance(tx, ClientTransaction):
                    self._owners.pop(tx, None)
                else:
                    self._by_invite_tx.pop(tx, None)
            case RequestReceived():
                self._on_request(item)
            case AckFor2xx(request=request, info=info):
                call = self._by_dialog.get((info.call_id, info.to.tag or "", info.from_.tag or ""))
                if call is not None:
                    call.on_ack(request)
            case StrayResponse(response=response, info=info):
                call = self._by_call_id.get(info.call_id)
                if call is not None:  # our INVITE's or re-INVITE's 2xx again: re-ACK
                    call.on_stray_ok(response)
            case _:
                pass

    def _keep_alive(self, destination: Destination, response: Response) -> None:
        """Keep the flow to the registrar up (RFC 5626 section 4.4.1): CRLFCRLF pings on the
        TCP or TLS connection we registered on, every KEEPALIVE_INTERVAL seconds or at 80 to
        100 % of the registrar's Flow-Timer; a connection that breaks anyway is noticed and
        the account registers again (`_on_connection_lost`)."""
        if not destination.reliable:
            return
        interval = KEEPALIVE_INTERVAL
        flow_timer = (response.headers.get("Flow-Timer") or "").strip()
        if flow_timer.isascii() and flow_timer.isdigit() and 0 < len(flow_timer) <= 6:
            interval = max(1.0, int(flow_timer) * self.rng.uniform(0.8, 1.0))
        self.transport.keep_alive(destination, interval)

    def _rearm(self) -> None:
        deadline = self.endpoint.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._process(self.endpoint.handle_timer(self.loop.time()))

    # -- services for calls and the registration -----------------------------------------------

    def send_request(
        self, request: Request, destination: Destination, on_event: TxCallback
    ) -> ClientTransaction:
        """Start a client transaction; a CANCEL keeps the INVITE's Via (RFC 3261 section 9.1)."""
        if request.method != "CANCEL":
            local_host = self.local_host_for(destination)
            self.endpoint.add_via(request, destination, local_host, self.port_for(destination))
        tx, outputs = self.endpoint.send_request(request, destination, self.loop.time())
        self._owners[tx] = on_event
        self._process(outputs)
        return tx

    def send_ack(self, request: Request, destination: Destination) -> bytes:
        local_host = self.local_host_for(destination)
        self.endpoint.add_via(request, destination, local_host, self.port_for(destination))
        send = self.endpoint.send_stateless(request, destination)
        self.transport.send(send.data, destination)
        return send.data

    def send_raw(self, data: bytes, destination: Destination) -> None:
        self.transport.send(data, destination)

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        if response.status == 180 and tx in self._by_invite_tx:
            self.monitor.ringing(self._by_invite_tx[tx])
        self._process(self.endpoint.respond(tx, response, self.loop.time()))

    def destination_for(self, uri: SipUri) -> Destination:
        """Where to send a request for `uri` (RFC 3263 section 4: SRV, then A/AAAA; no NAPTR),
        from the locator's cache: a name is never looked up on the event loop, because it may
        be one a peer chose (a Contact, a Record-Route), and a slow DNS answer would stall every
        call. A name not found yet raises OSError and is looked up in the background; the names
        of a dialog are looked up as soon as it is created (`prelocate`)."""
        found = self.locator.lookup(uri)
        if found is not None:
            return found
        if ip_literal(uri.host) is None:
            self.prelocate(uri)
            raise OSError(f"{uri.host!r} is not resolved (yet)")
        return self.locator.locate_now(uri)  # a literal: nothing to look up

    def prelocate(self, uri: SipUri) -> None:
        """Locate ``uri`` off the loop now, so that the dialog's requests to it need not
        wait later (a failure shows when the request is sent)."""
        if self.locator.lookup(uri) is not None:
            return

        async def locate() -> None:
            with contextlib.suppress(OSError):
                await self.locator.locate(uri)

        task = self.loop.create_task(locate())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def outbound_destination(self, uri: SipUri) -> Destination:
        """Out-of-dialog requests go to the registrar when there is one (an outbound proxy)."""
        if self.config.registrar is not None:
            return self.destination_for(self.config.registrar)
        return self.destination_for(uri)

    def local_host_for(self, destination: Destination, *, fresh: bool = False) -> str:
        """Our address for ``destination`` (SIPROC_PUBLIC_ADDRESS, else the one that routes
        to it); ``fresh`` asks the routing table again instead of the transport's cache."""
        if self.config.public_address:
            return self.config.public_address
        return self.transport.local_address_for(destination.host, fresh=fresh)

    def local_contact(self, destination: Destination) -> SipUri:
        """A Contact at our own address for ``destination`` (not the registered one)."""
        identity = self.identity().uri
        user = identity.user if isinstance(identity, SipUri) else None
        uri = SipUri(
            "sip",
            self.local_host_for(destination),
            user or "siproc",
            None,
            self.port_for(destination),
        )
        if destination.transport != "udp":
            uri = uri.with_params(transport=destination.transport)
        return uri

    def port_for(self, destination: Destination) -> int:
        """Our port in Via and Contact towards ``destination``: the TLS listener's for TLS
        (when there is none, peers reach us over the connection we opened, RFC 3261 18.2.2)."""
        if destination.transport == "tls" and self.transport.tls_port:
            return self.transport.tls_port
        return self.transport.port

    def contact_for(self, destination: Destination) -> SipUri:
        """Our Contact for `destination`: the registered one (NAT-corrected) when it fits."""
        reg = self.account.registration
        if (
            reg is not None
            and reg.state is RegistrationState.REGISTERED
            and reg.contact.transport == destination.transport
        ):
            return reg.contact
        return self.local_contact(destination)

    def new_token(self) -> str:
        return self.endpoint.new_token()

    @property
    def codecs(self) -> list[CodecSpec]:
        return self._codecs

    @property
    def telephone_event(self) -> CodecSpec | None:
        return self._telephone_event

    @property
    def srtp(self) -> SrtpMode:
        return self.config.srtp

    @property
    def srtp_insecure_signalling(self) -> bool:
        return self.config.srtp_insecure_signalling

    @property
    def tls(self) -> TlsSettings:
        return self.config.tls

    @property
    def audio_fds(self) -> bool:
        return self.config.audio_fds

    @property
    def timer_t1(self) -> float:
        return self.timers.t1

    @property
    def timer_t2(self) -> float:
        return self.timers.t2

    def auth_session(self) -> DigestSession | None:
        if self.config.username is None or self.config.password is None:
            return None
        return DigestSession(self.config.username, self.config.password)

    def handler_env(self, call: CallView) -> dict[str, str]:
        invite = call.invite
        return handler_environment(
            self.base_env,
            remote=call.remote,
            remote_contact=call.remote_contact,
            outgoing=call.outgoing,
            call_id=call.call_id,
            local_uri=str(call.local.uri),
            request_uri=call.request_uri,
            referred_by=call.referred_by,
            invite_headers=invite.headers if invite is not None and not call.outgoing else (),
        )

    def call_changed(self, call: CallView) -> None:
        assert isinstance(call, Call)  # the phone's calls are its own
        self.monitor.changed(call)
        if call.dialog is not None and call.state is not CallState.ENDED:
            self._by_dialog[call.dialog.id] = call

    def call_ended(self, call: CallView) -> None:
        """The call has ended and its media is closed; its handler is told next."""
        assert isinstance(call, Call)
        self.monitor.ended(call)

    def call_finished(self, call: CallView) -> None:
        assert isinstance(call, Call)
        if call not in self.calls:
            return
        self.monitor.finished(call)
        self.calls.discard(call)
        # (its media is closed: kept here, it would hold the call until the next call's start)
        self._inline.discard(call.stream)
        if call.dialog is not None:
            self._by_dialog.pop(call.dialog.id, None)
        if self._by_call_id.get(call.call_id) is call:
            del self._by_call_id[call.call_id]
        tx = self._invite_tx_of.pop(call, None)
        if tx is not None and self._by_invite_tx.get(tx) is call:
            del self._by_invite_tx[tx]
        if not self.calls:
            self._all_calls_gone.set()
            self.memory.quiet()
        if self.drain.calls_changed(len(self.calls)):
            self.request_shutdown(self.drain.why)

    def _call_with(self, uri: object) -> Call | None:
        """The live call whose remote party is `uri` (user and host), the newest first."""
        if not isinstance(uri, SipUri):
            return None
        for call in sorted(self.calls, key=lambda c: c.started, reverse=True):
            remote = call.remote.uri
            if (
                not call.ended
                and isinstance(remote, SipUri)
                and unquote(remote.user or "") == unquote(uri.user or "")
                and remote.host.lower() == uri.host.lower()
            ):
                return call
        return None

    def _add_call(self, call: Call) -> None:
        self.monitor.opened(call)
        self.calls.add(call)
        self._by_call_id[call.call_id] = call
        self._all_calls_gone.clear()
        self.memory.busy()

    def identity(self) -> NameAddr:
        if self.config.identity is not None:
            return self.config.identity
        return NameAddr(SipUri("sip", "localhost", "siproc"))

    def _open_stream(self, local_host: str) -> MediaStream:
        family_any = "::" if ":" in local_host else "0.0.0.0"
        bind = self.config.bind_address or family_any
        if self.media is not None:
            self._inline = {stream for stream in self._inline if not stream.closed}
            if self.media.takes_next(len(self._inline)):
                return self.media.open_stream(bind, self.config.rtp_ports, self.rng)
        stream = RtpStream.open(self.loop, self.clock, bind, self.config.rtp_ports, self.rng)
        if self.media is not None:
            self._inline.add(stream)  # a call the pool left to us (media_pool.takes_next)
        return stream

    def _close_unused(self, stream: MediaStream) -> None:
        """Close a stream no call took (nor holds it here: see `call_finished`)."""
        stream.close()
        self._inline.discard(stream)

    # -- outgoing calls -------------------------------------------------------------------------

    def expand_target(self, text: str) -> NameAddr:
        """A SIP URI or name-addr, or a bare user name at the registrar's domain (`CALL`,
        `TRANSFER`); raises ParseError for anything else, including non-sip: schemes."""
        if ":" not in text and self.config.registrar is not None:
            registrar = self.config.registrar
            text = f"sip:{text}@{format_host(registrar.host)}" + (
                f":{registrar.port}" if registrar.port else ""
            )
        # A bare URI keeps its ;params (transport=tcp); only <...> makes a name-addr.
        target = parse_name_addr(text) if "<" in text else NameAddr(parse_uri(text))
        if not isinstance(target.uri, SipUri):
            raise ParseError(f"only sip: URIs can be called, not {target.uri.scheme}:")
        return target

    def place_call(self, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """`CALL <uri> [Header: value ...]`: a SIP URI or name-addr, or a bare user name at the
        registrar's domain; `headers` go into the INVITE."""
        why_not = self.drain.refuses_calls()
        if why_not is not None:
            print(f"siproc: CALL {text[:80]!r}: {why_not}", file=sys.stderr, flush=True)
            return
        try:
            target = self.expand_target(text)
        except ParseError as exc:
            print(f"siproc: CALL {text[:80]!r}: not a SIP URI ({exc})", file=sys.stderr, flush=True)
            return
        route = self.config.registrar or _as_sip(target.uri)
        if self.locator.lookup(route) is None:  # a name: look it up without stalling calls
            self.loop.create_task(self._locate_and_dial(route, target, headers, f"CALL {text}"))
            return
        self._dial(target, headers, f"CALL {text}")

    async def _locate_and_dial(
        self, route: SipUri, target: NameAddr, headers: tuple[tuple[str, str], ...], what: str
    ) -> None:
        try:
            await self.locator.locate(route)
        except OSError as exc:
            # The call still gets its handler, which learns at once that it is over: a name
            # that does not resolve is a 503 (RFC 3263 section 4.3, RFC 3261 section 8.1.3.1).
            print(f"siproc: {what}: {exc}", file=sys.stderr, flush=True)
            self._dial(target, headers, what, unreachable=str(exc))
            return
        self._dial(target, headers, what)

    def place_referred_call(
        self, target: SipUri, referred_by: str, on_placed: Callable[[CallView | None], None]
    ) -> None:
        """The new call of a transfer (an accepted REFER, RFC 3515): placed like `CALL`, its
        handler gets SIPROC_REFERRED_BY; ``on_placed`` gets it, or None when it cannot be
        placed. A target named by the peer is located off the loop first."""
        what = f"REFER to {target}"
        route = self.config.registrar or target
        if self.locator.lookup(route) is not None:
            on_placed(self._dial(NameAddr(target), (), what, referred_by=referred_by))
            return

        async def locate_and_dial() -> None:
            try:
                await self.locator.locate(route)
            except OSError as exc:
                log.warning("%s: %s", what, exc)
                on_placed(None)
                return
            on_placed(self._dial(NameAddr(target), (), what, referred_by=referred_by))

        task = self.loop.create_task(locate_and_dial())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def refer_allowed(self, target: SipUri) -> bool:
        return refer_allowed(self.config.accept_refer, target)

    def _dial(
        self,
        target: NameAddr,
        headers: tuple[tuple[str, str], ...],
        what: str,
        *,
        referred_by: str = "",
        unreachable: str | None = None,
    ) -> Call | None:
        if self._stopping:
            return None
        if len(self.calls) >= self.config.max_calls:
            self.monitor.refused("max_calls")
            print(
                f"siproc: {what}: refused, SIPROC_MAX_CALLS={self.config.max_calls} calls are up",
                file=sys.stderr,
                flush=True,
            )
            return None
        uri = _as_sip(target.uri)
        try:
            if unreachable is None:
                destination = self.outbound_destination(uri)
            else:  # nowhere to send it: the handler is told at once (_start_outgoing)
                destination = Destination("udp", "127.0.0.1", 5060)
        except OSError as exc:
            print(f"siproc: {what}: {exc}", file=sys.stderr, flush=True)
            return None
        if uri.scheme == "sips" and destination.transport != "tls" and unreachable is None:
            # RFC 3261 section 26.2.2: a sips: target is reached over TLS only, never in clear
            print(
                f"siproc: {what}: refused: a sips: URI needs a TLS path, but the next hop "
                f"is {destination.transport.upper()} (make SIPROC_REGISTRAR_URI sips: or "
                ";transport=tls)",
                file=sys.stderr,
                flush=True,
            )
            return None
        if (
            self.config.srtp is SrtpMode.MANDATORY
            and destination.transport != "tls"
            and not self.config.srtp_insecure_signalling
            and unreachable is None
        ):
            print(f"siproc: {what}: refused: {INSECURE_SRTP_REASON}", file=sys.stderr, flush=True)
            return None
        try:
            local_host = self.local_host_for(destination)
            stream = self._open_stream(local_host)
        except OSError as exc:
            print(f"siproc: {what}: {exc}", file=sys.stderr, flush=True)
            return None
        identity = self.identity()
        if self.config.identity is None:
            identity = NameAddr(
                replace(_as_sip(identity.uri), host=local_host, port=self.transport.port)
            )
        try:
            call = Call(
                self,
                outgoing=True,
                call_id=f"{self.new_token()}@{format_host(local_host)}",
                local=identity,
                remote=NameAddr(uri, target.display_name),
                local_tag=self.new_token(),
                stream=stream,
            )
        except BaseException:  # a bug: the RTP pair just opened must not leak with it
            self._close_unused(stream)
            raise
        call.request_uri = str(uri)
        call.referred_by = referred_by
        call.signalling_host = destination.host
        self._add_call(call)
        limits = self.config.limits
        call.start_limits(0, limits.max_call_duration, limits.rtp_timeout)
        self.loop.create_task(self._start_outgoing(call, uri, destination, headers, unreachable))
        return call

    async def _start_outgoing(
        self,
        call: Call,
        uri: SipUri,
        destination: Destination,
        headers: tuple[tuple[str, str], ...],
        unreachable: str | None = None,
    ) -> None:
        while not self._spawns.take(self.loop.time()):  # SIPROC_SPAWN_RATE: CALLs queue
            await asyncio.sleep(self._spawns.wait(self.loop.time()))
        began = self.loop.time()
        try:
            await call.spawn_handler()
        except Exception as exc:
            log.error("cannot start the handler: %s", _spawn_failure(exc))
            call.not_started(500, "handler failed to start")
            return
        self.monitor.handler_started(self.loop.time() - began)
        if unreachable is not None:
            call.not_started(503, f"Service Unavailable ({unreachable})")
            return
        call.log.info("calling %s", uri)
        call.guard(call.start_outgoing)(uri, destination, headers)

    # -- incoming requests ----------------------------------------------------------------------

    def _on_request(self, event: RequestReceived) -> None:
        request, info, tx = event.request, event.info, event.transaction
        if request.method == "CANCEL":
            call = self._by_invite_tx.get(event.cancelled) if event.cancelled else None
            if call is not None:
                call.on_cancel(tx, request)
            else:
                self.respond(tx, make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        if info.to.tag:  # in-dialog (RFC 3261 section 12.2.2)
            call = self._by_dialog.get((info.call_id, info.to.tag, info.from_.tag or ""))
            if call is None:
                self.respond(tx, make_response(request, 481, "Call/Transaction Does Not Exist"))
            else:
                call.on_request(request, tx, event.local_host)
            return
        if request.method == "INVITE":
            self._on_invite(event)
            return
        response = out_of_dialog.answer(request, self.new_token, self.endpoint.supported)
        assert response is not None
        self.respond(tx, response)
        if request.method == "MESSAGE":
            # Many phones send chat outside the dialog even during a call (baresip,
            # linphone): it goes to the handler of the call with that party.
            text = request.body.decode("utf-8", "replace")
            call = self._call_with(info.from_.uri)
            if call is not None:
                call.event(protocol.MessageReceived(text))
            else:
                log.info("MESSAGE from %s outside any call: %r", info.from_.uri, text[:200])

    def _admit(
        self, request: Request, info: MessageInfo, source: Destination, now: float
    ) -> Refuse | None:
        """The endpoint's admission gate for new requests outside a dialog (sip/endpoint.py):
        SIPROC_INBOUND for all but OPTIONS, then the drain (503 to INVITE and OPTIONS while
        draining, calls/drain.py), then the flood limits for INVITE (SIPROC_CALL_RATE
        and SIPROC_CALL_BURST per source address, SIPROC_SPAWN_RATE for all). What is refused
        here is answered statelessly, or dropped, and never reaches a handler; the warnings are
        rate-limited (the first few, then at each power of ten).

        A request with a To tag is in a dialog (RFC 3261 section 12.2.2): one of ours passes,
        any other gets its 481 here, statelessly. A stateful 481 to an INVITE would be
        retransmitted (Timer G) to a source that may be forged, ten packets for one and held
        for 64*T1, with no limit on how many: a packet cannon. Requests that are refused
        outside a dialog whoever sends them (BYE, REFER...) are answered statelessly too."""
        if info.to.tag:
            if (info.call_id, info.to.tag, info.from_.tag or "") in self._by_dialog:
                return None
            return Refuse(481, "Call/Transaction Does Not Exist")
        policy = self.config.inbound
        if request.method != "OPTIONS" and not policy.open:
            registrar = self.config.registrar
            own_users = [u for u in (self._own_user(), self._contact_user()) if u is not None]
            why = admits(
                policy,
                source,
                request_user=_uri_user(request.uri),
                registrars=self.locator.known_destinations(registrar) if registrar else (),
                own_users=own_users,
            )
            if why is not None:
                self.monitor.refused("policy")
                self._refused_inbound += 1
                if worth_logging(self._refused_inbound):
                    log.warning(
                        "refused %s from %s:%d (SIPROC_INBOUND): %s (%d refused so far)",
                        request.method,
                        source.host,
                        source.port,
                        why,
                        self._refused_inbound,
                    )
                return Refuse(policy.reject, "Forbidden")
        refusal = out_of_dialog.REFUSED.get(request.method) or self.drain.refusal(
            request.method, now
        )
        if refusal is not None:
            return refusal
        if request.method != "INVITE" or self._stopping:
            return None
        key = source_key(source.host)
        if now >= self._prune_at:  # forget the sources whose budget is full again
            self._prune_at = now + RATE_PRUNE_INTERVAL
            self._call_rates.prune(now)
        # The global budget first: a call it refuses costs the source nothing. The registrar
        # (our outbound proxy) brings every call of a busy PBX from one address: it is held to
        # the global budget only.
        if self._spawns.wait(now) == 0 and (
            self._from_registrar(source) or self._call_rates.take(key, now)
        ):
            self._spawns.take(now)
            return None
        self.monitor.refused("rate_limit")
        self._flood_refused += 1
        if worth_logging(self._flood_refused):
            log.warning(
                "refusing call from %s: too many new calls (%d refused so far)",
                source.host,
                self._flood_refused,
            )
        retry = self._call_rates.retry_after(key, now)
        return Refuse(503, "Service Unavailable (too many calls)", (("Retry-After", str(retry)),))

    def _from_registrar(self, source: Destination) -> bool:
        """Whether ``source`` has the address of our registrar (any of its SRV targets)."""
        registrar = self.config.registrar
        if registrar is None:
            return False
        return any(same_address(source, d) for d in self.locator.known_destinations(registrar))

    def _own_user(self) -> str | None:
        uri = self.identity().uri
        return uri.user if isinstance(uri, SipUri) else None

    def _contact_user(self) -> str | None:
        reg = self.account.registration
        return reg.contact.user if reg is not None else None

    def _on_invite(self, event: RequestReceived) -> None:
        request, info, tx = event.request, event.info, event.transaction
        tag = self.new_token()
        if self._stopping or len(self.calls) >= self.config.max_calls:
            status, reason = (503, "Service Unavailable") if self._stopping else (486, "Busy Here")
            self.monitor.refused("shutdown" if self._stopping else "max_calls")
            log.warning("refusing call from %s: %d %s", info.from_.uri, status, reason)
            self.respond(tx, make_response(request, status, reason, to_tag=tag))
            return
        try:
            stream = self._open_stream(event.local_host)
        except OSError as exc:
            log.error("refusing call: no RTP port: %s", exc)
            self.respond(tx, make_response(request, 503, "Service Unavailable", to_tag=tag))
            return
        try:  # whatever fails from here on, the RTP pair just opened is closed again
            call = Call(
                self,
                outgoing=False,
                call_id=info.call_id,
                local=info.to,
                remote=info.from_,
                local_tag=tag,
                stream=stream,
            )
            call.signalling_host = event.source.host
            call.start_incoming(request, tx, event.local_host)
        except Exception as exc:
            status = _refusal_status(exc)
            if status == 500:
                log.exception("refusing call from %s: internal error", info.from_.uri)
            else:
                log.warning("refusing call from %s: %s", info.from_.uri, exc)
            self._close_unused(stream)
            self.respond(tx, make_response(request, status, _short_reason(status, exc), to_tag=tag))
            return
        self._add_call(call)
        self._by_invite_tx[tx] = call
        self._invite_tx_of[call] = tx
        self.call_changed(call)
        limits = self.config.limits
        call.start_limits(limits.ring_timeout, limits.max_call_duration, limits.rtp_timeout)
        call.log.info("incoming call from %s", info.from_)
        self.loop.create_task(self._start_incoming_handler(call))

    async def _start_incoming_handler(self, call: Call) -> None:
        began = self.loop.time()
        try:
            await call.spawn_handler()
            self.monitor.handler_started(self.loop.time() - began)
        except Exception as exc:
            log.error("cannot start the handler: %s", _spawn_failure(exc))
            call.not_started(
                500, "handler failed to start", "Server Internal Error (handler failed to start)"
            )


def _refusal_status(exc: Exception) -> int:
    """The final response to an INVITE whose offer or headers we cannot take: the status a
    RemoteProtocolError carries; 488 for an offer we cannot answer or parse (a malformed
    session description is not acceptable either, RFC 3261 section 21.4.26, as for a
    re-INVITE); 400 for a malformed message; 500 for our own bugs."""
    if isinstance(exc, RemoteProtocolError):
        return exc.status
    if isinstance(exc, SdpError | OfferAnswerError):
        return 488
    if isinstance(exc, ParseError):
        return 400
    return 500


def _spawn_failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, HandlerSpawnError) else f"{type(exc).__name__}: {exc}"


def _uri_user(text: str) -> str | None:
    try:
        uri = parse_uri(text)
    except ParseError:
        return None
    return uri.user if isinstance(uri, SipUri) else None


def _as_sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri)
    return uri


def _short_reason(status: int, exc: Exception) -> str:
    if isinstance(exc, RemoteProtocolError):  # its str() is "<status> <reason>" already
        return exc.reason
    base = {400: "Bad Request", 415: "Unsupported Media Type", 488: "Not Acceptable Here"}.get(
        status, "Error"
    )
    return f"{base} ({str(exc)[:80]})"


__all__ = ["Phone", "parse_uri"]
