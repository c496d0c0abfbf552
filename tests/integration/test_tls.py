"""SIP over TLS between real siproc processes on loopback (net/tls.py, net/sip_transport.py).

A test CA and certificates are made per test (tests/tls_certs.py). What goes over the wire is
checked with a capture on lo restricted to the test's own ports (tshark; PEERS.md): no SIP and
no plain RTP of the tone played may appear in it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siproc.media.codecs.g711 import encode_ulaw
from tests.siproc_proc import MakePhone, Siproc, handler_dir, wait_file, write_handler
from tests.tls_certs import Pki, make_pki

HANDLER = r"""
role=$1; mode=$2
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
echo "START outgoing=$SIPROC_OUTGOING contact=$SIPROC_REMOTE_CONTACT" >> "$log"
case "$mode" in answer|answerplay) echo ANSWER ;; esac
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) case "$mode" in play|answerplay) echo "PLAY tone.wav" ;; esac ;;
    STOPPED*) case "$mode" in play|answerplay) echo HANGUP ;; esac ;;
  esac
done
echo "EOF" >> "$log"
"""
TLS_PORT_RE = re.compile(r"TLS port (\d+)")
PCMU = "PCMU:255"  # SIPROC_CODEC_PRIORITIES: the tone goes out as PCMU, findable on the wire


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER, {"tone.wav": (440.0, 1.0)})


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_phone(phones: MakePhone, pki: Pki, *args: str, **env: str) -> tuple[Siproc, int]:
    """A siproc that listens for TLS with the test certificate and trusts the test CA."""
    settings = {
        "SIPROC_TLS_CERT_FILE": str(pki.cert),
        "SIPROC_TLS_KEY_FILE": str(pki.key),
        "SIPROC_TLS_CA_FILE": str(pki.ca),
        "SIPROC_TLS_PORT": "0",
        "SIPROC_CODEC_PRIORITIES": PCMU,
        **env,
    }
    proc = phones(*args, env=settings)
    return proc, int(proc.wait_for(TLS_PORT_RE).group(1))


class Capture:
    """tshark on lo with a port filter, written to a pcap file (PEERS.md: never unfiltered)."""

    def __init__(self, path: Path, ports: list[int], port_range: tuple[int, int]) -> None:
        tshark = shutil.which("tshark")
        if tshark is None:
            pytest.fail("tshark is not installed: run scripts/install-deps.sh")
        low, high = port_range
        bpf = " or ".join([f"port {p}" for p in ports] + [f"portrange {low}-{high}"])
        self.path = path
        self.proc = subprocess.Popen(
            [tshark, "-i", "lo", "-f", bpf, "-w", str(path), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:  # "Capturing on 'Loopback: lo'", then "Capture started."
            if b"Capture started" in raw or b"File:" in raw:
                break
        else:
            pytest.fail("tshark did not start capturing")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> bytes:
        time.sleep(0.5)  # the last packets reach the file
        self.proc.terminate()
        self.proc.wait(10)
        return self.path.read_bytes()


def tone_windows(path: Path, count: int = 8, size: int = 16) -> list[bytes]:
    """Runs of the PCMU payload that playing ``path`` puts into plain RTP."""
    samples, _ = sf.read(str(path), dtype="int16")
    payload = encode_ulaw(np.asarray(samples, dtype=np.int16))
    step = len(payload) // (count + 1)
    return [payload[step * (i + 1) : step * (i + 1) + size] for i in range(count)]


def free_range(size: int = 40) -> tuple[int, int]:
    """A block of ports for RTP that is free now (tests run one at a time on this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low = min(max(base, 20_000), 60_000)
    return low, low + size - 1


def test_call_over_tls_with_srtp_mandatory_sends_no_cleartext(
    workdir: Path, pki: Pki, phones
) -> None:  # type: ignore[no-untyped-def]
    """sips: call with SIPROC_SRTP=mandatory both ways: it connects, the tone plays, and a
    capture of every port involved shows no SIP and no plain RTP of the tone."""
    bob_rtp, alice_rtp = free_range(), free_range()
    bob, bob_tls = tls_phone(
        phones, pki, "bob", "answerplay", SIPROC_SRTP="mandatory", SIPROC_LOG_LEVEL="6",
        SIPROC_RTP_PORTS=f"{bob_rtp[0]}-{bob_rtp[1]}",
    )  # fmt: skip
    alice, alice_tls = tls_phone(
        phones, pki, "alice", "play", SIPROC_SRTP="mandatory",
        SIPROC_RTP_PORTS=f"{alice_rtp[0]}-{alice_rtp[1]}",
    )  # fmt: skip
    low = min(bob_rtp[0], alice_rtp[0])
    high = max(bob_rtp[1], alice_rtp[1])
    capture = Capture(
        workdir / "call.pcap", [bob.port, alice.port, bob_tls, alice_tls], (low, high)
    )
    alice.call(f"sips:bob@127.0.0.1:{bob_tls}")
    alice_log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200", timeout=20)
    bob_log = wait_file(workdir / "bob.log", r"EVENT DISCONNECTED 200", timeout=20)
    wire = capture.stop()
    assert "EVENT CONNECTED" in alice_log and "EVENT STOPPED tone.wav" in alice_log
    assert "EVENT CONNECTED" in bob_log
    # our Contact is sips: in a sips: call, at our TLS listener (RFC 3261 section 8.1.1.8)
    assert f"contact=sips:siproc@127.0.0.1:{alice_tls}" in bob_log
    assert (
        bob.count(r"^\s*Via: SIP/2.0/TLS ") >= 2 and bob.count(r"^\s*Via: SIP/2.0/(UDP|TCP) ") == 0
    )
    assert bob.count(r"^\s*m=audio \d+ RTP/SAVP ") >= 2  # the offer and the answer
    for proc in (alice, bob):
        ended = proc.wait_for(r"call ended: 200 .*RTP: (\d+) packets sent, (\d+) received")
        assert int(ended.group(1)) >= 40 and int(ended.group(2)) >= 40
    assert len(wire) > 20_000  # the capture saw the call's packets
    for needle in (b"INVITE ", b"SIP/2.0", b"a=crypto", b"inline:"):
        assert needle not in wire, f"{needle!r} in clear on the wire"
    windows = tone_windows(workdir / "tone.wav")
    assert not [w for w in windows if w in wire], "plain PCMU of the tone on the wire"


def test_plain_call_shows_the_tone_on_the_wire(workdir: Path, phones) -> None:  # type: ignore[no-untyped-def]
    """The control of the test above: over UDP without SRTP the same capture does find SIP and
    the tone's PCMU, so its "not found" means something."""
    bob_rtp = free_range()
    bob = phones(
        "bob",
        "answer",
        env={"SIPROC_RTP_PORTS": f"{bob_rtp[0]}-{bob_rtp[1]}", "SIPROC_CODEC_PRIORITIES": PCMU},
    )
    alice = phones("alice", "play", env={"SIPROC_CODEC_PRIORITIES": PCMU})
    capture = Capture(workdir / "plain.pcap", [bob.port], bob_rtp)
    alice.call(bob.uri("bob"))
    wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200", timeout=20)
    wire = capture.stop()
    assert b"INVITE sip:" in wire
    windows = tone_windows(workdir / "tone.wav")
    assert sum(w in wire for w in windows) >= len(windows) // 2


def test_wrong_ca_fails_the_call_with_the_reason_and_sends_no_sip(
    workdir: Path, pki: Pki, phones
) -> None:  # type: ignore[no-untyped-def]
    bob, bob_tls = tls_phone(phones, pki, "bob", "answer", SIPROC_LOG_LEVEL="6")
    alice = phones("alice", "play", env={"SIPROC_TLS_CA_FILE": str(pki.other_ca)})
    started = time.monotonic()
    alice.call(f"sips:bob@127.0.0.1:{bob_tls}")
    log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 503", timeout=10)
    assert time.monotonic() - started < 5
    assert "certificate verify failed" in log
    line = alice.wait_for(r"cannot send to 127\.0\.0\.1:\d+ \(tls\): .*").group(0)
    assert "certificate verify failed" in line
    assert bob.count(r"INVITE") == 0  # nothing reached bob, not even in clear
    assert not (workdir / "bob.log").exists()


def test_host_name_must_match_the_certificate(workdir: Path, pki: Pki, phones) -> None:  # type: ignore[no-untyped-def]
    """A certificate for "localhost" only (no IP address in it): a call to localhost works, one
    to 127.0.0.1 is refused, even though the same trusted CA signed it (RFC 5922 section 7.2)."""
    named = make_pki(workdir / "named", ips=())
    _, bob_tls = tls_phone(phones, named, "bob", "answer")
    alice = phones("alice", "play", env={"SIPROC_TLS_CA_FILE": str(named.ca)})
    alice.call(f"sips:bob@localhost:{bob_tls}")  # the name is on the certificate: it works
    wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200", timeout=20)
    (workdir / "alice.log").unlink()
    alice.call(f"sip:bob@127.0.0.1:{bob_tls};transport=tls")  # 127.0.0.1 is not on it
    log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 503", timeout=10)
    assert "certificate verify failed" in log and "127.0.0.1" in log


def test_verify_no_connects_with_one_warning(workdir: Path, pki: Pki, phones) -> None:  # type: ignore[no-untyped-def]
    _, bob_tls = tls_phone(phones, pki, "bob", "answer")
    alice = phones("alice", "play", env={"SIPROC_TLS_VERIFY": "no"})
    assert alice.count(r"WARNING .*SIPROC_TLS_VERIFY=no") == 1
    alice.call(f"sips:bob@127.0.0.1:{bob_tls}")
    log = wait_file(workdir / "alice.log", r"EVENT DISCONNECTED 200", timeout=20)
    assert "EVENT STOPPED tone.wav" in log


def test_srtp_keys_go_only_over_tls(workdir: Path, phones) -> None:  # type: ignore[no-untyped-def]
    """Over UDP: mandatory refuses a CALL (no handler), optional falls back to plain RTP (no
    a=crypto in the offer), and a callee with mandatory refuses keys that came in clear (488),
    unless SIPROC_SRTP_INSECURE_SIGNALLING=yes on both sides."""
    bob = phones("bob", "answer", log_level=6, env={"SIPROC_SRTP": "mandatory"})
    alice = phones("alice", "play", env={"SIPROC_SRTP": "mandatory"})
    alice.call(bob.uri("bob"))
    alice.wait_for(r"siproc: CALL .*: refused: SIPROC_SRTP=mandatory: SDES keys are sent only")
    optional = phones("carol", "play", env={"SIPROC_SRTP": "optional"})
    optional.call(bob.uri("bob"))  # bob wants SRTP, carol offers none over UDP: 488
    log = wait_file(workdir / "carol.log", r"EVENT DISCONNECTED 488", timeout=10)
    assert "EVENT CONNECTED" not in log
    assert bob.count(r"^\s*a=crypto:") == 0
    insecure = {"SIPROC_SRTP": "mandatory", "SIPROC_SRTP_INSECURE_SIGNALLING": "yes"}
    dave = phones("dave", "play", env=insecure)
    dave.call(bob.uri("bob"))  # keys in clear towards bob, who does not allow that: 488
    wait_file(workdir / "dave.log", r"EVENT DISCONNECTED 488", timeout=10)
    bob.wait_for(r"refusing call from .*SDES keys are sent only over TLS")
    erin = phones("erin", "answer", env=insecure)
    dave.call(erin.uri("erin"))  # both opted in: SRTP with keys over UDP
    wait_file(workdir / "dave.log", r"EVENT DISCONNECTED 200", timeout=20)
    assert not list((workdir).glob("alice.log"))  # the refused CALL never started a handler


# -- registration over TLS, against a small TLS registrar in the test -----------------------


class TlsRegistrar:
    """Accepts TLS connections, answers every REGISTER 200 (with Flow-Timer), counts CRLFCRLF
    keep-alive pings and can drop the connection; it records every octet it received."""

    def __init__(self, pki: Pki, flow_timer: int = 2) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(pki.cert), str(pki.key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.flow_timer = flow_timer
        self.registers = 0
        self.pings = 0
        self.handshake_errors: list[str] = []
        self.connections: list[ssl.SSLSocket] = []
        self.received = b""
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                raw.close()
                continue
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: ssl.SSLSocket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += data
            buffer += data
            while True:
                if buffer.startswith(b"\r\n\r\n"):
                    self.pings += 1
                    buffer = buffer[4:]
                    with contextlib.suppress(OSError):
                        conn.sendall(b"\r\n")
                    continue
                buffer = buffer.lstrip(b"\r\n") if not buffer.startswith(b"\r\n\r\n") else buffer
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    break
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                if len(rest) < length:
                    break
                buffer = rest[length:]
                if head.startswith(b"REGISTER "):
                    self.registers += 1
                    conn.sendall(self._ok(head))

    def _ok(self, request: bytes) -> bytes:
        keep = [
            line
            for line in request.split(b"\r\n")[1:]
            if re.match(rb"(?i)(via|from|to|call-id|cseq|contact):", line)
        ]
        lines = [b"SIP/2.0 200 OK", *keep]
        lines += [b"Expires: 600", b"Flow-Timer: %d" % self.flow_timer, b"Content-Length: 0"]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def drop(self) -> None:
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self.connections.clear()

    def close(self) -> None:
        self._stop = True
        self.drop()
        self.sock.close()


@pytest.fixture
def registrar(pki: Pki) -> Iterator[TlsRegistrar]:
    server = TlsRegistrar(pki)
    yield server
    server.close()


def test_registers_over_tls_keeps_the_flow_alive_and_reconnects(
    workdir: Path, pki: Pki, registrar: TlsRegistrar, phones
) -> None:  # type: ignore[no-untyped-def]
    alice = phones(
        "alice",
        "answer",
        env={
            "SIPROC_REGISTRAR_URI": f"sips:localhost:{registrar.port}",
            "SIPROC_USERNAME": "alice",
            "SIPROC_TLS_CA_FILE": str(pki.ca),
            "SIPROC_REGISTER_RETRY": "1",  # a flow lost soon after registering: wait 1 s
        },
    )
    alice.wait_for(r"registered as sip:alice@localhost")
    assert b"SIP/2.0/TLS " in registrar.received and b";transport=tls" in registrar.received
    deadline = time.monotonic() + 6  # Flow-Timer 2: pings every 1.6 to 2 s
    while registrar.pings < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert registrar.pings >= 2
    assert len(registrar.connections) == 1  # one flow, reused
    registrar.drop()
    alice.wait_for(r"connection to the registrar 127\.0\.0\.1:\d+ \(TLS\) lost: registering")
    deadline = time.monotonic() + 10
    while registrar.registers < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert registrar.registers >= 2 and len(registrar.connections) == 1


def test_registration_with_the_wrong_ca_says_why_and_sends_nothing(
    workdir: Path, pki: Pki, registrar: TlsRegistrar, phones
) -> None:  # type: ignore[no-untyped-def]
    alice = phones(
        "alice",
        "answer",
        env={
            "SIPROC_REGISTRAR_URI": f"sip:localhost:{registrar.port};transport=tls",
            "SIPROC_USERNAME": "alice",
            "SIPROC_TLS_CA_FILE": str(pki.other_ca),
        },
    )
    line = alice.wait_for(r"registration failed: .*").group(0)
    assert "certificate verify failed" in line and "localhost" in line
    assert alice.count(r"registration failed") == 1
    time.sleep(0.5)
    assert registrar.received == b"" and registrar.registers == 0
    assert registrar.handshake_errors  # the handshake was all that happened


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIPROC_TLS_CERT_FILE": "/nonexistent.pem", "SIPROC_TLS_KEY_FILE": "/x.key"},
         "SIPROC_TLS_CERT_FILE: /nonexistent.pem: no such file"),
        ({"SIPROC_TLS_CA_FILE": "/etc/hostname"}, "SIPROC_TLS_CA_FILE: /etc/hostname"),
    ],
)  # fmt: skip
def test_bad_tls_files_exit_1_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    write_handler(tmp_path / "h.sh", "exit 0\n")
    proc = Siproc(tmp_path / "h.sh", env=env)
    assert proc.proc.wait(15) == 1
    proc.stop()
    assert message in proc.stderr()
