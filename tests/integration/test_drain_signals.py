"""SIGUSR1 (graceful drain) that arrives while siproc is still starting: an orchestrator that
drains an instance it has just started must get the drain (exit 0), not a process killed by
the signal's default action."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.siproc_proc import Siproc, write_handler


def test_sigusr1_while_starting_drains_instead_of_killing(tmp_path: Path) -> None:
    handler = write_handler(tmp_path / "h.sh", "cat >/dev/null\n")
    # SIPROC_TLS_VERIFY=no: the phone's first line, logged when it starts running; the eager
    # media worker (SIPROC_MEDIA_IDLE=0) then keeps it from being ready for a while
    proc = Siproc(
        handler,
        env={"SIPROC_TLS_VERIFY": "no", "SIPROC_MEDIA_WORKERS": "1", "SIPROC_MEDIA_IDLE": "0"},
        cwd=tmp_path,
    )
    try:
        proc.wait_for(r"SIPROC_TLS_VERIFY=no")
        proc.signal(signal.SIGUSR1)
        code = proc.proc.wait(15)
        assert code == 0, f"siproc exited with {code}:\n{proc.stderr()}"
        proc.wait_for(r"SIGUSR1: draining")
    finally:
        proc.stop()
