"""HandlerProcess with real child processes, real pipes and real signals."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from siproc.calls import handler as handler_module
from siproc.calls.handler import MAX_WRITE_BUFFER, HandlerProcess, HandlerSpawnError
from siproc.calls.protocol import (
    MAX_LINE_BYTES,
    CommandError,
    ErrorEvent,
    format_event,
    parse_command,
)

LOG = logging.getLogger("test.handler")
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def run(main: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def bash(tmp_path: Path, body: str, name: str = "handler.sh") -> list[str]:
    return [script(tmp_path, name, "#!/bin/bash\n" + body)]


def python(tmp_path: Path, body: str, name: str = "handler.py") -> list[str]:
    return [sys.executable, script(tmp_path, name, body)]


class Sink:
    """Collects what a handler reports."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.overlong: list[str] = []
        self.exits: list[int] = []
        self.exit_seen_lines: int | None = None

    def on_line(self, line: str) -> None:
        self.lines.append(line)

    def on_overlong(self, head: str) -> None:
        self.overlong.append(head)

    def on_exit(self, code: int) -> None:
        self.exits.append(code)
        self.exit_seen_lines = len(self.lines)

    async def spawn(self, argv: list[str], **kwargs: Any) -> HandlerProcess:
        kwargs.setdefault("env", ENV)
        kwargs.setdefault("cwd", None)
        kwargs.setdefault("on_overlong_line", self.on_overlong)
        return await HandlerProcess.spawn(
            argv, on_line=self.on_line, on_exit=self.on_exit, log=LOG, **kwargs
        )

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; lines so far: {self.lines[-5:]}")
            await asyncio.sleep(0.005)


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs: gone, or a zombie nobody reaped (PID 1 may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


async def until_gone(pid: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        await asyncio.sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- lines in and out -------------------------------------------------------------------------


def test_echo_round_trip_and_exit(tmp_path: Path) -> None:
    argv = bash(tmp_path, 'echo READY\nwhile read -r line; do echo "GOT $line"; done\nexit 3\n')

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: sink.lines == ["READY"])
        h.send("CONNECTED")
        h.send("MESSAGE two words")
        await sink.until(lambda: len(sink.lines) == 3)
        assert sink.lines[1:] == ["GOT CONNECTED", "GOT MESSAGE two words"]
        assert h.returncode is None
        h.terminate()  # closes its stdin: the read loop ends, exit 3 (before SIGTERM lands or not)
        code = await h.wait()
        assert code in (3, -15)
        await asyncio.sleep(0.05)
        assert sink.exits == [code]
        assert h.returncode == code

    run(main)


def test_no_line_is_delivered_before_spawn_returns(tmp_path: Path) -> None:
    """The caller must hold the HandlerProcess before the first command runs: a command that
    answers a call leads to an event (CONNECTED) for this very handler, which was lost when the
    first line arrived while spawn() still awaited (seen under load: 16% of 500 calls). A slow
    pipe setup (a busy loop) makes the window wide."""
    argv = ["/bin/sh", "-c", "echo ANSWER; exec cat >/dev/null"]

    class Early(Sink):
        returned = False
        early = 0

        def on_line(self, line: str) -> None:
            self.early += not self.returned
            super().on_line(line)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        connect_write_pipe = loop.connect_write_pipe

        async def slow_connect_write_pipe(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.2)  # the child has written its first line by now
            return await connect_write_pipe(*args, **kwargs)

        loop.connect_write_pipe = slow_connect_write_pipe  # type: ignore[method-assign]
        for _ in range(3):
            sink = Early()
            h = await sink.spawn(argv)
            sink.returned = True
            await sink.until(lambda sink=sink: sink.lines == ["ANSWER"])  # type: ignore[misc]
            h.close_stdin()
            await h.wait()
            assert sink.early == 0

    run(main)


def test_natural_exit_delivers_every_line_before_on_exit(tmp_path: Path) -> None:
    argv = python(
        tmp_path,
        "import sys\n"
        "sys.stdout.write(''.join(f'LINE {i}\\n' for i in range(5000)))\n"
        "sys.stdout.write('HANGUP')\n"  # unterminated last line
        "sys.exit(7)\n",
    )

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        assert await h.wait() == 7
        assert sink.exits == [7]
        assert sink.exit_seen_lines == 5001
        assert sink.lines[0] == "LINE 0"
        assert sink.lines[-2:] == ["LINE 4999", "HANGUP"]

    run(main)


def test_lines_split_across_writes(tmp_path: Path) -> None:
    argv = python(
        tmp_path,
        "import os, time\n"
        "for part in [b'PL', b'AY a.wav\\nSTO', b'P\\n', b'DTMF 1', b'23\\r', b'\\n']:\n"
        "    os.write(1, part)\n"
        "    time.sleep(0.03)\n",
    )

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        assert await h.wait() == 0
        assert sink.lines == ["PLAY a.wav", "STOP", "DTMF 123"]

    run(main)


def test_crlf_blank_and_invalid_utf8(tmp_path: Path) -> None:
    argv = bash(
        tmp_path, "printf 'ANSWER\\r\\nPLAY x\\r\\n\\r\\n\\nmid\\rdle\\n\\xff\\xfeabc\\n'\n"
    )

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await h.wait()
        assert sink.lines == ["ANSWER", "PLAY x", "", "", "mid\rdle", "\ufffd\ufffdabc"]

    run(main)


def test_overlong_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    argv = python(
        tmp_path,
        "import os, sys, time\n"
        f"MAX = {MAX_LINE_BYTES}\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'A' * MAX + b'\\r\\n')\n"  # exactly at the limit: fine
        "out.write(b'PLAY ' + b'x' * 20000 + b'\\nSTOP\\n')\n"  # over, in one write
        "out.write(b'B' * (MAX + 1) + b'\\n')\n"  # one byte over
        "out.flush()\n"
        "for _ in range(5):\n"  # over, dribbled without a newline
        "    os.write(1, b'dtmf ' * 1000)\n"
        "    time.sleep(0.02)\n"
        "os.write(1, b'tail\\nANSWER\\n')\n"
        "os.write(1, b'C' * (MAX + 100))\n",  # over, unterminated at EOF
    )

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await h.wait()
        assert sink.lines == ["A" * MAX_LINE_BYTES, "STOP", "ANSWER"]
        assert [head[:6] for head in sink.overlong] == ["PLAY x", "BBBBBB", "dtmf d", "CCCCCC"]
        assert all(len(head) == MAX_LINE_BYTES for head in sink.overlong)

    run(main)


def test_overlong_without_callback_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = python(tmp_path, "import sys\nprint('x' * 20000)\nprint('x' * 20000)\nprint('OK')\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv, on_overlong_line=None)
        await h.wait()
        assert sink.lines == ["OK"]

    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        run(main)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "over 8192 bytes" in warnings[0].getMessage()


def test_environment_cwd_and_stderr_pass_through(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = bash(tmp_path, 'echo "$FOO|$SIPROC_OUTGOING|$HOME|$(pwd)"\necho oops >&2\n')
    env = {"PATH": ENV["PATH"], "FOO": "bar baz", "SIPROC_OUTGOING": "n"}

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv, env=env, cwd=str(tmp_path))
        await h.wait()
        assert sink.lines == [f"bar baz|n||{tmp_path}"]

    run(main)
    assert "oops" in capfd.readouterr().err


def test_callback_exceptions_are_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = bash(tmp_path, "echo one\necho two\n")
    seen: list[str] = []
    exits: list[int] = []

    def on_line(line: str) -> None:
        seen.append(line)
        raise RuntimeError("boom")

    def on_exit(code: int) -> None:
        exits.append(code)
        raise RuntimeError("boom at exit")

    async def main() -> None:
        h = await HandlerProcess.spawn(argv, ENV, None, on_line, on_exit, LOG)
        assert await h.wait() == 0

    run(main)
    assert seen == ["one", "two"]
    assert exits == [0]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 3


def test_send_rejects_line_breaks(tmp_path: Path) -> None:
    argv = bash(tmp_path, "read -r line\n")

    async def main() -> None:
        h = await Sink().spawn(argv)
        with pytest.raises(ValueError):
            h.send("A\nB")
        with pytest.raises(ValueError):
            h.send("A\rB")
        h.send("done")
        assert await h.wait() == 0

    run(main)


def test_handler_closing_its_stdin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv = bash(tmp_path, "exec 0<&-\necho CLOSED\nread -r line || echo EOF\nsleep 5\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: "EOF" in sink.lines)
        await asyncio.sleep(0.05)
        for _ in range(100):  # silently dropped, no asyncio "pipe closed by peer" warnings
            h.send("CONNECTED")
        await asyncio.sleep(0.05)
        for _ in range(100):
            h.send("CONNECTED")
        h.terminate(grace=1.0)
        assert await h.wait() == -15

    with caplog.at_level(logging.DEBUG):
        run(main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_kill_after_handler_closed_stdin(tmp_path: Path) -> None:
    argv = bash(tmp_path, "exec 0<&-\necho CLOSED\nsleep 5\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: sink.lines == ["CLOSED"])
        await asyncio.sleep(0.1)  # the stdin transport has reported connection_lost
        h.kill()
        assert await h.wait() == -9

    run(main)


def test_close_stdin_gives_end_of_file(tmp_path: Path) -> None:
    argv = bash(tmp_path, 'n=0\nwhile read -r line; do n=$((n+1)); done\necho "BYE $n"\n')

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        h.send("DISCONNECTED 200 BYE")
        h.send("x")
        h.close_stdin()
        h.send("dropped")
        h.close_stdin()
        assert await h.wait() == 0
        assert sink.lines == ["BYE 2"]

    run(main)


# --- a misbehaving handler must not hurt siproc -----------------------------------------------


def test_flood_does_not_starve_the_loop(tmp_path: Path) -> None:
    flood_argv = bash(tmp_path, "exec yes garbage\n", name="flood.sh")
    echo_argv = bash(tmp_path, 'while read -r line; do echo "GOT $line"; done\n', name="echo.sh")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        flood_sink = Sink()
        flood: HandlerProcess | None = None

        def flood_line(line: str) -> None:  # what the call layer does with garbage
            flood_sink.lines.append(line)
            try:
                parse_command(line)
            except CommandError as error:
                assert flood is not None
                flood.send(format_event(ErrorEvent(error.command, error.reason)))

        flood = await HandlerProcess.spawn(
            flood_argv, ENV, None, flood_line, flood_sink.on_exit, LOG
        )
        echo_sink = Sink()
        echo = await echo_sink.spawn(echo_argv)

        lateness: list[float] = []
        stop = loop.time() + 1.0

        def tick(expected: float) -> None:
            now = loop.time()
            lateness.append(now - expected)
            if now < stop:
                loop.call_at(now + 0.01, tick, now + 0.01)

        loop.call_at(loop.time() + 0.01, tick, loop.time() + 0.01)

        round_trips: list[float] = []
        while loop.time() < stop:
            start = time.monotonic()
            echo.send(f"PING {len(round_trips)}")
            expected = f"GOT PING {len(round_trips)}"
            await echo_sink.until(lambda e=expected: echo_sink.lines[-1:] == [e])  # type: ignore[misc]
            round_trips.append(time.monotonic() - start)
            await asyncio.sleep(0.02)

        assert len(flood_sink.lines) > 10_000, "the flood was read"
        assert max(lateness) < 0.1, f"timer late by {max(lateness):.3f} s"
        assert len(round_trips) >= 10
        assert max(round_trips) < 0.2, f"round trip took {max(round_trips):.3f} s"
        assert flood.write_buffer_size <= MAX_WRITE_BUFFER + 100

        flood.terminate(grace=1.0)
        echo.terminate(grace=1.0)
        assert await flood.wait() == -15
        await echo.wait()
        assert flood_sink.exits == [-15]

    run(main)


def test_handler_not_reading_stdin_does_not_block_or_grow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = bash(tmp_path, "echo READY\nexec sleep 30\n")
    line = "MESSAGE " + "x" * 50

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: sink.lines == ["READY"])
        start = time.monotonic()
        for _ in range(100_000):
            h.send(line)
        elapsed = time.monotonic() - start
        assert elapsed < 2.0
        assert h.write_buffer_size <= MAX_WRITE_BUFFER + len(line) + 1
        # The pipe holds some (64 KiB on Linux); the rest is buffered up to the cap, then dropped.
        assert 70_000 < h.dropped_events < 100_000
        h.terminate(grace=1.0)
        assert await h.wait() == -15

    with caplog.at_level(logging.INFO, logger=LOG.name):
        run(main)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not reading its stdin" in warnings[0].getMessage()


# --- ending -----------------------------------------------------------------------------------


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    argv = bash(tmp_path, "trap '' TERM\necho READY\nsleep 100\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: sink.lines == ["READY"])
        start = time.monotonic()
        h.terminate(grace=0.3)
        h.terminate(grace=0.0)  # idempotent: the first grace stands
        await asyncio.sleep(0.15)
        assert h.returncode is None
        assert await h.wait() == -9
        assert 0.25 < time.monotonic() - start < 2.0
        assert sink.exits == [-9]
        h.terminate()  # after the end: nothing happens
        h.kill()

    run(main)


def test_kill_is_immediate(tmp_path: Path) -> None:
    argv = bash(tmp_path, "trap '' TERM\necho READY\nsleep 100\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: sink.lines == ["READY"])
        start = time.monotonic()
        h.kill()
        assert await h.wait() == -9
        assert time.monotonic() - start < 0.5

    run(main)


def test_terminate_kills_the_whole_process_group(tmp_path: Path) -> None:
    argv = bash(tmp_path, 'sleep 1000 &\necho "PID $!"\nwait\n')

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: len(sink.lines) == 1)
        child = int(sink.lines[0].split()[1])
        assert not process_gone(child)
        h.terminate(grace=2.0)
        assert await h.wait() == -15
        await until_gone(child)

    run(main)


def test_terminate_kills_group_members_that_ignore_sigterm(tmp_path: Path) -> None:
    # The child neither holds the stdout pipe nor dies of SIGTERM: once the handler has gone,
    # what is left of its group is SIGKILLed, without waiting out the grace period.
    argv = bash(tmp_path, "(trap '' TERM; exec sleep 1000) >/dev/null &\necho \"PID $!\"\nwait\n")

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: len(sink.lines) == 1)
        child = int(sink.lines[0].split()[1])
        await asyncio.sleep(0.05)  # let the subshell install its trap
        start = time.monotonic()
        h.terminate(grace=5.0)
        assert await h.wait() == -15
        assert time.monotonic() - start < 1.0
        await until_gone(child)

    run(main)


def test_background_process_holding_stdout_keeps_handler_alive(tmp_path: Path) -> None:
    argv = bash(tmp_path, '(sleep 0.3; echo LATE; exec sleep 1000) &\necho "PID $!"\nexit 4\n')

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: "LATE" in sink.lines)  # a command after the handler exited
        child = int(sink.lines[0].split()[1])
        await asyncio.sleep(0.1)
        assert h.returncode is None
        assert sink.exits == []
        h.terminate(grace=2.0)
        assert await h.wait() == 4
        assert sink.exits == [4]
        await until_gone(child)

    run(main)


def test_escaped_process_holding_stdout_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "ABANDON_DELAY", 0.2)
    argv = python(
        tmp_path,
        "import os, subprocess, sys\n"
        "code = 'import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(100)'\n"
        "subprocess.Popen([sys.executable, '-c', code])\n"
        "os.read(0, 1)\n",
    )

    async def main() -> None:
        sink = Sink()
        h = await sink.spawn(argv)
        await sink.until(lambda: len(sink.lines) == 1)
        escaped = int(sink.lines[0])
        try:
            h.terminate(grace=0.2)
            start = time.monotonic()
            assert await h.wait() == -15
            assert 0.3 < time.monotonic() - start < 2.0
        finally:
            os.kill(escaped, 9)

    run(main)


def test_spawn_errors(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain.sh"
    not_executable.write_text("#!/bin/bash\necho hi\n")
    no_shebang = script(tmp_path, "noshebang", "\x7fELFgarbage")

    async def main() -> None:
        sink = Sink()
        with pytest.raises(HandlerSpawnError, match="no-such-handler"):
            await sink.spawn([str(tmp_path / "no-such-handler")])
        with pytest.raises(HandlerSpawnError, match="Permission denied"):
            await sink.spawn([str(not_executable)])
        with pytest.raises(HandlerSpawnError, match="Exec format error"):
            await sink.spawn([no_shebang])
        with pytest.raises(HandlerSpawnError, match="nowhere"):
            await sink.spawn(["/bin/true"], cwd=str(tmp_path / "nowhere"))
        with pytest.raises(ValueError):
            await sink.spawn([])

    before = open_fds()
    run(main)
    assert open_fds() == before


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "thread"])
def test_no_zombies_no_fd_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    if not pidfd:

        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    quick = bash(tmp_path, "echo HI\n", name="quick.sh")
    slow = bash(tmp_path, "echo HI\nsleep 100 & wait\n", name="slow.sh")

    async def main() -> None:
        before = open_fds()
        sinks = [Sink() for _ in range(20)]
        handlers = [await sink.spawn(quick if i % 2 else slow) for i, sink in enumerate(sinks)]
        for sink in sinks:
            await sink.until(lambda s=sink: s.lines == ["HI"])  # type: ignore[misc]
        for h in handlers[1::2]:  # the quick ones end by themselves
            assert await h.wait() == 0
        for h in handlers:
            h.terminate(grace=1.0)
        codes = [await h.wait() for h in handlers]
        assert codes == [-15 if i % 2 == 0 else 0 for i in range(20)]
        assert [sink.exits for sink in sinks] == [[code] for code in codes]
        assert open_fds() == before
        for h in handlers:
            with pytest.raises(ChildProcessError):
                os.waitpid(h.pid, os.WNOHANG)
            assert not os.path.exists(f"/proc/{h.pid}")

    run(main)


# --- more descriptors (SIPROC_AUDIO_FDS, calls/audio_fds.py) ----------------------------------


def test_fds_reach_the_child_at_their_numbers_and_nothing_else_does(tmp_path: Path) -> None:
    """posix_spawn's dup2 puts our pipes at 3 and 4; the child gets no other descriptor of
    ours (not even one without close-on-exec), runs in its own session with SIGPIPE at its
    default, and so ends by it on a closed pipe; the parent keeps its own descriptors and
    leaks none."""
    argv = bash(
        tmp_path,
        'read -r line <&3; echo "BACK $line" >&4\n'
        'echo "INODES $(stat -L -c %i /proc/$$/fd/3 /proc/$$/fd/4 | tr "\\n" " ")"\n'
        'for fd in $LEAK; do [ -e /proc/$$/fd/$fd ] && echo "LEAK $fd"; done\n'
        'echo "SID $(ps -o sid= -p $$) $$"\n'
        "read -r _\n"  # then stdin
        "exec 3<&-; exec yes >&4\n",  # fd 4's reader is gone: SIGPIPE ends it
    )

    async def main() -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        inherited = os.dup(0)
        os.set_inheritable(inherited, True)  # as if siproc had inherited it
        ours = [to_child_r, to_child_w, from_child_r, from_child_w, inherited]
        env = {**ENV, "LEAK": " ".join(str(fd) for fd in ours)}
        before = open_fds()
        sink = Sink()
        h = await sink.spawn(argv, env=env, fds={3: to_child_r, 4: from_child_w})
        os.write(to_child_w, b"hello\n")
        await sink.until(lambda: len(sink.lines) >= 2 and sink.lines[-1].startswith("SID"))
        assert os.read(from_child_r, 100) == b"BACK hello\n"
        assert sink.lines[0].split()[1:] == [
            str(os.fstat(to_child_r).st_ino),
            str(os.fstat(from_child_w).st_ino),
        ]
        assert not [line for line in sink.lines if line.startswith("LEAK")], sink.lines
        sid, pid = sink.lines[-1].split()[1:]
        assert sid == pid == str(h.pid)
        for fd in (to_child_r, from_child_w, from_child_r, inherited):
            os.close(fd)  # ours stay ours: the child has its own
        h.send("go")
        assert await h.wait() == -13  # SIGPIPE, not ignored as it is in siproc
        await asyncio.sleep(0.05)
        os.close(to_child_w)
        assert open_fds() == before - 5  # the five above; the handler's pipes and pidfd closed

    run(main)


@pytest.mark.parametrize("close_range", [True, False])
def test_a_plain_handler_gets_only_stdin_stdout_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, close_range: bool
) -> None:
    """posix_spawn without fds (every call's handler): no descriptor of ours reaches it, not
    even one without close-on-exec (with close_range, and with the /proc scan where there is
    none); its own session; SIGPIPE at its default."""
    if not close_range:
        monkeypatch.setattr(handler_module, "_close_range", False)
    argv = bash(
        tmp_path,
        'for fd in $LEAK; do [ -e /proc/$$/fd/$fd ] && echo "LEAK $fd"; done\n'
        'echo "SID $(ps -o sid= -p $$) $$"\n'
        "read -r _\n"
        "exec yes\n",  # its stdout's reader is gone: SIGPIPE ends it
    )

    async def main() -> None:
        inherited = os.dup(0)
        os.set_inheritable(inherited, True)  # as if siproc had inherited it
        r, w = os.pipe()  # and descriptors of ours, with close-on-exec
        sink = Sink()
        h = await sink.spawn(argv, env={**ENV, "LEAK": f"{inherited} {r} {w}"})
        os.close(r)
        os.close(w)
        await sink.until(lambda: bool(sink.lines) and sink.lines[-1].startswith("SID"))
        assert not [line for line in sink.lines if line.startswith("LEAK")], sink.lines
        sid, pid = sink.lines[-1].split()[1:]
        assert sid == pid == str(h.pid)
        assert os.get_inheritable(inherited) is not close_range  # close_range: marked here
        os.close(inherited)
        h._stdout.close()  # type: ignore[union-attr]  # we stop reading: yes gets SIGPIPE
        h.send("go")
        assert await h.wait() == -13

    run(main)


def test_fds_with_a_missing_program_is_a_spawn_error(tmp_path: Path) -> None:
    async def main() -> None:
        r, w = os.pipe()
        before = open_fds()
        for argv in (["no-such-handler-program"], [str(tmp_path / "missing")]):
            with pytest.raises(HandlerSpawnError, match="No such file"):
                await Sink().spawn(argv, fds={3: r, 4: w})
        assert open_fds() == before
        os.close(r)
        os.close(w)

    run(main)
