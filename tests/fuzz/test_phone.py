"""Fuzz the whole phone: endpoint, calls, commands and limits (tests/phone_sim.py), in virtual
time, with fake handlers and fake media.

One example is a session: calls come in (real INVITEs, mutated or not, with and without SDP),
the far end goes on in the dialogs siproc created (ACK with good or broken SDP, re-INVITE,
UPDATE, BYE, CANCEL, INFO, MESSAGE, REFER, NOTIFY, each possibly mutated), raw mutated
datagrams arrive, siproc places calls and gets (mutated) responses, handlers send commands
(ANSWER, PROGRESS, HOLD, TRANSFER, garbage, EXIT...), and time passes. Invariants: no exception
escapes into the event loop, nothing is logged at ERROR (an aborted call is a finding too: it
means a bug was caught at a boundary), everything siproc sends parses, every handler's event
lines are single lines, and once the calls' limits have run out (ring timeout, maximum call
duration, then 64*T1 for the BYE and the transactions) every call, transaction, stream and
handler is gone.
"""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from siproc.sip.message import Request
from siproc.sip.transaction import Destination
from tests.fuzz.mutations import inputs, mutations_of, sdp_seeds, sip_seeds
from tests.fuzz.profiles import count, fuzz_settings
from tests.phone_sim import OFFER, PEER, FarEnd, PhoneSim

T1 = 0.5
RING, DURATION = 20, 60
ENV = {
    "SIPROC_RING_TIMEOUT": str(RING),
    "SIPROC_MAX_CALL_DURATION": str(DURATION),
    "SIPROC_CALL_BURST": "1000",
    "SIPROC_MAX_CALLS": "8",
}
DRAIN = RING + DURATION + 3 * 64 * T1 + 10  # virtual seconds until everything must be gone

SCRIPTS = (
    ("ANSWER",),
    ("RINGING", "ANSWER"),
    ("PROGRESS", "ANSWER"),
    ("RINGING",),
    ("PROGRESS",),
    (),
    ("EXIT",),
    ("HANGUP 486",),
    ("ANSWER", "HOLD", "RESUME", "DTMF 12#"),
    ("ANSWER", "TRANSFER sip:carol@127.0.0.1:5099", "MESSAGE hi\\x00"),
    ("ANSWER", "PLAY x.wav", "STOP", "RECORD r.wav", "garbage \x01 line", "HANGUP"),
)
HANDLER_LINES = (
    "ANSWER",
    "RINGING",
    "PROGRESS",
    "HANGUP",
    "HANGUP 603",
    "HOLD",
    "RESUME",
    "DTMF 5",
    "MESSAGE hello",
    "TRANSFER sip:dave@127.0.0.1:5099",
    "TRANSFER sip:dave@no.such.host",
    "PLAY a.wav",
    "STOP",
    "EXIT",
    "\x00\xff junk",
    "",
)
DIALOG_METHODS = ("ACK", "BYE", "INVITE", "UPDATE", "CANCEL", "INFO", "MESSAGE", "REFER",
                  "NOTIFY", "OPTIONS", "PRACK")  # fmt: skip
BODIES = {
    "INVITE": OFFER.replace("a=rtpmap:0", "a=sendonly\r\na=rtpmap:0"),
    "UPDATE": OFFER,
    "ACK": OFFER,
    "INFO": "Signal=5\r\nDuration=100\r\n",
    "MESSAGE": "hello",
    "NOTIFY": "SIP/2.0 200 OK\r\n",
}
EXTRA = {
    "REFER": ("Refer-To: <sip:eve@127.0.0.1:5099>",),
    "NOTIFY": ("Event: refer", "Subscription-State: terminated", "Content-Type: message/sipfrag"),
    "INFO": ("Content-Type: application/dtmf-relay",),
}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


def _response_to(request: Request, status: int, body: str) -> bytes:
    names = ("Via", "From", "Call-ID", "CSeq")
    lines = [f"SIP/2.0 {status} Fuzz"]
    lines += [f"{n}: {v}" for n in names for v in request.headers.get_raw(n)]
    lines.append(f"To: {request.headers.get('To')};tag=farto")
    lines.append("Contact: <sip:far@127.0.0.1:5099>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


STEP = st.sampled_from(("invite", "dialog", "raw", "wait", "handler", "call", "respond"))


@fuzz_settings(cost=2)
@given(st.data())
def test_phone_session(data: st.DataObject) -> None:
    count("calls.phone")
    errors = _Errors()
    logger = logging.getLogger("siproc")
    logger.addHandler(errors)
    level = logger.level
    logger.setLevel(logging.WARNING)
    script = data.draw(st.sampled_from(SCRIPTS), label="handler script")
    try:
        with PhoneSim(ENV, script=lambda env: script, memory_trim=False) as sim:
            fars: list[FarEnd] = []
            for _ in range(data.draw(st.integers(1, 20), label="steps")):
                step = data.draw(STEP)
                if step == "invite":
                    far = FarEnd(sim, source=Destination("udp", "127.0.0.1", 5099))
                    body = data.draw(st.sampled_from(("", OFFER, *map(bytes.decode, sdp_seeds()))))
                    raw = far.request("INVITE", body)
                    sim.receive(data.draw(mutations_of(raw, most=2)), far.source)
                    far.learn_tag()
                    fars.append(far)
                elif step == "dialog" and fars:
                    far = data.draw(st.sampled_from(fars))
                    far.learn_tag()
                    method = data.draw(st.sampled_from(DIALOG_METHODS))
                    body = data.draw(st.sampled_from((BODIES.get(method, ""), "")))
                    in_invite = method in ("ACK", "CANCEL")
                    raw = far.request(
                        method,
                        body,
                        cseq=1 if in_invite else None,
                        branch=far.invite_branch if method == "CANCEL" else None,
                        headers=EXTRA.get(method, ()),
                    )
                    sim.receive(data.draw(mutations_of(raw, most=2)), far.source)
                elif step == "raw":
                    sim.receive(data.draw(inputs(sip_seeds())), PEER)
                elif step == "wait":
                    sim.advance(data.draw(st.sampled_from((0.1, 1.0, 4.0, 33.0))))
                elif step == "handler" and sim.handlers:
                    handler = data.draw(st.sampled_from(sim.handlers))
                    line = data.draw(st.sampled_from(HANDLER_LINES))
                    if line == "EXIT":
                        sim.loop.call_soon(handler._exit)
                    else:
                        sim.loop.call_soon(handler._line, line)
                    sim.advance(0.01)
                elif step == "call":
                    sim.command("CALL sip:bob@127.0.0.1:5099")
                    sim.advance(0.01)
                elif step == "respond":
                    sent = [m for m, d in sim.sent if isinstance(m, Request) and d == PEER]
                    if sent:
                        request = data.draw(st.sampled_from(sent))
                        status = data.draw(st.sampled_from((100, 180, 183, 200, 401, 486, 491)))
                        body = OFFER if status in (183, 200) else ""
                        raw = _response_to(request, status, body)
                        sim.receive(data.draw(mutations_of(raw, most=2)), PEER)
            sim.advance(DRAIN)
            assert sim.loop.errors == [], sim.loop.errors
            assert errors.records == [], errors.records
            assert sim.unparseable_sent == []
            for handler in sim.handlers:
                assert all("\n" not in e and "\r" not in e for e in handler.events)
            assert sim.idle() == [], sim.idle()
    finally:
        logger.removeHandler(errors)
        logger.setLevel(level)
