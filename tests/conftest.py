"""Shared fixtures: a real postwarden server process on loopback, a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcluster import PgCluster, find_bindir, running_cluster
from s3server import S3Server, running_s3
from serverproc import ServerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with tests that start server processes (marked slow) run first: under
    ``make test``'s two processes the long ones then run beside the many short
    ones, instead of ending the run on one process while the other has nothing
    to do. The sort is stable, so each file's tests stay together and in order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL for the whole run, started on first use.

    Without the server binaries the PostgreSQL tests are skipped with the
    reason, except in CI (``CI`` set, as ``.ci/run`` does), where they fail:
    a backend must never go untested silently.
    """
    _need_postgresql()
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def own_pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL of the test's own, for tests that stop and start it (a database
    outage) without disturbing the others' shared one."""
    _need_postgresql()
    with running_cluster() as cluster:
        yield cluster


def _need_postgresql() -> None:
    if find_bindir() is None:
        why = "PostgreSQL server not installed: apt-get install postgresql (.ci/run does this)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One local S3 server (moto) for the whole run, started on first use."""
    with running_s3() as server:
        yield server
