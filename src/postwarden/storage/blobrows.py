"""What both backends do alike with message bytes: measure them, count their references.

The SQLite and PostgreSQL blob stores differ in where the bytes go (files,
the database, S3) but not in the ``blobs`` rows: a row per name with its
facts and a reference count, released when the count reaches zero, swept
by the collector once nothing refers to it (mark: no mailbox row, no queue
entry) and the grace time has passed. The SQL is written once here with
``?`` placeholders; the backend's ``Dialect`` turns them into its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from postwarden.storage.blobmeter import BlobFacts, BlobMeter
from postwarden.storage.interfaces import BlobRef
from postwarden.storage.sql.dialect import Connection, Dialect


class MeteredWriter:
    """A blob writer's common part: it measures the bytes as they pass (``BlobMeter``).

    Subclasses say where the bytes go (``_keep``) and how they are made
    durable (``commit``).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._meter = BlobMeter()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._keep(data)
        self._meter.feed(data)
        self._size += len(data)

    def _keep(self, data: bytes) -> None:
        raise NotImplementedError

    def _ref(self) -> BlobRef:
        return BlobRef(self._name, self._size, self._meter.facts())


# The mark of the mark-and-sweep: rows that nothing refers to. The reference
# count only nominates candidates (its partial index keeps the sweep cheap);
# a mailbox row or a queue entry that still names the blob always saves it.
_NOTHING_REFERS = (
    " NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = blobs.id)"
    " AND NOT EXISTS (SELECT 1 FROM queue_messages q WHERE q.blob = blobs.name)")
_UNREFERENCED = " refs <= 0 AND released < ? AND" + _NOTHING_REFERS


class BlobTable:
    """Reference counting on the ``blobs`` table, in one backend's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self._sql = dialect.sql

    def register(self, db: Connection, name: str, facts: BlobFacts, refs: int, now: float) -> int:
        """Record a blob with ``refs`` references (more if the name exists); its id."""
        row = db.execute(self._sql(
            "INSERT INTO blobs (name, size, wire_size, lines, header_size, digest, refs, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET refs = blobs.refs + excluded.refs, released = NULL"
            " RETURNING id"),
            (name, facts.size, facts.wire_size, facts.lines, facts.header_size,
             facts.digest, refs, now)).fetchone()
        assert row is not None
        return int(row[0])

    def add_refs(self, db: Connection, blob_ids: Iterable[int]) -> None:
        db.cursor().executemany(
            self._sql("UPDATE blobs SET refs = refs + 1, released = NULL WHERE id = ?"),
            [(i,) for i in blob_ids])

    def release_ids(self, db: Connection, blob_ids: Iterable[int], now: float) -> None:
        """Drop one reference each; a blob left with none waits for the collector."""
        self._release(db, "id", blob_ids, now)

    def release(self, db: Connection, names: Iterable[str], now: float | None = None) -> None:
        """``release_ids`` by name (the queue refers to blobs by name)."""
        self._release(db, "name", names, time.time() if now is None else now)

    def _release(self, db: Connection, key: str, keys: Iterable[object], now: float) -> None:
        db.cursor().executemany(self._sql(
            "UPDATE blobs SET refs = refs - 1,"
            f" released = CASE WHEN refs - 1 <= 0 THEN ? ELSE released END WHERE {key} = ?"),
            [(now, k) for k in keys])

    def release_leaked(self, db: Connection, older_than: float) -> int:
        """The repair of a count that leaked: rows made before ``older_than`` whose count
        says they are referenced but that nothing refers to are released as of their
        making, so the ``sweep`` that follows takes them; how many.

        Without it such a row (and its bytes) would stay forever: the count
        only nominates, and it never reaches zero. Nothing adds a reference to
        a row nothing refers to (a copy starts from a mailbox row; a new
        acceptance has a new name), so one made before the grace is garbage.
        """
        return int(db.execute(self._sql(
            "UPDATE blobs SET refs = 0, released = created WHERE refs > 0 AND created < ? AND"
            + _NOTHING_REFERS), (older_than,)).rowcount)

    def sweep(self, db: Connection, older_than: float) -> Sequence[tuple[int, str, bytes]]:
        """Delete the rows nothing refers to, released before ``older_than``:
        (id, name, digest) of each, for the caller to drop the bytes after."""
        rows = db.execute(self._sql(
            "DELETE FROM blobs WHERE" + _UNREFERENCED + " RETURNING id, name, digest"),
            (older_than,)).fetchall()
        return [(int(r[0]), str(r[1]), bytes(r[2]) if r[2] is not None else b"") for r in rows]
