"""Per-account mailboxes and their messages: the SQLite ``MailboxStore``.

The shared ``SqlMailboxes`` in SQLite's dialect; what is SQLite's own is
how a UID list comes back (one text, cheaper than a row per UID), that a
new message file's directory entry is synced before a row refers to it,
and the way back for files the database does not know.
"""

from __future__ import annotations

import sqlite3
import time
from array import array
from collections.abc import Iterable

from postwarden.storage.interfaces import BlobRef
from postwarden.storage.sql.mailboxes import SqlMailboxes
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import SQLITE, Database
from postwarden.storage.sqlite.indexer import Indexer


class SqliteMailboxes(SqlMailboxes[sqlite3.Connection]):
    """Mailboxes with IMAP-ready UIDs, flags, MODSEQs, counters and quota."""

    def __init__(self, db: Database, blobs: BlobFiles, indexer: Indexer) -> None:
        super().__init__(db, SQLITE, blobs, indexer)
        self._files = blobs
        self._sqlite = db

    def _uid_list(self, db: sqlite3.Connection, mailbox_id: int) -> array[int]:
        text = db.execute(
            "SELECT group_concat(uid) FROM (SELECT uid FROM messages WHERE mailbox_id = ?"
            " ORDER BY uid)", (mailbox_id,)).fetchone()[0]
        return array("I", map(int, text.split(","))) if text else array("I")

    def blobs_durable(self, names: Iterable[str]) -> None:
        self._files.sync_entries(names)

    def attach_unknown(self, account: str, names: Iterable[str]) -> int:
        """Deliver message files the database does not know into ``account``'s INBOX.

        The way back for files left by a crash or kept after restoring an
        older database (``postwarden blobs attach``); how many were attached.
        """
        unknown = {u.name: u for u in self._files.unknown_files()}
        chosen = [unknown[n] for n in dict.fromkeys(names) if n in unknown]
        now = time.time()
        with self._sqlite.tx() as db:
            for found in chosen:
                blob_id = self._files.register(db, BlobRef(found.name, found.size), 1, now)
                self.deliver(db, account, blob_id, found.size, found.modified)
        return len(chosen)
