"""Configuration from the environment, validated once into a frozen `Config`.

The variables are those of the original manual page (its ENVIRONMENT section; note its typo:
the password variable is SIPROC_PASSWORD) plus the ones this version adds, all documented in
siproc(1). Among them: SIPROC_REGISTER_RETRY, the first step of the backoff with which every
failed registration is retried (an unresolvable registrar name, no answer, a refused or
dropped TCP connection: calls/account.py); SIPROC_USER_AGENT, the User-Agent and Server
headers, "siproc" without the version by default; SIPROC_CDR, the file of call detail records
(calls/records.py: its form is checked here, whether it opens at start-up); SIPROC_METRICS,
where /metrics and /healthz listen (calls/metrics.py; 127.0.0.1 unless an address is given);
SIPROC_TTS_COMMAND, SIPROC_TTS_CACHE_DIR, SIPROC_TTS_CACHE_SIZE and SIPROC_TTS_TIMEOUT, the
text-to-speech engine of SAY and its disk cache (TtsSettings, net/tts.py); SIPROC_MEDIA_IDLE,
how long a media worker without calls runs; SIPROC_DRAIN_TIMEOUT, the seconds a drain (DRAIN,
SIGUSR1: calls/drain.py) waits for the calls still up before it ends them as QUIT does (0, the
default: as long as they last); SIPROC_INSTANCE_ID, the +sip.instance of the registered
Contact (RFC 5626) for several instances of one account; SIPROC_LOG_FORMAT, text (default)
or json (one JSON object per log line, logs.py); SIPROC_AUDIO_FDS, audio pipes for every
handler (fd 3: the far end's audio, fd 4: audio to send; 16-bit little-endian mono PCM at
16 kHz: calls/audio_fds.py says why a setting and not a command). SECRET_VARIABLES never reach
a child process. A missing or malformed value raises `ConfigError` naming the variable, and
the CLI exits 1 with that one line.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from siproc.logs import LOG_FORMATS
from siproc.logs import LOG_LEVELS as LOG_LEVELS  # its old home: config.LOG_LEVELS
from siproc.media.codecs.catalog import CodecEntry, CodecPriorityError, apply_priorities
from siproc.sdp.sdes import SrtpMode
from siproc.sip import framing
from siproc.sip.errors import ParseError
from siproc.sip.uri import NameAddr, SipUri, parse_host_port, parse_name_addr, parse_sip_uri

DEFAULT_SIP_PORT = 5060
DEFAULT_TLS_PORT = 5061  # RFC 3261 section 19.1.2: sips: and SIP over TLS (net/tls.py)
DEFAULT_RTP_PORTS = (10000, 20000)
DEFAULT_MAX_CALLS = 1000
MAX_MEDIA_WORKERS = 64
# SIPROC_MEDIA_PRIORITY, most first (net/media_priority.py asks the kernel for them).
MEDIA_PRIORITIES = ("realtime", "high", "normal")


def default_media_workers() -> int:
    """One media worker process per CPU this process may run on (net/media_worker.py)."""
    try:
        return max(1, min(MAX_MEDIA_WORKERS, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # not Linux
        return max(1, min(MAX_MEDIA_WORKERS, os.cpu_count() or 1))


# Limits of the SIP listener (net/sip_transport.py, sip/framing.py): safe on the open internet.
# The TCP ones are defined here, below the edges (net/sip_transport.py takes them from here).
# Message size (octets, UDP and TCP; 513 beyond, RFC 3261 section 21.5.14); TCP connections from
# one IPv4 address or IPv6 /64; seconds to the first complete message and to complete each one;
# seconds without traffic either way (RFC 5626 pings count) before a TCP connection is closed.
DEFAULT_MAX_MESSAGE_SIZE = framing.DEFAULT_MAX_MESSAGE_SIZE
MAX_MESSAGE_SIZE_RANGE = (1_500, 1 << 20)
DEFAULT_TCP_MAX_PER_SOURCE = 32
DEFAULT_TCP_MESSAGE_TIMEOUT = framing.DEFAULT_MESSAGE_TIMEOUT
# Well above the 120 s between RFC 5626 keep-alive pings on connection-oriented transports
# (RFC 5626 section 4.4.1).
DEFAULT_TCP_IDLE_TIMEOUT = 600.0

DEFAULT_REGISTER_EXPIRES = 600
DEFAULT_REGISTER_RETRY = 30  # seconds before the first retry; doubles up to 15 min
DEFAULT_USER_AGENT = "siproc"  # no version: strangers need not learn which bugs we have
MAX_USER_AGENT = 200
# Variables no child process gets: handlers (calls/phone.py) and media workers
# (net/media_pool.py, which passes no SIPROC_ variable at all) run without them.
SECRET_VARIABLES = frozenset({"SIPROC_PASSWORD"})
DEFAULT_LOG_LEVEL = 3
DEFAULT_TIMER_T1_MS = 500  # RFC 3261 section 17.1.1.1
# Flood limits (siproc(1), LIMITS): new incoming calls per source address, handler starts in all.
DEFAULT_CALL_RATE = 10.0  # per second and source address (IPv6: /64)
DEFAULT_CALL_BURST = 20
DEFAULT_SPAWN_RATE = 400.0  # handler starts per second, all calls together
DEFAULT_RING_TIMEOUT = 120  # seconds an incoming call may ring unanswered (then 480)
DEFAULT_RTP_TIMEOUT = 0  # seconds without RTP that end a connected call; 0: never
DEFAULT_MAX_CALL_DURATION = 86400  # seconds; 0: no limit
DEFAULT_METRICS_ADDRESS = "127.0.0.1"  # SIPROC_METRICS=PORT listens here (calls/metrics.py)
# SIPROC_DRAIN_TIMEOUT: seconds after DRAIN (or SIGUSR1) until the calls still up are ended as
# QUIT ends them (calls/drain.py); 0: wait for them however long they last.
DEFAULT_DRAIN_TIMEOUT = 0.0
MAX_DRAIN_TIMEOUT = 31_536_000.0

# SIPROC_LOG_LEVEL 0-6 (0 quietest) onto Python logging levels: logs.LOG_LEVELS. 5 adds the
# transaction and dialog state machines; 6 adds every SIP message in and out.
SIP_TRACE_LEVEL = 6
# RFC 3261 section 25.1: characters a URI user part carries unescaped, besides alphanumerics.
_USER_UNRESERVED = "-_.!~*'()&=+$,;?/"


class ConfigError(Exception):
    """A configuration value the user must fix; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """Who may start something with us outside a dialog (SIPROC_INBOUND, siproc(1) SECURITY).

    ``registrar``: only the registrar's (outbound proxy's) transport addresses, and only for our
    own user; ``networks`` empty and not ``registrar``: anyone. ``reject``: the status refused
    requests get (403), or None to drop them silently."""

    registrar: bool
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    reject: int | None

    @property
    def open(self) -> bool:
        return not self.registrar and not self.networks


@dataclass(frozen=True, slots=True)
class Limits:
    """Flood limits and call timers (siproc(1), LIMITS); rates are per second."""

    call_rate: float  # new incoming calls per source address
    call_burst: int
    spawn_rate: float  # handler starts, all calls together
    ring_timeout: float  # unanswered incoming call -> 480; 0: never
    rtp_timeout: float  # connected call without RTP -> BYE; 0: never
    max_call_duration: float  # any call -> hung up; 0: never


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """SIP over TLS (siproc(1), TLS; net/tls.py): SIPROC_TLS_CA_FILE, SIPROC_TLS_VERIFY,
    SIPROC_TLS_CERT_FILE, SIPROC_TLS_KEY_FILE and SIPROC_TLS_PORT. ``verify`` False
    (SIPROC_TLS_VERIFY=no) skips the certificate and host name checks of servers;
    ``cert_file`` and ``key_file`` (both or neither) make siproc listen for TLS on ``port``
    (0: a free port)."""

    ca_file: str | None = None  # None: the system's CA store
    verify: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    port: int = DEFAULT_TLS_PORT

    @property
    def listens(self) -> bool:
        return self.cert_file is not None


DEFAULT_TTS_CACHE_SIZE = 100  # MB of rendered speech kept (SAY, net/tts.py)
DEFAULT_TTS_TIMEOUT = 30  # seconds a text-to-speech engine may take for one SAY


@dataclass(frozen=True, slots=True)
class TtsSettings:
    """Text to speech for SAY (siproc(1), SAY; net/tts.py): SIPROC_TTS_COMMAND, the engine's
    argv template (``{text}``, ``{file}``; None: ``espeak-ng`` if it is on PATH),
    SIPROC_TTS_CACHE_DIR, SIPROC_TTS_CACHE_SIZE (MB) and SIPROC_TTS_TIMEOUT (seconds)."""

    command: tuple[str, ...] | None = None
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "siproc", "tts")
    cache_size: int = DEFAULT_TTS_CACHE_SIZE * 1_000_000  # bytes
    timeout: float = DEFAULT_TTS_TIMEOUT


@dataclass(frozen=True, slots=True)
class Config:
    registrar: SipUri | None
    identity: NameAddr | None  # None: built from the local address at run time
    username: str | None
    password: str | None
    sip_port: int
    bind_address: str | None
    public_address: str | None
    rtp_ports: tuple[int, int]
    max_calls: int
    media_workers: int  # processes that run the RTP streams; 0: in the main process
    media_priority: str  # the most CPU priority the workers ask for (net/media_priority.py)
    register_expires: int
    log_level: int
    codecs: tuple[CodecEntry, ...]
    timer_t1: float = DEFAULT_TIMER_T1_MS / 1000  # seconds
    media_idle: float = 30.0  # seconds a worker without calls runs; 0: all start, none stops
    inbound: InboundPolicy = InboundPolicy(registrar=False, networks=(), reject=403)
    accept_refer: tuple[str, ...] | bool = True  # True/False, or glob patterns of targets
    limits: Limits = Limits(
        DEFAULT_CALL_RATE,
        DEFAULT_CALL_BURST,
        DEFAULT_SPAWN_RATE,
        DEFAULT_RING_TIMEOUT,
        DEFAULT_RTP_TIMEOUT,
        DEFAULT_MAX_CALL_DURATION,
    )
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    tcp_max_per_source: int = DEFAULT_TCP_MAX_PER_SOURCE
    tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT
    srtp: SrtpMode = SrtpMode.OFF  # SIPROC_SRTP: SDES-keyed SRTP (RFC 4568, sdp/sdes.py)
    register_retry: int = DEFAULT_REGISTER_RETRY  # first retry of a failed registration (s)
    user_agent: str = DEFAULT_USER_AGENT  # our User-Agent and Server headers
    # SIPROC_SRTP_INSECURE_SIGNALLING=yes: SDES keys also in SDP sent over UDP/TCP (cleartext)
    srtp_insecure_signalling: bool = False
    tls: TlsSettings = TlsSettings()
    cdr: str | None = None  # SIPROC_CDR: the call detail records file (calls/records.py)
    metrics: tuple[str, int] | None = None  # SIPROC_METRICS: where /metrics listens
    tts: TtsSettings = TtsSettings()
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT  # SIPROC_DRAIN_TIMEOUT (s); 0: none
    # SIPROC_INSTANCE_ID: "urn:uuid:..." for the +sip.instance of our Contact (RFC 5626 4.1)
    instance_id: str | None = None
    log_format: str = LOG_FORMATS[0]  # SIPROC_LOG_FORMAT: text, or json (one object per line)
    audio_fds: bool = False  # SIPROC_AUDIO_FDS: handlers get fds 3 and 4 (calls/audio_fds.py)

    @property
    def transport(self) -> str:
        """The transport used towards the registrar (udp without one)."""
        return self.registrar.transport if self.registrar else "udp"

    def __repr__(self) -> str:  # never show the password
        return f"Config(registrar={self.registrar}, identity={self.identity}, port={self.sip_port})"


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() then refuses."""
    return text.isascii() and text.isdigit() and len(text) <= 10


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not _is_number(text) or int(text) < low or int(text) > high:
        raise ConfigError(name, f"must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def _decimal(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    what: str = "a number",
) -> float:
    """A decimal number (``2.5``: digits, at most one point) from ``low`` to ``high``."""
    text = env.get(name, "").strip()
    if not text:
        return default
    whole, dot, fraction = text.partition(".")
    valid = _is_number(whole) and (not dot or _is_number(fraction))
    if not valid or not low <= float(text) <= high:
        raise ConfigError(name, f"must be {what} from {low:g} to {high:g}, not {text!r}")
    return float(text)


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A duration in seconds, decimals allowed (``2.5``)."""
    return _decimal(env, name, default, low, high, "a number of seconds")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (case-insensitive); the first is the default."""
    text = env.get(name, "").strip().lower()
    if not text:
        return choices[0]
    if text not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, not {text!r}")
    return text


def _ip(env: Mapping[str, str], name: str) -> str | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ConfigError(
            name, f"must be an IP address such as 127.0.0.1 or ::1, not {text!r}"
        ) from None


def _public_address(env: Mapping[str, str]) -> str | None:
    """An IP address or a host name: it goes into Via, Contact and SDP as it is."""
    text = env.get("SIPROC_PUBLIC_ADDRESS", "").strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    try:
        host, port = parse_host_port(text)
        if port is None:
            return host
    except ParseError:
        pass
    raise ConfigError(
        "SIPROC_PUBLIC_ADDRESS", f"must be an IP address or a host name (no port), not {text!r}"
    )


def _inbound(env: Mapping[str, str], registrar: SipUri | None) -> InboundPolicy:
    name = "SIPROC_INBOUND"
    text = env.get(name, "").strip().lower() or ("registrar" if registrar else "any")
    reject_text = env.get("SIPROC_INBOUND_REJECT", "").strip().lower() or "403"
    if reject_text not in ("403", "drop"):
        raise ConfigError("SIPROC_INBOUND_REJECT", f"must be 403 or drop, not {reject_text!r}")
    reject = None if reject_text == "drop" else 403
    if text == "any":
        return InboundPolicy(registrar=False, networks=(), reject=reject)
    if text == "registrar":
        if registrar is None:
            raise ConfigError(name, "is registrar, but SIPROC_REGISTRAR_URI is not set")
        return InboundPolicy(registrar=True, networks=(), reject=reject)
    networks = []
    for item in text.split(","):
        try:
            networks.append(ipaddress.ip_network(item.strip().strip("[]"), strict=False))
        except ValueError:
            raise ConfigError(
                name,
                "must be registrar, any, or addresses and networks such as "
                f"10.0.0.0/8,2001:db8::/32, not {item.strip()!r}",
            ) from None
    return InboundPolicy(registrar=False, networks=tuple(networks), reject=reject)


def _accept_refer(env: Mapping[str, str]) -> tuple[str, ...] | bool:
    """yes, no, or comma-separated glob patterns of the Refer-To targets we follow."""
    text = env.get("SIPROC_ACCEPT_REFER", "").strip()
    if text.lower() in ("", "yes"):
        return True
    if text.lower() == "no":
        return False
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if not patterns or any(not p.lower().startswith(("sip:", "sips:", "*")) for p in patterns):
        raise ConfigError(
            "SIPROC_ACCEPT_REFER",
            f"must be yes, no, or patterns such as sip:*@pbx.example.com, not {text!r}",
        )
    return patterns


def _limits(env: Mapping[str, str]) -> Limits:
    return Limits(
        call_rate=_decimal(env, "SIPROC_CALL_RATE", DEFAULT_CALL_RATE, 0.01, 100_000),
        call_burst=_int(env, "SIPROC_CALL_BURST", DEFAULT_CALL_BURST, 1, 100_000),
        spawn_rate=_decimal(env, "SIPROC_SPAWN_RATE", DEFAULT_SPAWN_RATE, 0.1, 100_000),
        ring_timeout=_int(env, "SIPROC_RING_TIMEOUT", DEFAULT_RING_TIMEOUT, 0, 86400),
        rtp_timeout=_int(env, "SIPROC_RTP_TIMEOUT", DEFAULT_RTP_TIMEOUT, 0, 86400),
        max_call_duration=_int(
            env, "SIPROC_MAX_CALL_DURATION", DEFAULT_MAX_CALL_DURATION, 0, 31_536_000
        ),
    )


def _user_agent(env: Mapping[str, str]) -> str:
    """SIPROC_USER_AGENT: the User-Agent / Server header value (RFC 3261 sections 20.35,
    20.41), printable text only (it goes into every message as it is)."""
    text = env.get("SIPROC_USER_AGENT", "").strip()
    if not text:
        return DEFAULT_USER_AGENT
    if len(text) > MAX_USER_AGENT or not text.isprintable():
        raise ConfigError(
            "SIPROC_USER_AGENT",
            f"must be printable text of at most {MAX_USER_AGENT} characters, such as "
            f"'siproc' or 'acme-doorbell/2', not {text[:40]!r}",
        )
    return text


def _instance_id(env: Mapping[str, str]) -> str | None:
    """SIPROC_INSTANCE_ID: a UUID (RFC 4122), given bare or as urn:uuid:, that goes into the
    registered Contact as +sip.instance (RFC 5626 section 4.1): several instances of one
    account each register their own binding, and an instance started again replaces its
    own. Canonical lower-case form."""
    text = env.get("SIPROC_INSTANCE_ID", "").strip()
    if not text:
        return None
    bare = text[len("urn:uuid:") :] if text.lower().startswith("urn:uuid:") else text
    try:
        if len(bare) != 36:
            raise ValueError(bare)
        return f"urn:uuid:{uuid.UUID(bare)}"
    except ValueError:
        raise ConfigError(
            "SIPROC_INSTANCE_ID",
            f"must be a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e (see uuidgen), "
            f"not {text[:60]!r}",
        ) from None


def _yes_no(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("yes", "y", "1", "true", "on"):
        return True
    if text in ("no", "n", "0", "false", "off"):
        return False
    raise ConfigError(name, f"must be yes or no, not {text!r}")


def _tls(env: Mapping[str, str]) -> TlsSettings:
    """The TLS variables. The files are read by the edge, not here: `net.tls.check_files`, which
    the CLI runs right after `load_config`, so that a bad one is still an error at start."""
    ca_file = env.get("SIPROC_TLS_CA_FILE", "").strip() or None
    cert_file = env.get("SIPROC_TLS_CERT_FILE", "").strip() or None
    key_file = env.get("SIPROC_TLS_KEY_FILE", "").strip() or None
    verify = _yes_no(env, "SIPROC_TLS_VERIFY", True)
    if cert_file and not key_file:
        raise ConfigError("SIPROC_TLS_KEY_FILE", "is needed with SIPROC_TLS_CERT_FILE")
    if key_file and not cert_file:
        raise ConfigError("SIPROC_TLS_CERT_FILE", "is needed with SIPROC_TLS_KEY_FILE")
    return TlsSettings(
        ca_file=ca_file,
        verify=verify,
        cert_file=cert_file,
        key_file=key_file,
        port=_int(env, "SIPROC_TLS_PORT", DEFAULT_TLS_PORT, 0, 65535),
    )


def check_record_path(text: str) -> str:
    """A value of SIPROC_CDR that can name a file: not empty, no NUL or line break, not a
    directory. Raises ValueError with the problem (the caller names the variable)."""
    path = text.strip()
    if not path:
        raise ValueError("is empty")
    if any(c in path for c in "\0\n\r"):
        raise ValueError(f"is not a file name: {text!r}")
    if path.endswith("/") or os.path.isdir(path):
        raise ValueError(f"is a directory, not a file: {path!r}")
    return path


def _cdr(env: Mapping[str, str]) -> str | None:
    """SIPROC_CDR: a file name (whether it can be opened is checked at start-up)."""
    text = env.get("SIPROC_CDR", "")
    if not text.strip():
        return None
    try:
        return check_record_path(text)
    except ValueError as exc:
        raise ConfigError("SIPROC_CDR", str(exc)) from None


def _metrics(env: Mapping[str, str]) -> tuple[str, int] | None:
    """SIPROC_METRICS: ``PORT``, ``ADDRESS:PORT`` or ``[IPv6]:PORT``; the address is
    127.0.0.1 unless given (metrics tell strangers too much to be served to the world by
    default)."""
    text = env.get("SIPROC_METRICS", "").strip()
    if not text:
        return None
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "", text
    host = host.strip("[]") or DEFAULT_METRICS_ADDRESS
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = ""
    if not host or not _is_number(port) or int(port) > 65535:
        raise ConfigError(
            "SIPROC_METRICS",
            f"must be PORT or ADDRESS:PORT (like 127.0.0.1:9100 or [::1]:9100), not {text!r}",
        )
    return host, int(port)


def tts_settings(env: Mapping[str, str]) -> TtsSettings:
    """SAY's engine and cache. The command is split as a shell would (shlex), but no shell
    ever runs it: ``{text}`` and ``{file}`` are replaced inside each word (net/tts.py)."""
    command: tuple[str, ...] | None = None
    text = env.get("SIPROC_TTS_COMMAND", "").strip()
    if text:
        try:
            command = tuple(shlex.split(text))
        except ValueError as exc:
            raise ConfigError("SIPROC_TTS_COMMAND", f"cannot be split into words ({exc})") from None
        if not any("{file}" in word for word in command[1:]):
            raise ConfigError(
                "SIPROC_TTS_COMMAND",
                f"must name the WAV file to write as {{file}}, such as "
                f"'espeak-ng -w {{file}} -- {{text}}', not {text!r}",
            )
    cache_dir = env.get("SIPROC_TTS_CACHE_DIR", "").strip()
    if not cache_dir:
        base = env.get("XDG_CACHE_HOME", "").strip()
        if not base or not os.path.isabs(base):
            home = env.get("HOME", "").strip() or os.path.expanduser("~")
            base = os.path.join(home, ".cache")
        cache_dir = os.path.join(base, "siproc", "tts")
    return TtsSettings(
        command=command,
        cache_dir=cache_dir,
        cache_size=_int(env, "SIPROC_TTS_CACHE_SIZE", DEFAULT_TTS_CACHE_SIZE, 1, 1_000_000)
        * 1_000_000,
        timeout=_seconds(env, "SIPROC_TTS_TIMEOUT", DEFAULT_TTS_TIMEOUT, 1, 3600),
    )


def load_config(env: Mapping[str, str]) -> Config:
    """Read and check every SIPROC_ variable of `env`."""
    registrar: SipUri | None = None
    text = env.get("SIPROC_REGISTRAR_URI", "").strip()
    if text:
        try:
            registrar = parse_sip_uri(text)
        except ParseError as exc:
            raise ConfigError(
                "SIPROC_REGISTRAR_URI", f"not a SIP URI like sip:pbx.example.com ({exc})"
            ) from None
        explicit = (registrar.param("transport") or "").lower()
        if registrar.scheme == "sips" and explicit not in ("", "tcp", "tls"):
            raise ConfigError(
                "SIPROC_REGISTRAR_URI",
                f"a sips: URI is always TLS over TCP, not transport={explicit}",
            )
        if registrar.transport not in ("udp", "tcp", "tls"):
            raise ConfigError(
                "SIPROC_REGISTRAR_URI",
                f"transport={registrar.transport} is not supported; use udp, tcp or tls",
            )
    identity: NameAddr | None = None
    text = env.get("SIPROC_ID_URI", "").strip()
    if text:
        try:
            identity = parse_name_addr(text)
        except ParseError as exc:
            raise ConfigError(
                "SIPROC_ID_URI", f"not a SIP identity like 'Name <sip:user@host>' ({exc})"
            ) from None
        if not isinstance(identity.uri, SipUri):
            raise ConfigError("SIPROC_ID_URI", f"must be a sip: or sips: URI, not {identity.uri}")
    username = env.get("SIPROC_USERNAME", "").strip() or None
    password = env.get("SIPROC_PASSWORD")
    if registrar and identity is None:
        if username is None:
            raise ConfigError(
                "SIPROC_ID_URI", "is needed with SIPROC_REGISTRAR_URI (or set SIPROC_USERNAME)"
            )
        # The user part is escaped (RFC 3261 section 25.1): "alice@example.com" is a common
        # auth name and becomes sip:alice%40example.com@registrar.
        user = quote(username, safe=_USER_UNRESERVED)
        identity = NameAddr(SipUri("sip", registrar.host, user=user, port=registrar.port))
    if username is None and identity is not None and isinstance(identity.uri, SipUri):
        username = unquote(identity.uri.user) if identity.uri.user is not None else None
    rtp_text = env.get("SIPROC_RTP_PORTS", "").strip()
    rtp_ports = DEFAULT_RTP_PORTS
    if rtp_text:
        low, dash, high = rtp_text.partition("-")
        if not (dash and _is_number(low.strip()) and _is_number(high.strip())):
            raise ConfigError(
                "SIPROC_RTP_PORTS", f"must be a range like 10000-20000, not {rtp_text!r}"
            )
        rtp_ports = (int(low), int(high))
        if not 1024 <= rtp_ports[0] < rtp_ports[1] <= 65535 or rtp_ports[1] - rtp_ports[0] < 3:
            raise ConfigError(
                "SIPROC_RTP_PORTS",
                f"must be a range of at least 4 ports within 1024-65535, not {rtp_text!r}",
            )
    try:
        codecs = tuple(apply_priorities(env.get("SIPROC_CODEC_PRIORITIES", "")))
    except CodecPriorityError as exc:
        problem = str(exc).removeprefix("SIPROC_CODEC_PRIORITIES ")  # ConfigError names it
        raise ConfigError("SIPROC_CODEC_PRIORITIES", problem) from None
    if not any(
        c.usable and c.priority > 0 and not c.full_name.startswith("telephone-event")
        for c in codecs
    ):
        raise ConfigError("SIPROC_CODEC_PRIORITIES", "disables every usable audio codec")
    public = _public_address(env)
    return Config(
        registrar=registrar,
        identity=identity,
        username=username,
        password=password,
        sip_port=_int(env, "SIPROC_TRANSPORT_PORT", DEFAULT_SIP_PORT, 0, 65535),
        bind_address=_ip(env, "SIPROC_BIND_ADDRESS"),
        public_address=public,
        rtp_ports=rtp_ports,
        max_calls=_int(env, "SIPROC_MAX_CALLS", DEFAULT_MAX_CALLS, 1, 1_000_000),
        media_workers=_int(
            env, "SIPROC_MEDIA_WORKERS", default_media_workers(), 0, MAX_MEDIA_WORKERS
        ),
        media_priority=_choice(env, "SIPROC_MEDIA_PRIORITY", MEDIA_PRIORITIES),
        media_idle=_seconds(env, "SIPROC_MEDIA_IDLE", 30.0, 0.0, 86400.0),
        register_expires=_int(env, "SIPROC_REGISTER_EXPIRES", DEFAULT_REGISTER_EXPIRES, 60, 86400),
        log_level=_int(env, "SIPROC_LOG_LEVEL", DEFAULT_LOG_LEVEL, 0, 6),
        log_format=_choice(env, "SIPROC_LOG_FORMAT", LOG_FORMATS),
        codecs=codecs,
        timer_t1=_int(env, "SIPROC_TIMER_T1", DEFAULT_TIMER_T1_MS, 50, 5000) / 1000,
        inbound=_inbound(env, registrar),
        accept_refer=_accept_refer(env),
        limits=_limits(env),
        max_message_size=_int(
            env, "SIPROC_MAX_MESSAGE_SIZE", DEFAULT_MAX_MESSAGE_SIZE, *MAX_MESSAGE_SIZE_RANGE
        ),
        tcp_max_per_source=_int(
            env, "SIPROC_TCP_MAX_PER_SOURCE", DEFAULT_TCP_MAX_PER_SOURCE, 1, 100_000
        ),
        tcp_message_timeout=_seconds(
            env, "SIPROC_TCP_MESSAGE_TIMEOUT", DEFAULT_TCP_MESSAGE_TIMEOUT, 0.1, 3600
        ),
        tcp_idle_timeout=_seconds(
            env, "SIPROC_TCP_IDLE_TIMEOUT", DEFAULT_TCP_IDLE_TIMEOUT, 1, 86_400
        ),
        srtp=SrtpMode(_choice(env, "SIPROC_SRTP", tuple(m.value for m in SrtpMode))),
        register_retry=_int(env, "SIPROC_REGISTER_RETRY", DEFAULT_REGISTER_RETRY, 1, 900),
        user_agent=_user_agent(env),
        srtp_insecure_signalling=_yes_no(env, "SIPROC_SRTP_INSECURE_SIGNALLING", False),
        tls=_tls(env),
        cdr=_cdr(env),
        metrics=_metrics(env),
        tts=tts_settings(env),
        drain_timeout=_seconds(
            env, "SIPROC_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT, 0, MAX_DRAIN_TIMEOUT
        ),
        instance_id=_instance_id(env),
        audio_fds=_yes_no(env, "SIPROC_AUDIO_FDS", False),
    )
