"""The SQLite (WAL) backend assembled: one database, message files, a part per concern.

Callers take the part they need (``store.directory``, ``store.mailboxes``,
...); each part is a small class in its own module sharing one ``Database``.
"""

from __future__ import annotations

from pathlib import Path

from postwarden.mail.mime import MimeLimits
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.changes import SqliteChanges
from postwarden.storage.sqlite.db import Database
from postwarden.storage.sqlite.delivery import SqliteDelivery
from postwarden.storage.sqlite.directory import SqliteDirectory
from postwarden.storage.sqlite.indexer import Indexer
from postwarden.storage.sqlite.mailboxes import SqliteMailboxes
from postwarden.storage.sqlite.queue import SqliteQueue


class SqliteStore:
    """Opens (and migrates) the database in ``data_dir`` and builds every part on it."""

    def __init__(self, data_dir: Path, mime_limits: MimeLimits | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = Database(data_dir / "postwarden.sqlite3")
        self.blobs = BlobFiles(self.db, data_dir / "messages")
        self.db.migrate()
        self.indexer = Indexer(self.db, self.blobs, mime_limits)
        self.mailboxes = SqliteMailboxes(self.db, self.blobs, self.indexer)
        self.directory = SqliteDirectory(self.db, self.mailboxes)
        self.queue = SqliteQueue(self.db, self.blobs)
        self.delivery = SqliteDelivery(self.db, self.blobs, self.mailboxes, self.queue)
        self.changes = SqliteChanges(data_dir)  # ChangeFeed; ``listen()`` to hear others
        self.db.observe(self.changes)

    def upkeep(self, index_batch: int) -> None:
        """Frequent work: index while the intake is idle."""
        self.indexer.idle_step(index_batch)

    def collect_blobs(self, now: float, grace_seconds: float) -> int | None:
        """The collector: files nothing refers to and released before the grace; how many."""
        return self.blobs.collect(now - grace_seconds)

    def schema_version(self) -> int:
        return self.db.schema_version()

    def close(self) -> None:
        self.changes.close()
        self.db.close()
