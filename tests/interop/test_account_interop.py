"""Registration survives its registrar: a real Kamailio that is stopped and started again on
the same port is registered with again, without restarting siproc (issue: safe on the open
internet, item 8), over TCP (the dropped connection is noticed at once) and over UDP (the
next refresh fails and is retried with SIPROC_REGISTER_RETRY's backoff). Afterwards a call
through the restarted Kamailio reaches the handler."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop import test_transfer_interop as transfer
from tests.interop.test_transfer_interop import PASSWORDS, calls_in
from tests.peers import Baresip, Kamailio
from tests.siproc_proc import Siproc, wait_file

MakeBaresip = Callable[..., Baresip]
workdir, kam = transfer.workdir, transfer.kam


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_restarted_registrar_is_registered_with_again(
    transport: str,
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
) -> None:
    alice = make_siproc(
        "alice",
        "answer",
        env={
            "SIPROC_REGISTRAR_URI": f"{kam.uri};transport={transport}",
            "SIPROC_ID_URI": kam.aor("alice"),
            "SIPROC_USERNAME": "alice",
            "SIPROC_PASSWORD": PASSWORDS["alice"],
            "SIPROC_REGISTER_EXPIRES": "60",  # refreshed after 30 s: the UDP case notices then
            "SIPROC_REGISTER_RETRY": "1",
        },
    )
    alice.wait_for(r"registered as sip:alice@", timeout=10)
    registered = alice.count(r"registered as sip:alice@")
    kam.stop()
    time.sleep(2)
    kam.start()  # same port, same user database, empty location table
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and alice.count(r"registered as sip:alice@") == registered:
        time.sleep(0.2)
    assert alice.count(r"registered as sip:alice@") > registered, alice.stderr()
    assert alice.proc.poll() is None

    bob = make_baresip("bob", kam, password=PASSWORDS["bob"])
    bob.wait_registered()
    bob.dial(kam.aor("alice"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    [call] = calls_in(wait_file(workdir / "alice.log", r"EVENT CONNECTED"))
    assert call[0].startswith(f"START outgoing=n uri={kam.aor('bob')}")
