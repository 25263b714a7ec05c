"""The intake's door (DeliveryStore): local mailboxes and the queue in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence

from postwarden.storage.interfaces import Acceptance
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import Database
from postwarden.storage.sqlite.mailboxes import SqliteMailboxes
from postwarden.storage.sqlite.queue import SqliteQueue


class SqliteDelivery:
    """Commits accepted messages in groups: one fsync for many."""

    def __init__(
        self, db: Database, blobs: BlobFiles, mailboxes: SqliteMailboxes, queue: SqliteQueue
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._mailboxes = mailboxes
        self._queue = queue

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
        """All messages of the batch in one transaction.

        The files' bytes are already synced (``FileBlobWriter.commit``); their
        directory entries are synced here, once per directory for the batch,
        before any row can reference them.
        """
        self._blobs.sync_entries(acc.blob.name for acc in batch)
        now = time.time()
        with self._db.tx() as db:
            for acc in batch:
                refs = len(acc.local_accounts) + (1 if acc.remote else 0)
                blob_id = self._blobs.register(db, acc.blob, refs, now)
                for account, prefix in acc.local_copies():
                    self._mailboxes.deliver(db, account, blob_id, acc.blob.size, acc.received_at,
                                            prefix, junk=acc.junk)
                if acc.remote:
                    self._queue.enqueue(db, acc)
