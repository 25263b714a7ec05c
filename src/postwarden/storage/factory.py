"""The one place that knows which backend a configuration names.

Everything above ``storage/`` (app, CLI, queue CLI) gets its store from
here, typed against the Protocols below, so adding a backend touches this
module and the backend's package only; the SQLite classes satisfy them
structurally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from postwarden.config import Config
from postwarden.storage.boundary import (
    AsyncDirectory,
    AsyncIntakeStore,
    AsyncMailboxStore,
    AsyncQueue,
)
from postwarden.storage.events import ChangeFeed
from postwarden.storage.interfaces import (
    BlobStore,
    DeliveryStore,
    Directory,
    QueueStore,
    UnknownFile,
)
from postwarden.storage.mailbox import MailboxStore
from postwarden.storage.sqlite import backup as sqlite_backup
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.backup import CopyReport as CopyReport
from postwarden.storage.sqlite.store import SqliteStore

T = TypeVar("T")


class StoreBlobs(BlobStore, Protocol):
    """Message files, plus the ``fsck`` command's scans for orphans.

    ``local_reads``: a small read is a read from the page cache (files), cheap
    enough for the event loop; else (database, S3) it always goes to a thread.
    """

    local_reads: bool

    def unknown_files(self) -> list[UnknownFile]: ...
    def missing_files(self) -> list[str]: ...
    def remove_unknown(self, names: Iterable[str]) -> int: ...


class StoreMailboxes(MailboxStore, Protocol):
    """Mailboxes, plus ``fsck --attach``: unknown files delivered into an INBOX."""

    def attach_unknown(self, account: str, names: Iterable[str]) -> int: ...


class StoreChanges(ChangeFeed, Protocol):
    """Change hints for IDLE/NOOP; ``listen`` also hears other processes' commits."""

    def listen(self) -> None: ...


class Store(Protocol):
    """What callers hold: the composed store, one part per interface."""

    @property
    def directory(self) -> Directory: ...
    @property
    def blobs(self) -> StoreBlobs: ...
    @property
    def mailboxes(self) -> StoreMailboxes: ...
    @property
    def delivery(self) -> DeliveryStore: ...  # the conformance tests' way in; app uses the boundary
    @property
    def queue(self) -> QueueStore: ...
    @property
    def changes(self) -> StoreChanges: ...
    def upkeep(self, index_batch: int) -> None: ...
    def collect_blobs(self, now: float, grace_seconds: float) -> int | None: ...
    def close(self) -> None: ...


class AsyncStore(AsyncDirectory, AsyncIntakeStore, AsyncMailboxStore, AsyncQueue, Protocol):
    """The async boundary the servers and the queue manager use."""

    async def aclose(self) -> None:
        """Close, on the loop the boundary served (PostgreSQL's async pool lives there)."""


def open_store(cfg: Config) -> Store:
    """The synchronous store for ``[storage] backend`` (checked when the config loaded)."""
    match cfg.storage.backend:
        case "sqlite":
            return SqliteStore(cfg.data_dir, cfg.limits.mime)
        case "postgresql":  # imported here: psycopg costs 70 ms at start-up, unused on SQLite
            from postwarden.storage.postgresql import PgStore
            from postwarden.storage.postgresql.db import read_password
            return PgStore(cfg.storage.dsn, read_password(cfg.storage.password_file),
                           cfg.storage.pool_size, cfg.limits.mime, cfg.storage.timeout_seconds,
                           cfg.s3 if cfg.storage.blobs == "s3" else None)
        case other:
            raise ValueError(f"unknown storage backend {other!r}")


def async_boundary(store: Store) -> AsyncStore:
    """The async boundary the servers use in front of ``store``: on SQLite the
    thread boundary (reads on a pool, writes batched on one thread), on
    PostgreSQL the same running natively on the event loop."""
    match store:
        case SqliteStore():
            return AsyncSqliteStore(store)
        case _:  # imported here, as in open_store
            from postwarden.storage.postgresql import PgStore
            from postwarden.storage.postgresql.aio import AsyncPgStore
            assert isinstance(store, PgStore), type(store)
            return AsyncPgStore(store)


async def closing(store: AsyncStore, work: Awaitable[T]) -> T:
    """``work``'s result, then ``store`` closed on the same loop (the CLI's runs)."""
    try:
        return await work
    finally:
        await store.aclose()


def backup(store: Store, dest: Path) -> CopyReport:
    """A consistent copy of the running store in the empty directory ``dest``."""
    match store:
        case SqliteStore():
            return sqlite_backup.backup(store, dest)
        case _:
            raise TypeError(f"no backup for {type(store).__name__}")


def restore(cfg: Config, src: Path, replace: bool) -> CopyReport:
    """Put a backup back into ``cfg.data_dir``; ``replace`` drops the store found there."""
    match cfg.storage.backend:
        case "sqlite":
            if replace:
                sqlite_backup.remove(cfg.data_dir)
            return sqlite_backup.restore(src, cfg.data_dir)
        case other:
            raise ValueError(f"unknown storage backend {other!r}")


def in_use(cfg: Config) -> bool:
    """Whether a server is running on the store of ``cfg`` (restore must not go under it)."""
    match cfg.storage.backend:
        case "sqlite":
            return sqlite_backup.in_use(cfg.data_dir)
        case other:
            raise ValueError(f"unknown storage backend {other!r}")


def store_names(cfg: Config) -> frozenset[str]:
    """The entries of ``data_dir`` the store owns (and a backup copies its own way)."""
    match cfg.storage.backend:
        case "sqlite":
            return sqlite_backup.OWN_NAMES
        case other:
            raise ValueError(f"unknown storage backend {other!r}")
