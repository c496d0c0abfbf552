"""Shared fixtures of the integration tests (each test module defines its own `workdir`, holding
its handler as `h.sh`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.siproc_proc import MakePhone, Siproc


@pytest.fixture
def phones(workdir: Path) -> Iterator[MakePhone]:
    """``phones(*handler_args, **siproc_kwargs)`` starts a siproc running ``workdir/h.sh`` and
    waits until it is ready; every one is stopped after the test and its log printed."""
    started: list[Siproc] = []

    def start(*args: str, **kwargs: object) -> Siproc:
        proc = Siproc(workdir / "h.sh", *args, cwd=workdir, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()
        print(f"--- siproc on port {proc.port} ---\n{proc.stderr()}")
