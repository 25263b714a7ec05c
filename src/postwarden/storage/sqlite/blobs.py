"""Message bytes as files under ``messages/``, sharded by the first two characters."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from postwarden.storage.blobmeter import BlobMeter, measure_file
from postwarden.storage.interfaces import BlobRef, NotFound, UnknownFile
from postwarden.storage.sqlite.db import Database


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter:
    """Writes a message straight to its final name; unreferenced until committed.

    A crash before the database commit leaves a file the database does not
    know: it is kept, and ``blobs check`` reports it (never deleted unasked).
    The bytes are measured as they pass (``BlobMeter``), so committing needs
    no second read.
    """

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._name = name
        self._file = open(path, "xb")  # noqa: SIM115 - closed in commit/abort
        self._meter = BlobMeter()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._meter.feed(data)
        self._size += len(data)

    def commit(self) -> BlobRef:
        """Make the bytes durable; the directory entry is synced by ``commit_acceptances``."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return BlobRef(self._name, self._size, self._meter.facts())

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

    def __init__(self, db: Database, blob_dir: Path) -> None:
        self._db = db
        self.blob_dir = blob_dir
        self._shards: set[str] = set()  # message directories known to exist
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

    def register(self, db: sqlite3.Connection, blob: BlobRef, refs: int, now: float) -> int:
        """Record a committed file with ``refs`` references; its id."""
        facts = blob.facts or measure_file(self.blob_path(blob.name))
        row = db.execute(
            "INSERT INTO blobs (name, size, wire_size, lines, header_size, digest, refs, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET refs = refs + excluded.refs, released = NULL"
            " RETURNING id",
            (blob.name, facts.size, facts.wire_size, facts.lines, facts.header_size,
             facts.digest, refs, now),
        ).fetchone()
        return int(row[0])

    def add_refs(self, db: sqlite3.Connection, blob_ids: Iterable[int]) -> None:
        db.executemany(
            "UPDATE blobs SET refs = refs + 1, released = NULL WHERE id = ?",
            [(i,) for i in blob_ids],
        )

    def release_ids(self, db: sqlite3.Connection, blob_ids: Iterable[int], now: float) -> None:
        """Drop one reference each; a blob left with none waits for ``collect``."""
        db.executemany(
            "UPDATE blobs SET refs = refs - 1,"
            " released = CASE WHEN refs - 1 <= 0 THEN ? ELSE released END WHERE id = ?",
            [(now, i) for i in blob_ids],
        )

    def release(self, db: sqlite3.Connection, names: Iterable[str]) -> None:
        """``release_ids`` by file name (the queue refers to files by name)."""
        now = time.time()
        db.executemany(
            "UPDATE blobs SET refs = refs - 1,"
            " released = CASE WHEN refs - 1 <= 0 THEN ? ELSE released END WHERE name = ?",
            [(now, n) for n in names],
        )

    def collect(self, older_than: float) -> int:
        """Delete files nobody has referred to since before ``older_than``; how many.

        The rows go first (with their parsed cache), then the files: a crash
        in between leaves an unknown file, which is kept and reported.
        """
        with self._db.tx() as db:
            rows = db.execute(
                "DELETE FROM blobs WHERE refs <= 0 AND released < ? RETURNING id, name",
                (older_than,),
            ).fetchall()
            db.executemany("DELETE FROM parsed WHERE blob_id = ?", [(r[0],) for r in rows])
        for _, name in rows:
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
