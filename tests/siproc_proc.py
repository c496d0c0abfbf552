"""Run real siproc processes for integration and interop tests.

`Siproc` starts `python -m siproc HANDLER ARGS...` with the given SIPROC_* environment, keeps its
stdin open for `CALL`/`QUIT` lines, collects stderr in a thread, and can wait for log lines.
Everything binds to loopback: tests pass SIPROC_BIND_ADDRESS=127.0.0.1 (or ::1).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from tests.audio import make_tone

READY_RE = re.compile(r"ready on SIP port (\d+)")


class Siproc:
    def __init__(
        self,
        handler: Path | str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        bind: str = "127.0.0.1",
        log_level: int = 4,
        netns: str | None = None,
    ) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")}
        full_env.update(
            SIPROC_BIND_ADDRESS=bind,
            SIPROC_TRANSPORT_PORT="0",
            SIPROC_LOG_LEVEL=str(log_level),
            PYTHONUNBUFFERED="1",
        )
        full_env.update(env or {})
        argv = [sys.executable, "-m", "siproc", str(handler), *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.port = 0
        self.host = bind

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def uri(self, user: str = "siproc") -> str:
        return f"sip:{user}@{self.uri_host}:{self.port}"

    def wait_ready(self, timeout: float = 15.0) -> Siproc:
        match = self.wait_for(READY_RE, timeout)
        self.port = int(match.group(1))
        return self

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, start: int = 0
    ) -> re.Match[str]:
        """The first stderr line at index >= start that matches; fails after `timeout`."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"siproc never logged {regex.pattern!r}; stderr was:\n" + self.stderr()
                    )
                self._cond.wait(min(remaining, 0.2))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-300:])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def call(self, uri: str) -> None:
        self.send(f"CALL {uri}")

    def quit(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("QUIT")
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def children(self, *, media_workers: bool = False) -> list[tuple[int, str]]:
        """(pid, state) of siproc's child processes (its handlers; with ``media_workers``, its
        media worker processes instead), from /proc."""
        return [
            (pid, state)
            for pid, state, cmdline in children_of(self.proc.pid)
            if (b"siproc.net.media_worker" in cmdline) == media_workers
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)


def write_handler(path: Path, body: str) -> Path:
    """A bash handler script at `path` with `body`; made executable."""
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def wait_file(path: Path, pattern: str, timeout: float = 10.0) -> str:
    """Wait until `path` holds a line matching `pattern`; return the file's text."""
    regex = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text(errors="replace")
            if regex.search(text):
                return text
        time.sleep(0.05)
    text = path.read_text(errors="replace") if path.exists() else "<no file>"
    raise AssertionError(f"{path} never matched {pattern!r}; it holds:\n{text}")


class MakePhone(Protocol):
    """Starts a ready siproc running ``h.sh`` of its working directory: the ``phones`` fixture
    (tests/integration/conftest.py) and ``make_siproc`` (tests/interop/conftest.py)."""

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        bind: str = "127.0.0.1",
        log_level: int = 4,
        netns: str | None = None,
    ) -> Siproc: ...


@contextlib.contextmanager
def started_siprocs(workdir: Path) -> Iterator[MakePhone]:
    """A `MakePhone` for ``workdir/h.sh`` run in ``workdir``; at the end every siproc it started
    is stopped and its log printed (pytest shows it with a failure)."""
    started: list[Siproc] = []

    def start(
        *args: str,
        env: Mapping[str, str] | None = None,
        bind: str = "127.0.0.1",
        log_level: int = 4,
        netns: str | None = None,
    ) -> Siproc:
        proc = Siproc(
            workdir / "h.sh",
            *args,
            env=env,
            cwd=workdir,
            bind=bind,
            log_level=log_level,
            netns=netns,
        )
        started.append(proc)
        return proc.wait_ready()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
            print(f"--- siproc on port {proc.port} ---\n{proc.stderr()}")


def handler_dir(
    path: Path, handler: str, tones: Mapping[str, tuple[float, float]] | None = None
) -> Path:
    """A working directory ``path`` for siproc (made if missing): the bash ``handler`` as
    ``h.sh`` and, for each ``name: (hz, seconds)`` of ``tones``, a tone file of that name."""
    path.mkdir(exist_ok=True)
    write_handler(path / "h.sh", handler)
    for name, (hz, seconds) in (tones or {}).items():
        make_tone(path / name, hz, seconds)
    return path


def children_of(parent: int) -> list[tuple[int, str, bytes]]:
    """(pid, state, command line) of the child processes of ``parent``, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            out.append((int(entry.name), fields[0], cmdline))
    return out
