"""Fixtures the unit tests of the media edge share: an event loop and a UDP far end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tests.rtp_peer import udp_peer


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop, not running: tests drive streams with ``tick`` or run it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """The far end of a stream: tests/rtp_peer.py `udp_peer` (reads time out after 1 s)."""
    sock = udp_peer()
    yield sock
    sock.close()
