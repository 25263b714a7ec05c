"""One PostgreSQL database: connection pools, transactions, migrations.

Connections are in autocommit mode, so a read is one round trip; writes
take ``tx()``, one transaction. Two pools of ``[storage] pool_size``, one
query code: a call bridged onto the event loop (``bridge.run``, how the
servers' async boundary calls the store) takes an asyncio connection from
the async pool, opened on that loop at its first use; any other caller
(the CLI, start-up, indexing on a thread) a blocking one.

When the database goes away, a store call fails within ``[storage]
timeout_seconds`` (psycopg_pool would wait 30 s for a connection) with
``StoreUnavailable``, which the servers answer with "try again later". The
pool reconnects by itself once the server is back: no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from postwarden.storage import bridge
from postwarden.storage.interfaces import DatabaseUnusable, StoreUnavailable
from postwarden.storage.postgresql.schema import MIGRATIONS
from postwarden.storage.sql.dialect import Connection, Dialect

CONNECT_TIMEOUT = 10  # seconds to reach the server at start-up
# The pool's own warnings (each failed reconnect, several lines, unformatted)
# would flood the log during an outage; ours say it once per failed call.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
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


BlockingConn = psycopg.Connection[TupleRow]


class Conn(Connection, Protocol):
    """What the PostgreSQL parts use of a connection: a psycopg one, or on the
    event loop an ``AsyncConn`` driving psycopg's async one."""

    def transaction(self) -> AbstractContextManager[object]: ...


class AsyncCursor:
    """psycopg's async cursor behind the blocking cursor API, for bridged code."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.AsyncCursor[TupleRow]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return bridge.await_only(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        return bridge.await_only(self._cursor.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        bridge.await_only(self._cursor.executemany(sql, rows))


class AsyncConn:
    """psycopg's async connection behind the blocking connection API, for bridged code."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None, /) -> AsyncCursor:
        return AsyncCursor(bridge.await_only(self._conn.execute(sql, params)))

    def cursor(self) -> AsyncCursor:
        return AsyncCursor(self._conn.cursor())

    def transaction(self) -> AbstractContextManager[object]:
        return bridge.entered(self._conn.transaction())


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
        self.aio_pool = AsyncConnectionPool(dsn, kwargs=kwargs, min_size=1, max_size=pool_size,
                                            open=False, name="postwarden-aio")
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
    def _connection(self) -> Iterator[Conn]:
        """A pool's connection: the async pool's when bridged (on the loop), else blocking."""
        if not bridge.bridged():
            with self.pool.connection(timeout=self.timeout) as conn:
                yield conn
            return
        if self.aio_pool.closed:  # opened on the serving loop: an asyncio pool lives on one
            bridge.await_only(self.aio_pool.open())  # fills in the background; safe twice
        with bridge.entered(self.aio_pool.connection(timeout=self.timeout)) as aconn:
            yield AsyncConn(aconn)

    @contextmanager
    def conn(self) -> Iterator[Conn]:
        """A connection for reads (autocommit: each statement sees the latest commits)."""
        with self._unavailable(), self._connection() as conn:
            yield conn

    read = conn

    @contextmanager
    def snapshot(self) -> Iterator[Conn]:
        """A connection whose reads all see one snapshot: a REPEATABLE READ transaction
        (under the default READ COMMITTED each statement would take its own)."""
        with self._unavailable(), self._connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one round trip
            try:
                yield conn
            finally:  # nothing was written: COMMIT and ROLLBACK end it alike
                conn.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        """One transaction: committed at the end, rolled back on any exception."""
        with self._unavailable(), self._connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def blocking_tx(self) -> Iterator[BlockingConn]:
        """A transaction on the blocking pool, with all of psycopg (COPY, several
        statements in one string): for start-up and the CLI, never on the loop."""
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
            if bridge.bridged():
                bridge.await_only(self.aio_pool.check())
            else:
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
        with self.blocking_tx() as db:
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

    async def aclose(self) -> None:
        """Close the async pool, on the loop it was opened on (then ``close``)."""
        if not self.aio_pool.closed:
            await self.aio_pool.close()

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
