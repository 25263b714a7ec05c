"""Message bytes in the database (``[storage] blobs = "database"``), content-addressed.

The bytes are kept in ``blob_contents`` under their SHA-256, once however
many acceptances (names) and mailboxes refer to them; ``blobs`` holds one
row per name with its facts and reference count, as with SQLite. A writer
keeps the message in memory until the transaction that refers to it
inserts the bytes, so a blob is durable exactly when its first row is, and
a failed or refused message leaves nothing behind. Nothing deletes bytes
but ``collect``, and only those no name has referred to for the grace time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from postwarden.storage.blobmeter import BlobMeter
from postwarden.storage.interfaces import BlobRef, NotFound, StoreError, UnknownFile
from postwarden.storage.postgresql.db import Conn, PgDatabase


class MemoryBlobWriter:
    """Collects one message's bytes and measures them as they pass."""

    def __init__(self, blobs: PgBlobs, name: str) -> None:
        self._blobs = blobs
        self._name = name
        self._parts: list[bytes] = []
        self._meter = BlobMeter()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._parts.append(bytes(data))
        self._meter.feed(data)
        self._size += len(data)

    def commit(self) -> BlobRef:
        """Hand the bytes to the store; the transaction that refers to them stores them."""
        ref = BlobRef(self._name, self._size, self._meter.facts())
        self._blobs.stage(self._name, b"".join(self._parts))
        self._parts = []
        return ref

    def abort(self) -> None:
        self._parts = []
        self._blobs.unstage(self._name)


class PgBlobs:
    """The BlobStore on PostgreSQL, and the reference counting the other parts use."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._staged: dict[str, bytes] = {}  # committed writers' bytes, until stored
        self._lock = threading.Lock()

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
        reads only the chunks it needs."""
        with self._db.conn() as db:
            if length is None:
                row = db.execute(
                    "SELECT substr(c.data, %s) FROM blobs b JOIN blob_contents c"
                    " ON c.digest = b.digest WHERE b.name = %s", (start + 1, name)).fetchone()
            else:
                row = db.execute(
                    "SELECT substr(c.data, %s, %s) FROM blobs b JOIN blob_contents c"
                    " ON c.digest = b.digest WHERE b.name = %s",
                    (start + 1, max(0, length), name)).fetchone()
        if row is None:
            raise NotFound(f"message {name} is missing")
        return bytes(row[0])

    def register(self, db: Conn, blob: BlobRef, refs: int, now: float) -> int:
        """Record a blob with ``refs`` references, storing its bytes if new; its id."""
        if blob.facts is None:
            raise StoreError(f"blob {blob.name} was not written through this store")
        facts = blob.facts
        with self._lock:
            data = self._staged.get(blob.name)
        if data is not None:
            db.execute("INSERT INTO blob_contents VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (facts.digest, data))
        row = db.execute(
            "INSERT INTO blobs (name, size, wire_size, lines, header_size, digest, refs, created)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET refs = blobs.refs + excluded.refs, released = NULL"
            " RETURNING id",
            (blob.name, facts.size, facts.wire_size, facts.lines, facts.header_size,
             facts.digest, refs, now),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def stored(self, names: Iterable[str]) -> None:
        """The transaction that stored these blobs committed: drop the staged bytes."""
        with self._lock:
            for name in names:
                self._staged.pop(name, None)

    def add_refs(self, db: Conn, blob_ids: Iterable[int]) -> None:
        db.cursor().executemany(
            "UPDATE blobs SET refs = refs + 1, released = NULL WHERE id = %s",
            [(i,) for i in blob_ids])

    def release_ids(self, db: Conn, blob_ids: Iterable[int], now: float) -> None:
        """Drop one reference each; a blob left with none waits for ``collect``."""
        db.cursor().executemany(
            "UPDATE blobs SET refs = refs - 1,"
            " released = CASE WHEN refs - 1 <= 0 THEN %s ELSE released END WHERE id = %s",
            [(now, i) for i in blob_ids])

    def release(self, db: Conn, names: Iterable[str]) -> None:
        """``release_ids`` by name (the queue refers to blobs by name)."""
        now = time.time()
        db.cursor().executemany(
            "UPDATE blobs SET refs = refs - 1,"
            " released = CASE WHEN refs - 1 <= 0 THEN %s ELSE released END WHERE name = %s",
            [(now, n) for n in names])

    def collect(self, older_than: float) -> int:
        """Delete blobs nobody has referred to since before ``older_than``; how many.

        Bytes go when no name refers to their digest any more. Safe to run on
        several nodes at once: each row is deleted by one of them.
        """
        with self._db.tx() as db:
            rows = db.execute(
                "DELETE FROM blobs WHERE refs <= 0 AND released < %s RETURNING digest",
                (older_than,)).fetchall()
            db.execute(
                "DELETE FROM blob_contents c WHERE c.digest = ANY(%s)"
                " AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = c.digest)",
                ([r[0] for r in rows],))
        return len(rows)

    # --- the fsck commands: bytes in the database have no files to lose --------------

    def unknown_files(self) -> list[UnknownFile]:
        return []

    def missing_files(self) -> list[str]:
        return []

    def remove_unknown(self, names: Iterable[str]) -> int:
        return 0
