"""Shared fixtures of the integration tests (each test module defines its own `workdir`, holding
its handler as `h.sh`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.siproc_proc import MakePhone, started_siprocs


@pytest.fixture
def phones(workdir: Path) -> Iterator[MakePhone]:
    """``phones(*handler_args, env=..., log_level=...)`` starts a siproc running
    ``workdir/h.sh`` and waits until it is ready; every one is stopped after the test and its
    log printed."""
    with started_siprocs(workdir) as start:
        yield start
