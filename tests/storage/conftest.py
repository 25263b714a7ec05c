"""The backend fixture: every conformance test runs once per backend.

SQLite stores live in the test's data directory; PostgreSQL stores get a
fresh schema on the session's throwaway server (``pg_cluster``), one per
data directory, so opening the same directory again reopens the same data.
The test modules use only the store's interfaces, so both run them unchanged;
"postgresql-s3" runs them again with the bytes in a local S3 server (moto).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postwarden.config import S3Config, from_dict
from postwarden.storage.factory import Store
from postwarden.storage.postgresql import PgStore
from postwarden.storage.sqlite import SqliteStore
from s3server import S3Server

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"

BACKENDS = ("sqlite", "postgresql", "postgresql-s3")  # the last: blobs = "s3" (moto)
PG_POOL_SIZE = 4  # connections per test store: a run opens hundreds of stores


def s3_settings(server: S3Server) -> S3Config:
    """``[s3]`` for a fresh bucket on the local S3 server, checked as a config file's."""
    return from_dict({"hostname": "h", "s3": server.settings(server.bucket()), "storage": {
        "backend": "postgresql", "dsn": "postgresql://x", "blobs": "s3"}}, Path("x")).s3


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest) -> Callable[[Path], Store]:
    if request.param == "sqlite":
        return SqliteStore
    cluster = request.getfixturevalue("pg_cluster")
    s3 = None
    if request.param == "postgresql-s3":
        s3 = s3_settings(request.getfixturevalue("s3_server"))
    databases: dict[Path, str] = {}

    def open_pg(data_dir: Path) -> PgStore:
        if data_dir not in databases:
            databases[data_dir] = cluster.schema()
        return PgStore(databases[data_dir], pool_size=PG_POOL_SIZE, s3=s3)

    return open_pg


@pytest.fixture
def store(open_store: Callable[[Path], Store], tmp_path: Path) -> Iterator[Store]:
    """A store with one local domain and three accounts."""
    store = open_store(tmp_path / "data")
    store.directory.add_domain("example.test")
    for account in (ALICE, BOB, CAROL):
        store.directory.add_account(account, "hash")
    yield store
    store.close()
