"""The one place that knows which backend a configuration names.

Everything above ``storage/`` (app, CLI, queue CLI) gets its store from
here, so adding a backend touches this module and the backend's package.
"""

from __future__ import annotations

from typing import TypeAlias

from postwarden.config import Config
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.store import SqliteStore

# What callers hold: the composed store (directory, blobs, delivery,
# mailboxes, queue parts) and its async boundary. With one backend these are
# its classes; a second backend turns them into Protocols.
Store: TypeAlias = SqliteStore
AsyncStore: TypeAlias = AsyncSqliteStore


def open_store(cfg: Config) -> Store:
    """The synchronous store for ``[storage] backend`` (checked when the config loaded)."""
    match cfg.storage.backend:
        case "sqlite":
            return SqliteStore(cfg.data_dir, cfg.limits.mime)
        case other:
            raise ValueError(f"unknown storage backend {other!r}")


def async_boundary(store: Store) -> AsyncStore:
    """The async boundary the servers use in front of ``store``."""
    return AsyncSqliteStore(store)
