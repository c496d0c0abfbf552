"""net/child_exit.py: a child's exit waited for on a pidfd (no executor thread), reaped, with
its status; the executor where there is no pidfd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from siproc.net.child_exit import wait_exit


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def test_status_and_reaped_without_a_thread() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        threads = threading.active_count()
        status = await wait_exit(loop, _child("import sys; sys.exit(3)"))
        assert threading.active_count() == threads  # no executor started
        assert loop._default_executor is None  # type: ignore[attr-defined]
        return status, 0

    assert asyncio.run(main()) == (3, 0)


def test_child_that_already_exited() -> None:
    child = _child("pass")
    child.wait()

    async def main() -> int:
        return await wait_exit(asyncio.get_running_loop(), child)

    assert asyncio.run(main()) == 0


def test_no_pidfd_falls_back_to_the_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    async def main() -> int:
        return await wait_exit(asyncio.get_running_loop(), _child("import sys; sys.exit(5)"))

    assert asyncio.run(main()) == 5
