"""Fixtures of the end-to-end tests that more than one file uses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

NOTIFY_TIMEOUT = 30.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(NOTIFY_TIMEOUT)
    yield sock
    sock.close()
