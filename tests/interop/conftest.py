"""Fixtures for interoperability tests against real peers (Kamailio, baresip, SIPp).

Every test under tests/interop is marked ``interop``. A peer that is not installed fails the test
loudly with the command that installs it; it is never skipped (CI must run them all). When a test
fails, the logs of the peers it used are attached to its report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.audio import make_tone
from tests.peers import Baresip, Kamailio, PeerMissing, Sipp, require_binary
from tests.siproc_proc import MakePhone, started_siprocs

INTEROP_DIR = Path(__file__).resolve().parent
LOG_LINES_ON_FAILURE = 150


class _HasLog(Protocol):
    log_path: Path


def _peers_of(request: pytest.FixtureRequest) -> list[tuple[str, _HasLog]]:
    """The (label, peer) list of the running test, kept on the test item for the report hook."""
    node: Any = request.node
    if not hasattr(node, "_siproc_peers"):
        node._siproc_peers = []
    peers: list[tuple[str, _HasLog]] = node._siproc_peers
    return peers


@contextlib.contextmanager
def _fail_if_missing() -> Iterator[None]:
    """Turn PeerMissing into a test failure (never a skip: CI must run every interop test)."""
    try:
        yield
    except PeerMissing as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEROP_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for label, peer in getattr(item, "_siproc_peers", []):
            try:
                lines = peer.log_path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            # baresip redraws a call status bar with carriage returns; it is only noise here.
            lines = [line for line in lines if not line.startswith("[0:") and line.strip()]
            tail = "\n".join(lines[-LOG_LINES_ON_FAILURE:])
            report.sections.append((f"{label} log ({peer.log_path})", tail))
    return report


@pytest.fixture
def kamailio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kamailio]:
    """A running Kamailio registrar/proxy on a free 127.0.0.1 port (UDP and TCP), no users yet.

    Add users with ``kamailio.add_user(name, password)``; they work at once.
    """
    with _fail_if_missing():
        require_binary("kamailio")
        server = Kamailio(tmp_path / "kamailio")
        _peers_of(request).append(("kamailio", server))
        server.start()
    try:
        yield server
    finally:
        server.stop()


MakeBaresip = Callable[..., Baresip]


@pytest.fixture
def make_baresip(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBaresip]:
    """Factory: ``make_baresip(user, registrar=kamailio, password=..., **Baresip kwargs)``.

    Returns a started baresip (``start=False`` to start it yourself); ``registrar`` may be a
    Kamailio or ``"127.0.0.1:PORT"``. Every phone made is stopped at teardown.
    """
    with _fail_if_missing():
        require_binary("baresip")
    phones: list[Baresip] = []

    def make(
        user: str, registrar: Kamailio | str | None = None, start: bool = True, **kwargs: Any
    ) -> Baresip:
        if isinstance(registrar, Kamailio):
            registrar = registrar.hostport
        phone = Baresip(tmp_path / f"baresip-{user}", user, registrar=registrar, **kwargs)
        phones.append(phone)
        _peers_of(request).append((f"baresip {user}", phone))
        if start:
            with _fail_if_missing():
                phone.start()
        return phone

    try:
        yield make
    finally:
        for phone in phones:
            phone.stop()


MakeSipp = Callable[..., Sipp]


@pytest.fixture
def make_sipp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeSipp]:
    """Factory: ``make_sipp(scenario, remote=None, **Sipp kwargs)`` -> a started Sipp.

    Collect it with ``.wait()``; any still running at teardown is stopped.
    """
    with _fail_if_missing():
        require_binary("sipp")
    runs: list[Sipp] = []

    def make(scenario: Path | str, remote: str | None = None, **kwargs: Any) -> Sipp:
        sipp = Sipp(tmp_path / "sipp", scenario, remote, **kwargs)
        runs.append(sipp)
        _peers_of(request).append((f"sipp {sipp.local_port}", sipp))
        return sipp.start()

    try:
        yield make
    finally:
        for sipp in runs:
            sipp.stop()


@pytest.fixture
def tone_wav(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tone_wav(freq_hz=440, seconds=3.0, rate=8000)`` -> a mono 16-bit WAV path."""

    def make(freq_hz: float = 440.0, seconds: float = 3.0, rate: int = 8000) -> Path:
        path = tmp_path / "tones" / f"tone-{freq_hz:g}hz-{seconds:g}s-{rate}.wav"
        return make_tone(path, freq_hz, seconds, rate)

    return make


@pytest.fixture
def make_siproc(workdir: Path) -> Iterator[MakePhone]:
    """Factory: ``make_siproc(*handler_args, env=..., log_level=4)`` -> a ready siproc running
    ``workdir/h.sh`` (each test module defines its ``workdir``); every siproc is stopped at
    teardown and its log printed."""
    with started_siprocs(workdir) as make:
        yield make
