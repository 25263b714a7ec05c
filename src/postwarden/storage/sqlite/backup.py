"""A consistent copy of a live SQLite store, and putting one back.

The database is copied with SQLite's online backup API: one read
transaction, so the copy is the database as of one commit, while the server
keeps writing (WAL). The message files are copied *after* that snapshot and
only those its ``blobs`` table names: a file written later belongs to a
commit the snapshot does not have; a file the snapshot still refers to
exists, because the collector deletes a released file only after
``blob_grace_seconds`` and a referenced one never. Each copied file is
checked against the size and SHA-256 its row recorded, so a backup is never
silently corrupt; ``restore`` checks them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from postwarden.storage.blobmeter import CHUNK
from postwarden.storage.interfaces import StoreError
from postwarden.storage.sqlite.blobs import fsync_dir
from postwarden.storage.sqlite.changes import EVENTS_DIR
from postwarden.storage.sqlite.store import SqliteStore

DATABASE = "postwarden.sqlite3"
MESSAGES = "messages"
MANIFEST = "postwarden-backup.json"
# What the store keeps in data_dir: everything else there (DKIM and SRS keys,
# certificates) is the caller's to copy. ``events`` holds live sockets only.
OWN_NAMES = frozenset({DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", MESSAGES, EVENTS_DIR,
                       MANIFEST})


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a backup or restore copied: the database's messages and their files."""

    messages: int  # message rows (a file in two mailboxes counts twice)
    files: int
    octets: int
    skipped: int  # released files the collector removed meanwhile (nothing refers to them)


def backup(store: SqliteStore, dest: Path) -> CopyReport:
    """Snapshot ``store`` into the empty directory ``dest``; then its files."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = dest / f"{DATABASE}.partial"
    target = sqlite3.connect(partial)
    try:
        store.db.conn.backup(target)  # all pages in one step: one read transaction
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        target.close()
    os.replace(partial, dest / DATABASE)
    report = _copy_files(dest / DATABASE, store.blobs.blob_dir, dest / MESSAGES)
    (dest / MANIFEST).write_text(json.dumps({
        "format": 1, "made": time.time(), "schema": store.schema_version(),
        "messages": report.messages, "files": report.files}) + "\n", encoding="utf-8")
    fsync_dir(dest)
    return report


def in_use(data_dir: Path) -> bool:
    """Whether a serving process has its change socket in ``data_dir`` (see ``changes``)."""
    events = data_dir / EVENTS_DIR
    if not events.is_dir():
        return False
    dirfd = os.open(events, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for entry in os.scandir(events):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect(f"/proc/self/fd/{dirfd}/{entry.name}")
                except OSError:
                    continue  # left by a process that is gone
                return True
    finally:
        os.close(dirfd)
    return False


def remove(data_dir: Path) -> None:
    """Delete the store's entries in ``data_dir`` (``restore --force``); other files stay."""
    for name in OWN_NAMES:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def restore(src: Path, data_dir: Path) -> CopyReport:
    """Put the backup in ``src`` into ``data_dir``, whose store entries are gone or never were.

    The database is copied last, under its own name only when every file it
    refers to is in place and intact: an interrupted restore leaves no
    database, so no server starts on half of one.
    """
    if not (src / MANIFEST).is_file() or not (src / DATABASE).is_file():
        raise StoreError(f"{src} is not a postwarden backup (no {MANIFEST})")
    _check_database(src / DATABASE)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    report = _copy_files(src / DATABASE, src / MESSAGES, data_dir / MESSAGES)
    partial = data_dir / f"{DATABASE}.partial"
    _copy_file(src / DATABASE, partial)
    os.replace(partial, data_dir / DATABASE)
    fsync_dir(data_dir)
    return report


def _check_database(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database: {exc}") from None
    if result != "ok":
        raise StoreError(f"{path} fails its integrity check: {result}")


def _copy_files(database: Path, source: Path, target: Path) -> CopyReport:
    """Copy and verify every file the database at ``database`` names."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, size, digest, refs FROM blobs").fetchall()
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{database}: {exc}") from None
    finally:
        conn.close()
    target.mkdir(exist_ok=True, mode=0o700)
    files = octets = skipped = 0
    shards: set[Path] = set()
    for name, size, digest, refs in rows:
        if not name.isalnum():
            raise StoreError(f"{database}: bad message file name {name!r}")
        shard = target / name[:2]
        if shard not in shards:
            shard.mkdir(exist_ok=True, mode=0o700)
            shards.add(shard)
        try:
            copied, sha = _copy_file(source / name[:2] / name, shard / name)
        except FileNotFoundError:
            if refs <= 0:
                skipped += 1  # collected meanwhile: no message refers to it
                continue
            raise StoreError(f"message file {name} is missing from {source}") from None
        if copied != size or (digest is not None and sha != digest):
            raise StoreError(f"message file {name} in {source} is corrupt"
                             " (its size or SHA-256 differs from the database's)")
        files += 1
        octets += copied
    for shard in shards:
        fsync_dir(shard)
    fsync_dir(target)
    return CopyReport(messages, files, octets, skipped)


def _copy_file(source: Path, target: Path) -> tuple[int, bytes]:
    """Copy one file durably; its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as inp, open(target, "wb") as out:
        while chunk := inp.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(source, target)
    return size, digest.digest()
