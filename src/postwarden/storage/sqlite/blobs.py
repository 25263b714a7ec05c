"""Message bytes as files under ``messages/``, sharded by the first two characters."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path

from postwarden.storage.blobmeter import measure_file
from postwarden.storage.blobrows import BlobTable, MeteredWriter
from postwarden.storage.interfaces import BlobRef, NotFound, UnknownFile
from postwarden.storage.sqlite.db import SQLITE, Database


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter(MeteredWriter):
    """Writes a message straight to its final name; unreferenced until committed.

    A crash before the database commit leaves a file the database does not
    know: it is kept, and ``blobs check`` reports it (never deleted unasked).
    The bytes are measured as they pass, so committing needs no second read.
    """

    def __init__(self, path: str, name: str) -> None:
        super().__init__(name)
        self._path = path
        self._file = open(path, "xb")  # noqa: SIM115 - closed in commit/abort

    def _keep(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> BlobRef:
        """Make the bytes durable; the directory entry is synced by ``commit_acceptances``."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._ref()

    def abort(self) -> None:
        self._file.close()
        with suppress(FileNotFoundError):
            os.unlink(self._path)


class BlobFiles:
    """The BlobStore: message files and the ``blobs`` table that counts their references.

    Nothing here deletes a file because no row mentions it: only ``collect``
    deletes, and only files whose row says nobody has referred to them for
    ``min_age`` seconds. Files without a row are reported by
    ``unknown_files`` and go only by an explicit ``remove_unknown``.
    """

    local_reads = True  # a small read is a pread from the page cache

    def __init__(self, db: Database, blob_dir: Path) -> None:
        self._db = db
        self.blob_dir = blob_dir
        self._shards: set[str] = set()  # message directories known to exist
        self.rows = BlobTable(SQLITE)
        blob_dir.mkdir(exist_ok=True, mode=0o700)

    def blob_path(self, name: str) -> Path:
        return Path(self.shard(name), name)

    def shard(self, name: str) -> str:
        """The directory of a message file (a str: pathlib is slow on the per-message path)."""
        if not name.isalnum():  # names are ours; refuse anything path-like
            raise NotFound(f"bad blob name {name!r}")
        return os.path.join(self.blob_dir, name[:2])

    def new_blob(self, name: str) -> FileBlobWriter:
        shard = self.shard(name)
        if shard not in self._shards:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            fsync_dir(self.blob_dir)
            self._shards.add(shard)
        return FileBlobWriter(os.path.join(shard, name), name)

    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` of a message (all of it by default).

        A ranged read is one ``pread`` on a plain descriptor: IMAP FETCH of a
        header range does it for every message, and a file object plus a
        ``Path`` cost twice as much as the read itself.
        """
        try:
            fd = os.open(os.path.join(self.shard(name), name), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"message file {name} is missing") from None
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - start)
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def sync_entries(self, names: Iterable[str]) -> None:
        """Make the directory entries of freshly written files durable, once per shard."""
        for shard in {self.shard(name) for name in names}:
            fsync_dir(shard)

    def keep_bytes(self, db: sqlite3.Connection, blobs: Sequence[BlobRef]) -> None:
        """Nothing to do: the writer synced each file, ``sync_entries`` their names."""

    def register(self, db: sqlite3.Connection, blob: BlobRef, refs: int, now: float) -> int:
        """Record a committed file with ``refs`` references; its id."""
        facts = blob.facts or measure_file(self.blob_path(blob.name))
        return self.rows.register(db, blob.name, facts, refs, now)

    def add_refs(self, db: sqlite3.Connection, blob_ids: Iterable[int]) -> None:
        self.rows.add_refs(db, blob_ids)

    def release_ids(self, db: sqlite3.Connection, blob_ids: Iterable[int], now: float) -> None:
        self.rows.release_ids(db, blob_ids, now)

    def release(self, db: sqlite3.Connection, names: Iterable[str]) -> None:
        self.rows.release(db, names)

    def collect(self, older_than: float) -> int:
        """Delete files nothing refers to, released before ``older_than``; how many.

        The rows go first (with their parsed cache), then the files: a crash
        in between leaves an unknown file, which is kept and reported. One
        process owns a SQLite store, so no lock is needed beyond the transaction.
        """
        with self._db.tx() as db:
            rows = self.rows.sweep(db, older_than)
            db.executemany("DELETE FROM parsed WHERE blob_id = ?", [(r[0],) for r in rows])
        for _, name, _ in rows:
            self.blob_path(name).unlink(missing_ok=True)
        return len(rows)

    def unknown_files(self) -> list[UnknownFile]:
        """Files in the message directory with no row in the database (a full scan)."""
        known = {r[0] for r in self._db.conn.execute("SELECT name FROM blobs")}
        found = []
        for path in sorted(self.blob_dir.glob("*/*")):
            if path.name not in known and path.name.isalnum():
                st = path.stat()
                found.append(UnknownFile(path.name, st.st_size, st.st_mtime))
        return found

    def missing_files(self) -> list[str]:
        """Blobs the database refers to whose file is gone (a full scan)."""
        return [
            name
            for (name,) in self._db.conn.execute("SELECT name FROM blobs WHERE refs > 0")
            if not self.blob_path(name).exists()
        ]

    def remove_unknown(self, names: Iterable[str]) -> int:
        """Delete files the database does not know, on an explicit request only."""
        wanted = set(names)
        removed = 0
        for unknown in self.unknown_files():
            if unknown.name in wanted:
                self.blob_path(unknown.name).unlink(missing_ok=True)
                removed += 1
        return removed
