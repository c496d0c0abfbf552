"""The actions of a call's session machines (sip/invite_session.py, sip/session_update.py,
sip/refer_session.py): small frozen dataclasses that say what the edge is to do, in order.

They hold no I/O and build no messages: the edge (`siproc.calls`) knows how to send a response
to the INVITE it holds, where the dialog's requests go, and how to apply an SDP answer to the
media. Values that no machine would produce are refused in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from siproc.sip.errors import LocalProtocolError

__all__ = [
    "Action",
    "AnswerChallenge",
    "ApplyMedia",
    "CommandRefused",
    "ConfirmDialog",
    "Ended",
    "Log",
    "ResendAck",
    "ResendOk",
    "Respond",
    "SendAck",
    "SendBye",
    "SendCancel",
    "StartMedia",
    "StopMedia",
    "Tell",
    "TellHandler",
]


class TellHandler(Enum):
    RINGING = "RINGING"
    PROGRESS = "PROGRESS"
    CONNECTED = "CONNECTED"
    HOLD = "HOLD"  # the far end holds us (RFC 3264 section 8.4)
    RESUME = "RESUME"


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the far end's INVITE (UAS): ``sdp`` our SDP in it (18x and 2xx)."""

    status: int
    reason: str
    sdp: bool = False

    def __post_init__(self) -> None:
        if not 100 < self.status < 700:
            raise LocalProtocolError(f"no response {self.status} to an INVITE")


@dataclass(frozen=True, slots=True)
class ResendOk:
    """Send our 2xx to the INVITE again (section 13.3.1.4)."""


@dataclass(frozen=True, slots=True)
class SendAck:
    """ACK the 2xx to our INVITE (section 13.2.2.4); the edge reports `ack_unsent` if it
    cannot reach the dialog's remote target yet."""


@dataclass(frozen=True, slots=True)
class ResendAck:
    """Send the ACK of our INVITE's 2xx again, to a 2xx retransmission."""


@dataclass(frozen=True, slots=True)
class SendCancel:
    """CANCEL our INVITE (section 9.1)."""


@dataclass(frozen=True, slots=True)
class AnswerChallenge:
    """Our INVITE got 401/407: answer it with credentials and send it again
    (`invite_resent`), or report that we cannot (`rejected`)."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class SendBye:
    """End the dialog with BYE; the edge reports `bye_answered`, `bye_timeout` or `bye_unsent`."""

    reason: str


@dataclass(frozen=True, slots=True)
class ApplyMedia:
    """Apply the far end's SDP answer to the stream; the edge then calls `media_applied` or
    `media_failed` (of the session update when ``mid_call``). Always the last action of its
    list."""

    sdp: bytes
    mid_call: bool = False


@dataclass(frozen=True, slots=True)
class StartMedia:
    """Start the stream; ``proven``: the far end showed it is where its SDP says (the ACK)."""

    proven: bool = False


@dataclass(frozen=True, slots=True)
class StopMedia:
    """Close the stream (we hang up: no more audio either way)."""


@dataclass(frozen=True, slots=True)
class ConfirmDialog:
    """The ACK confirmed the dialog (section 12.1.1)."""


@dataclass(frozen=True, slots=True)
class Tell:
    """An event line for the handler."""

    event: TellHandler


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """``ERROR <verb> <reason>`` for a handler command the call cannot carry out now."""

    verb: str
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the call's log (logging lives at the edge)."""

    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The call's signalling is over, with this status and reason (``DISCONNECTED``)."""

    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 100 <= self.status < 700:
            raise LocalProtocolError(f"a call cannot end with status {self.status}")


Action = (
    Respond
    | ResendOk
    | SendAck
    | ResendAck
    | SendCancel
    | AnswerChallenge
    | SendBye
    | ApplyMedia
    | StartMedia
    | StopMedia
    | ConfirmDialog
    | Tell
    | CommandRefused
    | Log
    | Ended
)
