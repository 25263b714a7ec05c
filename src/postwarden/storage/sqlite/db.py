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

from postwarden.storage.sqlite.schema import MIGRATIONS


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
            if self._observer is not None:
                self._observer.capture(conn)
            self._local.conn = conn
        return conn

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
        with self.tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (0)")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (number,))

    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
