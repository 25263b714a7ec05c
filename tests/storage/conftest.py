"""The backend fixture: every conformance test runs once per backend.

A second backend (PostgreSQL) adds its factory to ``BACKENDS``; the test
modules use only the store's interfaces, so they run against it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postwarden.storage.factory import Store
from postwarden.storage.sqlite import SqliteStore

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"

BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": SqliteStore}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest) -> Callable[[Path], Store]:
    factory: Callable[[Path], Store] = BACKENDS[request.param]
    return factory


@pytest.fixture
def store(open_store: Callable[[Path], Store], tmp_path: Path) -> Iterator[Store]:
    """A store with one local domain and three accounts."""
    store = open_store(tmp_path / "data")
    store.directory.add_domain("example.test")
    for account in (ALICE, BOB, CAROL):
        store.directory.add_account(account, "hash")
    yield store
    store.close()
