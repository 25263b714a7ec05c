"""Per-account mailboxes and their messages: the PostgreSQL ``MailboxStore``.

The shared ``SqlMailboxes`` in PostgreSQL's dialect: the row locks it
takes (``FOR UPDATE``) order the writers of one mailbox on every node.
What is PostgreSQL's own is how a UID list comes back (one array).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import POSTGRESQL, Conn, PgDatabase
from postwarden.storage.postgresql.indexer import PgIndexer
from postwarden.storage.sql.mailboxes import SqlMailboxes


class PgMailboxes(SqlMailboxes[Conn]):
    """Mailboxes with IMAP-ready UIDs, flags, MODSEQs, counters and quota."""

    def __init__(self, db: PgDatabase, blobs: PgBlobs, indexer: PgIndexer) -> None:
        super().__init__(db, POSTGRESQL, blobs, indexer)

    def _uid_list(self, db: Conn, mailbox_id: int) -> array[int]:
        row = db.execute("SELECT array_agg(uid ORDER BY uid) FROM messages"
                         " WHERE mailbox_id = %s", (mailbox_id,)).fetchone()
        return array("I", row[0] or ()) if row else array("I")

    def attach_unknown(self, account: str, names: Iterable[str]) -> int:
        """No files, so none unknown: ``fsck --attach`` has nothing to do here."""
        return 0
