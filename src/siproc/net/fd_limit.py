"""The process's limit of open files, raised once at start (siproc and every media worker)."""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_fd_limit"]

log = logging.getLogger(__name__)


def raise_fd_limit() -> None:
    """Raise the soft limit of open files to the hard one: every call holds an RTP and an
    RTCP socket (and a recording), and the common soft limit of 1024 would stop a siproc at a
    few hundred calls with "Too many open files"."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # a container may forbid it: keep what we have
        log.debug("cannot raise the limit of open files: %s", exc)
