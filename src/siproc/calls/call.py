"""One call: its INVITE dialog, its RTP stream and its handler process.

Theory of operation: a `Call` is created by the phone for `CALL <uri>` (outgoing) or for an
INVITE that starts a dialog (incoming). It owns

- the signalling state (`CallState`, transitions in `_TRANSITIONS`, one `_set_state`), the
  dialog once there is one, and the INVITE transaction(s) it started or answers;
- the `RtpStream` (opened before the offer or answer so that the SDP names its port);
- the `HandlerProcess`, whose command lines it executes and to which it writes events.

Ending is two-sided: the SIP side reaches ENDED (final failure, BYE, CANCEL), and the handler
exits. When the SIP side ends first, the handler hears `DISCONNECTED <status> <reason>` and gets
SIGTERM (SIGKILL later); when the handler exits first, the call is ended as fits its state (BYE,
CANCEL, or 480 for an unanswered incoming call, RFC 3261 section 21.4.18). The phone forgets the
call when both sides are done.

The UAS retransmits its 2xx until the ACK arrives (RFC 3261 section 13.3.1.4) and the UAC
re-ACKs retransmitted 2xx (section 13.2.2.4): neither is the transaction layer's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from siproc.calls import protocol, transfer
from siproc.calls.handler import HandlerProcess
from siproc.calls.in_dialog import InDialogRequest
from siproc.calls.session import SessionUpdates
from siproc.media.codecs import AudioCodec, get_codec
from siproc.media.player import MediaFileError
from siproc.media.recorder import RecordFileError
from siproc.net.alsa import SoundCardError, SoundCards
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import (
    CodecSpec,
    NegotiatedMedia,
    OfferAnswerError,
    accept_answer,
    answer_offer,
    build_offer,
)
from siproc.sip.auth import DigestSession
from siproc.sip.dialog import Dialog, DialogState
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.headers import content_type, make_response
from siproc.sip.message import Headers, Request, Response, serialize
from siproc.sip.transaction import (
    ClientTransaction,
    Destination,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
)
from siproc.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from siproc.net.rtp_socket import RtpStream

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, REFER, NOTIFY, UPDATE"
SUPPORTED = ""  # no extensions yet; the header is left out while empty
HANDLER_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
# DISCONNECTED and end of file reach the handler this long before SIGTERM, so that a handler in
# a read loop sees why the call ended even if it does not trap SIGTERM.
TERM_DELAY = 0.2
INFO_DTMF_DURATION_MS = 160  # Duration= of an application/dtmf-relay INFO
WARN_REFUSED = 5  # refused handler commands logged one by one; after that at 10, 100, 1000...


class CallState(Enum):
    CALLING = "calling"  # outgoing INVITE sent, nothing back yet
    EARLY = "early"  # outgoing: a provisional response arrived
    INCOMING = "incoming"  # incoming INVITE, not answered yet
    EARLY_MEDIA = "early media"  # incoming: 183 with our SDP answer sent, media flowing
    ANSWERING = "answering"  # incoming: 2xx sent, waiting for the ACK
    CONNECTED = "connected"
    CANCELLING = "cancelling"  # outgoing: hung up before the answer
    TERMINATING = "terminating"  # our BYE is on its way
    ENDED = "ended"


S = CallState
_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.CALLING: frozenset({S.EARLY, S.CONNECTED, S.CANCELLING, S.ENDED}),
    S.EARLY: frozenset({S.CONNECTED, S.CANCELLING, S.ENDED}),
    S.INCOMING: frozenset({S.EARLY_MEDIA, S.ANSWERING, S.ENDED}),
    S.EARLY_MEDIA: frozenset({S.ANSWERING, S.ENDED}),
    S.ANSWERING: frozenset({S.CONNECTED, S.TERMINATING, S.ENDED}),
    S.CONNECTED: frozenset({S.TERMINATING, S.ENDED}),
    S.CANCELLING: frozenset({S.TERMINATING, S.ENDED}),
    S.TERMINATING: frozenset({S.ENDED}),
    S.ENDED: frozenset(),
}


class PhoneServices(Protocol):
    """What a call needs from the phone (the user agent that owns it)."""

    loop: asyncio.AbstractEventLoop
    handler_argv: list[str]

    def send_request(
        self,
        request: Request,
        destination: Destination,
        on_event: Callable[[ResponseReceived | TransactionTimeout], None],
    ) -> ClientTransaction: ...
    def send_ack(self, request: Request, destination: Destination) -> bytes: ...
    def send_raw(self, data: bytes, destination: Destination) -> None: ...
    def respond(self, tx: ServerTransaction, response: Response) -> None: ...
    def destination_for(self, uri: SipUri) -> Destination: ...
    def local_host_for(self, destination: Destination) -> str: ...
    def contact_for(self, destination: Destination) -> SipUri: ...
    def new_token(self) -> str: ...
    def handler_env(self, call: Call) -> dict[str, str]: ...
    def call_changed(self, call: Call) -> None: ...
    def call_finished(self, call: Call) -> None: ...
    @property
    def codecs(self) -> list[CodecSpec]: ...
    @property
    def telephone_event(self) -> CodecSpec | None: ...
    @property
    def timer_t1(self) -> float: ...
    @property
    def timer_t2(self) -> float: ...
    def auth_session(self) -> DigestSession | None: ...
    def expand_target(self, text: str) -> NameAddr: ...
    def place_referred_call(self, target: SipUri, referred_by: str) -> Call | None: ...


class CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call'] if self.extra else '?'}] {msg}", kwargs


class Call:
    """One call; see the module docstring."""

    def __init__(
        self,
        phone: PhoneServices,
        *,
        outgoing: bool,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        local_tag: str,
        stream: RtpStream,
    ) -> None:
        self.phone = phone
        self.outgoing = outgoing
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.local_tag = local_tag
        self.stream = stream
        stream.on_stopped = lambda file: self.event(protocol.Stopped(file))
        stream.on_dtmf = lambda digit: self.event(protocol.DtmfReceived(digit))
        self.state = CallState.INCOMING if not outgoing else CallState.CALLING
        self.dialog: Dialog | None = None
        self.handler: HandlerProcess | None = None
        self.handler_done = False
        self.request_uri: str = ""
        self.remote_contact: str = ""
        self.log = CallLog(log, {"call": call_id[:12]})
        self.started = phone.loop.time()
        self.end_status: int | None = None
        self._refused = 0
        self.end_reason = ""
        # outgoing
        self._invite: Request | None = None
        self._invite_tx: ClientTransaction | None = None
        self._sent_invite: Request | None = None
        self._destination: Destination | None = None
        self._offer: SessionDescription | None = None
        self._provisional = False
        self._ack: tuple[bytes, Destination] | None = None
        self._auth: DigestSession | None = None
        # transfer (calls/transfer.py): ours (TRANSFER), the remote's (REFER), and for a call
        # placed because of a REFER, who referred us and who wants to hear of its progress
        self.transferor: transfer.Transferor | None = None
        self.transferee: transfer.Transferee | None = None
        self.referred_by = ""
        self.on_state_change: Callable[[Call], None] | None = None
        # incoming
        self._server_tx: ServerTransaction | None = None
        self._incoming_invite: Request | None = None
        self._answer: SessionDescription | None = None
        self._pending_offer: bool = False  # we offered in our 2xx; the ACK brings the answer
        self._ok_bytes: bytes | None = None
        self._ok_timer: asyncio.TimerHandle | None = None
        self._ok_interval = 0.0
        self._ok_deadline = 0.0
        self._bye_after_ack = False
        # early media (PROGRESS in, 18x with SDP out) and mid-call changes (calls/session.py)
        self._early_events: set[str] = set()  # RINGING / PROGRESS events already sent
        self.session = SessionUpdates(self, ALLOW)
        # media
        self.negotiated: NegotiatedMedia | None = None
        self._info_digits: deque[str] = deque()  # DTMF keys waiting for their SIP INFO
        self._info_in_flight = False
        self._codec: tuple[tuple[str, str | None], AudioCodec] | None = None  # (key, instance)
        self._sound_cards: SoundCards | None = None  # APLAY/ARECORD/ASTOP (net/alsa.py)
        self._sdp_version = 1
        self._sdp_session = int(phone.new_token()[:8], 16)

    # -- state ----------------------------------------------------------------------------------

    def _set_state(self, new: CallState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"call {self.call_id}: illegal {self.state.value} -> {new.value}")
        self.log.debug("%s -> %s", self.state.value, new.value)
        self.state = new
        self.phone.call_changed(self)
        if self.on_state_change is not None:
            self.on_state_change(self)

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def connected(self) -> bool:
        return self.state is CallState.CONNECTED

    def digest_session(self) -> DigestSession | None:
        """The call's digest credentials for in-dialog requests (the INVITE's, else new)."""
        if self._auth is None:
            self._auth = self.phone.auth_session()
        return self._auth

    @property
    def dialog_id(self) -> tuple[str, str, str] | None:
        return self.dialog.id if self.dialog else None

    # -- handler --------------------------------------------------------------------------------

    async def spawn_handler(self) -> None:
        env = self.phone.handler_env(self)
        self.handler = await HandlerProcess.spawn(
            self.phone.handler_argv,
            env,
            None,
            self._on_handler_line,
            self._on_handler_exit,
            self.log,
            on_overlong_line=self._on_overlong_line,
        )
        self.log.info("handler started (pid %d)", self.handler.pid)
        if self.ended:  # the call ended while the handler was starting (an early CANCEL)
            assert self.end_status is not None
            self.event(protocol.Disconnected(self.end_status, self.end_reason))
            self.handler.close_stdin()
            self.phone.loop.call_later(TERM_DELAY, self._terminate_handler)

    def event(self, event: protocol.Event) -> None:
        if self.handler is not None and not self.handler_done:
            self.handler.send(protocol.format_event(event))

    def _error(self, command: str, reason: str) -> None:
        """Answer a refused command with ERROR; warn in the log, but not once per line of a
        handler that floods garbage: the first few, then at each power of ten."""
        self._refused += 1
        count = self._refused
        if count <= WARN_REFUSED or str(count).rstrip("0") == "1":
            more = f" ({count} refused commands so far)" if count > WARN_REFUSED else ""
            self.log.warning("handler command %s refused: %s%s", command, reason, more)
        self.event(protocol.ErrorEvent(command, reason))

    def _on_overlong_line(self, head: str) -> None:
        err = protocol.overlong_line_error(head)
        self._error(err.command, err.reason)

    def _on_handler_line(self, line: str) -> None:
        try:
            command = protocol.parse_command(line)
        except protocol.CommandError as exc:
            self._error(exc.command, exc.reason)
            return
        if command is None:
            return
        try:
            self._execute(command)
        except (ParseError, RemoteProtocolError, OfferAnswerError, SdpError, OSError) as exc:
            self.log.exception("command %s failed", type(command).__name__)
            self._error(type(command).__name__.upper(), str(exc))

    def _execute(self, command: protocol.Command) -> None:
        state = self.state
        match command:
            case protocol.Ringing():
                if state not in (CallState.INCOMING, CallState.EARLY_MEDIA):
                    return self._error("RINGING", f"not possible while the call is {state.value}")
                self._respond_invite(180, "Ringing")
            case protocol.Progress():
                self._progress()
            case protocol.Answer():
                if state not in (CallState.INCOMING, CallState.EARLY_MEDIA):
                    return self._error("ANSWER", f"not possible while the call is {state.value}")
                self._answer_call()
            case protocol.Hold():
                self.session.command(hold=True)
            case protocol.Resume():
                self.session.command(hold=False)
            case protocol.Message(text=text):
                self._send_message(text)
            case protocol.Hangup(status=status):
                if state in (CallState.ENDED, CallState.TERMINATING, CallState.CANCELLING):
                    return self._error("HANGUP", f"the call is already {state.value}")
                self.hangup(status)
            case protocol.Play(file=file):
                if state in (CallState.ENDED, CallState.TERMINATING):
                    return self._error("PLAY", f"the call is {state.value}")
                try:
                    self.stream.play(file)
                except MediaFileError as exc:
                    return self._error("PLAY", str(exc))
            case protocol.Stop():
                if self.stream.stop_last() is None:
                    return self._error("STOP", "nothing is playing")
            case protocol.Dtmf(digits=digits):
                self._send_dtmf(digits)
            case protocol.Record(file=None):
                if self.stream.stop_recording() is None:
                    return self._error("RECORD", "nothing is being recorded")
            case protocol.Record(file=str() as file, stereo=stereo):
                if self.stream.closed:
                    return self._error("RECORD", f"the call is {state.value}")
                try:
                    self.stream.start_recording(file, stereo)
                except RecordFileError as exc:
                    return self._error("RECORD", str(exc))
            case protocol.Transfer(uri=uri):
                transfer.start_transfer(self, uri)
            case protocol.Aplay() | protocol.Arecord() | protocol.Astop():
                self._sound_card(command)
            case _:
                verb = protocol.format_command(command).split(" ", 1)[0]
                self._error(verb, "not supported by this version of siproc")
        return None

    def _sound_card(self, command: protocol.Aplay | protocol.Arecord | protocol.Astop) -> None:
        """APLAY / ARECORD / ASTOP (net/alsa.py): the bridges are taps of the stream, which
        stops them when the call ends. Opening happens off the loop: a device that cannot be
        opened is reported later, as ``ERROR <verb> <reason>``."""
        verb = type(command).__name__.upper()
        if self._sound_cards is None:
            self._sound_cards = SoundCards(self.stream, self.phone.loop, self._error, self.log)
        try:
            match command:
                case protocol.Aplay(device=device):
                    if self.stream.closed:
                        return self._error(verb, f"the call is {self.state.value}")
                    self._sound_cards.aplay(device)
                case protocol.Arecord(device=device):
                    if self.stream.closed:
                        return self._error(verb, f"the call is {self.state.value}")
                    self._sound_cards.arecord(device)
                case protocol.Astop(device=device):
                    self._sound_cards.astop(device)
        except SoundCardError as exc:
            self._error(verb, str(exc))
        return None

    def _on_handler_exit(self, returncode: int) -> None:
        self.handler_done = True
        self.log.info("handler exited with status %d", returncode)
        if not self.ended:
            self.hangup(None, handler_gone=True)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.ended and (self.handler is None or self.handler_done):
            self.phone.call_finished(self)

    # -- ending ---------------------------------------------------------------------------------

    def hangup(self, status: int | None = None, *, handler_gone: bool = False) -> None:
        """End the call from our side, as fits its state."""
        match self.state:
            case CallState.INCOMING | CallState.EARLY_MEDIA:
                if status is None:
                    status = 480 if handler_gone else 603
                self._respond_invite(status, _REASONS.get(status, "Call Ended"))
                self._finish(status, "hung up before answer")
            case CallState.CALLING | CallState.EARLY:
                self._set_state(CallState.CANCELLING)
                self.stream.close()
                if self._provisional:
                    self._send_cancel()
                # else: RFC 3261 section 9.1: wait for a provisional response, then CANCEL
            case CallState.ANSWERING:
                self._bye_after_ack = True  # section 15: no BYE before the ACK
            case CallState.CONNECTED:
                self._send_bye()
            case _:
                pass

    def _finish(self, status: int, reason: str) -> None:
        """The SIP side is over: stop media, tell and stop the handler."""
        if self.ended:
            return
        self.end_status, self.end_reason = status, reason
        self._cancel_ok_timer()
        self.session.close()
        self.stream.close()
        if self.dialog is not None and self.dialog.state is not DialogState.TERMINATED:
            self.dialog.set_state(DialogState.TERMINATED)
        self._set_state(CallState.ENDED)
        stats = self.stream.stats
        rtt, peer_lost = stats.rtt_ms, stats.remote_lost
        self.log.info(  # RTCP figures (RFC 3550 section 6.4) after the RTP counts
            "call ended: %d %s (RTP: %d packets sent, %d received) lost %d (%.1f%%), "
            "jitter %.1f ms, rtt %s, peer lost %s",
            status,
            reason,
            stats.packets_sent,
            stats.packets_received,
            stats.lost,
            stats.fraction_lost * 100,
            stats.jitter_ms,
            "n/a" if rtt is None else f"{rtt:.1f} ms",
            "n/a" if peer_lost is None else peer_lost,
        )
        if self.handler is not None and not self.handler_done:
            self.event(protocol.Disconnected(status, reason))
            self.handler.close_stdin()
            self.phone.loop.call_later(TERM_DELAY, self._terminate_handler)
        self._maybe_finished()

    def _terminate_handler(self) -> None:
        if self.handler is not None and not self.handler_done:
            self.handler.terminate(HANDLER_GRACE)

    def shutdown(self) -> None:
        """siproc is quitting: end the SIP side as fits, stop the handler."""
        if not self.ended:
            self.hangup(None)
        if self.handler is not None and not self.handler_done:
            self.handler.terminate(HANDLER_GRACE)

    # -- media ----------------------------------------------------------------------------------

    def _sdp_bytes(self, sdp: SessionDescription) -> bytes:
        return sdp.serialize()

    def _configure_media(self, negotiated: NegotiatedMedia) -> None:
        if negotiated.rejected:
            raise OfferAnswerError("the remote end rejected the audio stream (port 0)")
        self.negotiated = negotiated
        # One codec instance per call: a re-INVITE that keeps the codec keeps its state (G.722
        # and Opus encoders/decoders carry history from frame to frame).
        key = (negotiated.codec.name.upper(), negotiated.codec.fmtp)
        if self._codec is None or self._codec[0] != key:
            self._codec = (key, get_codec(negotiated.codec.name, negotiated.codec.fmtp))
        codec = self._codec[1]
        self.stream.configure(
            negotiated.remote_address,
            codec,
            negotiated.codec.payload_type,
            negotiated.telephone_event_pt,
            negotiated.direction,
            receive_telephone_event_pt=negotiated.local_telephone_event_pt,
        )
        self.stream.configure_rtcp(mux=negotiated.rtcp_mux, remote=negotiated.remote_rtcp)

    def _start_media(self) -> None:
        if self.negotiated is not None:
            self.stream.start()

    def make_offer(self, address: str, *, direction: str = "sendrecv") -> SessionDescription:
        """Our offer; ``direction`` sendonly/inactive puts the call on hold (RFC 3264 8.4)."""
        self._sdp_version += 1
        return build_offer(
            address=address,
            port=self.stream.local_port,
            codecs=self.phone.codecs,
            session_id=self._sdp_session,
            session_version=self._sdp_version,
            direction=direction,
            telephone_event=self.phone.telephone_event,
        )

    def _make_answer(
        self, offer: SessionDescription, address: str, *, hold: bool = False
    ) -> SessionDescription:
        """Answer ``offer`` and apply it to the stream; ``hold``: we keep the call on hold."""
        self._sdp_version += 1
        answer, negotiated = answer_offer(
            offer,
            address=address,
            port=self.stream.local_port,
            codecs=self.phone.codecs,
            session_id=self._sdp_session,
            session_version=self._sdp_version,
            telephone_event=self.phone.telephone_event,
            hold=hold,
        )
        self._configure_media(negotiated)
        return answer

    # -- outgoing -------------------------------------------------------------------------------

    @property
    def invite(self) -> Request | None:
        """The INVITE that started the call (ours or the peer's)."""
        return self._invite if self.outgoing else self._incoming_invite

    def start_outgoing(
        self, target: SipUri, destination: Destination, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._destination = destination
        self.request_uri = str(target)
        self._auth = self.phone.auth_session()
        local_host = self.phone.local_host_for(destination)
        self._offer = self.make_offer(local_host)
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local.with_params(tag=self.local_tag)))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<{self.phone.contact_for(destination)}>")
        headers.add("Allow", ALLOW)
        for name, value in extra:  # CALL <uri> Header: value (calls/control.py)
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        self._invite = Request("INVITE", str(target), headers, self._sdp_bytes(self._offer))
        self._send_invite()

    def _send_invite(self) -> None:
        assert self._invite is not None and self._destination is not None
        request = Request(
            self._invite.method, self._invite.uri, self._invite.headers.copy(), self._invite.body
        )
        if self._auth is not None:
            for name, value in self._auth.headers("INVITE", request.uri):
                request.headers.add(name, value)
        self._provisional = False
        self._sent_invite = request
        self._invite_tx = self.phone.send_request(request, self._destination, self._on_invite_event)

    def _on_invite_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, TransactionTimeout):
            if self.state in (CallState.CALLING, CallState.EARLY, CallState.CANCELLING):
                self._finish(408, "no answer (timeout)")
            return
        response = event.response
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_invite_ok(response)
        else:
            self._on_invite_failure(response)

    def _on_provisional(self, response: Response) -> None:
        self._provisional = True
        if self.state is CallState.CANCELLING:
            self._send_cancel()
            return
        status = response.status
        if status == 100 or self.state not in (CallState.CALLING, CallState.EARLY):
            return
        self._set_state(CallState.EARLY)
        early_media = self._early_media(response)
        if status == 183 or early_media:
            self._early_event(protocol.ProgressEvent())
        elif status == 180:
            self._early_event(protocol.RingingEvent())

    def _early_media(self, response: Response) -> bool:
        """Early media from the far end (RFC 3960 section 2, the "gateway model"): an SDP answer
        in an unreliable 18x is applied at once and the stream started, so the far end's
        announcements or ringback are received (and recorded) and PLAY reaches it; the 2xx
        brings the answer again and may change it (see `_on_invite_ok`)."""
        if not response.body or content_type(response.headers) != "application/sdp":
            return False
        assert self._offer is not None
        first = self.negotiated is None
        try:
            negotiated = accept_answer(self._offer, parse_sdp(response.body), self.phone.codecs)
            self._configure_media(negotiated)
        except (SdpError, OfferAnswerError) as exc:
            self.log.warning("ignoring unusable SDP in %d: %s", response.status, exc)
            return False
        if first:
            host, port = negotiated.remote_address
            self.log.info("early media from %s port %d (%d)", host, port, response.status)
        self._start_media()
        return True

    def _early_event(self, event: protocol.RingingEvent | protocol.ProgressEvent) -> None:
        """RINGING and PROGRESS reach the handler once each per call, however many 18x come."""
        line = protocol.format_event(event)
        if line not in self._early_events:
            self._early_events.add(line)
            self.event(event)

    def _on_invite_ok(self, response: Response) -> None:
        if self._ack is not None:  # a retransmitted 2xx: re-ACK (section 13.2.2.4)
            data, destination = self._ack
            self.phone.send_raw(data, destination)
            return
        assert self._sent_invite is not None
        try:
            self.dialog = Dialog.from_uac(self._sent_invite, response)
        except (ParseError, RemoteProtocolError) as exc:
            self.log.warning("unusable 2xx to our INVITE: %s", exc)
            return self._finish(502, f"bad 2xx from the remote end: {exc}")
        self.remote_contact = str(self.dialog.remote_target)
        ack = self.dialog.create_request("ACK", cseq=self.dialog.local_cseq)
        destination = self.phone.destination_for(self.dialog.next_hop())
        self._ack = (self.phone.send_ack(ack, destination), destination)
        if self.state is CallState.CANCELLING:  # the 2xx crossed our CANCEL: ACK, then BYE
            self._send_bye()
            return
        try:
            assert self._offer is not None
            if response.body or self.negotiated is None:  # else the 18x's answer stands
                answer = parse_sdp(response.body)
                self._configure_media(accept_answer(self._offer, answer, self.phone.codecs))
        except (SdpError, OfferAnswerError) as exc:
            self.log.warning("unusable SDP answer: %s", exc)
            self._set_state(CallState.CONNECTED)
            self._send_bye()
            return
        self._set_state(CallState.CONNECTED)
        self._start_media()
        self.event(protocol.Connected())

    def _on_invite_failure(self, response: Response) -> None:
        status = response.status
        if status in (401, 407) and self.state is not CallState.CANCELLING and self._auth:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            if self._auth.authorize(status, response.headers.get_raw(header)):
                assert self._invite is not None
                cseq = int((self._invite.headers.get("CSeq") or "1").split()[0]) + 1
                self._invite.headers.set("CSeq", f"{cseq} INVITE")
                self._send_invite()
                return
            self.log.error("call rejected: %s", self._auth.failure)
        self._finish(status, response.reason or _REASONS.get(status, ""))

    def _send_cancel(self) -> None:
        """CANCEL our INVITE (RFC 3261 section 9.1): same Via branch, CSeq number, Route."""
        invite = self._sent_invite
        if invite is None or self._destination is None:
            return
        headers = Headers()
        for name in ("Via",):
            headers.add(name, invite.headers.get_raw(name)[0])
        for route in invite.headers.get_raw("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        cseq = (invite.headers.get("CSeq") or "1").split()[0]
        headers.add("CSeq", f"{cseq} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        self.phone.send_request(cancel, self._destination, self._on_cancel_event)

    def _on_cancel_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, TransactionTimeout) and self.state is CallState.CANCELLING:
            self._finish(408, "CANCEL not answered")

    def _send_bye(self) -> None:
        if self.dialog is None:
            return self._finish(200, "hung up")
        bye = self.dialog.create_request("BYE")
        destination = self.phone.destination_for(self.dialog.next_hop())
        self.stream.close()
        self._set_state(CallState.TERMINATING)
        self.phone.send_request(bye, destination, self._on_bye_event)
        return None

    def _on_bye_event(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, TransactionTimeout):
            self._finish(408, "BYE not answered")
        elif event.response.status >= 200:
            self._finish(200, "hung up")

    def on_stray_ok(self, response: Response) -> None:
        """A 2xx retransmission after the INVITE transaction ended: re-ACK it (the ACK of our
        re-INVITE with that CSeq, else the one of our INVITE)."""
        cseq = (response.headers.get("CSeq") or "").split()
        if not 200 <= response.status < 300 or cseq[-1:] != ["INVITE"]:
            return
        if self.session.reack(response):
            return
        if self._ack is not None:
            self.phone.send_raw(*self._ack)

    # -- incoming -------------------------------------------------------------------------------

    def start_incoming(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """Check the offer now, so that a call we cannot take is refused before any handler."""
        self._server_tx = tx
        self._incoming_invite = request
        self.request_uri = request.uri
        self.dialog = Dialog.from_uas(request, self.local_tag)
        self.remote_contact = str(self.dialog.remote_target)
        if request.body:
            offer = parse_sdp(request.body)
            self._answer = self._make_answer(offer, local_host)
        else:
            self._pending_offer = True
            self._answer = self.make_offer(local_host)

    def _contact_header(self) -> tuple[str, str]:
        assert self._server_tx is not None
        return ("Contact", f"<{self.phone.contact_for(self._server_tx.reply_to)}>")

    def _respond_invite(self, status: int, reason: str, body: bytes = b"") -> Response | None:
        assert self._server_tx is not None and self._incoming_invite is not None
        extra = [self._contact_header()] if status < 300 else []
        if 100 < status < 300:
            # A response that creates a dialog copies the request's Record-Route values, in
            # order (RFC 3261 section 12.1.1), so the caller's in-dialog requests take the route.
            extra += [
                ("Record-Route", value)
                for value in self._incoming_invite.headers.get_raw("Record-Route")
            ]
        if status == 200:
            extra.append(("Allow", ALLOW))
        response = make_response(
            self._incoming_invite, status, reason, to_tag=self.local_tag, headers=extra, body=body
        )
        self.phone.respond(self._server_tx, response)
        return response

    def _progress(self) -> None:
        """``PROGRESS``: 183 Session Progress with our SDP answer, and media from now on
        (early media, RFC 3960 section 2), so PLAY and DTMF reach the caller before ANSWER.

        The 183 is not sent reliably (no 100rel, RFC 3262): the INVITE server transaction
        sends it again whenever the caller retransmits the INVITE (RFC 3261 section 17.2.1),
        and PROGRESS may be repeated. ANSWER sends the same SDP in the 200 OK. An INVITE
        without an offer cannot have early media: our offer would need a reliable 18x."""
        state = self.state
        if state not in (CallState.INCOMING, CallState.EARLY_MEDIA):
            return self._error("PROGRESS", f"not possible while the call is {state.value}")
        if self._pending_offer or self._answer is None:
            return self._error("PROGRESS", "the INVITE has no SDP offer to answer early")
        self._respond_invite(183, "Session Progress", self._sdp_bytes(self._answer))
        self._set_state(CallState.EARLY_MEDIA)
        self._start_media()
        return None

    def _answer_call(self) -> None:
        assert self._answer is not None and self._server_tx is not None
        response = self._respond_invite(200, "OK", self._sdp_bytes(self._answer))
        assert response is not None
        self._set_state(CallState.ANSWERING)
        # Retransmit the 2xx until the ACK (RFC 3261 section 13.3.1.4).
        self._ok_bytes = serialize(response)
        self._ok_interval = self.phone.timer_t1
        self._ok_deadline = self.phone.loop.time() + 64 * self.phone.timer_t1
        if not self._server_tx.reply_to.reliable:
            self._ok_timer = self.phone.loop.call_later(self._ok_interval, self._retransmit_ok)
        else:
            self._ok_timer = self.phone.loop.call_later(
                64 * self.phone.timer_t1, self._retransmit_ok
            )

    def _retransmit_ok(self) -> None:
        assert self._server_tx is not None
        if self.state is not CallState.ANSWERING:
            return
        if self.phone.loop.time() >= self._ok_deadline:
            self.log.warning("no ACK for our 200 OK: ending the call")
            self._bye_after_ack = False
            self._set_state(CallState.CONNECTED)
            self._send_bye()
            return
        if self._ok_bytes is not None:
            self.phone.send_raw(self._ok_bytes, self._server_tx.reply_to)
        self._ok_interval = min(self._ok_interval * 2, self.phone.timer_t2)
        self._ok_timer = self.phone.loop.call_later(self._ok_interval, self._retransmit_ok)

    def _cancel_ok_timer(self) -> None:
        if self._ok_timer is not None:
            self._ok_timer.cancel()
            self._ok_timer = None

    def on_ack(self, request: Request) -> None:
        if self.state is CallState.CONNECTED:  # the ACK to our 2xx to a re-INVITE
            self.session.on_ack(request)
            return
        if self.state is not CallState.ANSWERING:
            return
        self._cancel_ok_timer()
        if self._pending_offer:
            self._pending_offer = False
            try:
                assert self._answer is not None
                negotiated = accept_answer(self._answer, parse_sdp(request.body), self.phone.codecs)
                self._configure_media(negotiated)
            except (SdpError, OfferAnswerError) as exc:
                self.log.warning("no usable SDP answer in the ACK: %s", exc)
                self._set_state(CallState.CONNECTED)
                self._send_bye()
                return
        assert self.dialog is not None
        self.dialog.set_state(DialogState.CONFIRMED)
        self._set_state(CallState.CONNECTED)
        if self._bye_after_ack:
            self._send_bye()
            return
        self._start_media()
        self.event(protocol.Connected())

    def on_cancel(self, cancel_tx: ServerTransaction, request: Request) -> None:
        """CANCEL for our INVITE (RFC 3261 section 9.2): 200 to it, 487 to the INVITE."""
        assert self._incoming_invite is not None
        self.phone.respond(cancel_tx, make_response(request, 200, "OK", to_tag=self.local_tag))
        if self.state in (CallState.INCOMING, CallState.EARLY_MEDIA):
            self._respond_invite(487, "Request Terminated")
            self._finish(487, "cancelled by the caller")

    # -- in-dialog requests ---------------------------------------------------------------------

    def on_request(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        assert self.dialog is not None
        try:
            self.dialog.check_request(request)
        except RemoteProtocolError as exc:
            self.phone.respond(tx, make_response(request, exc.status, exc.reason))
            return
        method = request.method
        if method == "BYE":
            self.phone.respond(tx, make_response(request, 200, "OK"))
            if self.state in (CallState.INCOMING, CallState.EARLY_MEDIA):  # early BYE (15.1.2)
                self._respond_invite(487, "Request Terminated")
            self._finish(200, "remote hangup")
        elif method == "INVITE":
            self.session.on_reinvite(request, tx, local_host)
        elif method == "UPDATE":
            self.session.on_update(request, tx, local_host)
        elif method == "INFO":
            self.phone.respond(tx, make_response(request, 200, "OK"))
            self._on_info(request)
        elif method == "MESSAGE":
            self.phone.respond(tx, make_response(request, 200, "OK"))
            text = request.body.decode("utf-8", "replace")
            self.event(protocol.MessageReceived(text))
        elif method == "REFER":
            transfer.on_refer(self, request, tx)
        elif method == "NOTIFY":
            transfer.on_notify(self, request, tx)
        elif method == "OPTIONS":
            self.phone.respond(tx, make_response(request, 200, "OK", headers=[("Allow", ALLOW)]))
        else:
            self.phone.respond(tx, make_response(request, 501, "Not Implemented"))

    # -- MESSAGE out ----------------------------------------------------------------------------

    def _send_message(self, text: str) -> None:
        """``MESSAGE <text>`` (unescaped by the protocol parser): a MESSAGE in the dialog
        (RFC 3428 section 4; text/plain in UTF-8), challenges answered with the call's
        credentials. Success is silent; a final status >= 300 or no answer is reported as
        ``ERROR MESSAGE <status> <reason>``."""
        if self.state is not CallState.CONNECTED or self.dialog is None:
            return self._error("MESSAGE", f"not possible while the call is {self.state.value}")
        body = text.encode("utf-8", "replace")
        InDialogRequest(
            self.phone,
            self.dialog,
            "MESSAGE",
            self.digest_session(),
            self._on_message_final,
            headers=[("Content-Type", "text/plain;charset=UTF-8")],
            body=body,
        ).send()
        self.log.info("MESSAGE sent (%d bytes)", len(body))
        return None

    def _on_message_final(self, request: Request, response: Response | None) -> None:
        if response is not None and response.status < 300:
            return
        if response is None:
            status, reason = 408, "Request Timeout"
        else:
            status, reason = response.status, response.reason
        self.log.warning("MESSAGE not delivered: %d %s", status, reason)
        if not self.ended:
            self._error("MESSAGE", f"{status} {reason}".rstrip())

    # -- DTMF out -------------------------------------------------------------------------------

    def _send_dtmf(self, digits: str) -> None:
        """``DTMF <digits>`` (already validated by the protocol parser): RFC 4733 events when
        telephone-event was negotiated, else one SIP INFO per key (``application/dtmf-relay``,
        the de facto format of RFC 2976 INFO DTMF), each sent once the previous one got its
        final response, so that they arrive in order. INFO is also the way while we may not
        send RTP (the remote put us on hold, RFC 3264 section 8.4). During early media
        (PROGRESS sent, or an 18x with SDP received) only RFC 4733 events can be sent."""
        early = self.state is CallState.EARLY_MEDIA or (
            self.state is CallState.EARLY and self.negotiated is not None
        )
        if not early and (self.state is not CallState.CONNECTED or self.dialog is None):
            return self._error("DTMF", f"not possible while the call is {self.state.value}")
        negotiated = self.negotiated
        if (
            negotiated is not None
            and negotiated.telephone_event_pt is not None
            and negotiated.direction in ("sendrecv", "sendonly")
        ):
            try:
                self.stream.send_dtmf(digits)
            except ValueError as exc:
                return self._error("DTMF", str(exc))
            return None
        if early:
            return self._error("DTMF", "no telephone-event for early media (INFO needs CONNECTED)")
        self._info_digits.extend(digits)
        if not self._info_in_flight:
            self._send_next_info()
        return None

    def _send_next_info(self) -> None:
        if self.state is not CallState.CONNECTED or self.dialog is None:
            self._info_digits.clear()
            return
        if not self._info_digits:
            return
        digit = self._info_digits.popleft()
        request = self.dialog.create_request("INFO")
        request.headers.add("Content-Type", "application/dtmf-relay")
        request.body = f"Signal={digit}\r\nDuration={INFO_DTMF_DURATION_MS}\r\n".encode()
        destination = self.phone.destination_for(self.dialog.next_hop())
        self._info_in_flight = True
        self.phone.send_request(request, destination, self._on_info_response)

    def _on_info_response(self, event: ResponseReceived | TransactionTimeout) -> None:
        if isinstance(event, ResponseReceived) and event.response.status < 200:
            return
        self._info_in_flight = False
        if isinstance(event, TransactionTimeout) or event.response.status >= 300:
            what = (
                "no answer"
                if isinstance(event, TransactionTimeout)
                else f"{event.response.status} {event.response.reason}"
            )
            dropped = len(self._info_digits)
            self._info_digits.clear()
            if self.state is CallState.CONNECTED:
                more = f"; {dropped} more not sent" if dropped else ""
                self._error("DTMF", f"SIP INFO refused by the remote end ({what}){more}")
            return
        self._send_next_info()

    def _on_info(self, request: Request) -> None:
        """DTMF in SIP INFO: application/dtmf-relay (Signal=5) and application/dtmf (5)."""
        kind = content_type(request.headers)
        text = request.body.decode("utf-8", "replace")
        digit = None
        if kind == "application/dtmf-relay":
            for line in text.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
        elif kind == "application/dtmf":
            digit = text.strip()
        if digit:
            try:
                self.event(protocol.DtmfReceived(digit))
            except ValueError:
                self.log.info("ignoring INFO with DTMF %r", digit)


_REASONS = {
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Call Ended")
