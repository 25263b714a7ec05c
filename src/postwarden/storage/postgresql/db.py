"""One PostgreSQL database: a connection pool, transactions, migrations.

Connections are in autocommit mode, so a read is one round trip; writes
take ``tx()``, one transaction. The pool (psycopg_pool) is shared by the
threads of the async boundary; its size is ``[storage] pool_size``.

When the database goes away, a store call fails within ``[storage]
timeout_seconds`` (psycopg_pool would wait 30 s for a connection) with
``StoreUnavailable``, which the servers answer with "try again later". The
pool reconnects by itself once the server is back: no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from postwarden.storage.interfaces import DatabaseUnusable, StoreUnavailable
from postwarden.storage.postgresql.schema import MIGRATIONS
from postwarden.storage.sql.dialect import Dialect

CONNECT_TIMEOUT = 10  # seconds to reach the server at start-up
# The pool's own warnings (each failed reconnect, several lines, unformatted)
# would flood the log during an outage; ours say it once per failed call.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
Conn = psycopg.Connection[TupleRow]
MIGRATION_LOCK = 0x70777264  # advisory lock key ("pwrd"): one node migrates at a time
# Periodic work takes the two-key form (a key space apart from the one above):
# this number, and a hash of the schema and the kind of work.
PERIODIC_LOCKS = 0x70777264
POSTGRESQL = Dialect(
    placeholder="%s", for_update=" FOR UPDATE", greatest="greatest", bytewise=' COLLATE "C"',
    like="ILIKE", fold="lower", position="strpos",  # lower() folds any script in UTF-8
    body_match="coalesce(p.body @@ to_tsquery('simple', ?), false)",
    word="{}:*", word_and=" & ",
    ranges_per_statement=32,  # more go in as two arrays of bounds
    range_arrays="EXISTS (SELECT 1 FROM unnest(?::bigint[], ?::bigint[]) r(lo, hi)"
                 " WHERE {column} BETWEEN r.lo AND r.hi)",
)


def read_password(path: Path | None, what: str = "storage.password_file") -> str | None:
    """The first line of ``[storage] password_file`` (or of the file ``what`` names);
    None without one."""
    if path is None:
        return None
    try:
        return path.read_text().splitlines()[0] if path.stat().st_size else ""
    except OSError as exc:
        raise DatabaseUnusable(f"{what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatabaseUnusable(f"{what} {path}: not text") from None


class PgDatabase:
    """The connection plumbing every PostgreSQL store module shares."""

    def __init__(self, dsn: str, password: str | None = None, pool_size: int = 10,
                 timeout: float = 5.0) -> None:
        self.timeout = timeout
        kwargs: dict[str, object] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}
        if password is not None:
            kwargs["password"] = password
        self.pool = ConnectionPool(dsn, kwargs=kwargs, min_size=1, max_size=pool_size,
                                   open=False, name="postwarden")
        self.where = _where(dsn)  # host:port/database, for messages
        try:  # one direct attempt first: the pool would retry a refusal until its timeout
            psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                            password=password).close()
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.OperationalError, PoolTimeout, psycopg.ProgrammingError) as exc:
            self.pool.close()  # ProgrammingError: a dsn that does not parse, quoted in it
            reason = error_line(exc).replace(f'"{dsn}"', "the dsn")  # with any password
            raise DatabaseUnusable(
                f"cannot connect to PostgreSQL at {self.where}: {reason}") from None

    @contextmanager
    def conn(self) -> Iterator[Conn]:
        """A connection for reads (autocommit: each statement sees the latest commits)."""
        with self._unavailable(), self.pool.connection(timeout=self.timeout) as conn:
            yield conn

    read = conn

    @contextmanager
    def snapshot(self) -> Iterator[Conn]:
        """A connection whose reads all see one snapshot: a REPEATABLE READ transaction
        (under the default READ COMMITTED each statement would take its own)."""
        with self._unavailable(), self.pool.connection(timeout=self.timeout) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one round trip
            try:
                yield conn
            finally:  # nothing was written: COMMIT and ROLLBACK end it alike
                conn.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        """One transaction: committed at the end, rolled back on any exception."""
        with (self._unavailable(), self.pool.connection(timeout=self.timeout) as conn,
              conn.transaction()):
            yield conn

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A lost server or no connection in time becomes ``StoreUnavailable``.

        The other idle connections are checked at once (in the pool's own
        worker), so the ones the outage broke are replaced before they are
        handed out, rather than failing one call each.
        """
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.pool.check()
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {error_line(exc)}") from None

    @contextmanager
    def exclusive(self, kind: str) -> Iterator[Conn | None]:
        """A transaction holding ``kind``'s advisory lock, or None while another holds it.

        Periodic work (expiring login records, collecting blobs) runs on one
        node at a time: every node tries on its own schedule, the one that gets
        the lock does the round, the others skip it. The lock ends with the
        transaction, so a node that dies mid-round frees it at once.
        """
        with self.tx() as db:
            row = db.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema() || ':' || %s))",
                (PERIODIC_LOCKS, kind)).fetchone()
            yield db if row is not None and row[0] else None

    def migrate(self) -> None:
        """Check the database is ours (or empty), then bring it up to date."""
        with self.tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            tables = {r[0] for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            if tables and "schema_version" not in tables:
                raise DatabaseUnusable(f"{self.where} is not a postwarden database")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (0)")
            if version > len(MIGRATIONS):
                raise DatabaseUnusable(
                    f"{self.where} has schema {version}, newer than this postwarden's"
                    f" {len(MIGRATIONS)}: run the newer release")
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute(step.encode())  # several statements: simple query protocol
                db.execute("UPDATE schema_version SET version = %s", (number,))

    def schema_version(self) -> int:
        with self.conn() as db:
            row = db.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.pool.close()


def error_line(exc: Exception) -> str:
    """The first line of a connection error (psycopg adds hints below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "timed out"


def _where(dsn: str) -> str:
    """host:port/database of a DSN, for messages (never the password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured dsn"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
