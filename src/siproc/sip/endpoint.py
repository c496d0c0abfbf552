"""The SIP endpoint: the sans-I/O facade that the network edge drives (DESIGN.md section 1).

Theory of operation: bytes come in with their source; `receive()` parses them, applies the UAS
checks of RFC 3261 section 8.2 (answering 400, 405, 415, 416, 420, 505 itself), matches
retransmissions and responses to transactions (section 17) and returns what to send and what
happened. Requests that start something new come out as `RequestReceived` with their server
transaction; the layer above answers through `respond()`. Timers of all transactions sit in one
heap, so `next_deadline()` is cheap with thousands of calls.

Nothing a peer sends escapes as an exception: it is parsed, or answered, or dropped and counted.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from siproc.sdp.crypto import mask_crypto
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import (
    BRANCH_MAGIC_COOKIE,
    MessageInfo,
    Via,
    content_type,
    current_info,
    keep_info,
    make_response,
    media_types,
    message_info,
    option_tags,
    parse_via,
)
from siproc.sip.message import Headers, Message, Request, Response, parse_message, serialize
from siproc.sip.transaction import (
    DEFAULT_TIMERS,
    AckReceived,
    AckToTU,
    ClientTransaction,
    Destination,
    InviteClientTransaction,
    ResponseReceived,
    Send,
    ServerTransaction,
    Timers,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    client_key,
    create_client_transaction,
    create_server_transaction,
    server_key,
)
from siproc.sip.transaction import Output as TransactionOutput
from siproc.sip.uri import SipUri, format_host, parse_uri, split_list

log = logging.getLogger(__name__)

ACCEPTED_BODIES = ("application/sdp",)


@dataclass(frozen=True, slots=True)
class Refuse:
    """What an admission gate (:attr:`Endpoint.admit`) says of a request it will not take:
    answer it statelessly with ``status`` (RFC 3261 section 8.2.7), or drop it (None)."""

    status: int | None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.status is not None and not 300 <= self.status <= 699:
            raise ValueError(f"a refusal needs a final non-2xx status, not {self.status}")


#: The admission gate: (request, its info, its source, now) -> None to take it, else a Refuse.
Admit = Callable[[Request, MessageInfo, Destination, float], "Refuse | None"]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission), with the server transaction to answer through."""

    request: Request
    info: MessageInfo
    transaction: ServerTransaction
    source: Destination
    local_host: str
    cancelled: ServerTransaction | None = None  # for CANCEL: the INVITE transaction it matches


@dataclass(frozen=True, slots=True)
class AckFor2xx:
    """An ACK that matches no transaction: the ACK to a 2xx, for the dialog (section 13.3.1.4)."""

    request: Request
    info: MessageInfo
    source: Destination


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response no transaction wants; a 2xx to INVITE here is a retransmission to re-ACK."""

    response: Response
    info: MessageInfo
    source: Destination


Output = (
    Send
    | RequestReceived
    | AckFor2xx
    | StrayResponse
    | ResponseReceived
    | TransactionTimeout
    | TransactionTerminated
    | AckReceived
)


def reply_destination(via: Via, source: Destination) -> Destination:
    """Where responses go (RFC 3261 section 18.2.2, RFC 3581 section 4).

    Stream transports answer on the connection the request came on; for UDP the host is the
    packet's source (the `received` rule) and the port is the source port when rport was asked
    for, else the sent-by port.
    """
    if source.reliable:
        return source
    port = source.port if via.rport is not None else (via.port or 5060)
    return Destination(source.transport, source.host, port)


class Endpoint:
    """Transaction tables, UAS request checks, and Via handling for one user agent."""

    def __init__(
        self,
        *,
        allow: Iterable[str],
        timers: Timers = DEFAULT_TIMERS,
        rng: random.Random | None = None,
        user_agent: str = "siproc",
        supported: Iterable[str] = (),
    ) -> None:
        self.allow = tuple(allow)
        self.supported = frozenset(tag.lower() for tag in supported)  # option tags (19.2)
        self.timers = timers
        self.rng = rng or random.SystemRandom()
        self.user_agent = user_agent
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        # Requests outside a dialog by (From tag, Call-ID, CSeq): a second copy on another
        # branch is a merged request (a forking loop), RFC 3261 section 8.2.2.2.
        self._merge: dict[tuple[str, str, int, str], ServerTransaction] = {}
        self._heap: list[tuple[float, int, ClientTransaction | ServerTransaction]] = []
        self._seq = 0
        self.dropped = 0  # messages dropped as unparseable or unwanted
        self.trace: bool = False  # log every message in and out (SIPROC_LOG_LEVEL 6)
        # Asked for each new request (but ACK and CANCEL), in a dialog or not, before a
        # transaction is made for it, so that a flood of refused requests costs no state and
        # no retransmissions (an attacker with forged sources gets one response per request):
        # a request with a To tag that matches no dialog is refused here too.
        self.admit: Admit | None = None

    # -- identifiers ----------------------------------------------------------------------------

    def new_token(self, nbytes: int = 8) -> str:
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def new_branch(self) -> str:
        return BRANCH_MAGIC_COOKIE + self.new_token(10)

    # -- receiving ------------------------------------------------------------------------------

    def receive(
        self, data: bytes, source: Destination, local_host: str, now: float
    ) -> list[Output]:
        """Take one datagram (or one framed stream message's bytes) from `source`."""
        try:
            message = parse_message(data)
        except ParseError as exc:
            return self._reject_unparseable(data, exc, source)
        return self.receive_message(message, source, local_host, now)

    def receive_message(
        self, message: Message | ParseError, source: Destination, local_host: str, now: float
    ) -> list[Output]:
        """Take one message already framed (stream transports deliver these)."""
        if isinstance(message, ParseError):
            return self._reject_unparseable(b"", message, source)
        if self.trace:
            log.debug("recv from %s:%s", source.host, source.port, extra=_trace_extra(message))
        if isinstance(message, Response):
            return self._receive_response(message, source, now)
        try:
            info = message_info(message)
        except ParseError as exc:
            return self._answer_broken(message.headers, exc, source, message.method)
        try:
            return self._receive_request(message, info, source, local_host, now)
        except RemoteProtocolError as exc:
            if message.method == "ACK":
                self.dropped += 1
                return []
            response = make_response(
                message, exc.status, exc.reason, to_tag=self.new_token(), headers=exc.headers
            )
            return [self._send_stateless_response(response, info.top_via, source)]

    def _reject_unparseable(
        self, data: bytes, exc: ParseError, source: Destination
    ) -> list[Output]:
        log.info("bad SIP message from %s:%s: %s", source.host, source.port, exc)
        if exc.headers is None or data.startswith(b"SIP/"):
            self.dropped += 1
            return []
        method = data.split(b" ", 1)[0].decode("latin-1") if data else None
        return self._answer_broken(exc.headers, exc, source, method)

    def _answer_broken(
        self, headers: Headers, exc: ParseError, source: Destination, method: str | None = None
    ) -> list[Output]:
        """400 (or the error's status) to a request we cannot parse fully, if its headers allow a
        response at all.

        Via (where to) and CSeq (the client matches on branch and CSeq method, section 17.1.3)
        suffice: RFC 4475 section 3.3.1 wants a 400 even without Call-ID, From and To.
        """
        cseq = headers.get("CSeq") or ""
        # An ACK is never answered (RFC 3261 section 17.2.1), whatever its CSeq says.
        if not cseq.strip() or "ACK" in (method, *cseq.split()[-1:]):
            self.dropped += 1
            return []
        try:
            vias = headers.get_all("Via")  # splitting raises on an unterminated quote
            via = parse_via(vias[0]) if vias else None
        except ParseError:
            via = None
        if via is None:
            self.dropped += 1
            return []
        request = Request("UNKNOWN", "sip:invalid", headers)
        _stamp_via(request, via, source)  # RFC 3261 section 18.2.1 holds for broken ones too
        detail = str(exc).replace("\r", " ").replace("\n", " ")[:120]
        # 400, or 513 for a message over the size limit (RFC 3261 section 21.5.14)
        phrase = "Message Too Large" if exc.status == 513 else "Bad Request"
        reason = f"{phrase} ({detail})"
        response = make_response(request, exc.status, reason, to_tag=self.new_token())
        return [self._send_stateless_response(response, via, source)]

    def _send_stateless_response(self, response: Response, via: Via, source: Destination) -> Send:
        response.headers.add("Server", self.user_agent)
        return Send(self._bytes(response), reply_destination(via, source))

    def _receive_response(
        self, response: Response, source: Destination, now: float
    ) -> list[Output]:
        try:
            info = message_info(response)
            key = client_key(response)
        except ParseError as exc:
            log.info("dropping bad response from %s:%s: %s", source.host, source.port, exc)
            self.dropped += 1
            return []
        tx = self._clients.get(key)
        if tx is None:
            if info.cseq.method == "INVITE" and 200 <= response.status < 300:
                return [StrayResponse(response, info, source)]
            self.dropped += 1
            return []
        return self._track(tx, tx.on_response(response, now))

    def _receive_request(
        self, request: Request, info: MessageInfo, source: Destination, local_host: str, now: float
    ) -> list[Output]:
        _stamp_via(request, info.top_via, source, info)
        key = server_key(request)
        existing = self._servers.get(key)
        if request.method == "ACK":
            if existing is None:
                return [AckFor2xx(request, info, source)]
            # An ACK that reuses the INVITE's branch reaches the transaction; in Accepted it is
            # the ACK to our 2xx and goes to the dialog (RFC 6026 section 8.7).
            to_dialog: list[TransactionOutput | Output] = [
                AckFor2xx(request, info, source) if isinstance(item, AckToTU) else item
                for item in existing.on_request(request, now)
            ]
            return self._track(existing, to_dialog)
        if existing is not None:  # a retransmission
            return self._track(existing, existing.on_request(request, now))
        if self.admit is not None and request.method != "CANCEL":
            refusal = self.admit(request, info, source, now)
            if refusal is not None:
                self.dropped += 1
                if refusal.status is None:
                    return []
                response = make_response(
                    request,
                    refusal.status,
                    refusal.reason,
                    to_tag=self.new_token(),
                    headers=list(refusal.headers),
                )
                return [self._send_stateless_response(response, info.top_via, source)]
        merge_key = _merge_key(request, info)
        self._check_request(request, info, merge_key)
        reply_to = reply_destination(info.top_via, source)
        tx, outputs = create_server_transaction(request, reply_to, now, self.timers)
        self._servers[tx.key] = tx
        if merge_key is not None:
            self._merge[merge_key] = tx
        out = self._track(tx, outputs)
        cancelled = None
        if request.method == "CANCEL":
            invite_key = server_key(_as_invite(request))
            cancelled = self._servers.get(invite_key)
            if cancelled is None or cancelled.method != "INVITE":
                response = make_response(
                    request, 481, "Call/Transaction Does Not Exist", to_tag=self.new_token()
                )
                return out + self.respond(tx, response, now)
        elif request.method == "INVITE":
            trying = make_response(request, 100, "Trying")
            out += self.respond(tx, trying, now)
        out.append(RequestReceived(request, info, tx, source, local_host, cancelled))
        return out

    def _check_request(
        self,
        request: Request,
        info: MessageInfo,
        merge_key: tuple[str, str, int, str] | None = None,
    ) -> None:
        """The UAS checks of RFC 3261 section 8.2, in the order the RFC gives them
        (``merge_key``: see :func:`_merge_key`)."""
        if request.version != "SIP/2.0":
            raise RemoteProtocolError(505, "Version Not Supported")
        if request.method not in self.allow:
            raise RemoteProtocolError(
                405, "Method Not Allowed", headers=(("Allow", ", ".join(self.allow)),)
            )
        try:
            uri = parse_uri(request.uri)
        except ParseError:
            raise RemoteProtocolError(400, "Bad Request (malformed Request-URI)") from None
        if not isinstance(uri, SipUri):
            raise RemoteProtocolError(416, "Unsupported URI Scheme")
        if merge_key is not None:  # 8.2.2.2: a copy of a request we are still working on
            first = self._merge.get(merge_key)
            if first is not None and first.state in _NOT_ANSWERED:
                raise RemoteProtocolError(482, "Loop Detected")
        try:  # list headers are split only now: a broken one is the peer's fault
            required = option_tags(request.headers, "Require")
            accept = media_types(request.headers, "Accept")
        except ParseError as exc:
            raise RemoteProtocolError(400, f"Bad Request ({str(exc)[:120]})") from None
        if request.method != "CANCEL":
            unknown = [t for t in required if t not in self.supported]
            if unknown:
                raise RemoteProtocolError(
                    420, "Bad Extension", headers=(("Unsupported", ", ".join(unknown)),)
                )
        if request.method == "INVITE":
            kind = content_type(request.headers)
            if request.body and kind not in ACCEPTED_BODIES:
                raise RemoteProtocolError(
                    415, "Unsupported Media Type", headers=(("Accept", ", ".join(ACCEPTED_BODIES)),)
                )
            if accept and not any(a in ("application/sdp", "application/*", "*/*") for a in accept):
                raise RemoteProtocolError(
                    406, "Not Acceptable", headers=(("Accept", ", ".join(ACCEPTED_BODIES)),)
                )

    # -- sending --------------------------------------------------------------------------------

    def add_via(
        self, request: Request, destination: Destination, local_host: str, local_port: int
    ) -> str:
        """Stamp our Via (with a new branch and rport, RFC 3581) on top; return the branch."""
        branch = self.new_branch()
        sent_by = f"{format_host(local_host)}:{local_port}"
        via = f"SIP/2.0/{destination.transport.upper()} {sent_by};branch={branch};rport"
        info = current_info(request)
        request.headers.prepend("Via", via)
        if info is not None:  # a request we built (Dialog.create_request): its view goes on
            keep_info(request, replace(info, vias=(parse_via(via), *info.vias)))
        return branch

    def send_request(
        self, request: Request, destination: Destination, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for `request` (which must already carry our Via)."""
        if "User-Agent" not in request.headers:
            info = current_info(request)
            request.headers.add("User-Agent", self.user_agent)
            if info is not None:  # no mandatory header changed
                keep_info(request, info)
        tx = create_client_transaction(request, destination, self.timers)
        self._clients[tx.key] = tx
        if self.trace:
            log.debug(
                "send to %s:%s", destination.host, destination.port, extra=_trace_extra(request)
            )
        if request.method == "CANCEL":  # RFC 3261 section 9.1: the INVITE ends 64*T1 later
            invite = self._clients.get((tx.key[0], "INVITE"))
            if isinstance(invite, InviteClientTransaction):
                invite.cancel_sent(now)
                self._track(invite, [])
        return tx, self._track(tx, tx.start(now))

    def send_stateless(self, request: Request, destination: Destination) -> Send:
        """Send a request outside any transaction: the ACK to a 2xx (section 13.2.2.4)."""
        return Send(self._bytes(request), destination)

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> list[Output]:
        if "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        if self.trace:
            log.debug(
                "send to %s:%s", tx.reply_to.host, tx.reply_to.port, extra=_trace_extra(response)
            )
        return self._track(tx, tx.respond(response, now))

    def _bytes(self, message: Message) -> bytes:
        if self.trace:
            log.debug("send", extra=_trace_extra(message))
        return serialize(message)

    # -- timers ---------------------------------------------------------------------------------

    def _track(
        self,
        tx: ClientTransaction | ServerTransaction,
        outputs: Sequence[TransactionOutput | Output],
    ) -> list[Output]:
        """Push `tx`'s current deadline (after every state change) and forget it when done."""
        deadline = tx.next_deadline()
        if deadline is not None:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, tx))
        for item in outputs:
            if isinstance(item, TransactionTerminated):
                self._forget(item.transaction)
        # AckToTU comes only from an ACK, which _receive_request turns into AckFor2xx first.
        return [item for item in outputs if not isinstance(item, AckToTU)]

    def _forget(self, tx: ClientTransaction | ServerTransaction) -> None:
        if isinstance(tx, ServerTransaction):
            if self._servers.get(tx.key) is tx:
                del self._servers[tx.key]
            merge_key = _merge_key(tx.request, message_info(tx.request))
            if merge_key is not None and self._merge.get(merge_key) is tx:
                del self._merge[merge_key]
        elif self._clients.get(tx.key) is tx:
            del self._clients[tx.key]

    def transport_error(self, destination: Destination, reason: str) -> list[Output]:
        """A reliable transport could not reach ``destination`` (RFC 3261 section 17.1.4):
        the client transactions waiting on it end with a 503 the TU can act on at once,
        instead of after Timer B or F. Datagrams are not tracked this way: UDP has no such
        report, and a lost one is what retransmissions are for."""
        if not destination.reliable:
            return []
        out: list[Output] = []
        for tx in list(self._clients.values()):
            if tx.destination == destination:
                out += self._track(tx, tx.on_transport_error(reason))
        return out

    def next_deadline(self) -> float | None:
        """The earliest transaction deadline; stale heap entries are dropped on the way.

        Every state change goes through `_track`, which pushes the transaction's current
        deadline, so an entry that no longer matches its transaction's deadline is stale and
        can simply be popped: amortised O(log n) per entry.
        """
        while self._heap:
            deadline, _, tx = self._heap[0]
            if tx.next_deadline() == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def handle_timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return out
            _, _, tx = heapq.heappop(self._heap)
            out += self._track(tx, tx.handle_timer(now))

    @property
    def transaction_count(self) -> int:
        return len(self._clients) + len(self._servers)


def _stamp_via(
    request: Request, via: Via, source: Destination, info: MessageInfo | None = None
) -> None:
    """Add `received` and `rport` to the top Via (RFC 3261 section 18.2.1, RFC 3581 section 4).

    Responses copy the Via, so the client learns the address it was seen from (the registrar
    side of NAT discovery). The stamp depends only on the Via and the source, so a
    retransmission gets the same one and RFC 2543 keys (built from the top Via) still match.
    With `info` (the request's parsed headers before the stamp) the request keeps its parsed
    view, the stamped Via in place of the old one: what parsing the new headers again gives,
    without doing it (the transaction layer asks at once, then every layer above).
    """
    stamped = via
    # RFC 3581 section 4: with rport, received is added "even if it is identical" to sent-by.
    if via.rport is not None or via.host.lower() != source.host.lower():
        stamped = stamped.with_param("received", source.host)
    if via.rport is not None:
        stamped = stamped.with_param("rport", str(source.port))
    if stamped is via:
        return
    items = list(request.headers)
    index = next(i for i, (name, _) in enumerate(items) if name == "Via")
    rest = split_list(items[index][1])[1:]
    items[index] = ("Via", ", ".join([str(stamped), *rest]))
    request.headers = headers = Headers(items)
    if info is not None:
        request.parsed = (headers, headers.version, replace(info, vias=(stamped, *info.vias[1:])))


# Server transactions that have not sent a final response: a merged copy of their request is a
# loop. Once answered, a copy is more likely a peer's retry or keepalive on a new branch.
_NOT_ANSWERED: Final = frozenset({TransactionState.TRYING, TransactionState.PROCEEDING})


def _merge_key(request: Request, info: MessageInfo) -> tuple[str, str, int, str] | None:
    """(From tag, Call-ID, CSeq number, CSeq method) of a request outside a dialog (no To tag),
    which section 8.2.2.2 matches against ongoing transactions; None for a request in a
    dialog, an ACK or CANCEL (they match the INVITE's transaction), or an RFC 2543 request
    without a From tag."""
    if info.to.tag or not info.from_.tag or request.method in ("ACK", "CANCEL"):
        return None
    return (info.from_.tag, info.call_id, info.cseq.number, info.cseq.method)


def _as_invite(cancel: Request) -> Request:
    """The INVITE a CANCEL refers to, for transaction matching (section 9.2)."""
    headers = cancel.headers.copy()
    cseq = (headers.get("CSeq") or "").split()
    headers.set("CSeq", f"{cseq[0] if cseq else 0} INVITE")
    return Request("INVITE", cancel.uri, headers)


def _trace_extra(message: Message) -> dict[str, str]:
    """The extras of a trace line (siproc/logs.py): the message's text, and the call it belongs
    to (the first 12 characters of its Call-ID, as the call layer's lines name it)."""
    extra = {"sip": _trace(message)}
    call_id = message.headers.get("Call-ID")
    if call_id:
        extra["call"] = call_id.strip()[:12]
    return extra


def _trace(message: Message) -> str:
    text = serialize(message).decode("utf-8", "replace")
    # Never log credentials (DESIGN.md section 1, rule 5).
    lines = [
        line.split(":", 1)[0] + ": <hidden>"
        if line.lower().startswith(("authorization:", "proxy-authorization:"))
        else line
        for line in text.split("\r\n")
    ]
    # Nor SRTP keys (RFC 4568 a=crypto lines in an SDP body).
    return mask_crypto("\n".join(lines))
