"""Real third-party SIP peers on loopback for interop tests: Kamailio, baresip and SIPp.

This is a library, not a test module. Every peer listens for SIP on 127.0.0.1 only and sends
only to 127.0.0.1 (baresip 1.0.0 binds its RTP and DNS-client sockets to 0.0.0.0, with no option
to change that, but sends media only to the loopback address in the peer's SDP). Each runs in the
foreground as our child in its own process group, writes its log into its working directory, and
is stopped by its PID. The facts these wrappers rely on are in
``PEERS.md`` (shared design notes) and in the comments below.

Typical use (see ``tests/interop/conftest.py`` for the fixtures)::

    kam = Kamailio(tmp / "kamailio")
    kam.add_user("alice", "secret")
    kam.start()
    alice = Baresip(tmp / "alice", "alice", registrar=kam.hostport, password="secret")
    alice.start()
    alice.wait_registered()
    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=5)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

LOOPBACK = "127.0.0.1"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
KAMAILIO_CFG = TESTS_DIR / "interop" / "kamailio" / "kamailio.cfg"
BARESIP_MODULE_DIR = Path("/usr/lib/baresip/modules")
INSTALL_HINT = "run scripts/install-deps.sh (it apt-get installs the missing peers)"

# Debian package that provides each peer binary, for error messages.
PEER_PACKAGES = {
    "kamailio": "kamailio kamailio-sqlite-modules",
    "baresip": "baresip-core",
    "sipp": "sip-tester",
    "sox": "sox",
}

Event = dict[str, Any]


class PeerError(RuntimeError):
    """A peer failed to start, answer or stop; the message carries the tail of its log."""


class PeerMissing(PeerError):
    """A peer binary (or a piece it needs) is not installed on this machine."""


def require_binary(name: str) -> str:
    """Return the path of the peer binary ``name``, or raise PeerMissing saying how to get it."""
    path = shutil.which(name)
    if path is None:
        package = PEER_PACKAGES.get(name, name)
        raise PeerMissing(
            f"{name} is not installed: {INSTALL_HINT}, or apt-get install -y {package}"
        )
    return path


# --------------------------------------------------------------------------------------------
# Ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _bindable(kind: str, port: int) -> bool:
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(kind: Literal["udp", "tcp", "sip"] = "udp", span: int = 1) -> int:
    """Return a loopback port P such that P .. P+span-1 are free now for ``kind``.

    ``kind="sip"`` means free for both UDP and TCP (SIP listens on both). Ports handed out
    earlier in this process are never handed out again, so two peers started one after the
    other do not collide. There is an unavoidable race with other processes between this check
    and the peer binding the port; the range is small and loopback-only, so it is rare.
    """
    kinds = ("udp", "tcp") if kind == "sip" else (kind,)
    with _ports_lock:
        for _ in range(200):
            with socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM if kinds[0] == "udp" else socket.SOCK_STREAM
            ) as probe:
                probe.bind((LOOPBACK, 0))
                base = int(probe.getsockname()[1])
            ports = range(base, base + span)
            if ports[-1] > 65535 or any(p in _handed_out for p in ports):
                continue
            if all(_bindable(k, p) for p in ports for k in kinds):
                _handed_out.update(ports)
                return base
    raise PeerError(f"no free loopback {kind} port range of {span} found")


# --------------------------------------------------------------------------------------------
# Process plumbing shared by the peers


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class _Process:
    """A child process in its own process group, with stdout+stderr going to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._stopped = False
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # own process group: stop() can reach forked children
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise PeerError(
                f"{self.name} exited with status {self.popen.returncode}; "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process (and its process group), then SIGKILL after ``timeout``.

        Only the first call acts; later calls return the exit status.
        """
        if self._stopped:
            return self.popen.returncode
        self._stopped = True
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        else:
            # The leader is gone; make sure no forked child outlives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode


# --------------------------------------------------------------------------------------------
# Kamailio


def sip_options_ping(port: int, timeout: float = 0.5) -> int | None:
    """Send one OPTIONS to sip:127.0.0.1:port over UDP; return the status code, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(timeout)
        local_port = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        request = (
            f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{LOOPBACK}:{local_port}>;tag={tag}\r\n"
            f"To: <sip:{LOOPBACK}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{LOOPBACK}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{LOOPBACK}:{local_port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (LOOPBACK, port))
        try:
            data = sock.recv(65535)
        except OSError:  # timeout, or ICMP port unreachable -> ECONNREFUSED
            return None
    first_line = data.split(b"\r\n", 1)[0].split()
    if len(first_line) >= 2 and first_line[0] == b"SIP/2.0" and first_line[1].isdigit():
        return int(first_line[1])
    return None


class Kamailio:
    """Kamailio 5.6 as registrar + authenticating proxy on udp/tcp 127.0.0.1:port.

    The configuration is ``tests/interop/kamailio/kamailio.cfg`` (see its header for the
    behaviour); users live in a SQLite ``subscriber`` table with plain passwords and can be
    added while it runs. ``realm`` is the digest realm of its challenges. With ``call_auth``
    (the default) INVITE/MESSAGE/REFER/SUBSCRIBE/PUBLISH/OPTIONS whose From user is a
    subscriber are challenged with 407; requests from unknown users pass unauthenticated.
    ``qop`` adds qop="auth" to the challenges.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        realm: str = "siproc.test",
        call_auth: bool = True,
        qop: bool = True,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port("sip")
        # (certificate, key): also listen for SIP over TLS on tls_port (kamailio-tls-modules)
        self.tls = tls
        self.tls_port = free_port("tcp") if tls is not None else 0
        self.realm = realm
        self.call_auth = call_auth
        self.qop = qop
        self.db_path = self.workdir / "users.db"
        self.log_path = self.workdir / "kamailio.log"
        self.rundir = self.workdir / "run"
        self._process: _Process | None = None
        self._create_db()

    @property
    def hostport(self) -> str:
        """``127.0.0.1:PORT``: the domain part of this proxy's URIs."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def uri(self) -> str:
        """``sip:127.0.0.1:PORT``: the registrar / outbound proxy URI."""
        return f"sip:{self.hostport}"

    def aor(self, user: str) -> str:
        """``sip:user@127.0.0.1:PORT``: a user's address of record at this proxy."""
        return f"sip:{user}@{self.hostport}"

    @property
    def tls_hostport(self) -> str:
        """``127.0.0.1:TLSPORT``: where it listens for SIP over TLS."""
        return f"{LOOPBACK}:{self.tls_port}"

    def _write_tls_config(self) -> Path:
        """The tls module's configuration: our certificate; peers are not asked for theirs."""
        assert self.tls is not None
        cert, key = self.tls
        path = self.workdir / "tls.cfg"
        common = "method = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        path.write_text(
            f"[server:default]\n{common}certificate = {cert}\nprivate_key = {key}\n\n"
            f"[client:default]\n{common}"
        )
        return path

    def _create_db(self) -> None:
        with contextlib.closing(sqlite3.connect(self.db_path)) as db, db:
            # The schema of /usr/share/kamailio/db_sqlite/{standard,auth_db}-create.sql; auth_db
            # refuses to start unless `version` says subscriber is at version 7.
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS version (
                    id INTEGER PRIMARY KEY NOT NULL,
                    table_name VARCHAR(32) NOT NULL,
                    table_version INTEGER DEFAULT 0 NOT NULL,
                    CONSTRAINT version_table_name_idx UNIQUE (table_name)
                );
                INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('version', 1);
                CREATE TABLE IF NOT EXISTS subscriber (
                    id INTEGER PRIMARY KEY NOT NULL,
                    username VARCHAR(64) DEFAULT '' NOT NULL,
                    domain VARCHAR(64) DEFAULT '' NOT NULL,
                    password VARCHAR(64) DEFAULT '' NOT NULL,
                    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
                    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
                    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
                );
                CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);
                INSERT OR IGNORE INTO version (table_name, table_version)
                    VALUES ('subscriber', 7);
                """
            )

    def add_user(self, username: str, password: str) -> None:
        """Add (or update) a subscriber; takes effect immediately, even while running."""
        with contextlib.closing(sqlite3.connect(self.db_path)) as db, db:
            db.execute(
                "INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?) "
                "ON CONFLICT (username, domain) DO UPDATE SET password = excluded.password",
                (username, self.realm, password),
            )

    def argv(self) -> list[str]:
        """The kamailio command line (foreground, logging to stderr, loopback only)."""
        binary = require_binary("kamailio")
        if not any(Path("/usr/lib").glob("*/kamailio/modules/db_sqlite.so")):
            raise PeerMissing(
                "kamailio's db_sqlite module is missing: "
                f"{INSTALL_HINT}, or apt-get install -y kamailio-sqlite-modules"
            )
        argv = [
            binary,
            "-f", str(KAMAILIO_CFG),
            "-DD",  # do not daemonize: the main process stays our child
            "-E",  # log to stderr (our log file)
            "-l", f"udp:{self.hostport}",
            "-l", f"tcp:{self.hostport}",
            "-Y", str(self.rundir),
            "-w", str(self.workdir),
            "-m", "64",
            "-M", "8",
            # Strings must come in through -A: #!define values cannot be concatenated (PEERS.md).
            # db_sqlite drops the first "/" after "sqlite://" (it opened "tmp/x.db" relative to
            # -w for "sqlite:///tmp/x.db"), so an absolute path needs four slashes.
            "-A", f'DBURL="sqlite:///{self.db_path}"',
            "-A", f'REALM="{self.realm}"',
            "-A", f'AUTH_FLAGS="{1 if self.qop else 0}"',
        ]  # fmt: skip
        if self.call_auth:
            argv += ["-A", "WITH_CALL_AUTH"]
        if self.tls is not None:
            if not any(Path("/usr/lib").glob("*/kamailio/modules/tls.so")):
                raise PeerMissing(
                    "kamailio's tls module is missing: "
                    f"{INSTALL_HINT}, or apt-get install -y kamailio-tls-modules"
                )
            argv += ["-l", f"tls:{self.tls_hostport}", "-A", "WITH_TLS"]
            argv += ["-A", f'TLSCFG="{self._write_tls_config()}"']
        return argv

    def start(self, timeout: float = 10.0) -> None:
        """Start Kamailio and return once it answers an OPTIONS ping on UDP."""
        if self._process is not None:
            raise PeerError("kamailio already started")
        self.rundir.mkdir(exist_ok=True)
        self._process = _Process("kamailio", self.argv(), self.log_path, self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._process.check_alive()
            if sip_options_ping(self.port, timeout=0.2) == 200:
                return
            time.sleep(0.05)
        self.stop()
        raise PeerError(
            f"kamailio did not answer OPTIONS on {self.hostport} within {timeout} s; "
            f"log:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop Kamailio (SIGTERM to its process group, SIGKILL if it lingers)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        """The whole Kamailio log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# baresip


def _write_silence(path: Path, seconds: float, rate: int = 8000) -> Path:
    """Write ``seconds`` of 16-bit mono silence (stdlib only, so this module needs no numpy)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * round(seconds * rate)))
    return path


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class _NetstringReader:
    """Incremental netstring decoder (``LEN:DATA,``), as spoken by baresip's ctrl_tcp."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            colon = self._buffer.find(b":")
            if colon < 0:
                break
            length_text = self._buffer[:colon]
            if not length_text.isdigit():
                raise PeerError(f"bad netstring length {length_text[:20]!r} from ctrl_tcp")
            end = colon + 1 + int(length_text)
            if len(self._buffer) < end + 1:
                break
            if self._buffer[end : end + 1] != b",":
                raise PeerError("netstring from ctrl_tcp is not terminated by ','")
            frames.append(self._buffer[colon + 1 : end])
            self._buffer = self._buffer[end + 1 :]
        return frames


class Baresip:
    """baresip 1.0.0 as a scriptable phone on 127.0.0.1, driven through ctrl_tcp.

    One account per instance. With ``registrar`` (``"127.0.0.1:PORT"`` or ``"sip:..."``) the
    account is ``sip:user@REGISTRAR`` and registers there with ``password``; without, it is
    ``sip:user@127.0.0.1:sip_port`` and does not register (``regint=0``) but still takes calls
    sent straight to that URI.

    Audio: ``audio_source`` is a WAV at the codec rate (8 kHz mono 16-bit for G.711) that it
    sends; baresip hangs up when the file ends, so its length bounds the call. Without one it
    sends ``silence_seconds`` of digital silence. What it hears is discarded unless ``record``,
    when the sndfile module writes ``dump-<time>-dec.wav`` (heard) and ``-enc.wav`` (sent) per
    call into ``workdir/recordings`` (see ``recordings()``).

    ``contacts`` (name-addrs, the first is the current contact) loads the contact module, whose
    ``/message`` (``message()``) sends a MESSAGE to the current contact. A received MESSAGE shows
    only in baresip's UI output, never in its log or as a ctrl_tcp event: ``console`` loads the
    cons module, which hands the UI output to a TCP client (``console_text()``,
    ``wait_console()``, also written to ``workdir/console.log``).

    Note baresip also listens for SIP over TLS on ``sip_port + 1`` (TCP); ``free_port`` with
    ``span=2`` is used for the default port.
    """

    def __init__(
        self,
        workdir: Path,
        user: str,
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        registrar: str | None = None,
        password: str | None = None,
        audio_source: Path | None = None,
        record: bool = False,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        *,
        answermode: Literal["auto", "manual", "early"] = "auto",
        transport: Literal["udp", "tcp", "tls"] = "udp",
        regint: int = 600,
        silence_seconds: float = 60.0,
        extra_config: Mapping[str, str] | None = None,
        contacts: Sequence[str] = (),
        console: bool = False,
        mediaenc: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.sip_port = sip_port if sip_port is not None else free_port("sip", span=2)
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port("tcp")
        self.registrar = registrar.removeprefix("sip:") if registrar else None
        self.password = password
        self.audio_source = Path(audio_source).resolve() if audio_source else None
        self.record = record
        self.codecs = tuple(codecs)
        self.answermode = answermode
        self.transport = transport
        self.regint = regint
        self.silence_seconds = silence_seconds
        self.extra_config = dict(extra_config or {})
        self.contacts = tuple(contacts)  # name-addrs; the first is the current contact
        self.mediaenc = mediaenc  # e.g. "srtp-mand" (SDES, the srtp module)
        # The cons module sends the UI output (e.g. received MESSAGE text) to a TCP client.
        self.console_port = free_port("tcp") if console else None
        self.console_path = self.workdir / "console.log"
        self._console: socket.socket | None = None
        self._console_reader: threading.Thread | None = None
        self._console_text = ""
        self.config_dir = self.workdir / "config"
        self.recordings_dir = self.workdir / "recordings"
        self.log_path = self.workdir / "baresip.log"

        self._process: _Process | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._events: list[Event] = []  # every event, in arrival order
        self._consumed: set[int] = set()  # indexes already returned by wait_event()
        self._responses: dict[str, Event] = {}
        self._reader_error: BaseException | None = None
        self._tokens = itertools.count(1)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        """The account's address of record."""
        domain = self.registrar or f"{LOOPBACK}:{self.sip_port}"
        return f"sip:{self.user}@{domain}"

    @property
    def direct_uri(self) -> str:
        """A URI that reaches this phone directly, without any proxy."""
        if self.transport == "tls":  # baresip listens for TLS on sip_port + 1
            return f"sip:{self.user}@{LOOPBACK}:{self.sip_port + 1};transport=tls"
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@{LOOPBACK}:{self.sip_port}{suffix}"

    def account_line(self) -> str:
        """The account as baresip's ``accounts`` file / ``uanew`` command spell it."""
        uri = self.aor + (f";transport={self.transport}" if self.transport != "udp" else "")
        params = [
            f"answermode={self.answermode}",
            f"audio_codecs={','.join(self.codecs)}",
            f"regint={self.regint if self.registrar else 0}",
            "mwi=no",
        ]
        if self.password is not None:
            params.append(f"auth_pass={self.password}")
        if self.mediaenc is not None:
            params.append(f"mediaenc={self.mediaenc}")
        return f"<{uri}>;" + ";".join(params)

    # -- configuration -----------------------------------------------------------------------

    def _modules(self) -> list[str]:
        codec_modules = {"PCMU": "g711", "PCMA": "g711", "G722": "g722", "OPUS": "opus"}
        modules: list[str] = []
        for codec in self.codecs:
            name = codec_modules.get(codec.split("/")[0].upper())
            if name is None:
                raise ValueError(f"no baresip module known for codec {codec!r}")
            if name not in modules:
                modules.append(name)
        modules += ["aufile", "aubridge"]
        if self.mediaenc is not None:  # srtp, srtp-mand, srtp-mandf: the srtp module
            modules.append("dtls_srtp" if self.mediaenc.startswith("dtls") else "srtp")
        if self.record:
            modules.append("sndfile")
        if self.console_port is not None:
            modules.append("cons")
        for module in [*modules, "menu", "ctrl_tcp", *(["contact"] if self.contacts else [])]:
            if not (BARESIP_MODULE_DIR / f"{module}.so").exists():
                raise PeerMissing(
                    f"baresip module {module}.so is missing from {BARESIP_MODULE_DIR}: "
                    f"{INSTALL_HINT}, or apt-get install -y baresip-core"
                )
        return modules

    def write_config(self) -> None:
        """Write ``config``, ``accounts`` and ``contacts`` into ``workdir/config``."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.mkdir(exist_ok=True)
        source = self.audio_source
        if source is None:
            # A lone aubridge source produces nothing (no RTP at all), so send silence.
            source = _write_silence(self.workdir / "silence.wav", self.silence_seconds)
        settings: dict[str, str] = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "dns_server": f"{LOOPBACK}:53",  # never ask the system resolver; URIs are IPs
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_source": f"aufile,{source}",
            # aubridge pairs a player with the source of the same name; nothing is named
            # "siproc-null" on the source side, so this is a null sink.
            "audio_player": "aubridge,siproc-null",
            "audio_alert": "aubridge,siproc-null",
            "audio_level": "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "no",
            "statmode_default": "off",  # no call status bar redrawn into the log
            "module_path": str(BARESIP_MODULE_DIR),
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "snd_path": str(self.recordings_dir),
            **({"cons_listen": f"{LOOPBACK}:{self.console_port}"} if self.console_port else {}),
        }
        settings.update(self.extra_config)
        lines = [f"{key}\t\t{value}" for key, value in settings.items()]
        lines += [f"module\t\t{name}.so" for name in self._modules()]
        lines += ["module_app\t\tmenu.so", "module_app\t\tctrl_tcp.so"]
        if self.contacts:  # the contact module brings /message (to the current contact)
            lines.append("module_app\t\tcontact.so")
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")
        # The account is created through ctrl_tcp once we listen for events (see start()).
        (self.config_dir / "accounts").write_text("")
        (self.config_dir / "contacts").write_text("".join(f"{c}\n" for c in self.contacts))

    # -- life cycle ----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        # -n 127.0.0.1 (not "lo", which fails on some machines) keeps every address loopback.
        return [require_binary("baresip"), "-f", str(self.config_dir), "-n", LOOPBACK, "-4"]

    def start(self, timeout: float = 10.0) -> None:
        """Start baresip, connect to ctrl_tcp and create the account.

        The account is created with ``uanew`` after the event connection is up, so that no
        REGISTER_OK/REGISTER_FAIL event can happen before we listen. It does not wait for the
        registration: call ``wait_registered()``.
        """
        if self._process is not None:
            raise PeerError(f"baresip {self.user} already started")
        self.write_config()
        self._process = _Process(f"baresip {self.user}", self.argv(), self.log_path, self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            self._process.check_alive()
            try:
                self._sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PeerError(
                        f"baresip {self.user}: ctrl_tcp on {self.ctrl_port} not reachable "
                        f"within {timeout} s; log:\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"baresip-{self.user}-ctrl", daemon=True
        )
        self._reader.start()
        if self.console_port is not None:
            self._console = socket.create_connection((LOOPBACK, self.console_port), timeout=5)
            self._console.settimeout(None)
            self._console_reader = threading.Thread(
                target=self._read_console, name=f"baresip-{self.user}-cons", daemon=True
            )
            self._console_reader.start()
        response = self.command("uanew", self.account_line())
        if not response.get("ok"):
            raise PeerError(f"baresip {self.user}: uanew failed: {response}")

    def stop(self) -> None:
        """Stop baresip (SIGTERM, SIGKILL if it lingers) and close the control connection."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._console is not None:
            self._console.close()  # after the process: its reader has seen the end by now
            self._console = None
        if self._console_reader is not None:
            self._console_reader.join(timeout=2)
            self._console_reader = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        """baresip's console output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- ctrl_tcp --------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        decoder = _NetstringReader()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    message = json.loads(frame)
                    with self._cond:
                        if message.get("event"):
                            self._events.append(message)
                        elif message.get("response"):
                            self._responses[str(message.get("token"))] = message
                        self._cond.notify_all()
        except (OSError, ValueError) as exc:
            with self._cond:
                self._reader_error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> Event:
        """Run a baresip (menu) command through ctrl_tcp and return its response object.

        The response looks like ``{"response": true, "ok": true, "data": "...", "token": "7"}``.
        """
        if self._sock is None:
            raise PeerError(f"baresip {self.user} is not running")
        token = str(next(self._tokens))
        payload = json.dumps({"command": command, "params": params, "token": token})
        with self._send_lock:
            self._sock.sendall(_netstring(payload.encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._reader is None or not self._reader.is_alive():
                    raise PeerError(
                        f"baresip {self.user}: no response to {command!r} "
                        f"(reader error: {self._reader_error}); log:\n{_tail(self.log_path)}"
                    )
                self._cond.wait(remaining)
            return self._responses.pop(token)

    def dial(self, uri: str) -> Event:
        """Place a call to ``uri`` (a full SIP URI)."""
        return self.command("dial", uri)

    def accept(self) -> Event:
        """Answer the current incoming call (with ``answermode="manual"``)."""
        return self.command("accept")

    def hangup(self) -> Event:
        """Hang up the current call."""
        return self.command("hangup")

    def send_dtmf(self, digits: str) -> Event:
        """Send DTMF ``digits`` in the current call (RFC 4733 telephone-event)."""
        return self.command("sndcode", digits)

    def hold(self) -> Event:
        """Put the current call on hold (a re-INVITE with a=sendonly)."""
        return self.command("hold")

    def resume(self) -> Event:
        """Take the current call off hold (a re-INVITE with a=sendrecv)."""
        return self.command("resume")

    def message(self, text: str) -> Event:
        """Send a SIP MESSAGE (out of dialog) with ``text`` to the current contact (needs
        ``contacts``). baresip shows received MESSAGEs only in its log: ``peer: "text"``."""
        return self.command("message", text)

    # -- events --------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """A copy of every event received so far, in order."""
        with self._cond:
            return list(self._events)

    def event_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.events]

    def wait_event(
        self, event_type: str | Iterable[str], timeout: float = 10.0, **fields: object
    ) -> Event:
        """Return the oldest event of ``event_type`` (or one of several) not returned before.

        Events are kept from the start, so one that arrived before this call is found; each
        event is returned once. ``fields`` must match too, e.g. ``id=call_id`` or
        ``peeruri="sip:bob@..."``. Raises TimeoutError listing what did arrive.
        """
        wanted = {event_type} if isinstance(event_type, str) else set(event_type)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if (
                        index not in self._consumed
                        and event.get("type") in wanted
                        and all(event.get(key) == value for key, value in fields.items())
                    ):
                        self._consumed.add(index)
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [event.get("type") for event in self._events]
                    raise TimeoutError(
                        f"baresip {self.user}: no {sorted(wanted)} event {fields or ''} "
                        f"within {timeout} s; "
                        f"events so far: {seen}; log:\n{_tail(self.log_path, 30)}"
                    )
                self._cond.wait(remaining)

    def wait_registered(self, timeout: float = 10.0) -> Event:
        """Wait for REGISTER_OK; raise PeerError at once on REGISTER_FAIL."""
        event = self.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout)
        if event.get("type") != "REGISTER_OK":
            raise PeerError(f"baresip {self.user}: registration failed: {event}")
        return event

    # -- recordings ----------------------------------------------------------------------------

    # -- console (cons module: UI output) --------------------------------------------------------

    def _read_console(self) -> None:
        sock = self._console
        assert sock is not None
        with open(self.console_path, "ab") as out:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                out.write(data)
                out.flush()
                with self._cond:
                    self._console_text += data.decode("utf-8", "replace")
                    self._cond.notify_all()

    def console_text(self) -> str:
        """The UI output so far (needs ``console=True``): what baresip's UI shows a user."""
        with self._cond:
            return self._console_text

    def wait_console(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the UI output contains ``text``; return the whole output."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while text not in self._console_text:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"baresip {self.user}: {text!r} never shown; UI output:\n"
                        f"{self._console_text[-3000:]}"
                    )
                self._cond.wait(remaining)
            return self._console_text

    def recordings(self, kind: Literal["dec", "enc"] | None = None) -> list[Path]:
        """The sndfile dumps, oldest first: ``*-dec.wav`` is what it heard, ``*-enc.wav`` sent.

        A dump is complete once its call has closed (wait for CALL_CLOSED first). Names have
        1-second resolution, so two calls of one phone within a second share a file name.
        """
        pattern = f"dump-*-{kind}.wav" if kind else "dump-*.wav"
        return sorted(self.recordings_dir.glob(pattern), key=lambda p: (p.stat().st_mtime, p))


# --------------------------------------------------------------------------------------------
# SIPp


def sipp_argv(
    scenario: Path | Literal["uac", "uas"] | str,
    remote: str | None,
    local_port: int,
    *,
    calls: int = 1,
    transport: Literal["udp", "tcp"] = "udp",
    media_port: int | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The sipp command line: loopback only, ``calls`` calls then exit, no keyboard, traces on."""
    if isinstance(scenario, Path):
        scenario_args = ["-sf", str(scenario)]
    elif scenario in ("uac", "uas", "regexp", "3pcc-A", "3pcc-B", "3pcc-C-A", "3pcc-C-B"):
        scenario_args = ["-sn", scenario]
    else:
        raise ValueError(f"unknown built-in sipp scenario {scenario!r} (pass a Path for a file)")
    argv = [
        require_binary("sipp"),
        *([remote] if remote else []),
        *scenario_args,
        "-i", LOOPBACK,
        "-p", str(local_port),
        "-mi", LOOPBACK,
        "-mp", str(media_port if media_port is not None else free_port("udp", span=4)),
        "-t", "u1" if transport == "udp" else "t1",
        "-m", str(calls),
        "-timeout", f"{timeout:g}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-trace_msg",
        "-trace_stat",
        *extra_args,
    ]  # fmt: skip
    return argv


class Sipp:
    """One sipp run in the background (e.g. a UAS waiting for a call); ``wait()`` collects it.

    Traces (``*_messages.log``, ``*_errors.log``, ``*.csv``) and the screen output
    (``sipp-<name>.log``) land in ``workdir``.
    """

    def __init__(
        self,
        workdir: Path,
        scenario: Path | Literal["uac", "uas"] | str,
        remote: str | None = None,
        local_port: int | None = None,
        *,
        calls: int = 1,
        transport: Literal["udp", "tcp"] = "udp",
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.local_port = local_port if local_port is not None else free_port("sip")
        self.timeout = timeout
        label = name or (scenario.stem if isinstance(scenario, Path) else scenario)
        self.log_path = self.workdir / f"sipp-{label}-{self.local_port}.log"
        self.argv = sipp_argv(
            scenario,
            remote,
            self.local_port,
            calls=calls,
            transport=transport,
            timeout=timeout,
            extra_args=extra_args,
        )
        self._process: _Process | None = None

    @property
    def uri(self) -> str:
        """``sip:service@127.0.0.1:PORT``: where a UAS scenario takes calls."""
        return f"sip:service@{LOOPBACK}:{self.local_port}"

    def start(self) -> Sipp:
        self._process = _Process("sipp", self.argv, self.log_path, self.workdir)
        return self

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Wait until sipp has bound its SIP port (UDP), so a peer can send to it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None:
                self._process.check_alive()
            if not _bindable("udp", self.local_port):
                return
            time.sleep(0.05)
        raise PeerError(f"sipp did not bind udp {self.local_port}; log:\n{_tail(self.log_path)}")

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Wait for sipp to finish (killing it after ``timeout``); return its exit and output.

        sipp exits 0 when every call succeeded, 1 when some failed, and higher on errors.
        """
        if self._process is None:
            raise PeerError("sipp was not started")
        limit = timeout if timeout is not None else self.timeout + 10
        try:
            self._process.popen.wait(limit)
        except subprocess.TimeoutExpired:
            self._process.stop()
            raise PeerError(
                f"sipp still running after {limit} s; log:\n{_tail(self.log_path)}"
            ) from None
        self._process.stop()
        return subprocess.CompletedProcess(
            self.argv, self._process.popen.returncode, self.output(), ""
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def traces(self) -> list[Path]:
        """The trace files sipp wrote into workdir."""
        return sorted(p for p in self.workdir.iterdir() if p.suffix in (".log", ".csv"))


def run_sipp(
    scenario: Path | Literal["uac", "uas"] | str,
    remote: str | None,
    local_port: int | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    *,
    workdir: Path,
    calls: int = 1,
    transport: Literal["udp", "tcp"] = "udp",
) -> subprocess.CompletedProcess[str]:
    """Run sipp to completion in the foreground and return its exit status and screen output.

    ``scenario`` is a scenario file, or the name of a built-in one ("uac", "uas", ...).
    ``remote`` is ``"127.0.0.1:PORT"`` (None for a UAS). ``timeout`` is sipp's own global
    timeout (it then fails); we kill it 10 s later if it still runs.
    """
    sipp = Sipp(
        workdir,
        scenario,
        remote,
        local_port,
        calls=calls,
        transport=transport,
        timeout=timeout,
        extra_args=extra_args,
    )
    return sipp.start().wait()
