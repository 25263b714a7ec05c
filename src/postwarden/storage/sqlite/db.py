"""One SQLite database file: per-thread connections, transactions, migrations.

One connection per thread (sqlite3 connections must not be shared across
threads); WAL lets readers on the event loop run beside the intake's writer
thread. ``synchronous=FULL`` makes every commit durable.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from postwarden.storage.interfaces import DatabaseUnusable
from postwarden.storage.sql.dialect import Dialect
from postwarden.storage.sqlite.schema import MIGRATIONS
from postwarden.storage.sqlite.store_v2_schema import APPLICATION_ID

SQLITE = Dialect(
    placeholder="?", for_update="", greatest="max", bytewise="", like="LIKE",
    fold="pw_fold", position="instr",
    body_match="m.blob_id IN (SELECT rowid FROM {table} WHERE {table} MATCH ?)",
    word='"{}"*', word_and=" AND ",
    ranges_per_statement=400,  # SQLite's parameter limit; no row locks: one writer
)


class CommitObserver(Protocol):
    """Told of each connection, and of each transaction's end (``sqlite.changes``)."""

    def capture(self, conn: sqlite3.Connection) -> None: ...
    def committed(self) -> None: ...
    def rolled_back(self) -> None: ...


class Database:
    """The connection plumbing every SQLite store module shares."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._observer: CommitObserver | None = None
        self._reading = _Reading(self)

    def observe(self, observer: CommitObserver) -> None:
        """From now on (the schema exists), tell ``observer`` of every commit."""
        self._observer = observer
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            observer.capture(conn)

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.create_function("pw_fold", 1, _fold, deterministic=True)
            if self._observer is not None:
                self._observer.capture(conn)
            self._local.conn = conn
        return conn

    def read(self) -> _Reading:
        """This thread's connection, for reads (WAL: each statement sees the latest commit)."""
        return self._reading

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads that all see one snapshot (a read transaction)."""
        self.conn.execute("BEGIN")  # deferred: the first read takes the snapshot
        try:
            yield self.conn
        finally:  # nothing was written: COMMIT and ROLLBACK end it alike
            self.conn.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE) so it never upgrades."""
        db = self.conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            if self._observer is not None:
                self._observer.rolled_back()
            raise
        db.execute("COMMIT")
        if self._observer is not None:
            self._observer.committed()  # published after the commit, never before

    def migrate(self) -> None:
        """Check the database is ours and usable, then bring it up to date.

        An empty file, random bytes or somebody else's database must stop
        everything with one clear line: taken for a new database, it would
        start a server that knows no domain, no mailbox and no message.
        """
        if self.path.exists() and self.path.stat().st_size == 0:
            raise DatabaseUnusable(
                f"{self.path} is empty (0 bytes); restore it from a backup or move it away"
            )
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise DatabaseUnusable(f"{self.path} is not a usable SQLite database: {exc}") from None

    def _migrate(self) -> None:
        with self.tx() as db:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if app_id not in (0, APPLICATION_ID) or (tables and "schema_version" not in tables):
                raise DatabaseUnusable(f"{self.path} is not a postwarden database")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (0)")
            if version > len(MIGRATIONS):
                raise DatabaseUnusable(
                    f"{self.path} has schema {version}, newer than this postwarden's"
                    f" {len(MIGRATIONS)}: run the newer release"
                )
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                if isinstance(step, str):
                    for statement in step.split(";"):
                        if statement.strip():
                            db.execute(statement)
                else:
                    step(db, self.path.parent)
                db.execute("UPDATE schema_version SET version = ?", (number,))

    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _Reading:
    """``Database.read()``: a plain context manager, as status and UID-list reads run
    thousands of times a second (a generator-based one added ~15 % to a status read)."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db.conn

    def __exit__(self, *exc: object) -> None:
        return None


def _fold(text: str | None) -> str:
    """Unicode case folding for searches (SQLite's own lower() knows only ASCII)."""
    return text.casefold() if text else ""
