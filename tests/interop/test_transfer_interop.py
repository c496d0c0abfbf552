"""Blind transfer (RFC 3515 REFER, RFC 5589 section 6) between siproc and real baresip phones,
all registered at a real Kamailio that relays the REFER and its NOTIFYs (record-routed dialog).

The original manual page listed "call forwarding does not seem to work" as a bug; these tests
show transfer working in both roles against real peers:

- siproc (bob) transfers a baresip caller (alice) to a second baresip (carol): carol ends up
  hearing alice's tone, bob's handler gets ``DISCONNECTED 200 transferred`` and SIGTERM;
- a transfer to a target that rejects the call gives bob's handler ``ERROR TRANSFER 486 ...``
  and the call stays up;
- baresip transfers its call with siproc to another siproc: siproc follows, and the new call's
  handler runs with SIPROC_REFERRED_BY;
- a transferee that challenges the REFER (SIPp, 401) gets it again with credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.test_siproc_interop import account_env, assert_heard
from tests.peers import Baresip, Kamailio, Sipp
from tests.siproc_proc import Siproc, handler_dir, wait_file

MakeBaresip = Callable[..., Baresip]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}

# h.sh ROLE MODE [TARGET]: appends "<call> START ...", "<call> EVENT <line>", "<call> EOF" and
# "<call> SIGTERM" to ROLE.log; <call> is the start of SIPROC_CALL_ID (siproc runs one handler
# per call). MODE: answer (RINGING, ANSWER) | pickup (ANSWER alone) | busy (HANGUP 486) |
# transfer (ANSWER; TRANSFER TARGET once CONNECTED) | wait. After the end of stdin it waits for
# siproc's SIGTERM.
HANDLER = r"""
role=$1; mode=$2; target=$3
log="$role.log"
id="${SIPROC_CALL_ID:0:8}"
on_term() {
  while read -r -t 1 line; do echo "$id EVENT $line" >> "$log"; done
  echo "$id SIGTERM" >> "$log"; exit 0
}
trap on_term TERM
echo "$id START outgoing=$SIPROC_OUTGOING uri=$SIPROC_REMOTE_URI" \
     "referred_by=${SIPROC_REFERRED_BY-unset}" >> "$log"
case "$mode" in
  answer|transfer) echo RINGING; echo ANSWER ;;
  pickup) echo ANSWER ;;
  busy) echo "HANGUP 486" ;;
esac
while read -r line; do
  echo "$id EVENT $line" >> "$log"
  case "$mode:$line" in
    transfer:CONNECTED) sleep 1; echo "TRANSFER $target" ;;
  esac
done
echo "$id EOF" >> "$log"
sleep 10 & wait $!
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER)


@pytest.fixture
def kam(kamailio: Kamailio) -> Kamailio:
    for user, password in PASSWORDS.items():
        kamailio.add_user(user, password)
    return kamailio


def calls_in(text: str) -> list[list[str]]:
    """The lines of a ROLE.log grouped per call, in the order the calls started."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        call, _, rest = line.partition(" ")
        out.setdefault(call, []).append(rest)
    return list(out.values())


def siproc_account(
    make_siproc: Callable[..., Siproc], kam: Kamailio, user: str, *args: str
) -> Siproc:
    proc = make_siproc(user, *args, env=account_env(kam, user, PASSWORDS[user]))
    proc.wait_for(rf"registered as sip:{user}@", timeout=10)
    return proc


def test_siproc_transfers_a_baresip_caller_to_a_second_baresip(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
    tone_wav: Callable[..., Path],
) -> None:
    alice = make_baresip(
        "alice", kam, password=PASSWORDS["alice"], audio_source=tone_wav(440.0, 15.0)
    )
    carol = make_baresip("carol", kam, password=PASSWORDS["carol"], record=True)
    bob = siproc_account(make_siproc, kam, "bob", "transfer", kam.aor("carol"))
    alice.wait_registered()
    carol.wait_registered()

    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    carol.wait_event("CALL_ESTABLISHED", timeout=15)

    [bob_call] = calls_in(wait_file(workdir / "bob.log", r"SIGTERM$", timeout=10))
    assert bob_call[0] == f"START outgoing=n uri={kam.aor('alice')} referred_by=unset"
    assert "EVENT CONNECTED" in bob_call
    assert "EVENT DISCONNECTED 200 transferred" in bob_call, bob_call
    assert not any(line.startswith("EVENT ERROR") for line in bob_call), bob_call
    bob.wait_for(r"transfer NOTIFY: 200 OK")
    log = kam.log()
    assert "REQ REFER sip:alice" in log, "Kamailio relays the REFER"  # to alice's Contact
    assert "REQ NOTIFY sip:bob@" in log, "and the NOTIFYs"

    time.sleep(2.0)  # carol hears alice for a while
    carol.hangup()
    carol.wait_event("CALL_CLOSED", timeout=5)
    assert_heard(carol, 440.0)


def test_transfer_to_a_target_that_rejects_keeps_the_call_up(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
    tone_wav: Callable[..., Path],
) -> None:
    alice = make_baresip(
        "alice", kam, password=PASSWORDS["alice"], audio_source=tone_wav(440.0, 20.0)
    )
    siproc_account(make_siproc, kam, "carol", "busy")
    bob = siproc_account(make_siproc, kam, "bob", "transfer", kam.aor("carol"))
    alice.wait_registered()

    alice.dial(kam.aor("bob"))
    established = alice.wait_event("CALL_ESTABLISHED", timeout=10)
    text = wait_file(workdir / "bob.log", r"EVENT ERROR TRANSFER", timeout=15)
    [bob_call] = calls_in(text)
    assert "EVENT ERROR TRANSFER 486 Busy Here" in bob_call, bob_call
    [carol_call] = calls_in(wait_file(workdir / "carol.log", r"SIGTERM$"))
    assert carol_call[0] == f"START outgoing=n uri={kam.aor('alice')} referred_by=unset"

    time.sleep(1.5)  # the call alice-bob stays up
    [bob_call] = calls_in((workdir / "bob.log").read_text())
    assert not any("DISCONNECTED" in line for line in bob_call), bob_call
    # alice's call to carol failed (CALL_CLOSED for it); her call with bob is still there.
    closed = [e for e in alice.events if e.get("type") == "CALL_CLOSED"]
    assert all(e.get("id") != established.get("id") for e in closed), closed
    assert bob.count(r"call ended") == 0, bob.stderr()

    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=5, id=established.get("id"))
    [bob_call] = calls_in(wait_file(workdir / "bob.log", r"SIGTERM$"))
    assert "EVENT DISCONNECTED 200 remote hangup" in bob_call


def test_baresip_transfers_its_call_with_siproc_to_another_siproc(
    workdir: Path,
    kam: Kamailio,
    make_baresip: MakeBaresip,
    make_siproc: Callable[..., Siproc],
    tone_wav: Callable[..., Path],
) -> None:
    bob = siproc_account(make_siproc, kam, "bob", "answer")
    siproc_account(make_siproc, kam, "carol", "answer")
    alice = make_baresip(
        "alice", kam, password=PASSWORDS["alice"], audio_source=tone_wav(440.0, 20.0)
    )
    alice.wait_registered()

    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "bob.log", r"EVENT CONNECTED")
    response = alice.command("transfer", kam.aor("carol"))
    assert response.get("ok"), response

    # bob follows the REFER: a new handler calls carol with SIPROC_REFERRED_BY ...
    text = wait_file(workdir / "bob.log", r"referred_by=sip:alice@", timeout=15)
    old, new = calls_in(text)
    assert new[0] == f"START outgoing=y uri={kam.aor('carol')} referred_by={kam.aor('alice')}"
    wait_file(workdir / "carol.log", r"EVENT CONNECTED", timeout=10)
    # ... reports success in NOTIFYs, and alice hangs up the old call.
    alice.wait_event("CALL_CLOSED", timeout=10)
    text = wait_file(workdir / "bob.log", r"DISCONNECTED 200 remote hangup", timeout=10)
    old, new = calls_in(text)
    assert old[0] == f"START outgoing=n uri={kam.aor('alice')} referred_by=unset"
    assert "EVENT DISCONNECTED 200 remote hangup" in old
    assert "EVENT CONNECTED" in new
    assert not any("DISCONNECTED" in line for line in new), new
    bob.wait_for(r"transferred by sip:alice@\S+ to sip:carol@")
    log = kam.log()
    assert "REQ REFER sip:bob@" in log, "Kamailio relays the REFER"
    assert "REQ NOTIFY sip:alice" in log, "and the NOTIFYs"


def test_challenged_refer_is_resent_with_credentials(
    workdir: Path, make_sipp: Callable[..., Sipp], make_siproc: Callable[..., Siproc]
) -> None:
    """SIPp, the transferee, answers the REFER with 401; siproc resends it with credentials,
    follows the NOTIFYs (180, then 200) and hangs up."""
    bob = make_siproc(
        "bob",
        "transfer",
        "sip:carol@127.0.0.1:5999",
        env={"SIPROC_USERNAME": "bob", "SIPROC_PASSWORD": PASSWORDS["bob"]},
    )
    uac = make_sipp(
        SIPP_DIR / "uac_refer_auth.xml",
        f"127.0.0.1:{bob.port}",
        timeout=20,
        extra_args=["-s", "bob"],
    )
    result = uac.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]
    [bob_call] = calls_in(wait_file(workdir / "bob.log", r"SIGTERM$"))
    assert "EVENT DISCONNECTED 200 transferred" in bob_call, bob_call
    assert not any(line.startswith("EVENT ERROR") for line in bob_call), bob_call
    bob.wait_for(r"transfer NOTIFY: 180 Ringing \(active;expires=60\)")
    assert "bob-secret" not in bob.stderr()


def test_siproc_as_transferee_of_a_transferor_that_never_hangs_up(
    workdir: Path, make_sipp: Callable[..., Sipp], make_siproc: Callable[..., Siproc]
) -> None:
    """SIPp (the transferor) refers siproc to a tel: URI (416), then to carol (202, NOTIFYs
    100 and 200 checked field by field); it never sends BYE, so siproc ends the old call."""
    carol = make_siproc("carol", "pickup")  # no 180: the NOTIFYs are exactly 100, 200
    uas = make_sipp(
        SIPP_DIR / "uas_refer.xml", timeout=20, extra_args=["-key", "carol", carol.uri("carol")]
    )
    uas.wait_listening()
    bob = make_siproc("bob", "wait")
    bob.call(uas.uri)
    result = uas.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]

    old, new = calls_in(wait_file(workdir / "bob.log", r"referred_by=sip:transferor@"))
    assert new[0] == (
        f"START outgoing=y uri={carol.uri('carol')} referred_by=sip:transferor@127.0.0.1:"
        f"{uas.local_port}"
    )
    text = wait_file(workdir / "bob.log", r"DISCONNECTED 200 hung up")
    old, new = calls_in(text)
    assert "EVENT DISCONNECTED 200 hung up" in old
    assert "EVENT CONNECTED" in new and not any("DISCONNECTED" in line for line in new)
    bob.wait_for(r"REFER refused: 416 Unsupported URI Scheme")
    bob.wait_for(r"no BYE from the transferor after the transfer: hanging up")
