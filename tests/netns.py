"""Loopback-only network namespaces for tests (DESIGN.md section 5): `ip netns`, root only."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def loopback_netns(purpose: str, resolv_conf: str | None = None) -> Iterator[str]:
    """A fresh namespace with only `lo`, up, and no route; deleted afterwards whatever
    happened. ``resolv_conf``: the /etc/resolv.conf its processes see (`ip netns exec` mounts
    /etc/netns/NAME/resolv.conf over it). Fails the test, never skips, without root."""
    if os.geteuid() != 0:
        pytest.fail(f"{purpose} needs root: it creates a network namespace (ip netns)")
    if shutil.which("ip") is None:
        pytest.fail(f"{purpose} needs the `ip` command (Debian package iproute2)")
    name = f"siproc-t-{secrets.token_hex(4)}"
    created = run("ip", "netns", "add", name)
    if created.returncode != 0:
        pytest.fail(f"ip netns add {name} failed: {created.stderr.strip()}")
    etc = Path("/etc/netns") / name
    try:
        if resolv_conf is not None:
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_text(resolv_conf)
        up = run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        if up.returncode != 0:
            pytest.fail(f"cannot bring up lo in {name}: {up.stderr.strip()}")
        # Only lo is up (a kernel may add tunnel devices such as sit0, down), and no route
        # leads anywhere but loopback.
        links = run("ip", "netns", "exec", name, "ip", "-o", "link", "show").stdout
        up_links = [
            line.split(":")[1].strip()
            for line in links.splitlines()
            if re.search(r"<[^>]*\bUP\b", line)
        ]
        assert up_links == ["lo"], links
        routes = run("ip", "netns", "exec", name, "ip", "route", "show").stdout
        assert routes.strip() == "", routes
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        deleted = run("ip", "netns", "del", name)
        assert deleted.returncode == 0, f"ip netns del {name}: {deleted.stderr}"
