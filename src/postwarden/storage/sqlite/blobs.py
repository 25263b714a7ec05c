"""Message bytes as files under ``messages/``, sharded by the first two characters."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from postwarden.storage.interfaces import BlobRef, NotFound
from postwarden.storage.sqlite.db import Database


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter:
    """Writes a message straight to its final name; unreferenced until committed.

    A crash before the database commit leaves an orphan file, which
    ``BlobFiles.remove_orphan_blobs`` clears at start-up; it never leaves a
    half-written message visible, because only the commit references it.
    """

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._name = name
        self._file = open(path, "xb")  # noqa: SIM115 - closed in commit/abort
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> BlobRef:
        """Make the bytes durable; the directory entry is synced by ``commit_acceptances``."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return BlobRef(self._name, self._size)

    def abort(self) -> None:
        self._file.close()
        with suppress(FileNotFoundError):
            os.unlink(self._path)


class BlobFiles:
    """The BlobStore: creating, reading and dropping message files."""

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

    def read_blob(self, name: str) -> bytes:
        return self.blob_path(name).read_bytes()

    def sync_entries(self, names: Iterable[str]) -> None:
        """Make the directory entries of freshly written files durable, once per shard."""
        for shard in {self.shard(name) for name in names}:
            fsync_dir(shard)

    def unreferenced(self, db: sqlite3.Connection, blobs: Iterable[str]) -> list[str]:
        return [
            b
            for b in set(blobs)
            if not db.execute(
                "SELECT 1 FROM mailbox_messages WHERE blob = ?"
                " UNION ALL SELECT 1 FROM queue_messages WHERE blob = ? LIMIT 1",
                (b, b),
            ).fetchone()
        ]

    def unlink(self, names: Iterable[str]) -> None:
        for name in names:
            self.blob_path(name).unlink(missing_ok=True)

    def remove_orphan_blobs(self, older_than: float) -> int:
        """Delete message files no row references (left by a crash before commit)."""
        referenced = {
            r[0]
            for r in self._db.conn.execute(
                "SELECT blob FROM mailbox_messages UNION SELECT blob FROM queue_messages"
            )
        }
        removed = 0
        for path in self.blob_dir.glob("*/*"):
            if path.name not in referenced and path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
