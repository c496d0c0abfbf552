"""sip/refer_session.py: blind transfer in both roles, pure (virtual time, no sockets).

Every test is a scenario over machines made with ``make``; the last tests rerun them all and
compare the rows taken with both tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from siproc.sip.invite_session import CommandRefused, Log
from siproc.sip.message import Headers, Request
from siproc.sip.refer import NOTIFY_WAIT, Sipfrag, active, terminated
from siproc.sip.refer_session import (
    INCOMING_TRANSITIONS,
    OLD_CALL_BYE_WAIT,
    OUTGOING_TRANSITIONS,
    IncomingRefer,
    NewCall,
    OutgoingRefer,
    PlaceCall,
    ReferAction,
    ReferState,
    SendNotify,
    SendRefer,
)
from siproc.sip.session_update import HangUp, Reply
from siproc.sip.uri import SipUri, parse_uri

RS = ReferState
CAROL = "sip:carol@127.0.0.1"
Machines = list[OutgoingRefer | IncomingRefer]
SCENARIOS: list[Callable[[Machines], None]] = []


def scenario(fn: Callable[[Machines], None]) -> Callable[[Machines], None]:
    SCENARIOS.append(fn)
    return fn


def outgoing(made: Machines) -> OutgoingRefer:
    machine = OutgoingRefer()
    made.append(machine)
    return machine


def incoming(made: Machines) -> IncomingRefer:
    machine = IncomingRefer()
    made.append(machine)
    return machine


def quiet(actions: Sequence[ReferAction]) -> list[ReferAction]:
    return [a for a in actions if not isinstance(a, Log)]


def request(method: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> Request:
    h = Headers()
    for name, value in headers:
        h.add(name, value)
    return Request(method, "sip:siproc@127.0.0.1", h, body)


def notify(frag: str | None, state: str = "active;expires=60", event: str = "refer") -> Request:
    headers = [("Event", event), ("Subscription-State", state)]
    if frag is None:
        return request("NOTIFY", headers)
    headers.append(("Content-Type", "message/sipfrag;version=2.0"))
    return request("NOTIFY", headers, f"{frag}\r\n".encode())


def refer(target: str | None = CAROL, referred_by: str | None = None) -> Request:
    headers = [] if target is None else [("Refer-To", f"<{target}>")]
    if referred_by is not None:
        headers.append(("Referred-By", referred_by))
    return request("REFER", headers)


def started(made: Machines) -> OutgoingRefer:
    m = outgoing(made)
    assert m.start(0, connected=True, call_state="connected", target=CAROL) == [SendRefer()]
    assert m.state is RS.REFERRING
    return m


def following(made: Machines) -> OutgoingRefer:
    m = started(made)
    assert m.refer_final(0, 202, "Accepted") == []
    assert m.state is RS.FOLLOWING
    return m


# -- the transferor -----------------------------------------------------------------------------


@scenario
def transferor_trying_then_ok_ends_the_call(made: Machines) -> None:
    m = following(made)
    assert m.next_deadline() == NOTIFY_WAIT
    assert quiet(m.notify(1, notify("SIP/2.0 100 Trying"), "1")) == [Reply(200, "OK")]
    assert m.next_deadline() == 1 + NOTIFY_WAIT  # each NOTIFY shows it is alive
    actions = m.notify(2, notify("SIP/2.0 200 OK", "terminated;reason=noresource"), "1")
    assert quiet(actions) == [Reply(200, "OK"), HangUp("transferred")]
    assert Log(logging.INFO, f"transfer to {CAROL} succeeded: ending the call") in actions
    assert m.state is RS.IDLE and m.next_deadline() is None
    assert m.notify(3, notify("SIP/2.0 200 OK"), "1") == [
        Reply(481, "Subscription Does Not Exist")  # late: the transfer is over
    ]


@scenario
def transferor_notify_before_the_202(made: Machines) -> None:
    m = started(made)
    assert quiet(m.notify(0, notify("SIP/2.0 100 Trying"), "1")) == [Reply(200, "OK")]
    assert m.state is RS.FOLLOWING
    assert m.refer_final(0, 202, "Accepted") == []
    m = started(made)
    assert quiet(m.notify(0, notify("SIP/2.0 200 OK", "terminated"), "1"))[-1] == HangUp(
        "transferred"
    )
    m = started(made)
    assert quiet(m.notify(0, notify("SIP/2.0 486 Busy Here", "terminated"), "1"))[-1] == (
        CommandRefused("TRANSFER", "486 Busy Here")
    )
    m = started(made)
    assert quiet(m.notify(0, notify(None, "terminated;reason=timeout"), "1"))[-1] == (
        CommandRefused(
            "TRANSFER",
            "487 Request Terminated (subscription timeout before a final status)",
        )
    )


@scenario
def transferor_failures(made: Machines) -> None:
    m = following(made)
    assert quiet(m.notify(0, notify("SIP/2.0 603 Decline", "terminated"), "1")) == [
        Reply(200, "OK"),
        CommandRefused("TRANSFER", "603 Decline"),
    ]
    m = following(made)
    m.notify(0, notify("SIP/2.0 180 Ringing"), "1")
    assert quiet(m.notify(0, notify(None, "terminated;reason=noresource"), "1"))[-1] == (
        CommandRefused(
            "TRANSFER",
            "487 Request Terminated (subscription noresource before a final status)",
        )
    )
    m = following(made)
    assert m.handle_timer(NOTIFY_WAIT - 1) == []
    assert quiet(m.handle_timer(NOTIFY_WAIT)) == [
        CommandRefused(
            "TRANSFER", f"408 Request Timeout (no final NOTIFY within {NOTIFY_WAIT:g} s)"
        )
    ]
    m = started(made)
    assert quiet(m.refer_final(0, 403, "Forbidden")) == [
        CommandRefused("TRANSFER", "403 Forbidden")
    ]
    m = started(made)
    assert quiet(m.refer_final(0, None)) == [
        CommandRefused("TRANSFER", "408 Request Timeout (REFER not answered)")
    ]
    m = started(made)  # a NOTIFY came first, then the REFER is rejected after all
    m.notify(0, notify("SIP/2.0 100 Trying"), "1")
    assert quiet(m.refer_final(0, 500, ""))[-1] == CommandRefused("TRANSFER", "500 REFER rejected")
    assert m.state is RS.IDLE


@scenario
def transferor_refusals(made: Machines) -> None:
    m = outgoing(made)
    assert m.start(0, connected=False, call_state="early") == [
        CommandRefused("TRANSFER", "not possible while the call is early")
    ]
    assert m.start(0, connected=True, call_state="connected", target_error="bad") == [
        CommandRefused("TRANSFER", "not a SIP URI: bad")
    ]
    m = started(made)
    assert m.start(0, connected=True, call_state="connected") == [
        CommandRefused("TRANSFER", "a transfer is already in progress")
    ]
    assert m.unsent(0) == [CommandRefused("TRANSFER", "the dialog is gone")]
    assert m.state is RS.IDLE


@scenario
def transferor_answers_bad_notifies(made: Machines) -> None:
    m = following(made)
    assert m.notify(0, notify("SIP/2.0 100 Trying", event="presence"), "1") == [
        Reply(489, "Bad Event")
    ]
    assert m.notify(0, notify("SIP/2.0 100 Trying", event="refer;id=9"), "1") == [
        Reply(481, "Subscription Does Not Exist")
    ]
    [bad] = m.notify(0, notify("HTTP/1.1 200 OK"), "1")
    assert isinstance(bad, Reply) and bad.status == 400
    assert m.state is RS.FOLLOWING  # nothing changed
    assert quiet(m.notify(0, notify("SIP/2.0 100 Trying", event="refer;id=1"), "1")) == [
        Reply(200, "OK")
    ]
    stray = outgoing(made)
    assert stray.notify(0, notify("SIP/2.0 100 Trying"), None) == [
        Reply(481, "Subscription Does Not Exist")
    ]


# -- the transferee -----------------------------------------------------------------------------


def allow_all(target: SipUri) -> bool:
    return True


def accepted(
    made: Machines, referred_by: str | None = None, expect: str = "sip:bob@b"
) -> IncomingRefer:
    m = incoming(made)
    actions = m.refer(
        0, refer(referred_by=referred_by), connected=True, call_state="connected",
        remote="sip:bob@b", allowed=allow_all,
    )  # fmt: skip
    target = parse_uri(CAROL)
    assert isinstance(target, SipUri)
    assert quiet(actions) == [
        Reply(202, "Accepted"),
        SendNotify(Sipfrag(100, "Trying"), active()),
        PlaceCall(target, expect),
    ]
    assert m.state is RS.PLACING
    return m


@scenario
def transferee_reports_in_order_one_notify_at_a_time(made: Machines) -> None:
    m = accepted(made)
    assert m.placed(0, True) == []
    assert m.new_call(0, NewCall.RINGING) == []  # queued: the 100 is still in flight
    assert m.new_call(0, NewCall.RINGING) == []  # once
    assert m.notify_final(0, 200, "OK") == [SendNotify(Sipfrag(180, "Ringing"), active())]
    assert m.new_call(10, NewCall.CONNECTED) == []
    assert m.state is RS.IDLE
    assert m.notify_final(0, 200, "OK") == [SendNotify(Sipfrag(200, "OK"), terminated())]
    assert m.notify_final(0, 200, "OK") == []
    assert m.next_deadline() == 10 + OLD_CALL_BYE_WAIT
    assert m.handle_timer(10 + OLD_CALL_BYE_WAIT, connected=False) == []  # the transferor did
    m = accepted(made)
    m.placed(0, True)
    m.notify_final(0, 200, "OK")
    assert m.new_call(0, NewCall.CONNECTED) == [SendNotify(Sipfrag(200, "OK"), terminated())]
    assert quiet(m.handle_timer(OLD_CALL_BYE_WAIT, connected=True)) == [HangUp()]


@scenario
def transferee_final_status_replaces_queued_progress(made: Machines) -> None:
    m = accepted(made)
    m.placed(0, True)
    m.new_call(0, NewCall.RINGING)
    assert m.new_call(0, NewCall.ENDED, 486, "Busy\r\n Here") == []
    assert m.notify_final(0, 200, "OK") == [
        SendNotify(Sipfrag(486, "Busy Here"), terminated())  # not the 180 queued before
    ]
    m = accepted(made)  # ended without a failure status (cancelled): 487
    m.placed(0, True)
    m.notify_final(0, 200, "OK")
    assert m.new_call(0, NewCall.ENDED, 200, "hung up") == [
        SendNotify(Sipfrag(487, "hung up"), terminated())
    ]


@scenario
def transferee_new_call_not_placed(made: Machines) -> None:
    m = accepted(made)
    m.notify_final(0, 200, "OK")
    assert m.placed(0, False) == [SendNotify(Sipfrag(503, "Service Unavailable"), terminated())]
    assert m.state is RS.IDLE


@scenario
def transferee_stops_reporting_when_refused(made: Machines) -> None:
    m = accepted(made)
    m.placed(0, True)
    m.new_call(0, NewCall.RINGING)
    assert quiet(m.notify_final(0, 481, "Subscription Does Not Exist")) == []
    assert m.new_call(0, NewCall.CONNECTED) == []  # nobody listens
    m = accepted(made)
    m.placed(0, True)
    m.notify_unsent(0)
    assert m.new_call(0, NewCall.RINGING) == []
    m = accepted(made)
    assert quiet(m.notify_final(0, None)) == []


@scenario
def transferee_refusals(made: Machines) -> None:
    m = incoming(made)

    def refused(machine: IncomingRefer, req: Request, **kwargs: Any) -> list[ReferAction]:
        args: dict[str, Any] = {
            "connected": True, "call_state": "connected", "remote": "sip:bob@b",
            "allowed": allow_all, **kwargs,
        }  # fmt: skip
        return quiet(machine.refer(0, req, **args))

    assert refused(m, refer(), connected=False, call_state="early") == [
        Reply(403, "Forbidden (the call is early)")
    ]
    [no_target] = refused(m, refer(None))
    assert isinstance(no_target, Reply) and no_target.status == 400
    assert refused(m, refer(), allowed=lambda target: False) == [
        Reply(403, "Forbidden (transfer target not allowed)")
    ]
    m = accepted(made)
    assert refused(m, refer()) == [
        Reply(491, "Request Pending (a transfer is already in progress)")
    ]
    m.placed(0, True)
    assert refused(m, refer())[0] == Reply(
        491, "Request Pending (a transfer is already in progress)"
    )


@scenario
def transferee_takes_referred_by_from_the_refer(made: Machines) -> None:
    accepted(made, referred_by="<sip:boss@b>", expect="sip:boss@b")
    accepted(made, referred_by="<<<", expect="sip:bob@b")  # unparseable: the far end


# -- the rules around the tables ----------------------------------------------------------------


@pytest.mark.parametrize("fn", SCENARIOS, ids=[fn.__name__ for fn in SCENARIOS])
def test_scenario(fn: Callable[[Machines], None]) -> None:
    fn([])


def test_every_row_of_both_tables_is_exercised() -> None:
    made: Machines = []
    for fn in SCENARIOS:
        fn(made)
    out = {r for m in made if isinstance(m, OutgoingRefer) for r in m.taken}
    inc = {r for m in made if isinstance(m, IncomingRefer) for r in m.taken}
    assert sorted(f"{s.name}+{t.name}" for s, t in set(OUTGOING_TRANSITIONS) - out) == []
    assert sorted(f"{s.name}+{t.name}" for s, t in set(INCOMING_TRANSITIONS) - inc) == []
