"""The throwaway PostgreSQL the backend tests run on."""

from __future__ import annotations

import psycopg

from pgcluster import PgCluster


class TestCluster:
    def test_each_database_is_fresh_and_apart(self, pg_cluster: PgCluster) -> None:
        """A table made in one test database is not in the next one."""
        first, second = pg_cluster.database(), pg_cluster.database()
        assert first != second
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)

    def test_it_listens_on_loopback_as_a_non_root_user(self, pg_cluster: PgCluster) -> None:
        """PostgreSQL refuses root: the server runs as another user, on 127.0.0.1 only."""
        with psycopg.connect(pg_cluster.dsn()) as conn:
            row = conn.execute(
                "SELECT current_setting('listen_addresses'), pg_backend_pid()").fetchone()
        assert row is not None and row[0] == "127.0.0.1"
        status = (pg_cluster.root / "data" / "postmaster.pid").stat()
        assert status.st_uid != 0
