"""What the PostgreSQL backend adds to the conformance suite: several nodes on one database.

Each "node" is a ``PgStore`` of its own (its own pool) on one test database,
as separate postwarden processes would be.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcluster import PgCluster
from postwarden.config import ConfigError, S3Config, load
from postwarden.storage.factory import open_store
from postwarden.storage.interfaces import (
    Acceptance,
    AttemptRecord,
    DatabaseUnusable,
    NewRecipient,
    NotFound,
)
from postwarden.storage.mailbox import INBOX
from postwarden.storage.postgresql import PgStore
from postwarden.storage.postgresql.db import Conn
from storage.conftest import ALICE, PG_POOL_SIZE

MESSAGE = b"Subject: hi\r\n\r\nthe same bytes\r\n"
WAIT = 10.0


@pytest.fixture
def dsn(pg_cluster: PgCluster) -> str:
    return pg_cluster.schema()


@contextmanager
def two_nodes(dsn: str, s3: S3Config | None = None) -> Iterator[tuple[PgStore, PgStore]]:
    """Two nodes on one database, with ALICE's account."""
    one = PgStore(dsn, pool_size=PG_POOL_SIZE, s3=s3)
    two = PgStore(dsn, pool_size=PG_POOL_SIZE, s3=s3)
    one.directory.add_domain("example.test")
    one.directory.add_account(ALICE, "hash")
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def nodes(dsn: str) -> Iterator[tuple[PgStore, PgStore]]:
    with two_nodes(dsn) as pair:
        yield pair


def accept(store: PgStore, name: str, local: tuple[str, ...] = (),
           remote: tuple[str, ...] = (), data: bytes = MESSAGE) -> None:
    writer = store.blobs.new_blob(name)
    writer.write(data)
    store.delivery.commit_acceptances([Acceptance(
        name, writer.commit(), "s@remote.test", local,
        tuple(NewRecipient(r) for r in remote), received_at=100.0)])


def count(store: PgStore, sql: str) -> int:
    with store.db.conn() as db:
        row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


class TestBlobsInTheDatabase:
    def test_bytes_exist_only_with_a_committed_row(self, nodes: tuple[PgStore, PgStore]) -> None:
        """A written but uncommitted or aborted message leaves nothing in the database."""
        one, _ = nodes
        writer = one.blobs.new_blob("pending")
        writer.write(b"Subject: x\r\n\r\nnever committed\r\n")
        writer.commit()
        with pytest.raises(NotFound):
            one.blobs.read_blob("pending")
        writer.abort()
        assert count(one, "SELECT count(*) FROM blob_contents") == 0

    def test_collected_bytes_go_with_their_last_name(self, nodes: tuple[PgStore, PgStore]) -> None:
        """Released blobs are collected after the grace time; shared bytes stay."""
        one, _ = nodes
        accept(one, "queued", (), ("x@remote.test",))
        accept(one, "local", (ALICE,))
        assert one.queue.remove_queued("queued")
        assert one.blobs.collect(older_than=0.0) == 0  # released just now: too young
        assert one.blobs.collect(older_than=float("inf")) == 1
        assert one.blobs.read_blob("local") == MESSAGE  # same digest, still referred to
        assert count(one, "SELECT count(*) FROM blob_contents") == 1


class TestSeveralNodes:
    def test_concurrent_claims_never_take_a_message_twice(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """Two nodes claiming at once (SKIP LOCKED) split the queue between them."""
        one, two = nodes
        for i in range(30):
            accept(one, f"q{i}", (), (f"r{i}@remote.test",))
        got: dict[str, list[str]] = {"one": [], "two": []}

        def claim(node: PgStore, name: str) -> None:
            for _ in range(40):  # bounded: more rounds than messages
                batch = node.queue.claim_due(name, 1000.0, 1, 2000.0)
                got[name] += [m.queue_id for m in batch]

        workers = [threading.Thread(target=claim, args=(one, "one")),
                   threading.Thread(target=claim, args=(two, "two"))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT * 6)
        assert not set(got["one"]) & set(got["two"])
        assert sorted(got["one"] + got["two"]) == sorted(f"q{i}" for i in range(30))
        leased = two.queue.get_queued("q0")
        assert leased is not None
        (recipient,) = leased.recipients
        owner = "one" if "q0" in got["one"] else "two"
        other = "two" if owner == "one" else "one"
        result = AttemptRecord("q0", (recipient.id,), lease_token=leased.lease_token)
        assert two.queue.record_attempts([(other, result)]) == [False]
        assert one.queue.record_attempts([(owner, result)]) == [True]

    def test_login_records_are_expired_by_one_node_at_a_time(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """While one node holds the periodic job's lock, another's round is skipped."""
        one, two = nodes
        one.directory.record_login("192.0.2.1", 100.0)
        with one.db.exclusive("login-expiry") as held:
            assert held is not None
            assert two.directory.expire_logins(before=200.0) == 0
            assert two.directory.last_login("192.0.2.1") == 100.0
            with two.db.exclusive("another-job") as other:
                assert other is not None  # each kind of work has its own lock
        assert two.directory.expire_logins(before=200.0) == 1
        assert one.directory.last_login("192.0.2.1") is None

    def test_concurrent_appends_get_unique_increasing_uids(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """Deliveries to one INBOX from two nodes at once: UIDs 1..n, none twice."""
        one, two = nodes

        def deliver(node: PgStore, prefix: str) -> None:
            for i in range(15):
                accept(node, f"{prefix}{i}", (ALICE,))

        workers = [threading.Thread(target=deliver, args=(one, "a")),
                   threading.Thread(target=deliver, args=(two, "b"))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT * 6)
        box = one.mailboxes.get_mailbox(ALICE, INBOX)
        assert box is not None
        assert list(two.mailboxes.uids(box.id)) == list(range(1, 31))
        status = two.mailboxes.status(box.id)
        assert (status.messages, status.uidnext) == (30, 31)

    def test_a_login_on_one_node_is_seen_on_the_other(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """POP/IMAP-before-SMTP records are shared through the database."""
        one, two = nodes
        one.directory.record_login("127.0.0.9", 500.0)
        assert two.directory.last_login("127.0.0.9") == 500.0

    def test_a_snapshot_does_not_see_what_another_node_commits_meanwhile(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """``snapshot()`` (``changes_since``'s three reads) is one view, as on SQLite."""
        one, two = nodes
        accounts = "SELECT count(*) FROM accounts"
        with one.db.snapshot() as db:
            before = db.execute(accounts).fetchone()
            two.directory.add_account("bob@example.test", "hash")
            assert db.execute(accounts).fetchone() == before
        assert count(one, accounts) == 2

    async def test_a_change_on_one_node_wakes_a_watcher_on_the_other(
        self, nodes: tuple[PgStore, PgStore]
    ) -> None:
        """NOTIFY after commit, heard on the other node's LISTEN connection."""
        one, two = nodes
        box = two.mailboxes.get_mailbox(ALICE, INBOX)
        assert box is not None
        two.changes.listen()
        await asyncio.wait_for(two.changes.listening(), WAIT)
        with two.changes.watch(box.id) as watch:
            await asyncio.to_thread(accept, one, "m1", (ALICE,))
            modseq = await asyncio.wait_for(watch.wait(), WAIT)
        assert modseq == one.mailboxes.status(box.id).highestmodseq


    def test_indexers_claim_blobs_in_id_order(
        self, nodes: tuple[PgStore, PgStore], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two indexers (a search's, the background one, another node's) claiming
        overlapping blobs in different orders deadlocked (PostgreSQL aborts one:
        a search answered NO). Whatever order they are asked in, blobs are
        claimed in id order."""
        one, _ = nodes
        for i in range(5):
            accept(one, f"m{i}", (ALICE,))
        box = one.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        waiting = one.indexer.waiting(box.id)
        claimed: list[int] = []
        store = one.indexer._store

        def recording(db: Conn, blob_id: int, *rest: Any) -> None:
            claimed.append(blob_id)
            store(db, blob_id, *rest)

        monkeypatch.setattr(one.indexer, "_store", recording)
        monkeypatch.setattr(one.indexer, "waiting", lambda _: sorted(waiting, reverse=True))
        assert one.indexer.index_mailbox(box.id) == 5
        assert claimed == sorted(row[0] for row in waiting)


class TestOpening:
    def test_the_config_picks_postgresql_and_reads_the_password_file(
        self, tmp_path: Path, pg_cluster: PgCluster, dsn: str
    ) -> None:
        """[storage] backend, dsn and password_file reach the store through the factory."""
        (tmp_path / "pgpass").write_text("not-checked-by-trust\n")
        config = tmp_path / "postwarden.toml"
        config.write_text(f'hostname = "mx.test"\n[storage]\nbackend = "postgresql"\n'
                          f'dsn = "{dsn}"\npassword_file = "pgpass"\n')
        cfg = load(config)
        assert cfg.storage.blobs == "database"
        store = open_store(cfg)
        try:
            assert isinstance(store, PgStore)
            assert store.schema_version() >= 1
        finally:
            store.close()

    @pytest.mark.parametrize(("lines", "error"), [
        ('backend = "postgresql"', "storage.dsn"),
        ('backend = "postgresql"\ndsn = "postgresql://h/db"\nblobs = "files"', "storage.blobs"),
        ('backend = "mysql"', "storage.backend"),
        ('dsn = "postgresql://h/db"', "storage: dsn"),
    ])
    def test_bad_storage_settings_name_their_key(
        self, tmp_path: Path, lines: str, error: str
    ) -> None:
        config = tmp_path / "postwarden.toml"
        config.write_text(f'hostname = "mx.test"\n[storage]\n{lines}\n')
        with pytest.raises(ConfigError, match=error):
            load(config)

    def test_an_unreachable_server_is_one_clear_error(self) -> None:
        """No server on the port: DatabaseUnusable naming where, no traceback, no hang."""
        with pytest.raises(DatabaseUnusable, match=r"127\.0\.0\.1:1/nowhere"):
            PgStore("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2", pool_size=2)

    def test_somebody_elses_database_is_refused(self, pg_cluster: PgCluster) -> None:
        """Tables but no schema_version: not ours, nothing is created in it."""
        dsn = pg_cluster.database()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE invoices (id int)")
        with pytest.raises(DatabaseUnusable, match="not a postwarden database"):
            PgStore(dsn, pool_size=2)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)
