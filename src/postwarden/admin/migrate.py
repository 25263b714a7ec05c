"""``postwarden migrate --to DSN``: a SQLite data directory copied into PostgreSQL.

The two backends keep the same tables (store v2), so the copy is a table
by table ``COPY`` of the columns both have, in one PostgreSQL transaction:
accounts with their password hashes, domains, aliases, POP/IMAP-before-SMTP
records and failed-login counts, mailboxes with UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, messages with
their UIDs, flags, keywords, internal dates and per-copy header prefixes,
expunge records (QRESYNC), subscriptions, quota, the queue with its
recipients, attempts and due times, and the counters (the next UIDVALIDITY).
Clients see no change: same UIDs, same UIDVALIDITY, same POP3 UIDLs.

Message bytes are read from their files, hashed, and stored content-addressed
in the database or in S3 (``--blobs s3`` with the config's ``[s3]`` table);
only blobs a mailbox or the queue refers to go (the rest is garbage the
collector would take). The body index is not copied: PostgreSQL builds its
own in the background. Afterwards every table's rows are counted on both
sides and every blob is read back from the target and hashed.

It refuses a target that already holds postwarden data and a data
directory a server is running on (its change socket answers). The
password is never echoed: ``shown_dsn`` is what any message prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from postwarden.admin import AdminError
from postwarden.config import Config, check_s3
from postwarden.storage import factory
from postwarden.storage.interfaces import NotFound
from postwarden.storage.postgresql import PgStore
from postwarden.storage.postgresql.db import BlockingConn, read_password
from postwarden.storage.sqlite import SqliteStore

# Tables in foreign-key order; a test checks every other SQLite table is named
# in NOT_COPIED: maildrop_locks (a POP3 session's, gone with the process),
# parsed and body_index* (rebuilt by the target), counters (merged on their
# own), and the schema's and SQLite's bookkeeping.
NOT_COPIED = ("maildrop_locks", "parsed", "body_index", "counters", "schema_version",
              "sqlite_sequence")  # names and name prefixes
TABLES = ("domains", "accounts", "alias_targets", "login_records", "auth_failures",
          "mailboxes", "blobs",
          "messages", "expunged", "keywords", "subscriptions", "quota", "queue_messages",
          "queue_recipients")
IDENTITIES = (("mailboxes", "id"), ("blobs", "id"), ("queue_recipients", "id"))
# Only blobs something refers to: a released one is the collector's, not the target's.
REFERENCED_BLOBS = ("id IN (SELECT blob_id FROM messages)"
                    " OR name IN (SELECT blob FROM queue_messages)")
VERIFY_THREADS = 4  # blobs read back at once (each a database or S3 round trip)
BLOB_BATCH = 200  # blobs read, hashed and written per round (bounds the memory held)
# Rows in these mean the target is somebody's store already.
OCCUPIED = ("domains", "accounts", "mailboxes", "blobs", "queue_messages")


@dataclass(frozen=True, slots=True)
class TableReport:
    table: str
    source: int
    target: int

    def line(self) -> str:
        verdict = "ok" if self.source == self.target else "MISMATCH"
        return f"{self.table}: {self.source} copied, {self.target} in the target, {verdict}"


@dataclass(frozen=True, slots=True)
class MigrateReport:
    tables: tuple[TableReport, ...]
    blobs_verified: int
    octets: int

    @property
    def ok(self) -> bool:
        return all(t.source == t.target for t in self.tables)


def shown_dsn(dsn: str) -> str:
    """``dsn`` without its password, in the form it was given, to print.

    libpq's own parser (``conninfo_to_dict``) says whether there is a
    password; a URL loses its ``user:password@`` part's password and any
    ``password=`` query parameter. Should the result still contain the
    password or no longer parse (an odd URL), the key=value form libpq
    rebuilds without it is shown instead.
    """
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given dsn (it does not parse)"
    password = info.pop("password", None)
    if password is None:
        return dsn
    rest: dict[str, Any] = {key: value for key, value in info.items() if value is not None}
    if "://" in dsn:
        with contextlib.suppress(ValueError, psycopg.ProgrammingError):
            url = urllib.parse.urlsplit(dsn)
            user, at, hosts = url.netloc.rpartition("@")
            query = "&".join(part for part in url.query.split("&") if part and
                             urllib.parse.unquote(part.partition("=")[0]) != "password")
            shown = (f"{url.scheme}://{user.partition(':')[0]}{at}{hosts}{url.path}"
                     + (f"?{query}" if query else ""))
            if (str(password) not in shown
                    and psycopg.conninfo.conninfo_to_dict(shown) == rest):
                return shown
    return psycopg.conninfo.make_conninfo("", **rest)


def migrate(cfg: Config, dsn: str, blobs: str = "database",
            password_file: Path | None = None) -> MigrateReport:
    """Copy the SQLite store of ``cfg`` into the empty PostgreSQL database at ``dsn``
    (the password: ``password_file``'s first line; without one, libpq's own ways
    apply: the DSN, ``PGPASSWORD``, ``~/.pgpass``)."""
    if cfg.storage.backend != "sqlite":
        raise AdminError("migrate copies a SQLite data directory; [storage] backend is"
                         f" {cfg.storage.backend!r}")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise AdminError(f"--to {dsn.partition(':')[0]}:...: expected"
                         " postgresql://user@host:port/database")
    if not cfg.database.exists():
        raise AdminError(f"data_dir {cfg.data_dir} has no postwarden database to migrate")
    if factory.in_use(cfg):
        raise AdminError(f"a server is running on data_dir {cfg.data_dir}: stop it first")
    if blobs == "s3":
        check_s3(cfg.s3)
    password = read_password(password_file, "--password-file")
    target = PgStore(dsn, password, pool_size=VERIFY_THREADS + 1,
                     s3=cfg.s3 if blobs == "s3" else None)
    try:
        _refuse_occupied(target)
        source = SqliteStore(cfg.data_dir, cfg.limits.mime)
        try:
            counts = _copy(source, target)
        finally:
            source.close()
        return _verify(target, counts)
    finally:
        target.close()


def _refuse_occupied(target: PgStore) -> None:
    with target.db.conn() as db:
        for table in OCCUPIED:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            if row and row[0]:
                raise AdminError(f"the database at {target.db.where} already holds postwarden"
                                 f" data ({row[0]} rows in {table}): migrate into an empty one")


def _copy(source: SqliteStore, target: PgStore) -> dict[str, int]:
    """Every table in one PostgreSQL transaction; the number of rows copied per table."""
    counts: dict[str, int] = {}
    # One consistent read of the source; COPY needs the blocking connection.
    with source.db.snapshot() as src, target.db.blocking_tx() as db:
        for table in TABLES:
            if table == "blobs":
                counts[table] = _copy_blobs(source, target, db)
                continue
            columns = _shared_columns(src, db, table)
            rows = src.execute(f"SELECT {', '.join(columns)} FROM {table}")
            counts[table] = _copy_rows(db, table, columns, rows)
        db.cursor().executemany(
            "INSERT INTO counters VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            src.execute("SELECT name, value FROM counters").fetchall())
        for table, column in IDENTITIES:
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                       f" coalesce(max({column}), 0) + 1, false) FROM {table}")
    return counts


def _shared_columns(src: sqlite3.Connection, db: BlockingConn, table: str) -> list[str]:
    """The columns both sides have, in the target's order."""
    mine = {r[1] for r in src.execute(f"PRAGMA table_info({table})")}
    theirs = [r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,))]
    return [c for c in theirs if c in mine]


def _copy_rows(db: BlockingConn, table: str, columns: Sequence[str],
               rows: Iterator[tuple[object, ...]]) -> int:
    n = 0
    with db.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def _copy_blobs(source: SqliteStore, target: PgStore, db: BlockingConn) -> int:
    """Referenced blobs: bytes read and hashed, stored by digest, rows as they were."""
    src = source.db.conn
    columns = [c for c in _shared_columns(src, db, "blobs") if c not in ("digest", "indexed")]
    rows = src.execute(f"SELECT {', '.join(columns)} FROM blobs WHERE {REFERENCED_BLOBS}"
                       " ORDER BY id").fetchall()
    name_at = columns.index("name")
    seen: set[bytes] = set()
    for start in range(0, len(rows), BLOB_BATCH):
        batch = rows[start:start + BLOB_BATCH]
        contents: dict[bytes, bytes] = {}
        digests = []
        for row in batch:
            name = str(row[name_at])
            try:
                data = source.blobs.read_blob(name)
            except NotFound:
                raise AdminError(f"message file {name} is missing from the data directory"
                                 " (see `postwarden blobs check`): nothing was copied") from None
            digest = hashlib.sha256(data).digest()
            digests.append(digest)
            if digest not in seen:
                contents[digest] = data
                seen.add(digest)
        if target.objects is not None:
            target.objects.put_many(contents.items())
        _copy_rows(db, "blob_contents", ("digest", "data"),
                   iter([(d, b"" if target.objects else data) for d, data in contents.items()]))
        _copy_rows(db, "blobs", [*columns, "digest", "indexed"],
                   iter([(*row, digest, 0) for row, digest in zip(batch, digests, strict=True)]))
    return len(rows)


def _verify(target: PgStore, counts: dict[str, int]) -> MigrateReport:
    """Count every table in the target; read every blob back and check its hash."""
    tables = []
    with target.db.conn() as db:
        for table in TABLES:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            tables.append(TableReport(table, counts[table], int(row[0]) if row else -1))
        blob_rows = db.execute("SELECT name, digest FROM blobs ORDER BY id").fetchall()

    def check(row: tuple[str, bytes]) -> int:
        data = target.blobs.read_blob(row[0])
        if hashlib.sha256(data).digest() != bytes(row[1]):
            raise AdminError(f"blob {row[0]} reads back with another SHA-256 from the target")
        return len(data)

    with ThreadPoolExecutor(VERIFY_THREADS) as pool:  # S3 reads are round trips: overlap them
        octets = sum(pool.map(check, blob_rows))
    return MigrateReport(tuple(tables), len(blob_rows), octets)
