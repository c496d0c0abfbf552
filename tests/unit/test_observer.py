"""calls/observer.py: the facts a call's record gets, from the whole phone in virtual time
(tests/phone_sim.py) writing a real SIPROC_CDR file. Each test is a case the real peers of
tests/interop/test_records_interop.py showed wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from siproc.sip.message import Request
from tests.phone_sim import OFFER, PEER, FarEnd, PhoneSim

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
TARGET = f"sip:bob@{PEER.host}:{PEER.port}"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sent_requests(sim: PhoneSim, method: str) -> list[Request]:
    return [m for m, _ in sim.sent if isinstance(m, Request) and m.method == method]


def respond(sim: PhoneSim, request: Request, status: int, body: str = "") -> None:
    """The far end answers ``request`` (tag ``farto``), as SIPp or baresip would."""
    lines = [f"SIP/2.0 {status} Reason"]
    for name in ("Via", "From", "Call-ID", "CSeq"):
        lines += [f"{name}: {value}" for value in request.headers.get_raw(name)]
    lines.append(f"To: {request.headers.get('To')};tag=farto")
    lines.append(f"Contact: <sip:bob@{PEER.host}:{PEER.port}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    sim.receive(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), PEER)


def phone(tmp_path: Path, script: Sequence[str], **env: str) -> PhoneSim:
    """A phone writing records to ``tmp_path/cdr``, its wall clock following virtual time."""
    sim = PhoneSim({"SIPROC_CDR": str(tmp_path / "cdr"), **env}, script=lambda _: script)
    observer = sim.phone.monitor.observer
    assert observer is not None
    observer.clock = lambda: T0 + sim.loop.time()
    return sim


def handler_says(sim: PhoneSim, line: str) -> None:
    sim.loop.call_soon(sim.handlers[0]._line, line)
    sim.advance(0.1)


def test_an_outgoing_call_with_an_sdp_answer_in_183_has_early_media(tmp_path: Path) -> None:
    with phone(tmp_path, ("PLAY x.wav",)) as sim:
        sim.command(f"CALL {TARGET}")
        sim.advance(0.1)
        [invite] = sent_requests(sim, "INVITE")
        respond(sim, invite, 180)
        sim.advance(1)
        respond(sim, invite, 183, OFFER)  # the gateway's announcement
        sim.advance(2)
        respond(sim, invite, 200, OFFER)
        sim.advance(1)
        handler_says(sim, "HANGUP")
        respond(sim, sent_requests(sim, "BYE")[0], 200)
        sim.advance(1)
        [record] = records(tmp_path / "cdr")
    assert record["direction"] == "out" and record["codec"] == "PCMU/8000"
    assert record["ringing"] < record["early_media"] < record["answered"] < record["ended"]
    assert (record["status"], record["ended_by"]) == (200, "handler")


def test_an_outgoing_call_ringing_without_sdp_has_no_early_media(tmp_path: Path) -> None:
    with phone(tmp_path, ()) as sim:
        sim.command(f"CALL {TARGET}")
        sim.advance(0.1)
        [invite] = sent_requests(sim, "INVITE")
        respond(sim, invite, 180)
        sim.advance(1)
        respond(sim, invite, 486)
        sim.advance(1)
        [record] = records(tmp_path / "cdr")
    assert record["ringing"] is not None and record["early_media"] is None
    assert (record["status"], record["ended_by"], record["codec"]) == (486, "remote", None)


def test_an_outgoing_call_still_ringing_at_its_maximum_duration_ends_by_timeout(
    tmp_path: Path,
) -> None:
    with phone(tmp_path, (), SIPROC_MAX_CALL_DURATION="5") as sim:
        sim.command(f"CALL {TARGET}")
        sim.advance(0.1)
        [invite] = sent_requests(sim, "INVITE")
        respond(sim, invite, 180)
        sim.advance(5)
        [cancel] = sent_requests(sim, "CANCEL")
        respond(sim, cancel, 200)
        respond(sim, invite, 487)  # the far end's answer says nothing of why
        sim.advance(1)
        [record] = records(tmp_path / "cdr")
        assert sim.handlers[0].events[-1] == "DISCONNECTED 487 Reason"
    assert (record["status"], record["ended_by"]) == (487, "timeout")


def test_a_call_the_handler_hangs_up_while_ringing_ends_by_handler(tmp_path: Path) -> None:
    with phone(tmp_path, (), SIPROC_MAX_CALL_DURATION="5") as sim:
        sim.command(f"CALL {TARGET}")
        sim.advance(0.1)
        [invite] = sent_requests(sim, "INVITE")
        respond(sim, invite, 180)
        sim.advance(1)
        handler_says(sim, "HANGUP")
        respond(sim, sent_requests(sim, "CANCEL")[0], 200)
        respond(sim, invite, 487)
        sim.advance(10)  # past the maximum duration: its timer went with the call
        [record] = records(tmp_path / "cdr")
    assert (record["status"], record["ended_by"]) == (487, "handler")


def test_an_incoming_call_refused_before_its_answer_has_no_codec(tmp_path: Path) -> None:
    with phone(tmp_path, ("HANGUP 486",)) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(1)
        far.send("ACK", cseq=1, branch=far.invite_branch)
        sim.advance(1)
        [record] = records(tmp_path / "cdr")
    assert (record["status"], record["ended_by"]) == (486, "handler")
    assert record["codec"] is None and record["early_media"] is None


def test_an_incoming_call_with_early_media_has_its_codec(tmp_path: Path) -> None:
    with phone(tmp_path, ("PROGRESS", "HANGUP 486")) as sim:
        far = FarEnd(sim)
        far.send("INVITE", OFFER)
        sim.advance(1)
        [record] = records(tmp_path / "cdr")
    assert record["codec"] == "PCMU/8000" and record["early_media"] is not None
    assert record["answered"] is None
