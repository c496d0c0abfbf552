"""One call: its INVITE dialog, its RTP stream and its handler process.

Theory of operation: a `Call` is created by the phone for `CALL <uri>` (outgoing) or for an
INVITE that starts a dialog (incoming). It owns

- its `InviteSession` (sip/invite_session.py), the sans-I/O machine that decides what the
  signalling does: the call feeds it what happens (responses, requests, handler commands,
  media results, its one timer) and carries out the actions it returns (`_carry_out`), the way
  aioquic's asyncio protocol drives its `QuicConnection`;
- the dialog once there is one, and the messages of the side of the INVITE it plays: the
  client (`outgoing.OutgoingInvite`, ``uac``) or the server (`incoming.IncomingInvite`,
  ``uas``);
- the `MediaStream` (opened before the offer or answer so that the SDP names its port);
- the `HandlerProcess`, whose command lines `commands.py` executes and to which it writes events.

The features of a connected call are parts it delegates to, each the edge of its own machine
in `sip/`: mid-call offers and hold (`session.py`, sip/session_update.py), transfer
(`transfer.py`, sip/refer_session.py), GATHER (`gather.py`, its key collector); and DTMF
(`dtmf.py`), requests it sends in the dialog (`in_dialog.py`), SAY (`say.py`) and STREAM
(`bot_stream.py`). The parts see the call as a `services.CallView`, or as a smaller Protocol
of their own. What stays here is the edge: the handler, media configuration, sending BYE,
ending (one path, `end`), the one timer (at the earliest deadline of the machines), and the
dispatch of requests in the dialog.

The phone watches the call (`PhoneServices.call_changed` at each state change, and at the
start of early media; `call_ended` once the media is closed, just before the handler hears
``DISCONNECTED``): that is where its record (calls/observer.py) comes from.

Ending is two-sided: the SIP side reaches ENDED (final failure, BYE, CANCEL), and the handler
exits. When the SIP side ends first, the handler hears `DISCONNECTED <status> <reason>` and gets
SIGTERM (SIGKILL later); when the handler exits first, the call is ended as fits its state (BYE,
CANCEL, or 480 for an unanswered incoming call, RFC 3261 section 21.4.18). The phone forgets the
call when both sides are done.

The UAS retransmits its 2xx until the ACK arrives (RFC 3261 section 13.3.1.4) and the UAC
re-ACKs retransmitted 2xx (section 13.2.2.4): neither is the transaction layer's job; the
session machine says when.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ParamSpec

from siproc.calls import commands, protocol
from siproc.calls.audio_fds import HandlerPipes
from siproc.calls.bot_stream import CallBot
from siproc.calls.call_state import ALLOW, CallState, reason_phrase
from siproc.calls.dtmf import CallDtmf
from siproc.calls.gather import CallGather
from siproc.calls.handler import HandlerProcess
from siproc.calls.incoming import IncomingInvite
from siproc.calls.media import INSECURE_SRTP_REASON, CallMedia
from siproc.calls.outgoing import OutgoingInvite
from siproc.calls.say import CallSpeech
from siproc.calls.services import CallView, PhoneServices
from siproc.calls.session import SessionUpdates
from siproc.calls.transfer import CallTransfer
from siproc.logs import CallLog, worth_logging
from siproc.sdp.model import SdpError, SessionDescription, parse_sdp
from siproc.sdp.offer_answer import (
    NegotiatedMedia,
    OfferAnswerError,
    accept_answer,
)
from siproc.sdp.sdes import SrtpMode
from siproc.sip.auth import DigestSession
from siproc.sip.dialog import Dialog, DialogState
from siproc.sip.errors import RemoteProtocolError
from siproc.sip.headers import make_response
from siproc.sip.invite_session import (
    Action,
    AnswerChallenge,
    ApplyMedia,
    CommandRefused,
    ConfirmDialog,
    Ended,
    InviteSession,
    Log,
    ResendAck,
    ResendOk,
    Respond,
    Role,
    SendAck,
    SendBye,
    SendCancel,
    StartMedia,
    StopMedia,
    Tell,
    TellHandler,
)
from siproc.sip.message import Request, Response
from siproc.sip.transaction import (
    Destination,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
)
from siproc.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from siproc.net.media_stream import MediaStream

__all__ = [
    "ALLOW",
    "HANDLER_GRACE",
    "INSECURE_SRTP_REASON",
    "TERM_DELAY",
    "Call",
    "CallLog",
    "CallState",
    "PhoneServices",
    "reason_phrase",
]

log = logging.getLogger(__name__)

HANDLER_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
# DISCONNECTED and end of file reach the handler this long before SIGTERM, so that a handler in
# a read loop sees why the call ended even if it does not trap SIGTERM.
TERM_DELAY = 0.2
WARN_REFUSED = 5  # refused handler commands logged one by one; after that at 10, 100, 1000...
P = ParamSpec("P")


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
        stream: MediaStream,
    ) -> None:
        self.phone = phone
        self.outgoing = outgoing
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.local_tag = local_tag
        self.stream = stream
        stream.on_stopped = self.guard(lambda file: self.event(protocol.Stopped(file)))
        stream.on_dtmf = self.guard(lambda digit: self.event(protocol.DtmfReceived(digit)))
        stream.on_rtp_timeout = self.guard(self._rtp_stopped)
        stream.on_error = self.guard(self.report_error)  # errors found after the command
        stream.on_lost = self.guard(self._media_lost)  # (a media worker's stream only)
        self.invite_session = InviteSession(
            Role.UAC if outgoing else Role.UAS,
            t1=phone.timer_t1,
            t2=phone.timer_t2,
            name=call_id[:12],
        )
        self._reported_state = self.invite_session.state  # what observers last heard
        self._timer: asyncio.TimerHandle | None = None  # at invite_session.next_deadline()
        self._timer_at: float | None = None
        self.dialog: Dialog | None = None
        self.handler: HandlerProcess | None = None
        self.handler_done = False
        self.request_uri: str = ""
        self.signalling_host = ""  # the address the INVITE came from or went to
        # Our first signalling hop is TLS (calls/session.py: SDES keys go only over TLS), and
        # the request URI is sips: (RFC 3261 section 8.1.1.8: our Contact is sips: then too)
        self.secure_signalling = False
        self.sips = False
        self.log = CallLog(log, {"call": call_id[:12]})
        stream.log_as(call_id[:12])
        self.started = phone.loop.time()
        self.media_closed = False  # the stream is closed and its recording final
        self._refused = 0
        self._aborting = False
        self._backstop: asyncio.TimerHandle | None = None  # abort(): over within 64*T1
        self._rtp_timeout = 0.0
        self._ending = False  # end() began
        self._cleaned_up = False  # end() closed the media without an error
        self._rtp_limit = False  # SIPROC_RTP_TIMEOUT hung up (the other limits: the session's)
        self._auth: DigestSession | None = None  # the INVITE's, shared by in-dialog requests
        # the side of the INVITE we play (calls/outgoing.py, calls/incoming.py)
        self.uac = OutgoingInvite(self) if outgoing else None
        self.uas: IncomingInvite | None = None  # start_incoming()
        # transfer (calls/transfer.py): ours (TRANSFER), the remote's (REFER), and for a call
        # placed because of a REFER, who referred us and who wants to hear of its progress
        self.transfer = CallTransfer(self)
        self.referred_by = ""
        self.recordings: list[str] = []  # the files RECORD was given, for the call's record
        self.on_state_change: Callable[[CallView], None] | None = None
        # mid-call changes (calls/session.py) and DTMF (calls/dtmf.py)
        self.session = SessionUpdates(self, ALLOW)
        self.dtmf = CallDtmf(self)
        self.media = CallMedia(phone, stream)  # offer/answer (calls/media.py)
        # SAY (calls/say.py: from the first SAY on), GATHER (calls/gather.py), STREAM
        # (calls/bot_stream.py)
        self.speech: CallSpeech | None = None
        self.gather = CallGather(self)
        self.bot = CallBot(self, phone.tls)

    # -- the session machine (sip/invite_session.py) ---------------------------------------------

    @property
    def state(self) -> CallState:
        return self.invite_session.state

    @property
    def end_status(self) -> int | None:
        return self.invite_session.end_status

    @property
    def end_reason(self) -> str:
        return self.invite_session.end_reason

    def now(self) -> float:
        return self.phone.loop.time()

    def feed(self, actions: list[Action]) -> None:
        """Carry out what the session decided, in order; then tell the observers of a state
        change and re-arm the one timer at the session's next deadline."""
        try:
            for action in actions:
                self._carry_out(action)
        finally:
            self._state_changed()
            self.rearm()

    def _state_changed(self) -> None:
        state = self.invite_session.state
        if state is self._reported_state:
            return
        self._reported_state = state
        try:
            self.phone.call_changed(self)
        finally:
            if self.on_state_change is not None:
                self.on_state_change(self)

    def rearm(self) -> None:
        """The one timer of the call, at the earliest deadline of its machines."""
        if self._ending:
            return
        deadlines = (
            self.invite_session.next_deadline(),
            self.session.machine.next_deadline(),
            *self.transfer.deadlines(),
            self.gather.next_deadline(),
        )
        deadline = min((d for d in deadlines if d is not None), default=None)
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.phone.loop.call_at(deadline, self.guard(self._on_timer))

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = self.now()
        self.feed(self.invite_session.handle_timer(now))
        self.session.feed(self.session.machine.handle_timer(now))
        self.transfer.handle_timer(now)
        self.gather.handle_timer(now)

    def _carry_out(self, action: Action) -> None:
        session, now = self.invite_session, self.now()
        match action:
            case Respond(status=status, reason=reason, sdp=sdp):
                assert self.uas is not None
                self.uas.respond(status, reason, sdp)
            case ResendOk():
                assert self.uas is not None
                self.uas.resend_ok()
            case SendAck() | ResendAck():
                assert self.uac is not None
                if self.uac.resend_ack():
                    session.ack_sent()
                else:
                    self.feed(session.ack_unsent(now))
            case SendCancel():
                assert self.uac is not None
                self.uac.send_cancel()
            case AnswerChallenge(status=status, reason=reason):
                assert self.uac is not None
                if self.uac.answer_challenge():
                    self.feed(session.invite_resent(now))
                else:
                    self.feed(session.rejected(now, status, reason))
            case SendBye(reason=reason):
                self._send_bye(reason)
            case ApplyMedia(sdp=sdp):
                self._apply_answer(sdp)
            case StartMedia(proven=proven):
                if proven:
                    self.stream.prove()  # the ACK came: our 2xx reached the far end
                self.start_media()
            case StopMedia():
                self.stream.close()
            case ConfirmDialog():
                if self.dialog is not None and self.dialog.state is DialogState.EARLY:
                    self.dialog.set_state(DialogState.CONFIRMED)
            case Tell(event=event):
                self.event(_EVENTS[event])
            case CommandRefused(verb=verb, reason=reason):
                self.report_error(verb, reason)
            case Log(level=level, message=message):
                self.log.log(level, "%s", message)
            case Ended(status=status, reason=reason):
                self.end(status, reason)

    def _apply_answer(self, sdp: bytes) -> None:
        """The far end's SDP answer to our offer (the INVITE's, or the one in our 2xx)."""
        session, now = self.invite_session, self.now()
        offer = self.uac.offer if self.uac is not None else self.uas.sdp if self.uas else None
        assert offer is not None, "an answer without an offer"
        first = self.negotiated is None
        try:
            negotiated = accept_answer(offer, parse_sdp(sdp), self.phone.codecs)
            self.configure_media(negotiated)
        except (SdpError, OfferAnswerError) as exc:
            return self.feed(session.media_failed(now, str(exc)))
        if first and self.state is CallState.EARLY:
            host, port = negotiated.remote_address
            self.log.info("early media from %s port %d (%s)", host, port, session.early_status)
            self.phone.call_changed(self)  # the call's record notes when early media began
        return self.feed(session.media_applied(now))

    @property
    def remote_contact(self) -> str:
        """The dialog's remote target (RFC 3261 section 12): the far end's latest Contact."""
        return str(self.dialog.remote_target) if self.dialog is not None else ""

    def hold(self, hold: bool) -> None:
        """``HOLD`` (True) or ``RESUME`` (False): calls/session.py."""
        self.session.command(hold)

    def send_dtmf(self, digits: str) -> None:
        """``DTMF <digits>``: calls/dtmf.py."""
        self.dtmf.send(digits)

    def start_transfer(self, text: str) -> None:
        """``TRANSFER <uri>``: calls/transfer.py."""
        self.transfer.start(text)

    @property
    def transfer_target(self) -> str | None:
        """Where this call was transferred (ours, or the far end's REFER), for its record."""
        return self.transfer.target

    def say(self, text: str) -> None:
        """``SAY <text>``: calls/say.py."""
        if self.speech is None:
            self.speech = CallSpeech(self, self.phone.tts, self.phone.loop)
        self.speech.say(text)

    def stop_rendering(self) -> bool:
        """``STOP`` while a SAY is still being rendered: that SAY stops (calls/say.py)."""
        return self.speech is not None and self.speech.stop_pending()

    def start_gather(self, command: protocol.Gather) -> None:
        """``GATHER ...``: calls/gather.py."""
        self.gather.start(command)

    def stream_to_bot(self, command: protocol.Stream) -> None:
        """``STREAM <url> ...`` and ``STREAM STOP``: calls/bot_stream.py."""
        self.bot.command(command)

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

    @property
    def invite(self) -> Request | None:
        """The INVITE that started the call (ours or the peer's)."""
        if self.uac is not None:
            return self.uac.invite
        assert self.uas is not None
        return self.uas.invite

    # -- handler --------------------------------------------------------------------------------

    async def spawn_handler(self) -> None:
        env = self.phone.handler_env(self)
        pipes = HandlerPipes.wanted(self.phone.audio_fds, env)  # SIPROC_AUDIO_FDS: fds 3, 4
        try:
            self.handler = await HandlerProcess.spawn(
                self.phone.handler_argv,
                env,
                None,
                self.guard(lambda line: commands.on_handler_line(self, line)),
                self.guard(self._on_handler_exit),
                self.log,
                on_overlong_line=self.guard(self._on_overlong_line),
                fds=None if pipes is None else pipes.child_fds,
            )
        finally:
            if pipes is not None:
                pipes.hand_over(self.stream, self.handler is not None)
        self.log.info("handler started (pid %d)", self.handler.pid)
        if self.media_closed:  # the call ended while the handler was starting (early CANCEL)
            assert self.end_status is not None
            self.event(protocol.Disconnected(self.end_status, self.end_reason))
            self.handler.close_stdin()
            self.phone.loop.call_later(TERM_DELAY, self._terminate_handler)

    def event(self, event: protocol.Event) -> None:
        if self.handler is not None and not self.handler_done:
            self.handler.send(protocol.format_event(event))
        if isinstance(event, protocol.DtmfReceived):
            self.gather.on_key(event.digit)  # every way a key comes in passes here

    def report_error(self, command: str, reason: str) -> None:
        """Answer a refused or failed command with ERROR; warn in the log, but not once per line
        of a handler that floods garbage: the first few, then at each power of ten."""
        self._refused += 1
        count = self._refused
        if worth_logging(count, WARN_REFUSED):
            more = f" ({count} refused commands so far)" if count > WARN_REFUSED else ""
            self.log.warning("handler command %s refused: %s%s", command, reason, more)
        self.event(protocol.ErrorEvent(command, reason))

    def _on_overlong_line(self, head: str) -> None:
        err = protocol.overlong_line_error(head)
        self.report_error(err.command, err.reason)

    # -- limits (siproc(1), LIMITS) -------------------------------------------------------------

    def start_limits(
        self, ring_timeout: float, max_duration: float, rtp_timeout: float = 0.0
    ) -> None:
        """Arm the call's limits: an incoming call unanswered after ``ring_timeout`` seconds
        gets 480 (RFC 3261 section 21.4.18); any call is hung up after ``max_duration``
        seconds (both are deadlines of the session machine); a connected call without RTP for
        ``rtp_timeout`` seconds (both sides sending, not on hold) is hung up. 0 turns a limit
        off."""
        self._rtp_timeout = rtp_timeout  # watched from CONNECTED on (start_media)
        self.invite_session.set_limits(
            self.now(), ring_timeout=ring_timeout, max_duration=max_duration
        )
        self.rearm()

    def _rtp_stopped(self) -> None:
        if self.state is CallState.CONNECTED:
            self._rtp_limit = True
            self.hangup(reason="no RTP from the far end")

    @property
    def limit_reached(self) -> str:
        """The limit that ended the call, if one did (its record says ended_by timeout):
        ``ring timeout`` or ``maximum call duration`` (the session machine's), ``no RTP``."""
        return self.invite_session.limit_reached or ("no RTP" if self._rtp_limit else "")

    def _on_handler_exit(self, returncode: int) -> None:
        self.handler_done = True
        self.log.info("handler exited with status %d", returncode)
        if not self.ended:
            self.hangup(None, handler_gone=True)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.ended and self.media_closed and (self.handler is None or self.handler_done):
            self.phone.call_finished(self)

    # -- ending ---------------------------------------------------------------------------------

    def hangup(
        self,
        status: int | None = None,
        *,
        handler_gone: bool = False,
        reason: str = "hung up",
    ) -> None:
        """End the call from our side, as fits its state (`InviteSession.hangup`): ``status``
        for an unanswered incoming call, ``reason`` for the BYE of a connected one."""
        self.feed(
            self.invite_session.hangup(self.now(), status, handler_gone=handler_gone, reason=reason)
        )

    def command(self, verb: str, status: int | None = None) -> None:
        """RINGING, PROGRESS, ANSWER or HANGUP from the handler."""
        self.feed(self.invite_session.command(self.now(), verb, status))

    def not_started(self, status: int, reason: str, phrase: str = "") -> None:
        """The call could not start (its handler, or nowhere to send the INVITE)."""
        self.handler_done = self.handler is None or self.handler_done
        self.feed(self.invite_session.not_started(self.now(), status, reason, phrase or reason))

    def guard(self, fn: Callable[P, object]) -> Callable[P, None]:
        """``fn`` as an entry point into this call (a timer, a media or handler callback): what
        it raises unexpectedly ends the call cleanly (:meth:`abort`) instead of wedging it."""

        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                self.abort(exc)

        return run

    def abort(self, exc: BaseException, status: int = 500) -> None:
        """Something unexpected happened in this call (a bug, or peer input that got past the
        parsers): log it with its traceback and end the call from whatever state it is in,
        so that the far end gets its final response or BYE, the stream and its ports close,
        the handler gets DISCONNECTED and SIGTERM, and the slot is free again. If even the
        polite ending fails, the call is ended locally at once."""
        self.log.error(
            "ending the call after an unexpected error: %s: %s",
            type(exc).__name__,
            str(exc)[:200],
            exc_info=exc,
        )
        if self._aborting or self.ended:
            return self._force_end(status, "internal error")
        self._aborting = True
        try:
            self.feed(self.invite_session.abort(self.now(), status))
        except Exception as again:
            self.log.error("could not end the call politely (%s): ending it here", again)
            return self._force_end(status, "internal error")
        # Whatever the far end does now, the call is over within 64*T1 (cancelled once the
        # call has ended by itself).
        if not self.ended:
            self._backstop = self.phone.loop.call_later(
                64 * self.phone.timer_t1, lambda: self._force_end(status, "internal error")
            )
        return None

    def _force_end(self, status: int, reason: str) -> None:
        """End the call here and now, without any more SIP: the last resort of :meth:`abort`."""
        try:
            if not self.ended:
                self.feed(self.invite_session.force_end(status, reason))
            if not self._cleaned_up:
                raise RuntimeError("the call ended, but its media did not close")
        except Exception:
            self.log.exception("ending the call failed; closing its media and handler")
            session = self.invite_session
            if not session.ended:  # the table's FORCE_END row, without its callbacks
                session.force_end(status, reason)
            self._stop_timers()
            self.media_closed = True
            # Each step on its own: one that fails (a recording that cannot be finished on a
            # full disk) must not keep the handler running or the slot taken.
            steps: list[Callable[[], object]] = [
                self._state_changed,
                self.stream.close,
                lambda: self.phone.call_ended(self),
            ]
            if self.handler is not None and not self.handler_done:
                steps.append(lambda: self._last_words(status, reason))
            steps.append(lambda: self.phone.call_finished(self))
            for step in steps:
                try:
                    step()
                except Exception:
                    self.log.exception("ending the call: a step failed")

    def _last_words(self, status: int, reason: str) -> None:
        """DISCONNECTED and SIGTERM to a handler whose call ended the hard way."""
        assert self.handler is not None
        try:
            self.event(protocol.Disconnected(status, reason))
        finally:
            self.handler.terminate(HANDLER_GRACE)

    def end(self, status: int, reason: str) -> None:
        """The one way a call ends: the session machine's `Ended` (a call that is not over
        yet is ended there first, without more SIP). Stops the media, then tells and stops
        the handler (`_media_closed`)."""
        if not self.invite_session.ended:
            self.feed(self.invite_session.force_end(status, reason))
            return
        if self._ending:
            return
        self._ending = True
        self._stop_timers()
        try:
            self._state_changed()  # observers hear of ENDED before the media closes (records)
            self.session.close()
            self.transfer.close()
            self.gather.close()
            self.stream.close()
            if self.dialog is not None and self.dialog.state is not DialogState.TERMINATED:
                self.dialog.set_state(DialogState.TERMINATED)
        finally:  # once ENDED, the handler must hear of it and the slot must free, whatever
            self.stream.when_closed(self._media_closed)  # the cleanup raised
        self._cleaned_up = True

    def _stop_timers(self) -> None:
        for timer in (self._timer, self._backstop):
            if timer is not None:
                timer.cancel()
        self._timer = self._backstop = None
        self._timer_at = None

    def _media_closed(self) -> None:
        """The media is closed and the recording final: log the figures, then tell the
        handler (so that a handler reading its recording on DISCONNECTED finds it whole)."""
        status, reason = self.end_status, self.end_reason
        assert status is not None, "media closed before the call ended"
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
        self.media_closed = True
        self.phone.call_ended(self)  # its record (SIPROC_CDR) is written before DISCONNECTED
        if self.handler is not None and not self.handler_done:
            self.event(protocol.Disconnected(status, reason))
            self.handler.close_stdin()
            self.phone.loop.call_later(TERM_DELAY, self._terminate_handler)
        self._maybe_finished()

    def _media_lost(self) -> None:
        """The media worker of this call died: the call has no audio any more; end it (a
        silent call is no use to a handler, and the log says why)."""
        self.log.error("the call's media worker stopped: hanging up")
        self.report_error("MEDIA", "the media worker stopped; hanging up")
        self.hangup(500)

    def _terminate_handler(self) -> None:
        if self.handler is not None and not self.handler_done:
            self.handler.terminate(HANDLER_GRACE)

    def shutdown(self) -> None:
        """siproc is quitting: end the SIP side as fits, stop the handler."""
        if not self.ended:
            self.hangup(None)
        if self.handler is not None and not self.handler_done:
            self.handler.terminate(HANDLER_GRACE)

    def _send_bye(self, reason: str) -> None:
        """BYE in the dialog (`SendBye`); its answer, timeout or failure goes back to the
        session machine, which ends the call with ``reason``."""
        session = self.invite_session
        if self.dialog is None:  # nothing to end on the far end's side
            return self.feed(session.bye_answered(self.now()))
        bye = self.dialog.create_request("BYE")
        try:
            destination = self.phone.destination_for(self.dialog.next_hop())
        except OSError as exc:  # a Contact whose name does not resolve (yet)
            return self.feed(session.bye_unsent(self.now(), str(exc)))

        def on_event(event: ResponseReceived | TransactionTimeout) -> None:
            if isinstance(event, TransactionTimeout):
                self.feed(session.bye_timeout(self.now()))
            elif event.response.status >= 200:
                self.feed(session.bye_answered(self.now()))

        self.phone.send_request(bye, destination, on_event)
        return None

    # -- media (calls/media.py) ------------------------------------------------------------------

    @property
    def negotiated(self) -> NegotiatedMedia | None:
        return self.media.negotiated

    def configure_media(self, negotiated: NegotiatedMedia) -> None:
        """Apply a negotiation to the stream; an incoming call's first one is guarded until
        the ACK proves the far end."""
        unproven = not self.outgoing and self.state in (CallState.INCOMING, CallState.EARLY_MEDIA)
        self.media.configure(negotiated, latch=self.signalling_host, unproven=unproven)

    def srtp_mode(self, secure: bool | None = None) -> SrtpMode:
        """SIPROC_SRTP for an SDP of this call (`CallMedia.srtp_mode`); ``secure``: whether
        the message that carries it goes over TLS (default: the INVITE's first hop; an
        in-dialog request goes to the remote target, which need not be TLS when that was)."""
        return self.media.srtp_mode(self.secure_signalling if secure is None else secure)

    def contact_for(self, destination: Destination) -> SipUri:
        """Our Contact in this call's requests and responses: sips: in a sips: call."""
        contact = self.phone.contact_for(destination)
        if self.sips and contact.scheme != "sips":
            contact = replace(contact, scheme="sips").without_params("transport")
        return contact

    def start_media(self) -> None:
        if self.negotiated is not None:
            if self._rtp_timeout and self.connected:
                self.stream.watch_rtp(self._rtp_timeout)
            self.stream.start()

    def make_offer(
        self, address: str, *, direction: str = "sendrecv", secure: bool | None = None
    ) -> SessionDescription:
        """Our offer; ``direction`` sendonly/inactive puts the call on hold (RFC 3264 8.4);
        ``secure``: see :meth:`srtp_mode`."""
        secure = self.secure_signalling if secure is None else secure
        return self.media.offer(address, direction=direction, secure=secure)

    def make_answer(
        self,
        offer: SessionDescription,
        address: str,
        *,
        hold: bool = False,
        secure: bool | None = None,
    ) -> SessionDescription:
        """Answer ``offer`` and apply it to the stream; ``hold``: we keep the call on hold;
        ``secure``: see :meth:`srtp_mode`."""
        secure = self.secure_signalling if secure is None else secure
        answer, negotiated = self.media.answer(offer, address, hold=hold, secure=secure)
        self.configure_media(negotiated)
        return answer

    # -- the INVITE (calls/outgoing.py, calls/incoming.py) ---------------------------------------

    def start_outgoing(
        self, target: SipUri, destination: Destination, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Send the INVITE to `target`; `extra` headers go into it."""
        assert self.uac is not None
        self.request_uri = str(target)
        self.secure_signalling = destination.transport == "tls"
        self.sips = target.scheme == "sips"
        self._auth = self.phone.auth_session()
        self.uac.start(target, destination, extra)

    def start_incoming(self, request: Request, tx: ServerTransaction, local_host: str) -> None:
        """Take the far end's INVITE; raises for an offer we cannot answer (see
        `IncomingInvite.start`)."""
        self.secure_signalling = tx.reply_to.transport == "tls"
        self.sips = request.uri.lower().startswith("sips:")
        self.request_uri = request.uri
        self.uas = IncomingInvite(self, request, tx)
        self.dialog = self.uas.start(local_host)
        self.phone.prelocate(self.dialog.next_hop())  # for our BYE or re-INVITE, off the loop
        session = self.invite_session
        session.offer_in_invite = bool(request.body)
        session.reliable = tx.reply_to.reliable

    def on_ack(self, request: Request) -> None:
        if self.state is CallState.CONNECTED:  # the ACK to our 2xx to a re-INVITE
            self.session.on_ack(request)
        elif self.uas is not None:
            self.feed(self.invite_session.ack(self.now(), request.body))

    def on_cancel(self, cancel_tx: ServerTransaction, request: Request) -> None:
        """CANCEL for the far end's INVITE (RFC 3261 section 9.2): 200 to it, whatever the
        session then does with the INVITE (487, or nothing once answered)."""
        response = make_response(request, 200, "OK", to_tag=self.local_tag)
        self.phone.respond(cancel_tx, response)
        self.feed(self.invite_session.cancel(self.now()))

    def on_stray_ok(self, response: Response) -> None:
        """A 2xx retransmission after the INVITE transaction ended: re-ACK it (the ACK of our
        re-INVITE with that CSeq, else the one of our INVITE)."""
        cseq = (response.headers.get("CSeq") or "").split()
        if not 200 <= response.status < 300 or cseq[-1:] != ["INVITE"]:
            return
        if self.session.reack(response):
            return
        if self.uac is not None:
            self.feed(self.invite_session.accepted_again(self.now()))

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
            self.feed(self.invite_session.bye(self.now()))
        elif method == "INVITE":
            self.session.on_reinvite(request, tx, local_host)
        elif method == "UPDATE":
            self.session.on_update(request, tx, local_host)
        elif method == "INFO":
            self.phone.respond(tx, make_response(request, 200, "OK"))
            self.dtmf.on_info(request)
        elif method == "MESSAGE":
            self.phone.respond(tx, make_response(request, 200, "OK"))
            text = request.body.decode("utf-8", "replace")
            self.event(protocol.MessageReceived(text))
        elif method == "REFER":
            self.transfer.on_refer(request, tx)
        elif method == "NOTIFY":
            self.transfer.on_notify(request, tx)
        elif method == "OPTIONS":
            self.phone.respond(tx, make_response(request, 200, "OK", headers=[("Allow", ALLOW)]))
        else:
            self.phone.respond(tx, make_response(request, 501, "Not Implemented"))


_EVENTS: dict[TellHandler, protocol.Event] = {
    TellHandler.RINGING: protocol.RingingEvent(),
    TellHandler.PROGRESS: protocol.ProgressEvent(),
    TellHandler.CONNECTED: protocol.Connected(),
}
