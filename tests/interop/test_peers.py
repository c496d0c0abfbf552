"""The interop infrastructure itself, with real peers only (no siproc).

If these fail, the interop tests of siproc cannot be trusted: fix the peers first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.audio import dominant_frequency, rms
from tests.peers import Baresip, Kamailio, Sipp, run_sipp

pytestmark = pytest.mark.interop

MakeBaresip = Callable[..., Baresip]


def test_call_through_kamailio_carries_a_tone(
    kamailio: Kamailio, make_baresip: MakeBaresip, tone_wav: Callable[..., Path]
) -> None:
    """alice and bob register with digest auth; alice's 440 Hz reaches bob through the proxy."""
    kamailio.add_user("alice", "alice-secret")
    kamailio.add_user("bob", "bob-secret")
    alice = make_baresip(
        "alice", kamailio, password="alice-secret", audio_source=tone_wav(440, 3.0)
    )
    bob = make_baresip("bob", kamailio, password="bob-secret", record=True)
    alice.wait_registered()
    bob.wait_registered()

    alice.dial(kamailio.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=5)
    bob.wait_event("CALL_ESTABLISHED", timeout=5)
    # alice hangs up when her 3 s tone ends.
    bob.wait_event("CALL_CLOSED", timeout=10)
    alice.wait_event("CALL_CLOSED", timeout=5)

    log = kamailio.log()
    assert "REQ INVITE sip:bob@" in log
    assert "REQ BYE" in log, "the BYE must follow the Record-Route through Kamailio"
    [heard] = bob.recordings("dec")
    assert dominant_frequency(heard, skip_seconds=0.5) == pytest.approx(440, abs=10)
    assert rms(heard, skip_seconds=0.5) > 0.1


def test_wrong_password_fails_registration(kamailio: Kamailio, make_baresip: MakeBaresip) -> None:
    kamailio.add_user("alice", "alice-secret")
    alice = make_baresip("alice", kamailio, password="not-the-password")
    event = alice.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout=5)
    assert event["type"] == "REGISTER_FAIL", event
    assert "401" in event.get("param", "") or "403" in event.get("param", ""), event


def test_call_to_unknown_user_gets_404(kamailio: Kamailio, make_baresip: MakeBaresip) -> None:
    kamailio.add_user("alice", "alice-secret")
    alice = make_baresip("alice", kamailio, password="alice-secret")
    alice.wait_registered()
    alice.dial(kamailio.aor("nobody"))
    closed = alice.wait_event("CALL_CLOSED", timeout=5)
    assert "404" in closed.get("param", ""), closed


def test_sipp_uac_calls_baresip_directly(tmp_path: Path, make_baresip: MakeBaresip) -> None:
    """A registrar-less baresip takes a call sent straight to sip:bob@127.0.0.1:PORT."""
    bob = make_baresip("bob")
    result = run_sipp(
        "uac",
        f"127.0.0.1:{bob.sip_port}",
        extra_args=["-s", "bob", "-d", "500"],
        timeout=10,
        workdir=tmp_path / "sipp",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    bob.wait_event("CALL_ESTABLISHED", timeout=2)
    bob.wait_event("CALL_CLOSED", timeout=2)


def test_baresip_calls_sipp_uas(
    make_sipp: Callable[..., Sipp],
    make_baresip: MakeBaresip,
    tone_wav: Callable[..., Path],
) -> None:
    uas = make_sipp("uas", timeout=10)
    uas.wait_listening()
    alice = make_baresip("alice", audio_source=tone_wav(440, 1.0))
    alice.dial(uas.uri)
    alice.wait_event("CALL_ESTABLISHED", timeout=5)
    alice.wait_event("CALL_CLOSED", timeout=5)  # the tone ends: alice sends BYE
    result = uas.wait(timeout=10)
    assert result.returncode == 0, result.stdout[-3000:]
