"""What a call does for each command line of its handler (`protocol.py` parses the lines).

Theory of operation: `on_handler_line` parses one line and `execute` carries the command out on
the call (seen as a `services.CallView`); a command that is not possible now is answered
``ERROR <verb> <reason>`` (`report_error`) and changes nothing. Commands that are whole
features of their own go where they are decided, through a method of the call: RINGING,
PROGRESS, ANSWER and HANGUP to the call's INVITE session (sip/invite_session.py), HOLD and
RESUME to `session.py`, DTMF to `dtmf.py`, TRANSFER to `transfer.py`, SAY to `say.py`, GATHER
to `gather.py`, STREAM to `bot_stream.py`; MESSAGE, PLAY, STOP, RECORD and the sound-card
bridges are done here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siproc.calls import protocol
from siproc.calls.call_state import CallState
from siproc.calls.in_dialog import InDialogRequest
from siproc.media.player import MediaFileError
from siproc.media.recorder import RecordFileError
from siproc.sdp.model import SdpError
from siproc.sdp.offer_answer import OfferAnswerError
from siproc.sip.errors import ParseError, RemoteProtocolError
from siproc.sip.message import Request, Response

if TYPE_CHECKING:
    from siproc.calls.services import CallView

__all__ = ["execute", "on_handler_line"]


def on_handler_line(call: CallView, line: str) -> None:
    """One line from the handler's stdout: parse it and carry it out, or answer ERROR."""
    try:
        command = protocol.parse_command(line)
    except protocol.CommandError as exc:
        call.report_error(exc.command, exc.reason)
        return
    if command is None:
        return
    try:
        execute(call, command)
    except (ParseError, RemoteProtocolError, OfferAnswerError, SdpError, OSError) as exc:
        call.log.exception("command %s failed", type(command).__name__)
        call.report_error(type(command).__name__.upper(), str(exc))


def execute(call: CallView, command: protocol.Command) -> None:
    state = call.state
    match command:
        case protocol.Ringing():
            call.command("RINGING")
        case protocol.Progress():
            call.command("PROGRESS")
        case protocol.Answer():
            call.command("ANSWER")
        case protocol.Hold():
            call.hold(True)
        case protocol.Resume():
            call.hold(False)
        case protocol.Message(text=text):
            _send_message(call, text)
        case protocol.Hangup(status=status):
            call.command("HANGUP", status)
        case protocol.Play(file=file):
            if state in (CallState.ENDED, CallState.TERMINATING):
                return call.report_error("PLAY", f"the call is {state.value}")
            try:
                call.stream.play(file)
            except MediaFileError as exc:
                return call.report_error("PLAY", str(exc))
        case protocol.Stop():
            if call.stop_rendering():  # a SAY not playing yet (calls/say.py)
                return None
            if call.stream.stop_last() is None:
                return call.report_error("STOP", "nothing is playing")
        case protocol.Dtmf(digits=digits):
            call.send_dtmf(digits)
        case protocol.Record(file=None):
            if call.stream.stop_recording() is None:
                return call.report_error("RECORD", "nothing is being recorded")
        case protocol.Record(file=str() as file, stereo=stereo):
            if call.stream.closed:
                return call.report_error("RECORD", f"the call is {state.value}")
            try:
                call.stream.start_recording(file, stereo)
            except RecordFileError as exc:
                return call.report_error("RECORD", str(exc))
            call.recordings.append(file)
        case protocol.Transfer(uri=uri):
            call.start_transfer(uri)
        case protocol.Aplay() | protocol.Arecord() | protocol.Astop():
            _sound_card(call, command)
        case protocol.Say(text=text):
            call.say(text)
        case protocol.Gather():
            call.start_gather(command)
        case protocol.Stream():
            call.stream_to_bot(command)
        case _:
            verb = protocol.format_command(command).split(" ", 1)[0]
            call.report_error(verb, "not supported by this version of siproc")
    return None


def _sound_card(
    call: CallView, command: protocol.Aplay | protocol.Arecord | protocol.Astop
) -> None:
    """APLAY / ARECORD / ASTOP (net/alsa.py): the bridges are taps of the stream, which
    stops them when the call ends. Opening happens off the loop: a device that cannot be
    opened is reported later, as ``ERROR <verb> <reason>``."""
    verb = type(command).__name__.upper()
    if not isinstance(command, protocol.Astop) and call.stream.closed:
        return call.report_error(verb, f"the call is {call.state.value}")
    return call.stream.sound_card(verb, command.device)  # failures: stream.on_error


def _send_message(call: CallView, text: str) -> None:
    """``MESSAGE <text>`` (unescaped by the protocol parser): a MESSAGE in the dialog
    (RFC 3428 section 4; text/plain in UTF-8), challenges answered with the call's
    credentials. Success is silent; a final status >= 300 or no answer is reported as
    ``ERROR MESSAGE <status> <reason>``."""
    if call.state is not CallState.CONNECTED or call.dialog is None:
        return call.report_error("MESSAGE", f"not possible while the call is {call.state.value}")

    def on_final(request: Request, response: Response | None) -> None:
        if response is not None and response.status < 300:
            return
        if response is None:
            status, reason = 408, "Request Timeout"
        else:
            status, reason = response.status, response.reason
        call.log.warning("MESSAGE not delivered: %d %s", status, reason)
        if not call.ended:
            call.report_error("MESSAGE", f"{status} {reason}".rstrip())

    body = text.encode("utf-8", "replace")
    InDialogRequest(
        call.phone,
        call.dialog,
        "MESSAGE",
        call.digest_session(),
        on_final,
        headers=[("Content-Type", "text/plain;charset=UTF-8")],
        body=body,
    ).send()
    call.log.info("MESSAGE sent (%d bytes)", len(body))
    return None
