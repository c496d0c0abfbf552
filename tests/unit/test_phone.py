"""The pure helpers of calls/phone.py: what a handler's environment gets from the network."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siproc.calls import transfer
from siproc.calls.phone import file_safe_user, header_variable
from siproc.sip.headers import make_response
from siproc.sip.message import Request, serialize
from siproc.sip.transaction import Destination
from tests.phone_sim import OFFER, FarEnd, PhoneSim


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", "alice"),
        ("%2B4930123", "+4930123"),
        ("caf%C3%A9", "café"),
        ("%00", "%00"),
        ("%0d%0a", "%0D%0A"),
        ("a%2Fb", "a%2Fb"),
        ("a%5cb", "a%5Cb"),
        ("%25", "%25"),
        ("100%", "100%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("%2e%2E", "%2E%2E"),
        ("..%2F..%2Fetc", "..%2F..%2Fetc"),
        ("%C2%85", "%C2%85"),  # U+0085, a C1 control (NEL)
        ("%E2%80%A8", "%E2%80%A8"),  # U+2028 LINE SEPARATOR
    ],
)
def test_file_safe_user(user: str, expected: str) -> None:
    assert file_safe_user(user) == expected


@given(st.text())
def test_file_safe_user_is_a_safe_file_name(user: str) -> None:
    name = file_safe_user(user)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
    assert len(name.splitlines()) <= 1


def test_header_variable() -> None:
    assert header_variable("X-Foo.Bar") == "SIPROC_HEADER_X_FOO_BAR"


# --- the whole phone in virtual time (tests/phone_sim.py) -------------------------------------

T1 = 0.5


def statuses(sim: PhoneSim, far: FarEnd) -> list[int]:
    return [r.status for r in sim.responses(far.call_id)]


def test_a_call_answered_acked_and_hung_up_by_the_caller() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        assert statuses(sim, far)[-1] == 200
        far.learn_tag()
        far.send("ACK", cseq=1)
        sim.advance(0.1)
        [handler] = sim.handlers
        assert handler.events == ["CONNECTED"]
        assert sim.streams[0].started and sim.streams[0].proven
        far.send("BYE")
        sim.advance(1)
        assert handler.events[-1] == "DISCONNECTED 200 remote hangup"
        sim.advance(64 * T1)
        assert sim.idle() == []


def test_memory_is_trimmed_once_the_last_calls_transactions_are_over() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        far.learn_tag()
        far.send("ACK", cseq=1)
        sim.advance(0.1)
        sim.advance(60)  # a long call: no trim while it runs
        assert sim.phone.memory.trims == 0
        far.send("BYE")
        sim.advance(1)
        assert sim.handlers[0].events[-1] == "DISCONNECTED 200 remote hangup"
        assert sim.phone.memory.trims == 0  # the BYE's transaction waits for retransmissions
        sim.advance(64 * T1 + 1)
        assert sim.idle() == []
        assert sim.phone.memory.trims == 1
        sim.advance(600)  # quiet since: once is enough
        assert sim.phone.memory.trims == 1


def test_no_ack_ends_the_call_with_a_bye_and_releases_everything() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(64 * T1 + 4)  # 2xx retransmitted (T1 doubling to T2), then given up: BYE
        byes = [m for m, _ in sim.sent if getattr(m, "method", "") == "BYE"]
        assert byes, [type(m).__name__ for m, _ in sim.sent]
        sim.advance(64 * T1 + 5)  # the BYE is not answered either
        assert sim.handlers[0].events[-1].startswith("DISCONNECTED 408")
        assert sim.idle() == []


def test_a_bad_sdp_in_the_ack_ends_the_call() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE")  # no offer: siproc offers in the 200
        sim.advance(0.1)
        far.learn_tag()
        far.send("ACK", "v=0\r\nm=audio 99999999999999 RTP/AVP 0\r\n", cseq=1)
        sim.advance(0.1)
        bye = [m for m, _ in sim.sent if getattr(m, "method", "") == "BYE"]
        assert len(bye) == 1
        sim.advance(64 * T1 + 5)
        assert sim.idle() == []


def test_a_nul_in_the_callers_user_reaches_the_handler_escaped() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim, user="%00")
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        [handler] = sim.handlers
        assert handler.env["SIPROC_REMOTE_USER"] == "%00"
        assert statuses(sim, far)[-1] == 200


def test_an_unanswered_call_gets_480_at_the_ring_timeout() -> None:
    with PhoneSim(script=lambda env: ("RINGING",)) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(19)
        assert statuses(sim, far)[-1] == 180
        sim.advance(2)
        assert statuses(sim, far)[-1] == 480
        assert sim.handlers[0].events[-1] == "DISCONNECTED 480 no answer"
        far.send("ACK", cseq=1, branch=far.invite_branch)
        sim.advance(64 * T1)
        assert sim.idle() == []


def test_an_invite_flood_from_one_source_starts_at_most_the_burst() -> None:
    with PhoneSim(script=lambda env: ("RINGING",)) as sim:
        for _ in range(100):
            FarEnd(sim, user="flood").send("INVITE", OFFER)
        assert len(sim.handlers) == 20  # SIPROC_CALL_BURST
        refused = [r for r in sim.responses() if r.status == 503]
        assert len(refused) == 80 and refused[0].headers.get("Retry-After") == "1"
        sim.advance(1.0)  # 10 more a second
        for _ in range(20):
            FarEnd(sim, user="flood").send("INVITE", OFFER)
        assert len(sim.handlers) == 30
        other = FarEnd(sim, source=Destination("udp", "127.0.0.9", 5060))
        other.send("INVITE", OFFER)
        assert len(sim.handlers) == 31  # another address has its own budget
        sim.advance(21 + 64 * T1)  # every call rang out (480)
        assert sim.idle() == []


def test_cancel_before_the_answer() -> None:
    with PhoneSim(script=lambda env: ("RINGING",)) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        far.send("CANCEL", cseq=1, branch=far.invite_branch)
        sim.advance(0.1)
        assert 487 in statuses(sim, far)
        assert sim.handlers[0].events[-1].startswith("DISCONNECTED 487")
        far.send("ACK", cseq=1, branch=far.invite_branch)
        sim.advance(64 * T1)
        assert sim.idle() == []


def test_requests_with_a_to_tag_of_no_dialog_get_a_stateless_481() -> None:
    """A forged INVITE with a guessed To tag held an INVITE server transaction for 64*T1 and
    got its 481 retransmitted (Timer G) ten times to a source that may be forged; nor did the
    flood limits count it. Now: one 481, no state."""
    with PhoneSim() as sim:
        for i in range(50):
            far = FarEnd(sim, source=Destination("udp", "127.0.0.7", 5060))
            far.to = f"<sip:siproc@127.0.0.1>;tag=guess{i}"
            far.send("INVITE", OFFER)
            far.send("REFER", headers=["Refer-To: <sip:900@127.0.0.1>"])
        assert sim.phone.endpoint.transaction_count == 0
        sim.advance(64 * T1)
        assert sorted({r.status for r in sim.responses()}) == [481]
        assert len(sim.responses()) == 100
        assert sim.handlers == [] and sim.idle() == []


def test_requests_refused_outside_a_dialog_hold_no_transaction() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        for method in ("BYE", "INFO", "UPDATE", "NOTIFY", "REFER"):
            far.send(method)
        assert sim.phone.endpoint.transaction_count == 0
        assert [r.status for r in sim.responses()] == [481, 481, 481, 481, 403]


def test_in_dialog_requests_of_a_call_still_reach_it() -> None:
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(0.1)
        far.learn_tag()
        far.send("ACK", cseq=1)
        far.send("INFO", headers=["Content-Type: application/dtmf-relay"])
        sim.advance(0.1)
        assert statuses(sim, far)[-1] != 481
        far.send("BYE")
        sim.advance(0.1)
        assert statuses(sim, far)[-1] == 200
        assert sim.handlers[0].events[-1] == "DISCONNECTED 200 remote hangup"


def test_the_call_rate_counts_an_ipv6_source_by_its_64() -> None:
    """An attacker has a whole /64 of addresses: counted by address, each of 100 INVITEs from
    one /64 had a fresh burst and started a handler."""
    with PhoneSim(script=lambda env: ("RINGING",)) as sim:
        for i in range(100):
            far = FarEnd(sim)
            sim.receive(
                far.request("INVITE", OFFER), Destination("udp", f"2001:db8::{i + 1:x}", 5060)
            )
        assert len(sim.handlers) == 20  # SIPROC_CALL_BURST
        other = FarEnd(sim)
        sim.receive(other.request("INVITE", OFFER), Destination("udp", "2001:db8:0:1::1", 5060))
        assert len(sim.handlers) == 21  # another /64 has its own budget
        sim.advance(21 + 64 * T1)
        assert sim.idle() == []


def test_a_transfer_whose_notify_fails_does_not_wedge_the_new_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transferee's NOTIFY about the new call is sent from inside the new call's state
    change: when it raised as the new call ended, the new call was left ENDED without its
    handler told or its slot freed, and abort() took it as over already."""
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()
        far.send("REFER", headers=["Refer-To: <sip:200@127.0.0.1:5098>"])
        sim.advance(0.1)
        [invite] = [
            m
            for m, d in sim.sent
            if isinstance(m, Request) and m.method == "INVITE" and d.port == 5098
        ]

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("NOTIFY could not be sent")

        for notify in [m for m, _ in sim.sent if isinstance(m, Request) and m.method == "NOTIFY"]:
            sim.receive(serialize(make_response(notify, 200, "OK")))
        sim.advance(0.1)
        monkeypatch.setattr(transfer, "send_in_dialog", broken)
        busy = make_response(invite, 486, "Busy Here", to_tag="t486")
        sim.receive(serialize(busy), Destination("udp", "127.0.0.1", 5098))
        sim.advance(64 * T1 + 5)
        assert len(sim.handlers) == 2
        assert sim.handlers[1].events[-1].startswith("DISCONNECTED 486")
        assert sim.handlers[1].exited
        assert sim.loop.errors == []
        assert all(c.state.value != "ended" for c in sim.phone.calls)
        sim.advance(64 * T1 + 5)  # the old call, whose NOTIFY failed, ends too
        assert sim.idle() == []


def test_a_call_whose_media_cannot_close_still_ends() -> None:
    """The last resort of Call.abort closed the stream again, which raised again: the
    exception escaped the datagram callback and the handler was never stopped."""
    with PhoneSim() as sim:
        far = FarEnd(sim)
        far.connect()

        def broken() -> None:
            raise RuntimeError("recording: No space left on device")

        sim.streams[0].close = broken  # type: ignore[method-assign]
        far.send("BYE")  # must not raise out of the datagram callback
        sim.advance(1)
        [handler] = sim.handlers
        assert handler.events[-1].startswith("DISCONNECTED")
        assert handler.exited
        assert sim.phone.calls == set()


SRTP_OFFER = (
    OFFER.replace("RTP/AVP", "RTP/SAVP")
    + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
    + base64.b64encode(bytes(range(30))).decode()
    + "\r\n"
)


def _call_over_tls_with_a_udp_contact(sim: PhoneSim, offer: str) -> None:
    """A call that came in over TLS whose Contact (the remote target) is a plain sip: URI."""
    tls = Destination("tls", "127.0.0.1", 5099)
    far = FarEnd(sim, source=tls)
    sim.receive(far.request("INVITE", offer).replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"), tls)
    sim.advance(0.01)
    far.learn_tag()
    sim.receive(far.request("ACK", cseq=1).replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"), tls)
    sim.advance(0.5)  # the handler's HOLD sends a re-INVITE to the Contact, over UDP


def _reinvites(sim: PhoneSim) -> list[tuple[Request, Destination]]:
    return [(m, d) for m, d in sim.sent if isinstance(m, Request) and m.method == "INVITE"]


def test_sdes_keys_never_go_to_a_remote_target_that_is_not_tls() -> None:
    """The call's INVITE came over TLS, so its re-INVITEs offered SDES keys: to a remote
    target that is not TLS, in clear (RFC 4568 section 8.3). Optional: plain RTP then."""
    with PhoneSim({"SIPROC_SRTP": "optional"}, script=lambda env: ("ANSWER", "HOLD")) as sim:
        _call_over_tls_with_a_udp_contact(sim, OFFER)
        [(reinvite, destination)] = _reinvites(sim)
        assert destination.transport == "udp"
        assert b"a=crypto" not in reinvite.body


def test_with_srtp_mandatory_a_hold_over_a_hop_that_is_not_tls_is_refused() -> None:
    with PhoneSim({"SIPROC_SRTP": "mandatory"}, script=lambda env: ("ANSWER", "HOLD")) as sim:
        _call_over_tls_with_a_udp_contact(sim, SRTP_OFFER)
        [ok] = [r for r in sim.responses() if r.status == 200]
        assert b"a=crypto" in ok.body  # the INVITE's answer went over TLS
        assert _reinvites(sim) == []
        assert sim.handlers[0].events[-1].startswith("ERROR HOLD")


def test_a_call_the_global_limit_refuses_costs_its_source_nothing() -> None:
    env = {"SIPROC_CALL_RATE": "0.01", "SIPROC_CALL_BURST": "2", "SIPROC_SPAWN_RATE": "1"}
    with PhoneSim(env, script=lambda env: ("RINGING",)) as sim:
        FarEnd(sim).send("INVITE", OFFER)
        FarEnd(sim).send("INVITE", OFFER)  # the handler-start budget (1 a second) is spent
        assert len(sim.handlers) == 1
        sim.advance(1.0)
        FarEnd(sim).send("INVITE", OFFER)  # the source still has the second of its burst
        assert len(sim.handlers) == 2


def test_calls_from_the_registrar_are_held_to_the_global_limit_only() -> None:
    """A busy PBX brings every call from one address: 100 calls at once from the registrar
    all start (SIPROC_SPAWN_RATE allows 400), while a stranger gets the per-source burst."""
    env = {"SIPROC_REGISTRAR_URI": "sip:127.0.0.1:5099", "SIPROC_USERNAME": "alice"}
    with PhoneSim(env, script=lambda env: ("RINGING",)) as sim:
        for _ in range(100):
            far = FarEnd(sim, user="pbx")
            far.sim.receive(far.request("INVITE", OFFER).replace(b"sip:siproc@", b"sip:alice@"))
        assert len(sim.handlers) == 100
        assert not [r for r in sim.responses() if r.status == 503]
