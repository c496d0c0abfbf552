"""calls/call.py: a `Call` as the edge of its INVITE session, over the virtual-time phone
(tests/phone_sim.py): what goes on the wire and what the handler hears, for the paths that
only the session machine's unit tests showed before (2xx retransmission, BYE before the ACK,
CANCEL racing the 200, glare, transfer progress)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from siproc.sip.headers import make_response
from siproc.sip.message import Request, Response, serialize
from siproc.sip.transaction import Destination
from tests.phone_sim import OFFER, FakeStream, FarEnd, PhoneSim

T1 = 0.5
BOB = Destination("udp", "127.0.0.1", 5098)


def script(*lines: str) -> object:
    return lambda env: lines


def sent_requests(sim: PhoneSim, method: str) -> list[Request]:
    return [m for m, _ in sim.sent if isinstance(m, Request) and m.method == method]


def statuses(sim: PhoneSim, far: FarEnd, method: str = "INVITE") -> list[int]:
    return [
        r.status
        for r in sim.responses(far.call_id)
        if (r.headers.get("CSeq") or "").endswith(method)
    ]


def answer(sim: PhoneSim, request: Request, status: int, reason: str, **kwargs: object) -> None:
    response = make_response(request, status, reason, **kwargs)  # type: ignore[arg-type]
    sim.receive(serialize(response), BOB)


def events(sim: PhoneSim, n: int = 0) -> Sequence[str]:
    return sim.handlers[n].events


def handler_says(sim: PhoneSim, line: str, n: int = 0) -> None:
    """A command line from the handler, now (the scripts run before the ACK comes)."""
    sim._run(lambda: sim.handlers[n].on_line(line))
    sim.advance(0.1)


# -- the callee's side ----------------------------------------------------------------------


def test_the_2xx_is_retransmitted_until_the_ack() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1 + 3 * T1 + 0.1)  # the 200, then again at T1 and 3*T1
        assert statuses(sim, far).count(200) == 3
        far.learn_tag()
        far.send("ACK", cseq=1)
        sim.advance(20)
        assert statuses(sim, far).count(200) == 3
        assert events(sim) == ["CONNECTED"]
        assert sent_requests(sim, "BYE") == []


def test_bye_before_the_ack_ends_the_call_and_the_retransmissions() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        far.learn_tag()
        far.send("BYE")
        sim.advance(0.1)
        oks = statuses(sim, far).count(200)
        assert statuses(sim, far, "BYE") == [200]
        assert events(sim)[-1] == "DISCONNECTED 200 remote hangup"
        sim.advance(64 * T1 + 1)
        assert statuses(sim, far).count(200) == oks
        assert sent_requests(sim, "BYE") == []
        assert sim.idle() == []


def test_cancel_racing_the_200_gets_200_and_the_call_goes_on() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        far.send("CANCEL", cseq=1, branch=far.invite_branch)
        sim.advance(0.1)
        assert statuses(sim, far, "CANCEL") == [200]
        assert 487 not in statuses(sim, far)
        far.learn_tag()
        far.send("ACK", cseq=1)
        sim.advance(0.1)
        assert events(sim) == ["CONNECTED"]


def test_hangup_while_the_200_waits_for_its_ack_sends_bye_after_it() -> None:
    with PhoneSim(script=script("ANSWER", "HANGUP")) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        assert sent_requests(sim, "BYE") == []
        far.learn_tag()
        far.send("ACK", cseq=1)
        sim.advance(0.1)
        [bye] = sent_requests(sim, "BYE")
        sim.receive(serialize(make_response(bye, 200, "OK")))
        sim.advance(0.1)
        assert events(sim) == ["DISCONNECTED 200 hung up"]  # never CONNECTED


def test_the_handler_exiting_before_the_answer_gives_480() -> None:
    with PhoneSim(script=script("RINGING", "EXIT")) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(1)
        assert statuses(sim, far)[-1] == 480
        far.send("ACK", cseq=1, branch=far.invite_branch)
        sim.advance(64 * T1)
        assert sim.idle() == []


def test_commands_the_session_refuses_are_errors() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "RINGING")
        refused = "ERROR RINGING not possible while the call is connected"
        assert events(sim) == ["CONNECTED", refused]


# -- glare (RFC 3261 section 14) -------------------------------------------------------------


def test_our_reinvite_answered_491_is_sent_again_after_the_back_off() -> None:
    """We did not place the call: 0-2 s (section 14.1), drawn from the phone's rng."""
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "HOLD")
        [first] = [r for r in sent_requests(sim, "INVITE")]
        sim.receive(serialize(make_response(first, 491, "Request Pending")))
        sim.advance(2.1)
        cseqs = {r.headers.get("CSeq") for r in sent_requests(sim, "INVITE")}
        assert len(cseqs) == 2  # (the first one's UDP retransmissions have its CSeq)


def test_a_reinvite_crossing_ours_gets_491() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "HOLD")
        assert len(sent_requests(sim, "INVITE")) == 1  # ours, not answered yet
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        assert statuses(sim, far)[-1] == 491


# -- the caller's side ----------------------------------------------------------------------


def call_bob(sim: PhoneSim) -> Request:
    sim.command("CALL sip:bob@127.0.0.1:5098")
    sim.advance(0.1)
    [invite] = sent_requests(sim, "INVITE")
    return invite


def bob_answers(invite: Request) -> Response:
    """Bob's 200 to our INVITE, with his Contact and SDP answer."""
    return make_response(
        invite, 200, "OK", to_tag="bob", headers=[("Contact", "<sip:bob@127.0.0.1:5098>")],
        body=OFFER.encode(), content_type="application/sdp",
    )  # fmt: skip


def test_an_outgoing_call_is_acked_and_its_2xx_reacked() -> None:
    with PhoneSim(script=script()) as sim:
        invite = call_bob(sim)
        answer(sim, invite, 180, "Ringing", to_tag="bob")
        ok = bob_answers(invite)
        sim.receive(serialize(ok), BOB)
        sim.advance(0.1)
        assert events(sim) == ["RINGING", "CONNECTED"]
        assert len(sent_requests(sim, "ACK")) == 1
        sim.receive(serialize(ok), BOB)  # the far end did not see our ACK
        sim.advance(0.1)
        assert len(sent_requests(sim, "ACK")) == 2


def test_a_2xx_racing_our_cancel_is_acked_then_ended_with_bye() -> None:
    with PhoneSim(script=script("HANGUP")) as sim:
        invite = call_bob(sim)
        assert sent_requests(sim, "CANCEL") == []  # no CANCEL before a provisional (9.1)
        answer(sim, invite, 180, "Ringing", to_tag="bob")
        answer(sim, invite, 183, "Session Progress", to_tag="bob")
        sim.advance(0.1)
        assert len(sent_requests(sim, "CANCEL")) == 1  # one, however many 18x came
        ok = bob_answers(invite)
        sim.receive(serialize(ok), BOB)
        sim.advance(0.1)
        assert len(sent_requests(sim, "ACK")) == 1
        [bye] = sent_requests(sim, "BYE")
        answer(sim, bye, 200, "OK")
        sim.advance(1)
        assert events(sim) == ["DISCONNECTED 200 hung up"]  # hung up before the 180


def test_a_rejected_call_ends_with_its_status() -> None:
    with PhoneSim(script=script()) as sim:
        invite = call_bob(sim)
        answer(sim, invite, 486, "Busy Here", to_tag="bob")
        sim.advance(1)
        assert events(sim) == ["DISCONNECTED 486 Busy Here"]


# -- transfer (RFC 3515) --------------------------------------------------------------------


def notify(far: FarEnd, sipfrag: str, state: str, cseq_of_refer: str) -> bytes:
    body = sipfrag + "\r\n"
    raw = far.request(
        "NOTIFY",
        headers=[
            f"Event: refer;id={cseq_of_refer}",
            f"Subscription-State: {state}",
            "Content-Type: message/sipfrag",
        ],
    )
    head, _, _ = raw.partition(b"\r\n\r\n")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    return head + b"\r\n\r\n" + body.encode()


def test_transfer_notifies_trying_then_ok_end_the_call_as_transferred() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "TRANSFER sip:carol@127.0.0.1:5097")
        [refer] = sent_requests(sim, "REFER")
        sim.receive(serialize(make_response(refer, 202, "Accepted")))
        cseq = (refer.headers.get("CSeq") or "").split()[0]
        sim.receive(notify(far, "SIP/2.0 100 Trying", "active;expires=60", cseq))
        sim.advance(0.1)
        assert sent_requests(sim, "BYE") == []
        sim.receive(notify(far, "SIP/2.0 200 OK", "terminated;reason=noresource", cseq))
        sim.advance(0.1)
        assert statuses(sim, far, "NOTIFY") == [200, 200]
        [bye] = sent_requests(sim, "BYE")
        sim.receive(serialize(make_response(bye, 200, "OK")))
        sim.advance(1)
        assert events(sim)[-1] == "DISCONNECTED 200 transferred"


def test_a_failed_transfer_keeps_the_call() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "TRANSFER sip:carol@127.0.0.1:5097")
        [refer] = sent_requests(sim, "REFER")
        sim.receive(serialize(make_response(refer, 202, "Accepted")))
        cseq = (refer.headers.get("CSeq") or "").split()[0]
        sim.receive(notify(far, "SIP/2.0 486 Busy Here", "terminated;reason=noresource", cseq))
        sim.advance(0.1)
        assert events(sim)[-1] == "ERROR TRANSFER 486 Busy Here"
        assert sent_requests(sim, "BYE") == []
        assert [c.state.value for c in sim.phone.calls] == ["connected"]


def test_a_reinvite_answered_only_100_is_cancelled_when_the_call_ends() -> None:
    """Found by the whole-phone fuzz target: our re-INVITE got 100 Trying and nothing more, so
    its INVITE transaction sat in Proceeding (no Timer B there) for ever after the call
    ended. Now the call CANCELs it as it ends (RFC 3261 section 9.1), and 64*T1 later the
    transaction is gone."""
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        handler_says(sim, "HOLD")
        [reinvite] = {r.headers.get("CSeq"): r for r in sent_requests(sim, "INVITE")}.values()
        sim.receive(serialize(make_response(reinvite, 100, "Trying")))
        far.send("BYE")
        sim.advance(0.1)
        [cancel] = sent_requests(sim, "CANCEL")
        assert cancel.headers.get("Via") == reinvite.headers.get("Via")
        sim.advance(64 * T1 + 1)
        assert sim.idle() == []


def test_a_transferred_call_with_an_unusable_answer_is_not_reported_as_200() -> None:
    """The new call of a REFER whose 2xx had an SDP answer we cannot use was CONNECTED for a
    moment before its BYE: the transferee told the transferor ``200 OK``, and the transferor
    hung up on a transfer that had failed. Now the new call never connects: 487."""
    carol = Destination("udp", "127.0.0.1", 5097)
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        far.send("REFER", headers=["Refer-To: <sip:carol@127.0.0.1:5097>"])
        sim.advance(0.1)
        [invite] = [m for m, d in sim.sent if isinstance(m, Request) and d == carol]
        bad = OFFER.replace("RTP/AVP 0 101", "RTP/AVP 126").replace("a=rtpmap:0 PCMU", "a=x:0")
        ok = make_response(
            invite, 200, "OK", to_tag="carol", headers=[("Contact", "<sip:carol@127.0.0.1:5097>")],
            body=bad.encode(), content_type="application/sdp",
        )  # fmt: skip
        sim.receive(serialize(ok), carol)
        sim.advance(0.1)
        [bye] = [m for m, d in sim.sent if isinstance(m, Request) and m.method == "BYE"]
        sim.receive(serialize(make_response(bye, 200, "OK")), carol)
        for _ in range(3):  # answer each NOTIFY as it comes (one in flight at a time)
            for notify in sent_requests(sim, "NOTIFY"):
                sim.receive(serialize(make_response(notify, 200, "OK")))
            sim.advance(0.1)
        frags = [n.body.split(b"\r\n")[0] for n in sent_requests(sim, "NOTIFY")]
        assert frags[0] == b"SIP/2.0 100 Trying"
        assert b"SIP/2.0 200 OK" not in frags
        assert frags[-1].startswith(b"SIP/2.0 487")


# -- main's features through the call's edge (GATHER, STREAM, limits) ------------------------


def test_gather_times_out_on_the_calls_one_timer() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        stream = FakeStream.instances[-1]
        handler_says(sim, "GATHER max=4 timeout=2")
        sim._run(lambda: stream.on_dtmf("1"))  # type: ignore[misc]
        sim.advance(1.9)
        assert events(sim) == ["CONNECTED", "DTMF 1"]
        sim.advance(0.2)  # 2 s after the key, not after the GATHER
        assert events(sim) == ["CONNECTED", "DTMF 1", "GATHERED 1 timeout"]
        handler_says(sim, "GATHER timeout=2")
        far.send("BYE")
        sim.advance(5)  # the call ended: the GATHER ends without a word
        assert events(sim)[-1] == "DISCONNECTED 200 remote hangup"
        assert not any(e.startswith("GATHERED") for e in events(sim)[3:])


def test_stream_goes_to_the_calls_stream_whatever_its_kind() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        stream = FakeStream.instances[-1]
        handler_says(sim, "STREAM STOP")
        handler_says(sim, "STREAM wss://bot.example/media lang=en")
        assert stream.bot is not None
        spec, report = stream.bot
        assert spec.call_sid == far.call_id and spec.url == "wss://bot.example/media"
        assert dict(spec.parameters) == {
            "lang": "en",
            "remoteUri": "sip:alice@127.0.0.1",
            "direction": "inbound",
        }
        sim._run(lambda: report("CONNECTED", spec.stream_sid))
        handler_says(sim, "STREAM ws://other.example/")
        handler_says(sim, "STREAM STOP")
        sim._run(lambda: report("STOPPED", "late words of the stopped stream"))
        assert events(sim)[1:] == [
            "ERROR STREAM no stream is running",
            f"STREAM CONNECTED {spec.stream_sid}",
            f"ERROR STREAM a stream is running ({spec.stream_sid})",
            "STREAM STOPPED handler",
        ]


def test_limits_are_what_ended_the_call_in_its_record(tmp_path: Path) -> None:
    """The session machine's limits (ring timeout, maximum duration) reach the call's record
    as ended_by timeout; a HANGUP of a connected call is the handler's."""
    cdr = tmp_path / "cdr"
    env = {"SIPROC_CDR": str(cdr), "SIPROC_RING_TIMEOUT": "3", "SIPROC_MAX_CALL_DURATION": "60"}
    with PhoneSim(env, script=script("RINGING")) as sim:
        FarEnd(sim).send("INVITE", OFFER)
        sim.advance(3.1)
        assert events(sim)[-1] == "DISCONNECTED 480 no answer"
    with PhoneSim(env) as sim:
        FarEnd(sim, "bob").connect()
        sim.advance(60)
        [bye] = sent_requests(sim, "BYE")
        sim.receive(serialize(make_response(bye, 200, "OK")))
        sim.advance(0.1)
        assert events(sim)[-1] == "DISCONNECTED 200 maximum call duration"
    with PhoneSim(env) as sim:
        FarEnd(sim, "carol").connect()
        handler_says(sim, "HANGUP")
        sim.receive(serialize(make_response(sent_requests(sim, "BYE")[0], 200, "OK")))
        sim.advance(0.1)
    records = [json.loads(line) for line in cdr.read_text().splitlines()]
    assert [(r["status"], r["ended_by"], r["reason"]) for r in records] == [
        (480, "timeout", "no answer"),
        (200, "timeout", "maximum call duration"),
        (200, "handler", "hung up"),
    ]


def test_dtmf_without_telephone_event_goes_in_info_one_at_a_time() -> None:
    """calls/dtmf.py carries out sip/info_dtmf.py: one INFO per key, the next one after the
    previous one's 200; a refused INFO drops the rest and the handler hears it once."""
    pcmu_only = OFFER.replace(" 0 101\r\n", " 0\r\n").split("a=rtpmap:101")[0]
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect(pcmu_only)
        handler_says(sim, "DTMF 1*")
        handler_says(sim, "DTMF 9#")
        [first] = sent_requests(sim, "INFO")
        assert first.body == b"Signal=1\r\nDuration=160\r\n"
        assert first.headers.get("Content-Type") == "application/dtmf-relay"
        sim.receive(serialize(make_response(first, 200, "OK")))
        sim.advance(0.1)
        second = sent_requests(sim, "INFO")[-1]
        assert second.body.startswith(b"Signal=*\r\n")
        sim.receive(serialize(make_response(second, 415, "Unsupported Media Type")))
        sim.advance(0.1)
        assert len(sent_requests(sim, "INFO")) == 2
        assert events(sim)[1:] == [
            "ERROR DTMF SIP INFO refused by the remote end (415 Unsupported Media Type); "
            "2 more not sent"
        ]


CREDENTIALS = {"SIPROC_USERNAME": "alice", "SIPROC_PASSWORD": "secret"}


def test_a_challenged_invite_and_message_are_sent_again_with_credentials() -> None:
    """407 (a proxy: Proxy-Authenticate, answered in Proxy-Authorization) to the INVITE, 401
    (the far end: WWW-Authenticate, answered in Authorization) to an in-dialog MESSAGE; each
    goes again with the next CSeq (RFC 3261 section 22.2)."""
    with PhoneSim(env=CREDENTIALS, script=script()) as sim:
        invite = call_bob(sim)
        answer(sim, invite, 407, "Proxy Authentication Required", to_tag="p",
               headers=[("Proxy-Authenticate", 'Digest realm="proxy", nonce="n1"')])  # fmt: skip
        sim.advance(0.1)
        _, again = sent_requests(sim, "INVITE")
        assert again.headers.get("CSeq") == "2 INVITE"
        assert 'realm="proxy"' in (again.headers.get("Proxy-Authorization") or "")
        assert again.headers.get("Authorization") is None
        ok = bob_answers(again)
        sim.receive(serialize(ok), BOB)
        sim.advance(0.1)
        assert events(sim) == ["CONNECTED"]
        handler_says(sim, "MESSAGE hello")
        [message] = sent_requests(sim, "MESSAGE")
        answer(sim, message, 401, "Unauthorized",
               headers=[("WWW-Authenticate", 'Digest realm="bob", nonce="n2"')])  # fmt: skip
        sim.advance(0.1)
        _, resent = sent_requests(sim, "MESSAGE")
        assert 'realm="bob"' in (resent.headers.get("Authorization") or "")
        assert int((resent.headers.get("CSeq") or "").split()[0]) > int(
            (message.headers.get("CSeq") or "").split()[0]
        )
        answer(sim, resent, 200, "OK")
        sim.advance(0.1)
        assert events(sim) == ["CONNECTED"]  # delivered: no ERROR MESSAGE
