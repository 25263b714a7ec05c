"""The PostgreSQL backend assembled: one database shared by every node, a part per concern."""

from __future__ import annotations

from postwarden.config import S3Config
from postwarden.mail.mime import MimeLimits
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.changes import PgChanges
from postwarden.storage.postgresql.db import PgDatabase
from postwarden.storage.postgresql.delivery import PgDelivery
from postwarden.storage.postgresql.directory import PgDirectory
from postwarden.storage.postgresql.indexer import PgIndexer
from postwarden.storage.postgresql.mailboxes import PgMailboxes
from postwarden.storage.postgresql.queue import PgQueue
from postwarden.storage.s3 import S3Objects


class PgStore:
    """Connects (a pool), migrates, and builds every part on the one database."""

    def __init__(self, dsn: str, password: str | None = None, pool_size: int = 10,
                 mime_limits: MimeLimits | None = None, timeout: float = 5.0,
                 s3: S3Config | None = None) -> None:
        self.dsn = dsn
        self.db = PgDatabase(dsn, password, pool_size, timeout)
        self.objects = S3Objects(s3) if s3 is not None else None  # None: bytes in the database
        try:
            self.db.migrate()
            if self.objects is not None:
                self.objects.check()
        except BaseException:
            self.close_objects()
            self.db.close()
            raise
        self.blobs = PgBlobs(self.db, self.objects)
        self.indexer = PgIndexer(self.db, self.blobs, mime_limits)
        self.mailboxes = PgMailboxes(self.db, self.blobs, self.indexer)
        self.directory = PgDirectory(self.db, self.mailboxes)
        self.queue = PgQueue(self.db, self.blobs)
        self.delivery = PgDelivery(self.db, self.blobs, self.mailboxes, self.queue)
        self.changes = PgChanges(dsn, password)  # ChangeFeed; ``listen()`` to hear all nodes

    def upkeep(self, index_batch: int) -> None:
        """Frequent work: index while the intake is idle."""
        self.indexer.idle_step(index_batch)

    def collect_blobs(self, now: float, grace_seconds: float) -> int | None:
        """The collector on one node at a time: how many blobs went, None if another
        node holds the lock (that node is sweeping; this one skips)."""
        return self.blobs.collect(now - grace_seconds)

    def schema_version(self) -> int:
        return self.db.schema_version()

    def close_objects(self) -> None:
        if self.objects is not None:
            self.objects.close()

    def close(self) -> None:
        self.changes.close()
        self.close_objects()
        self.db.close()
