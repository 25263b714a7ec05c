"""Shared fixtures: a real postwarden server process on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serverproc import ServerProcess


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Build (not start) servers with config overrides; all are stopped at the end."""
    made: list[ServerProcess] = []

    def make(**overrides: Any) -> ServerProcess:
        root = tmp_path / f"server{len(made)}"
        root.mkdir()
        server = ServerProcess(root, **overrides)
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()
