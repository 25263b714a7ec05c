"""Message bytes on PostgreSQL, content-addressed: in the database or in S3.

``[storage] blobs = "database"``: the bytes are kept in ``blob_contents``
under their SHA-256, once however many acceptances (names) and mailboxes
refer to them. ``blobs = "s3"``: the ``blob_contents`` row holds no bytes
(it keeps the digest's place and is the lock that orders uploads against
the collector) and the object named by the digest holds them. Either way
``blobs`` has one row per name with its facts and reference count, as
with SQLite.

A writer keeps the message in memory until the transaction that refers to
it stores the bytes: in the database within that transaction, or in S3 by
a completed PUT before that transaction commits. So a blob is durable
exactly when its first row is, a refused message leaves nothing behind,
and a message whose PUT fails is not committed (``451``). Nothing deletes
bytes but ``collect``, run by one node at a time. An object whose
transaction rolled back after its PUT, or whose node died before the
commit, is named by no row: the collector deletes it once it is older
than the grace time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from postwarden.storage.blobrows import BlobTable, MeteredWriter
from postwarden.storage.bridge import blocking
from postwarden.storage.interfaces import BlobRef, NotFound, StoreError, UnknownFile
from postwarden.storage.postgresql.db import POSTGRESQL, Conn, PgDatabase
from postwarden.storage.s3 import S3Objects

GC_KIND = "blob-gc"  # the collector's advisory lock (``PgDatabase.exclusive``)


class MemoryBlobWriter(MeteredWriter):
    """Collects one message's bytes until the transaction that refers to them."""

    def __init__(self, blobs: PgBlobs, name: str) -> None:
        super().__init__(name)
        self._blobs = blobs
        self._parts: list[bytes] = []

    def _keep(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    def commit(self) -> BlobRef:
        """Hand the bytes to the store; the transaction that refers to them stores them."""
        self._blobs.stage(self._name, b"".join(self._parts))
        self._parts = []
        return self._ref()

    def abort(self) -> None:
        self._parts = []
        self._blobs.unstage(self._name)


class PgBlobs:
    """The BlobStore on PostgreSQL, and the reference counting the other parts use."""

    local_reads = False  # every read is a round trip: never on the event loop

    def __init__(self, db: PgDatabase, objects: S3Objects | None = None) -> None:
        self._db = db
        self._objects = objects  # None: the bytes live in the database
        self._staged: dict[str, bytes] = {}  # committed writers' bytes, until stored
        self._lock = threading.Lock()
        self.rows = BlobTable(POSTGRESQL)

    def new_blob(self, name: str) -> MemoryBlobWriter:
        if not name.isalnum():
            raise NotFound(f"bad blob name {name!r}")
        return MemoryBlobWriter(self, name)

    def stage(self, name: str, data: bytes) -> None:
        with self._lock:
            self._staged[name] = data

    def unstage(self, name: str) -> None:
        with self._lock:
            self._staged.pop(name, None)

    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)``: ``substr`` on uncompressed (EXTERNAL) storage
        reads only the chunks it needs; bytes kept in S3 are one ranged GET."""
        part = "substr(c.data, %s)" if length is None else "substr(c.data, %s, %s)"
        args: tuple[object, ...] = (start + 1,) if length is None else (start + 1, max(0, length))
        with self._db.conn() as db:
            row = db.execute(
                f"SELECT {part}, octet_length(c.data) = b.size, b.digest FROM blobs b"
                " JOIN blob_contents c ON c.digest = b.digest WHERE b.name = %s",
                (*args, name)).fetchone()
        if row is None:
            raise NotFound(f"message {name} is missing")
        if row[1]:
            return bytes(row[0])
        if self._objects is None:
            raise StoreError(f"message {name} is kept in s3, and [storage] blobs is not \"s3\"")
        return blocking(self._objects.get, bytes(row[2]), start, length)

    def keep_bytes(self, db: Conn, blobs: Sequence[BlobRef]) -> None:
        """Store the staged bytes of ``blobs`` for the transaction ``db`` is in.

        Each digest's row is made (or locked, if it exists) in digest order,
        so a collector deleting that digest waits for this transaction, and
        one that deleted it first has committed before this goes on. In S3
        the objects are PUT after that and before this returns: the
        collector never removes an object a committed row needs.
        """
        with self._lock:  # taken out: a later ``register`` of the same blob stores nothing
            staged = dict(sorted((b.facts.digest, self._staged.pop(b.name)) for b in blobs
                                 if b.facts is not None and b.name in self._staged))
        db.cursor().executemany(
            "INSERT INTO blob_contents VALUES (%s, %s) ON CONFLICT (digest)"
            " DO UPDATE SET digest = excluded.digest",
            [(d, b"" if self._objects else data) for d, data in staged.items()])
        if self._objects is not None:
            blocking(self._objects.put_many, staged.items())

    def register(self, db: Conn, blob: BlobRef, refs: int, now: float) -> int:
        """Record a blob with ``refs`` references, storing its bytes unless ``keep_bytes``
        did already (for a whole group); its id."""
        if blob.facts is None:
            raise StoreError(f"blob {blob.name} was not written through this store")
        self.keep_bytes(db, [blob])
        return self.rows.register(db, blob.name, blob.facts, refs, now)

    def add_refs(self, db: Conn, blob_ids: Iterable[int]) -> None:
        self.rows.add_refs(db, blob_ids)

    def release_ids(self, db: Conn, blob_ids: Iterable[int], now: float) -> None:
        self.rows.release_ids(db, blob_ids, now)

    def release(self, db: Conn, names: Iterable[str]) -> None:
        self.rows.release(db, names)

    def collect(self, older_than: float) -> int | None:
        """Delete blobs nothing refers to, released (or, for a count that leaked, made)
        before ``older_than``, and S3 objects no row names written before it; how many
        of both, or None when another node holds the collector's lock (it is sweeping).

        Bytes go when no name refers to their digest any more; S3 objects are
        deleted before the transaction commits, while their rows are locked.
        """
        with self._db.exclusive(GC_KIND) as db:
            if db is None:
                return None
            orphans = self._sweep_orphans(older_than) if self._objects is not None else 0
            self.rows.release_leaked(db, older_than)
            swept = self.rows.sweep(db, older_than)
            gone = db.execute(
                "DELETE FROM blob_contents c WHERE c.digest = ANY(%s)"
                " AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = c.digest)"
                " RETURNING c.digest, octet_length(c.data) = 0",
                (sorted({digest for _, _, digest in swept}),)).fetchall()
            if self._objects is not None:
                blocking(self._objects.delete_many, [bytes(r[0]) for r in gone if r[1]])
        return len(swept) + orphans

    def _sweep_orphans(self, older_than: float) -> int:
        """Delete the S3 objects written before ``older_than`` that no ``blob_contents`` row
        names: PUT by a transaction that then rolled back, or by a node that died before
        its commit. How many.

        A listing page at a time, each in a transaction of its own (on a second
        connection; the caller's holds the collector's lock): the collector
        inserts a placeholder row for each digest, in digest order as ``keep_bytes``
        does. A digest whose row exists, or is being inserted by an acceptance
        that has not committed, conflicts (after waiting for that commit): its
        object stays. One that does not is an orphan, and an acceptance of the
        same bytes now waits on the placeholder until the object is deleted and
        then PUTs it again. Young objects are never looked at: the grace time
        covers uploads whose row is still to come.
        """
        assert self._objects is not None
        deleted = 0
        pages = self._objects.written_before(older_than)
        while (page := blocking(next, pages, None)) is not None:  # a LIST request each
            if not page:
                continue
            with self._db.tx() as db:
                orphans = [bytes(r[0]) for r in db.execute(
                    "INSERT INTO blob_contents SELECT d, '' FROM unnest(%s::bytea[]) d"
                    " ORDER BY d ON CONFLICT (digest) DO NOTHING RETURNING digest",
                    (sorted(page),)).fetchall()]
                blocking(self._objects.delete_many, orphans)
                db.execute("DELETE FROM blob_contents WHERE digest = ANY(%s)", (orphans,))
            deleted += len(orphans)
        return deleted

    # --- the fsck commands: bytes in the database have no files to lose --------------

    def unknown_files(self) -> list[UnknownFile]:
        return []

    def missing_files(self) -> list[str]:
        return []

    def remove_unknown(self, names: Iterable[str]) -> int:
        return 0
