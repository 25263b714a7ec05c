"""The SQLite (WAL) backend."""

from postwarden.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
