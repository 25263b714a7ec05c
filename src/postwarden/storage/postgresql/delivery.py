"""The intake's door (DeliveryStore): bytes, mailboxes and queue in one transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence

from postwarden.storage.interfaces import Acceptance
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import PgDatabase
from postwarden.storage.postgresql.mailboxes import PgMailboxes
from postwarden.storage.postgresql.queue import PgQueue


class PgDelivery:
    """Commits accepted messages in groups: one transaction (one WAL flush) for many.

    A message's bytes go in the same transaction as the rows that refer to
    them, so they are durable when those rows are, and ``250`` comes after.
    """

    def __init__(self, db: PgDatabase, blobs: PgBlobs, mailboxes: PgMailboxes,
                 queue: PgQueue) -> None:
        self._db = db
        self._blobs = blobs
        self._mailboxes = mailboxes
        self._queue = queue

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
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
        self._blobs.stored(acc.blob.name for acc in batch)
