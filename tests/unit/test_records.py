"""calls/records.py: the call detail record line, who ended a call, the append-only file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import pytest

from siproc.calls.records import (
    CallFacts,
    EndedBy,
    RecordFile,
    RecordFileError,
    check_record_path,
    ended_by,
    record_line,
    utc_time,
)

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z

FACTS = CallFacts(
    call_id="abc@host",
    direction="in",
    local_uri="sip:bob@127.0.0.1",
    local_name="",
    remote_uri="sip:alice@example.com",
    remote_name='Alice "A" \u2028\x1b',
    request_uri="sip:bob@127.0.0.1:5060",
    created=T0,
    ringing=T0 + 0.1,
    early_media=None,
    answered=T0 + 1.5,
    ended=T0 + 61.5005,
    status=200,
    reason="remote hangup",
    ended_by=EndedBy.REMOTE,
    codec="PCMU/8000",
    packets_sent=3000,
    packets_received=2990,
    packets_lost=10,
    jitter_ms=1.23456,
    rtt_ms=None,
    recordings=("call.wav",),
    handler_signal=15,
)


def test_a_record_is_one_line_of_json_with_every_documented_field() -> None:
    line = record_line(FACTS)
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.isascii()  # the display name's U+2028 and ESC are escaped
    record = json.loads(line)
    assert record["remote_name"] == 'Alice "A" \u2028\x1b'
    assert record["created"] == "2024-05-01T12:00:00.000Z"
    assert record["ringing"] == "2024-05-01T12:00:00.100Z"
    assert record["early_media"] is None
    assert record["answered"] == "2024-05-01T12:00:01.500Z"
    assert record["ended"] == "2024-05-01T12:01:01.500Z"
    assert record["duration"] == 60.0
    assert record["ended_by"] == "remote"
    assert record["jitter_ms"] == 1.23
    assert record["recordings"] == ["call.wav"]
    assert record["handler_exit"] is None and record["handler_signal"] == 15
    assert set(record) >= {
        "call_id", "direction", "local_uri", "local_name", "remote_uri", "remote_name",
        "request_uri", "status", "reason", "codec", "srtp", "packets_sent", "packets_received",
        "packets_lost", "rtt_ms", "transfer_target", "referred_by",
    }  # fmt: skip


def test_a_call_never_answered_lasts_zero_seconds() -> None:
    facts = replace(FACTS, answered=None, status=486, reason="Busy Here")
    assert json.loads(record_line(facts))["duration"] == 0


def test_the_fields_keep_their_order_and_values() -> None:
    """A record lists the fields in the order of `CallFacts`, then ``duration``; values the
    line does not reformat are the facts' own (a reader may rely on the order of a line)."""
    record = json.loads(record_line(replace(FACTS, rtt_ms=12.345, transfer_target="sip:c@h")))
    assert list(record) == [f.name for f in fields(CallFacts)] + ["duration"]
    assert record["rtt_ms"] == 12.35 and record["transfer_target"] == "sip:c@h"
    assert (record["packets_sent"], record["packets_lost"], record["srtp"]) == (3000, 10, False)
    assert record["local_name"] == "" and record["referred_by"] is None


def test_facts_that_cannot_be_are_refused() -> None:
    with pytest.raises(ValueError, match="direction"):
        replace(FACTS, direction="sideways")
    with pytest.raises(ValueError, match="SIP status"):
        replace(FACTS, status=0)
    with pytest.raises(ValueError, match="before"):
        replace(FACTS, ended=T0 - 1)


def test_utc_time_has_milliseconds_and_z() -> None:
    assert utc_time(T0 + 0.0004) == "2024-05-01T12:00:00.000Z"
    assert utc_time(None) is None


@pytest.mark.parametrize(
    ("status", "reason", "local", "gone", "stopping", "expected"),
    [
        (200, "remote hangup", False, False, False, EndedBy.REMOTE),
        (487, "cancelled by the caller", False, False, False, EndedBy.REMOTE),
        (486, "Busy Here", False, False, False, EndedBy.REMOTE),  # our INVITE refused
        (200, "hung up", True, False, False, EndedBy.HANDLER),  # HANGUP
        (480, "hung up before answer", True, True, False, EndedBy.HANDLER),  # handler exited
        (487, "Request Terminated", True, False, False, EndedBy.HANDLER),  # our CANCEL
        (200, "hung up", True, True, True, EndedBy.SHUTDOWN),
        (480, "no answer", False, False, False, EndedBy.TIMEOUT),
        (200, "maximum call duration", True, False, False, EndedBy.TIMEOUT),
        (200, "no RTP from the far end", True, False, False, EndedBy.TIMEOUT),
        (408, "Request Timeout", False, False, False, EndedBy.TIMEOUT),
        (200, "transferred", True, False, False, EndedBy.TRANSFER),
        (500, "handler failed to start", False, True, False, EndedBy.POLICY),
        (500, "internal error", True, False, False, EndedBy.ERROR),
    ],
)
def test_who_ended_the_call(
    status: int, reason: str, local: bool, gone: bool, stopping: bool, expected: EndedBy
) -> None:
    got = ended_by(
        status=status, reason=reason, ended_locally=local, handler_gone=gone, stopping=stopping
    )
    assert got is expected


def test_a_limit_that_cancelled_a_ringing_call_makes_it_a_timeout() -> None:
    """Our CANCEL at the maximum duration brings the far end's 487 Request Terminated, a
    reason that does not say why: the limit does."""
    common = {"status": 487, "reason": "Request Terminated", "ended_locally": True}
    assert ended_by(**common, handler_gone=False, stopping=False) is EndedBy.HANDLER
    assert ended_by(**common, handler_gone=False, stopping=False, limit=True) is EndedBy.TIMEOUT


def test_each_record_is_one_write_on_an_append_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cdr.jsonl"
    path.write_text('{"old": 1}\n')
    records = RecordFile(str(path))
    assert fcntl.fcntl(records._fd, fcntl.F_GETFL) & os.O_APPEND
    writes: list[bytes] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    records.write(FACTS)
    records.write(replace(FACTS, call_id="second"))
    assert writes == [
        record_line(FACTS).encode(),
        record_line(replace(FACTS, call_id="second")).encode(),
    ]
    lines = path.read_text().splitlines()
    assert [json.loads(line).get("call_id") for line in lines] == [None, "abc@host", "second"]
    assert records.written == 2
    records.close()


def test_a_short_write_is_an_error_not_a_silent_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = RecordFile(str(tmp_path / "cdr.jsonl"))
    monkeypatch.setattr(os, "write", lambda fd, data: len(data) // 2)
    with pytest.raises(OSError, match="short write"):
        records.write(FACTS)
    assert records.failures == 1


def test_reopen_after_a_rename_loses_no_record(tmp_path: Path) -> None:
    path = tmp_path / "cdr.jsonl"
    records = RecordFile(str(path))
    records.write(replace(FACTS, call_id="one"))
    path.rename(tmp_path / "cdr.jsonl.1")  # logrotate
    records.write(replace(FACTS, call_id="two"))  # still the old file, until SIGHUP
    records.reopen()
    records.write(replace(FACTS, call_id="three"))
    records.close()
    old = [json.loads(x)["call_id"] for x in (tmp_path / "cdr.jsonl.1").read_text().splitlines()]
    new = [json.loads(x)["call_id"] for x in path.read_text().splitlines()]
    assert old == ["one", "two"] and new == ["three"]


def test_a_reopen_that_fails_keeps_writing_to_the_old_file(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    records = RecordFile(str(directory / "cdr.jsonl"))
    (directory / "cdr.jsonl").rename(tmp_path / "kept.jsonl")
    directory.rmdir()
    with pytest.raises(RecordFileError, match="SIPROC_CDR: cannot open"):
        records.reopen()
    records.write(FACTS)
    records.close()
    assert json.loads((tmp_path / "kept.jsonl").read_text())["call_id"] == "abc@host"


def test_a_file_that_cannot_be_opened_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match=r"^SIPROC_CDR: cannot open .*No such file"):
        RecordFile(str(tmp_path / "missing" / "cdr.jsonl"))


@pytest.mark.parametrize("text", ["", "  ", "a\nb", "x\0y", "/tmp/"])
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_record_path(text)


def test_a_directory_is_not_a_records_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        check_record_path(str(tmp_path))
    assert check_record_path(f" {tmp_path}/cdr.jsonl ") == f"{tmp_path}/cdr.jsonl"


def _in_a_thread(work: Callable[[], object], seconds: float = 2.0) -> list[object]:
    """Run ``work`` in a thread; what it returned or raised, or nothing if it still blocks."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return result


def test_a_fifo_without_a_reader_is_refused_at_once(tmp_path: Path) -> None:
    """open(2) for writing blocks until a FIFO has a reader: siproc would hang at start-up,
    or on the event loop at SIGHUP, with no word."""
    fifo = tmp_path / "cdr.fifo"
    os.mkfifo(fifo)
    result = _in_a_thread(lambda: RecordFile(str(fifo)))
    if not result:  # unblock the thread
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert result, "RecordFile() blocked on a FIFO nobody reads"
    assert isinstance(result[0], RecordFileError)
    assert "no reader" in str(result[0])


def test_a_fifo_whose_reader_stalls_loses_records_not_the_event_loop(tmp_path: Path) -> None:
    """write(2) to a full pipe blocks, and records are written on the event loop."""
    fifo = tmp_path / "cdr.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        records = RecordFile(str(fifo))

        def fill() -> int:
            for count in range(100_000):  # a pipe holds 64 KiB: ~100 records
                try:
                    records.write(FACTS)
                except OSError:
                    return count
            return -1

        result = _in_a_thread(fill)
        if not result:
            with contextlib.suppress(BlockingIOError):
                while os.read(reader, 1 << 16):
                    pass
        assert result, "a write to a full FIFO blocked"
        assert isinstance(result[0], int) and result[0] > 0
        assert records.failures == 1
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 1 << 16):
                data += chunk
        assert data.endswith(b"\n")  # whole records only
        assert all(json.loads(line) for line in data.splitlines())
        records.close()
    finally:
        os.close(reader)
