"""The intake's door (DeliveryStore): local mailboxes and the queue in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Generic

from postwarden.storage.interfaces import Acceptance
from postwarden.storage.sql.dialect import C, Database
from postwarden.storage.sql.mailboxes import SqlMailboxes
from postwarden.storage.sql.parts import BlobRows, QueueRows


class SqlDelivery(Generic[C]):
    """Commits accepted messages in groups: one transaction (one fsync or WAL flush)
    for many.

    The blobs are made durable first (``SqlMailboxes.blobs_durable``: file
    directory entries synced once per directory for the batch) or in the
    transaction itself (bytes in the database), so they are durable when the
    rows that refer to them are, and ``250`` comes after both.
    """

    def __init__(self, db: Database[C], blobs: BlobRows[C], mailboxes: SqlMailboxes[C],
                 queue: QueueRows[C]) -> None:
        self._db = db
        self._blobs = blobs
        self._mailboxes = mailboxes
        self._queue = queue

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
        """All messages of the batch in one transaction."""
        names = [acc.blob.name for acc in batch]
        self._mailboxes.blobs_durable(names)
        now = time.time()
        with self._db.tx() as db:
            self._blobs.keep_bytes(db, [acc.blob for acc in batch])  # S3: PUTs in parallel
            for acc in batch:
                refs = len(acc.local_accounts) + (1 if acc.remote else 0)
                blob_id = self._blobs.register(db, acc.blob, refs, now)
                for account, prefix in acc.local_copies():
                    self._mailboxes.deliver(db, account, blob_id, acc.blob.size, acc.received_at,
                                            prefix, junk=acc.junk)
                if acc.remote:
                    self._queue.enqueue(db, acc)
