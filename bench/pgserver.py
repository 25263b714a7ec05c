"""A throwaway PostgreSQL for the benchmarks (``--backend postgresql``), and its counters.

The cluster is the test suite's (``tests/pgcluster.py``: Debian's binaries,
``initdb`` in a temp dir, a loopback port, the ``postgres`` user when run as
root), started here with durability back on (``fsync``, ``full_page_writes``,
``synchronous_commit``), since SQLite's side fsyncs every commit too, and
with ``pg_stat_statements`` loaded, which counts every statement a client
sends as it finishes (``BEGIN`` and ``COMMIT`` included): statements are the
round trips, ``COMMIT``s the write transactions.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg

from pgcluster import PgCluster, find_bindir

# pg_stat_statements.track stays "top": what clients send, not what triggers run inside.
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
           "shared_preload_libraries": "pg_stat_statements", "shared_buffers": "256MB"}


def why_unavailable() -> str | None:
    """None when a PostgreSQL server can be started here, else why not."""
    if find_bindir() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    return None


def start(stack: contextlib.ExitStack) -> PgCluster:
    """A durable cluster, stopped (and its directory removed) by ``stack``."""
    bindir = find_bindir()
    assert bindir is not None, why_unavailable()
    cluster = PgCluster(bindir, DURABLE)
    stack.callback(cluster.stop)
    return cluster.start()


def database(cluster: PgCluster) -> str:
    """A new database for one server, with the statement counter; its DSN."""
    dsn = cluster.database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return dsn


def reset_counts(dsn: str) -> None:
    """Start counting statements from zero (for every database of the cluster)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


@dataclass(frozen=True, slots=True)
class Counts:
    """What one server sent its database since ``reset_counts``."""

    statements: int  # every statement: the round trips
    commits: int  # COMMITs: the write transactions (postwarden's reads are autocommitted)
    busiest: tuple[tuple[int, str], ...]  # (calls, query) of the most called statements


def counts(dsn: str, top: int = 6) -> Counts:
    """Statements sent to ``dsn``'s database since ``reset_counts``, this reader's left out.

    postwarden's connections are in autocommit mode: a read is one statement,
    and every write transaction is ``BEGIN`` ... ``COMMIT`` (``storage/postgresql/db.py``).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.calls, s.query FROM pg_stat_statements s JOIN pg_database d"
            " ON d.oid = s.dbid WHERE d.datname = current_database()"
            " AND s.query NOT LIKE '%pg_stat_statements%' ORDER BY s.calls DESC").fetchall()
    return Counts(sum(calls for calls, _ in rows),
                  sum(calls for calls, query in rows if query.strip().lower() == "commit"),
                  tuple((calls, " ".join(query.split())) for calls, query in rows[:top]))


def count(dsn: str, sql: str) -> int:
    """One number from the server's database (``SELECT count(*) ...``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0
