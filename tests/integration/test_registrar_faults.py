"""Faults of the network around a real siproc (issue 8, item 8) and what it keeps secret (item 7).

A registrar whose name does not resolve yet (the tests' DNS server in a loopback-only network
namespace), a registrar that is stopped and started again (UDP and TCP), all with the small
Python registrar of tests/fake_registrar.py on a free port: siproc keeps running and serving,
and registers again within one backoff step. And: a media worker's environment holds no
password, a log of every SIP message of a registration with digest auth shows neither the
password nor the digest response, and OPTIONS answers with a Server header without a version.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rfc4475_send import final_options
from tests.netns import loopback_netns
from tests.siproc_proc import Siproc, handler_dir

ROOT = Path(__file__).resolve().parents[2]
REGISTRAR = ROOT / "tests" / "fake_registrar.py"
DNS_SERVER = ROOT / "tests" / "dns_server.py"
PASSWORD = "s3cr3t-Pa55"
HANDLER = "exec cat > /dev/null\n"
FAILED = r"registration failed: (.*) \(next try in (\d+) s\)"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path, HANDLER)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port")


class Registrar:
    """tests/fake_registrar.py as a process (in a namespace with ``netns``); its output lines."""

    def __init__(self, port: int, *args: str, netns: str | None = None) -> None:
        argv = [sys.executable, str(REGISTRAR), str(port), *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == f"ready {port}", line
        self.port = port
        self.lines: list[str] = []
        self._next = 0  # wait_line() looks from here on
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float) -> str:
        """The next output line matching ``pattern`` (the registrar prints one per REGISTER)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._next < len(self.lines):
                    line = self.lines[self._next]
                    self._next += 1
                    if re.search(pattern, line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the registrar never printed {pattern!r}; it printed {self.lines}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._reader.join(2)


@contextlib.contextmanager
def registrar(port: int, *args: str, netns: str | None = None) -> Iterator[Registrar]:
    server = Registrar(port, *args, netns=netns)
    try:
        yield server
    finally:
        server.stop()


def account_env(uri: str, **extra: str) -> dict[str, str]:
    return {
        "SIPROC_REGISTRAR_URI": uri,
        "SIPROC_USERNAME": "alice",
        "SIPROC_REGISTER_EXPIRES": "60",
        "SIPROC_MEDIA_WORKERS": "0",
        **extra,
    }


def test_a_tcp_registrar_that_is_stopped_and_started_again_is_registered_with_again(
    workdir: Path,
) -> None:
    port = free_port()
    env = account_env(f"sip:127.0.0.1:{port};transport=tcp", SIPROC_REGISTER_RETRY="1")
    with registrar(port) as first:
        phone = Siproc(workdir / "h.sh", cwd=workdir, env=env).wait_ready()
        try:
            phone.wait_for(r"registered as sip:alice@127\.0\.0\.1", timeout=10)
            first.wait_line(r"^REGISTERED tcp sip:alice@127\.0\.0\.1:\d+;transport=tcp", 5)
            time.sleep(1.2)  # past retry_min: a drop is answered at once
            first.stop()  # its connection drops with it
            lost = phone.wait_for(r"connection to the registrar 127\.0\.0\.1:\d+ \(TCP\) lost")
            mark = len(phone.lines)
            failed = phone.wait_for(FAILED, timeout=10, start=mark)
            assert "Connection refused" in failed.group(1), failed.group(0)
            time.sleep(3.5)  # a few refused attempts: one line each, the backoff doubling
            steps = [int(m) for m in re.findall(r"next try in (\d+) s", phone.stderr())]
            assert steps[:3] == [1, 2, 4], steps
            assert phone.count(r"WARNING|ERROR") == len(steps) + 1  # + the "lost" line
            with registrar(port) as second:
                started = time.monotonic()
                mark = len(phone.lines)
                step = [int(m) for m in re.findall(r"next try in (\d+) s", phone.stderr())][-1]
                phone.wait_for(r"registered as sip:alice@", timeout=step + 3, start=mark)
                assert time.monotonic() - started <= step + 3
                second.wait_line(r"^REGISTERED tcp ", 5)
                assert phone.proc.poll() is None
                phone.stop()
            assert lost
        finally:
            phone.stop()
            print(phone.stderr())
    assert phone.proc.returncode == 0


def test_a_udp_registrar_that_is_stopped_and_started_again_is_registered_with_again(
    workdir: Path,
) -> None:
    port = free_port()
    env = account_env(f"sip:127.0.0.1:{port}")
    with registrar(port, "--expires", "2") as first:  # a refresh every second
        phone = Siproc(workdir / "h.sh", cwd=workdir, env=env).wait_ready()
        try:
            first.wait_line(r"^REGISTERED udp ", 10)
            first.wait_line(r"^REGISTERED udp ", 5)  # refreshed
            first.stop()
            time.sleep(3)  # refreshes go unanswered (retransmitted)
            with registrar(port, "--expires", "2") as second:
                second.wait_line(r"^REGISTERED udp sip:alice@127\.0\.0\.1:\d+", 10)
                second.wait_line(r"^REGISTERED udp ", 5)  # and kept fresh
                assert phone.proc.poll() is None
                phone.stop()
        finally:
            phone.stop()
            print(phone.stderr())
    assert phone.proc.returncode == 0


@pytest.mark.netns
def test_siproc_started_while_the_registrar_name_does_not_resolve_registers_once_it_does(
    workdir: Path,
) -> None:
    with loopback_netns("test_registrar_faults", resolv_conf="nameserver 127.0.0.1\n") as ns:
        dns = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(DNS_SERVER), "{}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
        phone = None
        try:
            with registrar(5060, netns=ns) as server:
                env = account_env("sip:pbx.example.test:5060", SIPROC_REGISTER_RETRY="2")
                phone = Siproc(workdir / "h.sh", cwd=workdir, env=env, netns=ns).wait_ready()
                failed = phone.wait_for(FAILED, timeout=10)
                assert failed.group(1) == (
                    "cannot reach the registrar: cannot resolve 'pbx.example.test': "
                    "Name or service not known"
                ), failed.group(0)
                assert failed.group(2) == "2"
                phone.wait_for(FAILED, timeout=10, start=phone.lines.index(failed.string) + 1)
                # Still serving: OPTIONS is answered.
                reply = subprocess.run(
                    ["ip", "netns", "exec", ns, sys.executable, "-c", OPTIONS, str(phone.port)],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=True,
                    cwd=ROOT,
                )
                assert json.loads(reply.stdout)["text"].startswith("SIP/2.0 200 OK"), reply
                assert phone.proc.poll() is None
                # DNS now knows the name: registered within one backoff step.
                dns.kill()
                dns.wait(5)
                zone = json.dumps({"a": {"pbx.example.test.": "127.0.0.1"}})
                dns = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, str(DNS_SERVER), zone],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
                resolving = time.monotonic()
                mark = len(phone.lines)
                step = [int(m) for m in re.findall(r"next try in (\d+) s", phone.stderr())][-1]
                phone.wait_for(r"registered as sip:alice@pbx\.example\.test", step + 3, mark)
                assert time.monotonic() - resolving <= step + 3
                server.wait_line(r"^REGISTERED udp sip:alice@127\.0\.0\.1:\d+ expires=60", 5)
                assert phone.count(r"registration failed") == len(
                    re.findall(r"next try in", phone.stderr())
                )
                phone.stop()  # un-REGISTERs while the registrar is still there
                assert "gave up waiting" not in phone.stderr()
        finally:
            dns.kill()
            dns.wait(5)
            if phone is not None:
                phone.stop()
                print(phone.stderr())


OPTIONS = """
import json, sys
from tests.integration.rfc4475_send import final_options
print(json.dumps(final_options(("127.0.0.1", int(sys.argv[1])))))
"""


# -- secrets (item 7) ------------------------------------------------------------------------


def test_the_password_and_digest_response_stay_out_of_logs_workers_and_process_titles(
    workdir: Path,
) -> None:
    port = free_port()
    env = account_env(
        f"sip:127.0.0.1:{port}",
        SIPROC_PASSWORD=PASSWORD,
        SIPROC_MEDIA_WORKERS="2",
        SIPROC_MEDIA_IDLE="0",  # both workers start with siproc (else with the first call)
    )
    with registrar(port, "--password", PASSWORD, "--expires", "60") as server:
        phone = Siproc(workdir / "h.sh", cwd=workdir, env=env, log_level=6).wait_ready()
        try:
            phone.wait_for(r"registered as sip:alice@", timeout=10)
            digest = server.wait_line(r"^AUTHORIZED [0-9a-f]{32}$", 5).split()[1]
            server.wait_line(r"^REGISTERED udp ", 5)  # after that verified digest answer
            phone.wait_for(r"Authorization: <hidden>")  # the REGISTER was logged, masked
            workers = phone.children(media_workers=True)
            assert len(workers) == 2
            for pid, _state in [(phone.proc.pid, ""), *workers]:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert PASSWORD.encode() not in cmdline, pid
                if pid != phone.proc.pid:  # siproc itself was given it
                    assert PASSWORD.encode() not in environ, pid
                    assert b"SIPROC_" not in environ, pid
        finally:
            phone.stop()
        log = "\n".join(phone.lines)  # every line, up to the un-REGISTER at the end
        assert "Authorization: <hidden>" in log
        assert PASSWORD not in log
        assert digest not in log


def test_options_and_requests_do_not_advertise_the_version(workdir: Path) -> None:
    import siproc

    phone = Siproc(workdir / "h.sh", cwd=workdir).wait_ready()
    custom = Siproc(
        workdir / "h.sh", cwd=workdir, env={"SIPROC_USER_AGENT": "acme-door"}
    ).wait_ready()
    try:
        reply = final_options(("127.0.0.1", phone.port))
        assert reply is not None
        text = str(reply["text"])
        assert "\r\nServer: siproc\r\n" in text, text
        assert siproc.__version__ not in text and not re.search(r"siproc/\d", text)
        reply = final_options(("127.0.0.1", custom.port))
        assert reply is not None and "\r\nServer: acme-door\r\n" in str(reply["text"])
    finally:
        phone.stop()
        custom.stop()
