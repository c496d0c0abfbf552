"""Call detail records (``SIPROC_CDR``): what happened to one call, as one JSON line.

Theory of operation: when a call ends, `calls/observer.py` gathers its facts into a
`CallFacts` (a frozen value: no live object, no clock read here); `record_line` turns them into
one line of JSON, and `RecordFile` appends that line to the file with one ``write(2)`` on a
descriptor opened with ``O_APPEND``, so that records are whole even when several siproc
processes share one file, and a reader (``tail -f``, a log shipper) never sees half a record.
The line is on its way to the disk before the handler hears ``DISCONNECTED`` (the observer is
called first), so a handler may read its own call's record then.

Log rotation: logrotate renames the file and sends SIGHUP; `RecordFile.reopen` opens the path
again (a new file). A record is written either to the old file (before the reopen) or to the
new one, never lost: there is no buffer in between.

The fields (siproc(1), CALL DETAIL RECORDS) are stable: new ones may be added, none renamed.
Times are UTC with milliseconds (``2024-05-01T12:00:00.123Z``), or null for what did not
happen (a call never answered has ``answered`` null and ``duration`` 0).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
from dataclasses import dataclass, fields
from enum import Enum

from siproc.config import check_record_path

__all__ = [
    "CallFacts",
    "EndedBy",
    "RecordFile",
    "RecordFileError",
    "check_record_path",
    "ended_by",
    "record_line",
    "utc_time",
]

VARIABLE = "SIPROC_CDR"


class EndedBy(Enum):
    """Who ended a call (the ``ended_by`` field)."""

    HANDLER = "handler"  # our handler: HANGUP, or it exited (a crash too: see handler_exit)
    REMOTE = "remote"  # the far end: BYE, CANCEL, a final failure response to our INVITE
    TIMEOUT = "timeout"  # a limit: ring timeout, maximum duration, no RTP, no answer to SIP
    TRANSFER = "transfer"  # a transfer succeeded (ours, or the one the far end asked for)
    POLICY = "policy"  # siproc refused it (no handler could be started, SRTP rules...)
    SHUTDOWN = "shutdown"  # siproc was stopping (QUIT, SIGTERM, SIGINT)
    ERROR = "error"  # an internal error, or the call's media worker died


@dataclass(frozen=True, slots=True)
class CallFacts:
    """Everything a call detail record says; times are seconds since the epoch (UTC)."""

    call_id: str
    direction: str  # "in" or "out"
    local_uri: str
    local_name: str
    remote_uri: str
    remote_name: str
    request_uri: str
    created: float
    ringing: float | None
    early_media: float | None
    answered: float | None
    ended: float
    status: int  # the final SIP status (200 for an answered call that ended normally)
    reason: str  # the DISCONNECTED reason
    ended_by: EndedBy
    codec: str | None = None  # e.g. "PCMU/8000"; None: no media was negotiated
    srtp: bool = False
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None  # from RTCP (RFC 3550 section 6.4.1); None: no RTCP report
    recordings: tuple[str, ...] = ()
    transfer_target: str | None = None
    referred_by: str | None = None
    handler_exit: int | None = None  # exit status, when the handler ended before the call
    handler_signal: int | None = None  # the signal that killed it, likewise

    def __post_init__(self) -> None:
        if self.direction not in ("in", "out"):
            raise ValueError(f"direction must be in or out, not {self.direction!r}")
        if not 100 <= self.status <= 699:
            raise ValueError(f"status must be a SIP status (100-699), not {self.status}")
        if self.ended < self.created:
            raise ValueError("a call cannot end before it was created")

    @property
    def duration(self) -> float:
        """Seconds from the answer to the end; 0 for a call never answered."""
        return 0.0 if self.answered is None else max(0.0, self.ended - self.answered)


def utc_time(epoch: float | None) -> str | None:
    """``2024-05-01T12:00:00.123Z`` (UTC, milliseconds), or None."""
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_FIELDS = tuple(f.name for f in fields(CallFacts))  # the record's keys, in this order
_TIMES = ("created", "ringing", "early_media", "answered", "ended")
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def record_line(facts: CallFacts) -> str:
    """The record of ``facts`` as one line of JSON (ASCII, ending in a newline).

    The fields are read straight off the frozen value (``dataclasses.asdict`` deep-copies
    every field, a third of the cost of a record for nothing: they are all immutable)."""
    record = {name: getattr(facts, name) for name in _FIELDS}
    for name in _TIMES:
        record[name] = utc_time(record[name])
    record["ended_by"] = facts.ended_by.value
    record["duration"] = round(facts.duration, 3)
    record["jitter_ms"] = round(facts.jitter_ms, 2)
    if facts.rtt_ms is not None:
        record["rtt_ms"] = round(facts.rtt_ms, 2)
    record["recordings"] = list(facts.recordings)
    # ensure_ascii: every control character, line separator or lone surrogate a peer put into
    # a display name comes out escaped; the record stays one line of valid UTF-8.
    return _ENCODER.encode(record) + "\n"


# -- who ended the call -------------------------------------------------------------------------

_TIMEOUT_REASONS = (
    "no answer",
    "maximum call duration",
    "no RTP",
    "not answered",
    "timeout",
)


def ended_by(
    *,
    status: int,
    reason: str,
    ended_locally: bool,
    handler_gone: bool,
    stopping: bool,
    limit: bool = False,
) -> EndedBy:
    """Who ended a call, from what the call knows at its end: ``status`` and ``reason`` (as in
    ``DISCONNECTED``), ``ended_locally`` (we sent the BYE, CANCEL or final response),
    ``handler_gone`` (the handler had exited before the call ended), ``stopping`` (siproc
    was shutting down) and ``limit`` (a limit of siproc(1), LIMITS, hung up: an outgoing
    call still ringing at its maximum duration ends with the far end's 487, whose reason
    does not say why)."""
    if reason == "internal error" or reason.startswith("the media worker"):
        return EndedBy.ERROR
    if reason == "transferred":
        return EndedBy.TRANSFER
    if reason == "handler failed to start" or reason.startswith("Service Unavailable ("):
        return EndedBy.POLICY
    if limit or any(word in reason for word in _TIMEOUT_REASONS) or status == 408:
        return EndedBy.TIMEOUT
    if stopping and ended_locally:
        return EndedBy.SHUTDOWN
    if ended_locally or handler_gone:
        return EndedBy.HANDLER
    return EndedBy.REMOTE


# -- the file -----------------------------------------------------------------------------------


class RecordFileError(Exception):
    """The records file cannot be used; the message names the variable."""


class RecordFile:
    """An append-only file of records: one ``os.write`` per record, on ``O_APPEND``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = self._open()
        self.written = 0  # records written since start
        self.failures = 0  # records that could not be written (full disk...)

    def _open(self) -> int:
        """O_NONBLOCK matters for a FIFO only: opening one that has no reader fails (ENXIO)
        instead of waiting for one, and a write to a full one fails (a lost record, counted
        and logged) instead of blocking the event loop."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise RecordFileError(
                    f"{VARIABLE}: {self.path!r} is a FIFO with no reader"
                ) from None
            raise RecordFileError(
                f"{VARIABLE}: cannot open {self.path!r} for appending: {exc.strerror}"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode) and not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise RecordFileError(f"{VARIABLE}: {self.path!r} is not a regular file")
        return fd

    def write(self, facts: CallFacts) -> None:
        """Append the record of ``facts``. Raises OSError (the caller logs it: a record that
        cannot be written must not stop the call from ending)."""
        data = record_line(facts).encode("ascii")
        try:
            written = os.write(self._fd, data)
        except OSError:
            self.failures += 1
            raise
        if written != len(data):  # a full disk part way: say so, the line is broken
            self.failures += 1
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
        self.written += 1

    def reopen(self) -> None:
        """Open the path again (after logrotate renamed the file); on failure the old
        descriptor is kept and RecordFileError raised."""
        fd = self._open()
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
