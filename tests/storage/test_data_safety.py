"""Found by an adversarial review: nothing is deleted because the database does not know it.

And a database that is empty, corrupt, somebody else's or too new stops
everything with one line, instead of starting afresh over the message files.
"""

from __future__ import annotations

import poplib
import shutil
import sqlite3
from pathlib import Path

import pytest

from postwarden.policy.passwords import hash_password
from postwarden.storage.interfaces import Acceptance, DatabaseUnusable
from postwarden.storage.mailbox import Field, UidSet
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.schema import MIGRATIONS
from serverproc import ServerProcess

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
ALICE = "alice@example.test"


def accept(store: SqliteStore, name: str, account: str) -> None:
    writer = store.blobs.new_blob(name)
    writer.write(b"Subject: " + name.encode() + b"\r\n\r\nbody\r\n")
    ref = writer.commit()
    store.delivery.commit_acceptances([Acceptance(name, ref, "", (account,), ())])


class TestUnknownFiles:
    def test_restoring_an_older_database_deletes_no_newer_message_file(
        self, tmp_path: Path
    ) -> None:
        """Three messages acknowledged after a backup keep their files when it is restored."""
        store = SqliteStore(tmp_path)
        store.directory.add_domain("example.test")
        store.directory.add_account(ALICE, "hash")
        store.close()
        backup = tmp_path / "backup.sqlite3"
        shutil.copy(tmp_path / "postwarden.sqlite3", backup)
        store = SqliteStore(tmp_path)
        for name in ("NEW1", "NEW2", "NEW3"):
            accept(store, name, ALICE)
        store.close()
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"postwarden.sqlite3{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, tmp_path / "postwarden.sqlite3")
        restored = SqliteStore(tmp_path)
        restored.collect_blobs(now=9e9, grace_seconds=0)
        restored.upkeep(index_batch=10)
        assert all(restored.blobs.blob_path(n).exists() for n in ("NEW1", "NEW2", "NEW3"))
        assert [u.name for u in restored.blobs.unknown_files()] == ["NEW1", "NEW2", "NEW3"]
        restored.close()

    def test_unknown_files_can_be_reattached_or_removed_on_request(
        self, tmp_path: Path
    ) -> None:
        """`blobs attach` delivers them into a user's INBOX; `blobs remove` deletes the rest."""
        store = SqliteStore(tmp_path)
        store.directory.add_domain("example.test")
        store.directory.add_account(ALICE, "hash")
        for name in ("LOST1", "LOST2"):
            writer = store.blobs.new_blob(name)
            writer.write(b"Subject: lost\r\n\r\nx\r\n")
            writer.commit()
        assert store.mailboxes.attach_unknown(ALICE, ["LOST1"]) == 1
        box = store.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        (meta,) = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None and meta.blob.name == "LOST1"
        assert [u.name for u in store.blobs.unknown_files()] == ["LOST2"]
        assert store.blobs.remove_unknown(["LOST2", "LOST1"]) == 1  # a known file is kept
        assert store.blobs.unknown_files() == []
        assert store.blobs.blob_path("LOST1").exists()
        store.close()


class TestDatabaseGuard:
    @pytest.mark.parametrize(("content", "reason"), [
        (b"", "is empty"),
        (b"\x8f\x13 random bytes, not SQLite at all " * 200, "not a usable SQLite database"),
    ])
    def test_empty_or_corrupt_database_is_refused(
        self, tmp_path: Path, content: bytes, reason: str
    ) -> None:
        """Nothing starts on it, and the message files are untouched."""
        (tmp_path / "messages" / "AB").mkdir(parents=True)
        message = tmp_path / "messages" / "AB" / "ABFILE"
        message.write_bytes(b"Subject: keep me\r\n\r\n")
        (tmp_path / "postwarden.sqlite3").write_bytes(content)
        with pytest.raises(DatabaseUnusable, match=reason):
            SqliteStore(tmp_path)
        assert message.exists()
        assert (tmp_path / "postwarden.sqlite3").read_bytes() == content

    def test_somebody_elses_database_is_refused(self, tmp_path: Path) -> None:
        """A valid SQLite file without our schema is not taken over."""
        with sqlite3.connect(tmp_path / "postwarden.sqlite3") as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
        db.close()
        with pytest.raises(DatabaseUnusable, match="not a postwarden database"):
            SqliteStore(tmp_path)

    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database from a newer release is left alone."""
        SqliteStore(tmp_path).close()
        with sqlite3.connect(tmp_path / "postwarden.sqlite3") as db:
            db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
        db.close()
        with pytest.raises(DatabaseUnusable, match="newer"):
            SqliteStore(tmp_path)

    @pytest.mark.parametrize(("content", "reason"), [
        (b"", "is empty"), (b"garbage" * 1000, "not a usable SQLite database")])
    def test_serve_on_an_empty_or_corrupt_database_stops_with_one_line(
        self, tmp_path: Path, content: bytes, reason: str
    ) -> None:
        """`postwarden serve` prints one line and exits non-zero; no file is touched."""
        server = ServerProcess(tmp_path)
        server.store.close()
        for suffix in ("-wal", "-shm"):
            (server.root / "var" / f"postwarden.sqlite3{suffix}").unlink(missing_ok=True)
        (server.root / "var" / "messages" / "AB").mkdir(parents=True)
        kept = server.root / "var" / "messages" / "AB" / "ABKEPT"
        kept.write_bytes(b"Subject: acknowledged earlier\r\n\r\n")
        (server.root / "var" / "postwarden.sqlite3").write_bytes(content)
        result = server.cli("serve")
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert reason in result.stderr
        assert kept.exists()


class TestUpgradeFromV1:
    def test_v1_data_directory_upgrades_in_place(self, tmp_path: Path) -> None:
        """Same messages, same bytes, same POP3 UIDLs; queue and UID gap kept."""
        data = tmp_path / "data"
        shutil.copytree(FIXTURE, data)
        with sqlite3.connect(data / "postwarden.sqlite3") as db:
            v1 = {(account, uid): (f"{validity}.{uid}", blob) for account, uid, validity, blob
                  in db.execute("SELECT b.account, m.uid, b.uidvalidity, m.blob FROM"
                                " mailbox_messages m JOIN mailboxes b ON b.id = m.mailbox_id")}
        db.close()
        store = SqliteStore(data)
        assert store.schema_version() == len(MIGRATIONS)
        after = {}
        for account in ("alice@example.test", "bob@example.test"):
            box = store.mailboxes.get_mailbox(account, "INBOX")
            assert box is not None
            for meta in store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE):
                assert meta.blob is not None
                after[(account, meta.uid)] = (f"{box.uidvalidity}.{meta.uid}", meta.blob.name)
                data_bytes = store.blobs.read_blob(meta.blob.name)
                assert meta.blob.size == len(data_bytes)
        assert after == v1
        assert sorted(k[1] for k in after if k[0] == ALICE) == [2, 3]  # the gap stays
        assert store.queue.queued_ids() == ["AAAAAAAAAAAAAAA3"]
        assert store.mailboxes.quota(ALICE).messages == 2
        assert "INBOX" in store.mailboxes.subscriptions(ALICE)
        store.close()

    def test_pop3_uidls_are_unchanged_after_serve_upgrades_v1(self, tmp_path: Path) -> None:
        """End to end: `serve` on the v1 directory, poplib sees the same UIDLs and bytes."""
        server = ServerProcess(tmp_path)
        server.store.close()
        var = server.root / "var"
        for name in ("postwarden.sqlite3", "postwarden.sqlite3-wal", "postwarden.sqlite3-shm"):
            (var / name).unlink(missing_ok=True)
        shutil.rmtree(var / "messages", ignore_errors=True)
        shutil.copy(FIXTURE / "postwarden.sqlite3", var / "postwarden.sqlite3")
        shutil.copytree(FIXTURE / "messages", var / "messages")
        with sqlite3.connect(var / "postwarden.sqlite3") as db:  # still v1 here
            expected = [f"{validity}.{uid}".encode() for validity, uid in db.execute(
                "SELECT b.uidvalidity, m.uid FROM mailbox_messages m JOIN mailboxes b"
                " ON b.id = m.mailbox_id WHERE b.account = ? ORDER BY m.uid", (ALICE,))]
            db.execute("UPDATE accounts SET password_hash = ? WHERE address = ?",
                       (hash_password("secret words"), ALICE))
        db.close()
        server.start()  # serve upgrades the directory
        client = poplib.POP3(*server.addr("pop3"), timeout=30)
        client.user(ALICE)
        client.pass_("secret words")
        uidls = [line.split()[1] for line in client.uidl()[1]]
        assert uidls == expected
        assert b"Subject: shared" in b"\r\n".join(client.retr(1)[1])
        client.quit()
        server.stop()
