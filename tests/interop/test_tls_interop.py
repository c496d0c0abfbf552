"""SIP over TLS with SDES SRTP against real peers (issue 8, items 5 and 6).

Kamailio with its tls module is the registrar (digest users in SQLite), baresip registers over
TLS with ``mediaenc=srtp-mand``, and siproc registers over TLS with SIPROC_SRTP=mandatory. The
test CA and the certificate that Kamailio and baresip serve are made per test
(tests/tls_certs.py). Calls go both ways through Kamailio; each side records what it hears and
the tones are checked. A capture of siproc's ports on lo (port-filtered) shows no cleartext SIP
and no plain RTP from siproc. With the wrong CA, siproc refuses to register, in one line, and
Kamailio sees no SIP from it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf

from tests.audio import dominant_frequency, make_tone, rms
from tests.integration.test_tls import Capture, free_range, tone_windows
from tests.peers import Baresip, Kamailio
from tests.siproc_proc import MakePhone, Siproc, handler_dir, wait_file
from tests.tls_certs import Pki, make_pki

MakeBaresip = Callable[..., Baresip]
ALICE_PASSWORD = "alice-secret"
BOB_PASSWORD = "bob-secret"
SKIP_SECONDS = 0.3
SIPROC_TONE = 440.0
BARESIP_TONE = 660.0

# ROLE: answers incoming calls; on CONNECTED records both directions (left: what it hears) and
# plays tone.wav; hangs up when the tone has played.
HANDLER = r"""
role=$1
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$SIPROC_OUTGOING" = n ] && echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) echo "RECORD $role.wav stereo"; echo "PLAY tone.wav" ;;
    STOPPED*) echo "RECORD"; echo HANGUP ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_kamailio(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[Kamailio]:
    server = Kamailio(tmp_path / "kamailio", tls=(pki.cert, pki.key))
    node = request.node
    node._siproc_peers = [*getattr(node, "_siproc_peers", []), ("kamailio", server)]
    server.add_user("alice", ALICE_PASSWORD)
    server.add_user("bob", BOB_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER, {"tone.wav": (SIPROC_TONE, 3.0)})


@pytest.fixture
def siprocs(make_siproc: MakePhone) -> Callable[..., Siproc]:
    """``siprocs(env)``: a ready siproc running the handler as "alice"."""
    return lambda env: make_siproc("alice", env=env)


def siproc_env(kamailio: Kamailio, ca: Path, rtp: tuple[int, int]) -> dict[str, str]:
    return {
        "SIPROC_REGISTRAR_URI": f"sip:{kamailio.tls_hostport};transport=tls",
        "SIPROC_ID_URI": kamailio.aor("alice"),
        "SIPROC_USERNAME": "alice",
        "SIPROC_PASSWORD": ALICE_PASSWORD,
        "SIPROC_TLS_CA_FILE": str(ca),
        "SIPROC_SRTP": "mandatory",
        "SIPROC_CODEC_PRIORITIES": "PCMU:255",
        "SIPROC_RTP_PORTS": f"{rtp[0]}-{rtp[1]}",
    }


def heard(recording: Path, out: Path) -> Path:
    """The left channel (what siproc received) of a stereo RECORD, as its own file."""
    samples, rate = sf.read(str(recording))
    sf.write(str(out), samples[:, 0], rate)
    return out


def test_siproc_and_baresip_call_each_other_over_tls_with_srtp(
    workdir: Path,
    tmp_path: Path,
    pki: Pki,
    tls_kamailio: Kamailio,
    make_baresip: MakeBaresip,
    siprocs: Callable[..., Siproc],
) -> None:
    kamailio = tls_kamailio
    bob_tone = make_tone(tmp_path / "bob-tone.wav", BARESIP_TONE, 8.0)
    bob = make_baresip(
        "bob",
        kamailio.tls_hostport,
        password=BOB_PASSWORD,
        transport="tls",
        mediaenc="srtp-mand",
        codecs=("PCMU",),
        record=True,
        audio_source=bob_tone,
        extra_config={"sip_cafile": str(pki.ca), "sip_certificate": str(pki.chain)},
    )
    rtp = free_range()
    capture = Capture(tmp_path / "siproc.pcap", [kamailio.port, kamailio.tls_port], rtp)
    alice = siprocs(siproc_env(kamailio, pki.ca, rtp))
    alice.wait_for(r"registered as sip:alice@", timeout=10)
    bob.wait_registered()
    log = kamailio.log()
    assert re.search(r"REQ REGISTER \S+ from 127\.0\.0\.1:\d+/tls", log), log

    # baresip calls siproc through Kamailio: siproc answers, plays 440 Hz, hears 660 Hz
    # baresip sends to the request URI's host (it has no outbound proxy): Kamailio's TLS port
    bob.dial(f"sip:alice@{kamailio.tls_hostport};transport=tls")
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    text = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED", timeout=20)
    assert "EVENT CONNECTED" in text and "EVENT STOPPED tone.wav" in text
    bob.wait_event("CALL_CLOSED", timeout=10)
    assert re.search(r"REQ INVITE sip:alice@\S+ from 127\.0\.0\.1:\d+/tls", kamailio.log())
    first = heard(workdir / "alice.wav", workdir / "alice-heard-1.wav")
    assert dominant_frequency(first, SKIP_SECONDS) == pytest.approx(BARESIP_TONE, abs=10)
    assert rms(first, SKIP_SECONDS) > 0.05
    [bob_heard] = bob.recordings("dec")
    assert dominant_frequency(bob_heard, SKIP_SECONDS) == pytest.approx(SIPROC_TONE, abs=10)
    (workdir / "alice.log").rename(workdir / "alice-1.log")
    (workdir / "alice.wav").rename(workdir / "alice-1.wav")
    time.sleep(1.1)  # baresip names recordings by the second

    # siproc calls baresip through Kamailio
    alice.call(kamailio.aor("bob"))
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    text = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED", timeout=20)
    assert "EVENT CONNECTED" in text and "EVENT STOPPED tone.wav" in text
    bob.wait_event("CALL_CLOSED", timeout=10)
    assert re.search(r"REQ INVITE sip:bob@\S+ from 127\.0\.0\.1:\d+/tls", kamailio.log())
    second = heard(workdir / "alice.wav", workdir / "alice-heard-2.wav")
    assert dominant_frequency(second, SKIP_SECONDS) == pytest.approx(BARESIP_TONE, abs=10)
    latest = max(bob.recordings("dec"), key=lambda p: p.stat().st_mtime)
    assert dominant_frequency(latest, SKIP_SECONDS) == pytest.approx(SIPROC_TONE, abs=10)

    for proc_log in (alice.stderr(),):
        assert proc_log.count("call ended: 200") == 2, proc_log
    wire = capture.stop()
    assert len(wire) > 20_000
    for needle in (b"REGISTER ", b"INVITE ", b"SIP/2.0", b"a=crypto", b"inline:"):
        assert needle not in wire, f"{needle!r} in clear on the wire"
    assert not [w for w in tone_windows(workdir / "tone.wav") if w in wire]


def test_wrong_ca_refuses_to_register_and_sends_no_sip(
    pki: Pki,
    tls_kamailio: Kamailio,
    siprocs: Callable[..., Siproc],
    tmp_path: Path,
) -> None:
    kamailio = tls_kamailio
    capture = Capture(tmp_path / "wrong-ca.pcap", [kamailio.port, kamailio.tls_port], (1, 1))
    alice = siprocs(siproc_env(kamailio, pki.other_ca, free_range()))
    line = alice.wait_for(r"registration failed: .*", timeout=10).group(0)
    assert "certificate verify failed" in line
    time.sleep(0.5)
    wire = capture.stop()
    assert b"REGISTER" not in wire and b"SIP/2.0" not in wire
    assert "REQ REGISTER" not in kamailio.log()
    assert alice.proc.poll() is None  # it keeps running and will retry
