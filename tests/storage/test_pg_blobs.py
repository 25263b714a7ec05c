"""Blobs on PostgreSQL: in S3 (a local moto server) and the collector on several nodes.

Each "node" is a ``PgStore`` of its own on one test database, as separate
postwarden processes would be. The collector's clock is injected
(``collect_blobs(now, grace)``): no test waits for a grace time to pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgcluster import PgCluster
from postwarden.config import ConfigError, from_dict
from postwarden.storage.factory import async_boundary
from postwarden.storage.interfaces import DatabaseUnusable, StoreError, StoreUnavailable
from postwarden.storage.postgresql import PgStore
from postwarden.storage.postgresql.db import PERIODIC_LOCKS
from s3server import S3Server, keys, running_s3
from storage.conftest import ALICE, PG_POOL_SIZE, s3_settings
from storage.test_pg_store import MESSAGE, accept, count, two_nodes

DAY = 86400.0
WAIT = 10.0


@pytest.fixture(params=["database", "s3"])
def place(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nodes(pg_cluster: PgCluster, place: str, request: pytest.FixtureRequest
          ) -> Iterator[tuple[PgStore, PgStore]]:
    s3 = s3_settings(request.getfixturevalue("s3_server")) if place == "s3" else None
    with two_nodes(pg_cluster.schema(), s3) as pair:
        yield pair


def objects(store: PgStore) -> list[str]:
    """The keys in the node's bucket."""
    assert store.objects is not None
    return keys(store.objects.settings.endpoint, store.objects.settings.bucket)


def stored(store: PgStore) -> tuple[int, int, int]:
    """Rows in ``blobs``, rows in ``blob_contents``, objects in S3 (0 without S3)."""
    return (count(store, "SELECT count(*) FROM blobs"),
            count(store, "SELECT count(*) FROM blob_contents"),
            len(objects(store)) if store.objects is not None else 0)


class TestContentAddressed:
    def test_the_same_bytes_are_stored_once_under_many_names(
        self, nodes: tuple[PgStore, PgStore], place: str
    ) -> None:
        """Two acceptances of one message keep one copy of its bytes (in a row, or in one
        S3 object and none in the row), read by range from either node."""
        one, two = nodes
        accept(one, "first", (ALICE,))
        accept(two, "second", (), ("x@remote.test",))
        accept(two, "other", (ALICE,), data=b"Subject: other\r\n\r\nbytes\r\n")
        assert count(one, "SELECT count(*) FROM blob_contents") == 2
        in_rows = count(one, "SELECT count(*) FROM blob_contents WHERE octet_length(data) > 0")
        if place == "s3":
            assert (len(objects(one)), in_rows) == (2, 0)
        else:
            assert in_rows == 2
        assert one.blobs.read_blob("second", 4, 2) == b"ec"
        assert two.blobs.read_blob("first") == MESSAGE
        assert two.blobs.read_blob("first", 2) == MESSAGE[2:]
        assert two.blobs.read_blob("first", len(MESSAGE) + 5, 10) == b""


class TestBlobsInS3:
    def test_s3_down_at_commit_commits_nothing(self, pg_cluster: PgCluster) -> None:
        """A PUT that fails fails the commit: no blob row, no mailbox row, nothing in INBOX."""
        with running_s3() as server:
            store = PgStore(pg_cluster.schema(), pool_size=PG_POOL_SIZE,
                            s3=s3_settings(server))
            store.directory.add_domain("example.test")
            store.directory.add_account(ALICE, "hash")
            accept(store, "before", (ALICE,))
            server.stop()
            with pytest.raises(StoreError, match=r"s3 PUT at http://127\.0\.0\.1"):
                accept(store, "during", (ALICE,), data=b"Subject: new\r\n\r\nnot kept\r\n")
            assert count(store, "SELECT count(*) FROM blobs") == 1
            assert count(store, "SELECT count(*) FROM messages") == 1
            assert count(store, "SELECT count(*) FROM blob_contents") == 1
            store.close()


class TestCollector:
    @pytest.mark.parametrize("leaked", [False, True])
    def test_an_unreferenced_blob_goes_after_the_grace_and_not_before(
        self, nodes: tuple[PgStore, PgStore], leaked: bool
    ) -> None:
        """Released now, or made now and its count leaked (a release that never
        happened leaves it above zero for good): kept a day less a minute later,
        collected with its bytes a day and a second later."""
        one, _ = nodes
        accept(one, "gone", (), ("x@remote.test",))
        assert one.queue.remove_queued("gone")
        if leaked:
            with one.db.tx() as db:
                db.execute("UPDATE blobs SET refs = 2, released = NULL")
        now = time.time()
        assert one.collect_blobs(now + DAY - 60, DAY) == 0
        assert count(one, "SELECT count(*) FROM blobs") == 1
        assert one.collect_blobs(now + DAY + 1, DAY) == 1
        assert stored(one) == (0, 0, 0)

    def test_shared_bytes_stay_while_another_name_refers_to_them(
        self, nodes: tuple[PgStore, PgStore], place: str
    ) -> None:
        """The last name of a digest takes its bytes (and S3 object) with it; not before."""
        one, _ = nodes
        accept(one, "queued", (), ("x@remote.test",))
        accept(one, "local", (ALICE,))
        assert one.queue.remove_queued("queued")
        assert one.collect_blobs(time.time() + 2 * DAY, DAY) == 1
        assert one.blobs.read_blob("local") == MESSAGE
        assert count(one, "SELECT count(*) FROM blob_contents") == 1
        if place == "s3":
            assert len(objects(one)) == 1

    def test_two_nodes_collecting_at_once_sweep_once(
        self, nodes: tuple[PgStore, PgStore], pg_cluster: PgCluster
    ) -> None:
        """Node one holds the collector's lock mid-sweep: node two skips, one sweeps all."""
        one, two = nodes
        for i in range(3):
            accept(one, f"q{i}", (), ("x@remote.test",), data=MESSAGE + b"%d" % i)
            assert one.queue.remove_queued(f"q{i}")
        later = time.time() + 2 * DAY
        swept: list[int | None] = []
        with one.db.conn() as blocker, blocker.transaction():
            # A row lock stops node one's DELETE after it took the advisory lock.
            blocker.execute("SELECT 1 FROM blobs WHERE name = 'q0' FOR UPDATE")
            sweeper = threading.Thread(target=lambda: swept.append(one.collect_blobs(later, DAY)))
            sweeper.start()
            with psycopg.connect(one.dsn, autocommit=True) as watcher:
                for _ in range(int(WAIT / 0.02)):  # bounded: until node one holds the lock
                    held = watcher.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND classid = %s AND granted", (PERIODIC_LOCKS,)).fetchone()
                    if held and held[0]:
                        break
                    time.sleep(0.02)
                else:
                    pytest.fail("node one never took the collector's lock")
            assert two.collect_blobs(later, DAY) is None  # skipped: node one is sweeping
        sweeper.join(WAIT)
        assert swept == [3]
        assert count(two, "SELECT count(*) FROM blobs") == 0
        assert two.collect_blobs(later, DAY) == 0  # the lock is free again: nothing left


def rolled_back_upload(store: PgStore, name: str, data: bytes) -> None:
    """An acceptance whose PUT completed and whose transaction then rolled back (a node
    that died before its commit leaves the same): an object no row names."""
    writer = store.blobs.new_blob(name)
    writer.write(data)
    ref = writer.commit()
    with pytest.raises(RuntimeError), store.db.tx() as db:
        store.blobs.keep_bytes(db, [ref])
        raise RuntimeError("the commit never happens")


def waiting_on_a_lock(store: PgStore, query: str,
                      finished: Callable[[], bool] = lambda: False) -> None:
    """Bounded wait until a session running ``query`` waits for a row lock (or the
    thread that would run it has ``finished`` without waiting)."""
    with psycopg.connect(store.dsn, autocommit=True) as watcher:
        for _ in range(int(WAIT / 0.02)):
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND strpos(query, %s) > 0", (query,)).fetchone()
            if (row and row[0]) or finished():
                return
            time.sleep(0.02)  # polling the server's own view, bounded
    pytest.fail(f"no session waited on a lock in {query!r}")


class TestGarbage:
    """What the reference counts alone never collect: objects no row names, counts
    that leaked."""

    def test_an_object_no_row_names_goes_after_the_grace_and_not_before(
        self, pg_cluster: PgCluster, s3_server: S3Server
    ) -> None:
        """A rolled-back upload's object survives a sweep while young and goes once older
        than the grace; an object that is not ours (its name is no digest) stays, and so
        does the object of a committed message. Listing pages of 2 keys: every page is
        looked at."""
        with two_nodes(pg_cluster.schema(), s3_settings(s3_server)) as (one, _):
            assert one.objects is not None
            one.objects.list_page = 2
            for i in range(4):
                rolled_back_upload(one, f"lost{i}", MESSAGE + b"lost %d" % i)
            accept(one, "kept", (ALICE,))
            s3_server.client().put_object(Bucket=one.objects.settings.bucket,
                                          Key="not-a-digest", Body=b"someone else's")
            assert len(objects(one)) == 6
            assert count(one, "SELECT count(*) FROM blob_contents") == 1
            assert one.collect_blobs(time.time(), DAY) == 0  # written within the grace
            assert len(objects(one)) == 6
            assert one.collect_blobs(time.time() + DAY + 1, DAY) == 4
            assert objects(one) == sorted([one.objects.key(hashlib.sha256(MESSAGE).digest()),
                                           "not-a-digest"])
            assert one.blobs.read_blob("kept") == MESSAGE
            assert count(one, "SELECT count(*) FROM blob_contents") == 1  # no placeholder

    def test_a_referenced_blob_is_never_collected_whatever_its_count(
        self, nodes: tuple[PgStore, PgStore], place: str
    ) -> None:
        """Mailbox and queue references save their blobs with counts too high or too low."""
        one, _ = nodes
        accept(one, "stored", (ALICE,), data=MESSAGE + b"1")
        accept(one, "queued", (), ("x@remote.test",), data=MESSAGE + b"2")
        for refs in (5, 0):
            with one.db.tx() as db:
                db.execute("UPDATE blobs SET refs = %s, released = 1", (refs,))
            assert one.collect_blobs(time.time() + 10 * DAY, DAY) == 0
        assert one.blobs.read_blob("stored") == MESSAGE + b"1"
        assert one.blobs.read_blob("queued") == MESSAGE + b"2"
        if place == "s3":
            assert len(objects(one)) == 2

    def test_an_upload_being_committed_is_not_swept(
        self, pg_cluster: PgCluster, s3_server: S3Server
    ) -> None:
        """The race the grace alone does not cover: the collector (on node two, its
        clock two days on, so the new object looks old) lists an object whose row is
        not committed yet. It waits for that commit and keeps the object."""
        with two_nodes(pg_cluster.schema(), s3_settings(s3_server)) as (one, two):
            accepted: list[BaseException | None] = []
            swept: list[int | None] = []

            def acceptance() -> None:
                try:
                    accept(one, "racing", (ALICE,))
                    accepted.append(None)
                except BaseException as exc:  # reported by the assertion below
                    accepted.append(exc)

            with one.db.conn() as blocker, blocker.transaction():
                # Holding INBOX stops the acceptance after its PUT, before its commit.
                blocker.execute("SELECT 1 FROM mailboxes FOR UPDATE")
                racer = threading.Thread(target=acceptance)
                racer.start()
                waiting_on_a_lock(one, "mailboxes")
                assert len(objects(one)) == 1
                sweeper = threading.Thread(
                    target=lambda: swept.append(two.collect_blobs(time.time() + 2 * DAY, DAY)))
                sweeper.start()
                waiting_on_a_lock(two, "unnest", lambda: not sweeper.is_alive())
            racer.join(WAIT)
            sweeper.join(WAIT)
            assert accepted == [None]
            assert len(objects(one)) == 1
            assert one.blobs.read_blob("racing") == MESSAGE
            assert swept == [0]


    def test_s3_down_during_a_sweep_is_one_line_and_deletes_nothing(
        self, pg_cluster: PgCluster
    ) -> None:
        """The listing fails: ``StoreUnavailable`` (the round is one warning), and the
        transaction rolls back, so the next round finds the garbage again."""
        with running_s3() as server, two_nodes(pg_cluster.schema(),
                                               s3_settings(server)) as (one, _):
            accept(one, "gone", (), ("x@remote.test",))
            assert one.queue.remove_queued("gone")
            server.stop()
            with pytest.raises(StoreUnavailable, match=r"^s3 LIST at http://127\.0\.0\.1:"):
                one.collect_blobs(time.time() + 2 * DAY, DAY)
            assert count(one, "SELECT count(*) FROM blobs") == 1
            assert count(one, "SELECT count(*) FROM blob_contents") == 1


class TestS3Settings:
    @pytest.mark.parametrize(("s3", "expected"), [
        ({}, "s3.endpoint: S3 blobs need endpoint"),
        ({"endpoint": "http://127.0.0.1:9"}, "s3.bucket: S3 blobs need a bucket"),
        ({"endpoint": "http://h", "bucket": "b", "secret_key": "k", "secret_key_file": "f"},
         "s3: secret_key and secret_key_file: set one of them"),
        ({"endpoint": "http://h", "bucket": "b", "max_connections": 0},
         "s3.max_connections: must be at least 1"),
        ({"endpoint": "http://h", "bucket": "b", "colour": "red"}, "s3.colour"),
    ])
    def test_bad_s3_settings_name_their_key(self, s3: dict[str, object], expected: str) -> None:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            from_dict({"hostname": "h", "s3": s3, "storage": {
                "backend": "postgresql", "dsn": "postgresql://x", "blobs": "s3"}}, Path("x"))

    def test_s3_blobs_need_postgresql(self) -> None:
        with pytest.raises(ConfigError, match="'s3' is not available with sqlite"):
            from_dict({"hostname": "h", "storage": {"blobs": "s3"}}, Path("x"))

    def test_the_secret_key_comes_from_a_file_and_a_missing_bucket_is_one_line(
        self, pg_cluster: PgCluster, s3_server: S3Server, tmp_path: Path
    ) -> None:
        """The key file is read; a bucket that is not there stops the store at start-up."""
        (tmp_path / "key").write_text("postwarden-test-secret\n")
        cfg = from_dict({"hostname": "h", "s3": {
            "endpoint": s3_server.endpoint, "bucket": "no-such-bucket",
            "access_key": "postwarden-test", "secret_key_file": "key"}, "storage": {
            "backend": "postgresql", "dsn": "postgresql://x", "blobs": "s3"}},
            tmp_path / "postwarden.toml")
        assert cfg.s3.secret_key_file == tmp_path / "key"
        with pytest.raises(DatabaseUnusable, match=r"^s3 bucket no-such-bucket at http://"):
            PgStore(pg_cluster.schema(), pool_size=PG_POOL_SIZE, s3=cfg.s3)


class TestAsyncBoundary:
    async def test_reads_are_awaited_on_the_loop(self, nodes: tuple[PgStore, PgStore]) -> None:
        """A read on the boundary awaits PostgreSQL on the event loop: the async pool
        serves it, the blocking pool (the CLI's) is not asked, and the loop runs on
        while the read waits, here on a table lock another connection holds."""
        one, _ = nodes
        accept(one, "small", (ALICE,))
        blocking_before = one.db.pool.get_stats().get("requests_num", 0)
        aio = async_boundary(one)
        try:
            with psycopg.connect(one.dsn) as locker:
                locker.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
                read = asyncio.create_task(aio.read_blob("small", 0, 10))
                for _ in range(100):  # the loop goes round while the read waits
                    await asyncio.sleep(0)
                assert not read.done()
                locker.rollback()
            assert await read == MESSAGE[:10]
            assert one.db.aio_pool.get_stats().get("requests_num", 0) >= 1
            assert one.db.pool.get_stats().get("requests_num", 0) == blocking_before
        finally:
            await aio.aclose()
