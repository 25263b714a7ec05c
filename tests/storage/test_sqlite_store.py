"""Store conformance: directory, queue, delivery and reference counting, per backend.

The classes marked ``SQLITE_ONLY`` are about message files and SQLite's
migrations; the rest use only the store interfaces (plus ``schema_version``,
``blobs.collect`` and ``indexer``, which both backends have) and run against
every backend of ``storage.conftest``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from postwarden.storage.interfaces import (
    Acceptance,
    AlreadyExists,
    AttemptRecord,
    BlobRef,
    LoginFailures,
    NewRecipient,
    NotFound,
    RecipientState,
    SenderProof,
)
from postwarden.storage.mailbox import Field, MessageMeta, SearchBody, UidSet
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.schema import MIGRATIONS
from storage.conftest import ALICE, BOB, CAROL

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


def blob(store: SqliteStore, name: str, data: bytes = MESSAGE) -> BlobRef:
    writer = store.blobs.new_blob(name)
    writer.write(data)
    return writer.commit()


def has_file(store: SqliteStore, name: str) -> bool:
    return store.blobs.blob_path(name).exists()


def deliver(store: SqliteStore, name: str, local: tuple[str, ...] = (),
            remote: tuple[str, ...] = (), at: float = 1000.0) -> BlobRef:
    ref = blob(store, name)
    store.delivery.commit_acceptances([
        Acceptance(name, ref, "sender@remote.test", local,
                   tuple(NewRecipient(r) for r in remote), received_at=at)
    ])
    return ref


def messages(store: SqliteStore, account: str) -> list[MessageMeta]:
    return store.mailboxes.metadata(inbox_id(store, account), UidSet.all(), Field.SIZE)


def expunge(store: SqliteStore, account: str, uids: list[int]) -> int:
    found = store.mailboxes.expunge(inbox_id(store, account), UidSet.from_uids(uids),
                                    deleted_only=False)
    return len(found)


def collected(store: SqliteStore, name: str) -> bool:
    """Run the collector with no grace period; True if the message's bytes are gone then."""
    store.blobs.collect(older_than=float("inf"))
    try:
        store.blobs.read_blob(name)
    except NotFound:
        return True
    return False


# Message files and SQLite's own migrations: not a backend-neutral behaviour.
SQLITE_ONLY = pytest.mark.parametrize("open_store", ["sqlite"], indirect=True)


def inbox_id(store: SqliteStore, account: str) -> int:
    inbox = store.mailboxes.get_mailbox(account, "INBOX")
    assert inbox is not None
    return inbox.id


def recipient_ids(store: SqliteStore, queue_id: str) -> list[int]:
    queued = store.queue.get_queued(queue_id)
    assert queued is not None
    return [r.id for r in queued.recipients]


class TestMigrations:
    def test_opening_twice_keeps_schema_version_and_data(
        self, open_store: Callable[[Path], SqliteStore], tmp_path: Path
    ) -> None:
        """Migrations run once; a second open finds the schema current and the data intact."""
        first = open_store(tmp_path)
        version = first.schema_version()
        first.directory.add_domain("example.test")
        first.close()
        second = open_store(tmp_path)
        assert version >= 1
        assert second.schema_version() == version
        assert second.directory.list_domains() == ["example.test"]
        second.close()

    def test_a_version_1_data_directory_upgrades_in_place(self, tmp_path: Path) -> None:
        """A queue entry from before migration 2 survives it, its sender not vouched for."""
        with sqlite3.connect(tmp_path / "postwarden.sqlite3") as db:
            db.executescript(MIGRATIONS[0])
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (1)")
            db.execute("INSERT INTO queue_messages (queue_id, blob, size, sender, created)"
                       " VALUES ('old1', 'old1', 10, 'a@remote.test', 5.0)")
        db.close()
        store = SqliteStore(tmp_path)
        assert store.schema_version() == len(MIGRATIONS) >= 2
        old = store.queue.get_queued("old1")
        assert old is not None
        assert (old.sender, old.trusted_origin) == ("a@remote.test", False)
        ref = blob(store, "new1")
        store.delivery.commit_acceptances(
            [Acceptance("new1", ref, ALICE, (), (NewRecipient(BOB),), trusted_origin=True)]
        )
        new = store.queue.get_queued("new1")
        assert new is not None and new.trusted_origin is True
        assert old.sender_proof is SenderProof.UNCHECKED  # migration 5: not known before
        store.close()

    def test_sender_proof_is_kept_with_the_queue_entry(self, store: SqliteStore) -> None:
        """What vouched for a stranger's sender comes back with the entry (migration 5)."""
        for qid, proof in (("p1", SenderProof.SPF), ("p2", SenderProof.NONE)):
            store.delivery.commit_acceptances([Acceptance(
                qid, blob(store, qid), "x@remote.test", (), (NewRecipient(BOB),),
                sender_proof=proof)])
            got = store.queue.get_queued(qid)
            assert got is not None and got.sender_proof is proof

    def test_junk_delivery_goes_to_the_junk_mailbox_made_if_missing(
            self, store: SqliteStore) -> None:
        """A quarantined local copy lands in \\Junk, never INBOX; a deleted Junk is made again."""
        store.mailboxes.delete_mailbox(ALICE, "Junk")
        store.delivery.commit_acceptances([Acceptance(
            "j1", blob(store, "j1"), "x@remote.test", (ALICE,), (), junk=True)])
        junk = store.mailboxes.get_mailbox(ALICE, "Junk")
        inbox = store.mailboxes.get_mailbox(ALICE, "INBOX")
        assert junk is not None and inbox is not None and junk.special_use == "\\Junk"
        assert store.mailboxes.status(junk.id).messages == 1
        assert store.mailboxes.status(inbox.id).messages == 0

    def test_sqlite_database_uses_wal(self, tmp_path: Path) -> None:
        """SPEC §7: one SQLite database in WAL mode."""
        SqliteStore(tmp_path).close()
        with sqlite3.connect(tmp_path / "postwarden.sqlite3") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class TestDomains:
    def test_add_list_and_remove(self, store: SqliteStore) -> None:
        """Domains are listed sorted and are local until removed."""
        store.directory.add_domain("b.test")
        store.directory.add_domain("a.test")
        assert store.directory.list_domains() == ["a.test", "b.test", "example.test"]
        assert store.directory.is_local_domain("a.test")
        store.directory.remove_domain("a.test")
        assert not store.directory.is_local_domain("a.test")
        assert "a.test" not in store.directory.list_domains()

    def test_adding_twice_is_already_exists(self, store: SqliteStore) -> None:
        """A duplicate domain is refused with AlreadyExists."""
        with pytest.raises(AlreadyExists):
            store.directory.add_domain("example.test")

    def test_removing_unknown_is_not_found(self, store: SqliteStore) -> None:
        """Removing a domain that is not there is NotFound."""
        with pytest.raises(NotFound):
            store.directory.remove_domain("nowhere.test")

    def test_removing_a_domain_removes_its_aliases_only(self, store: SqliteStore) -> None:
        """Aliases in the removed domain go; aliases elsewhere stay."""
        store.directory.add_domain("gone.test")
        store.directory.add_alias("a@gone.test", [ALICE])
        store.directory.add_alias("sales@example.test", ["a@gone.test"])
        store.directory.remove_domain("gone.test")
        assert store.directory.alias_targets("a@gone.test") is None
        assert store.directory.alias_targets("sales@example.test") == ("a@gone.test",)


class TestAccounts:
    def test_add_get_list_remove(self, store: SqliteStore) -> None:
        """An account is found by its key until removed."""
        store.directory.add_account("dave@example.test", "h1")
        account = store.directory.get_account("dave@example.test")
        assert account is not None
        assert (account.address, account.password_hash) == ("dave@example.test", "h1")
        assert store.directory.list_accounts() == sorted([ALICE, BOB, CAROL, "dave@example.test"])
        store.directory.remove_account("dave@example.test")
        assert store.directory.get_account("dave@example.test") is None

    def test_duplicate_account_is_already_exists(self, store: SqliteStore) -> None:
        """Adding an existing account is refused and keeps the old password."""
        with pytest.raises(AlreadyExists):
            store.directory.add_account(ALICE, "other")
        account = store.directory.get_account(ALICE)
        assert account is not None
        assert account.password_hash == "hash"

    def test_set_password(self, store: SqliteStore) -> None:
        """The new hash replaces the old; unknown users are NotFound."""
        store.directory.set_password(ALICE, "new")
        account = store.directory.get_account(ALICE)
        assert account is not None
        assert account.password_hash == "new"
        with pytest.raises(NotFound):
            store.directory.set_password("nobody@example.test", "x")

    def test_removing_unknown_account_is_not_found(self, store: SqliteStore) -> None:
        """Removing an account that is not there is NotFound."""
        with pytest.raises(NotFound):
            store.directory.remove_account("nobody@example.test")

    def test_new_account_has_the_special_use_mailboxes(self, store: SqliteStore) -> None:
        """INBOX, Sent, Drafts, Trash, Junk and Archive exist from the start (SPEC §6)."""
        boxes = {m.name: m.special_use for m in store.mailboxes.list_mailboxes(ALICE)}
        assert boxes == {
            "INBOX": None,
            "Sent": "\\Sent",
            "Drafts": "\\Drafts",
            "Trash": "\\Trash",
            "Junk": "\\Junk",
            "Archive": "\\Archive",
        }
        inbox = store.mailboxes.get_mailbox(ALICE, "INBOX")
        assert inbox is not None
        assert store.mailboxes.status(inbox.id).uidnext == 1
        assert "INBOX" in store.mailboxes.subscriptions(ALICE)
        assert inbox.uidvalidity > 0

    def test_ensure_mailboxes_is_idempotent(self, store: SqliteStore) -> None:
        """Ensuring twice neither duplicates nor resets a mailbox."""
        deliver(store, "m1", (ALICE,))
        store.mailboxes.ensure_mailboxes(ALICE)
        assert len(store.mailboxes.list_mailboxes(ALICE)) == 6
        assert len(messages(store, ALICE)) == 1

    def test_removing_an_account_removes_its_mail_and_unshared_files(
        self, store: SqliteStore
    ) -> None:
        """The mailbox rows go; a file still in another user's INBOX stays."""
        deliver(store, "shared", (ALICE, BOB))
        deliver(store, "own", (ALICE,))
        store.directory.remove_account(ALICE)
        assert store.mailboxes.list_mailboxes(ALICE) == []
        assert collected(store, "own")
        assert store.blobs.read_blob("shared") == MESSAGE


class TestAliases:
    def test_add_lookup_list_remove(self, store: SqliteStore) -> None:
        """Targets keep their order, including external addresses."""
        store.directory.add_alias("team@example.test", [BOB, ALICE, "ext@remote.test"])
        assert store.directory.alias_targets("team@example.test") == (BOB, ALICE, "ext@remote.test")
        assert store.directory.list_aliases() == [
            ("team@example.test", (BOB, ALICE, "ext@remote.test"))
        ]
        store.directory.remove_alias("team@example.test")
        assert store.directory.alias_targets("team@example.test") is None
        assert store.directory.list_aliases() == []

    def test_duplicate_alias_is_already_exists(self, store: SqliteStore) -> None:
        """A second alias of the same name is refused; the first is unchanged."""
        store.directory.add_alias("team@example.test", [BOB])
        with pytest.raises(AlreadyExists):
            store.directory.add_alias("team@example.test", [ALICE])
        assert store.directory.alias_targets("team@example.test") == (BOB,)

    def test_removing_unknown_alias_is_not_found(self, store: SqliteStore) -> None:
        """Removing an alias that is not there is NotFound."""
        with pytest.raises(NotFound):
            store.directory.remove_alias("nothing@example.test")


class TestLoginRecords:
    def test_keeps_the_latest_time(self, store: SqliteStore) -> None:
        """An older login recorded late never moves the record back."""
        store.directory.record_login("192.0.2.1", 200.0)
        store.directory.record_login("192.0.2.1", 100.0)
        assert store.directory.last_login("192.0.2.1") == 200.0
        store.directory.record_login("192.0.2.1", 300.0)
        assert store.directory.last_login("192.0.2.1") == 300.0

    def test_unknown_address_has_no_login(self, store: SqliteStore) -> None:
        """No record is None, not zero."""
        assert store.directory.last_login("192.0.2.99") is None

    def test_expire_drops_records_older_than_the_cutoff(self, store: SqliteStore) -> None:
        """Records before the cutoff go and are counted; later ones stay."""
        store.directory.record_login("192.0.2.1", 100.0)
        store.directory.record_login("192.0.2.2", 200.0)
        store.directory.record_login("192.0.2.3", 300.0)
        assert store.directory.expire_logins(200.0) == 1
        assert store.directory.last_login("192.0.2.1") is None
        assert store.directory.last_login("192.0.2.2") == 200.0
        assert store.directory.last_login("192.0.2.3") == 300.0


GUESSER, OTHER = "192.0.2.1", "192.0.2.2"


class TestLoginFailures:
    def test_counts_per_address_and_per_account_inside_the_window(
        self, store: SqliteStore
    ) -> None:
        """By address over every account, by account over every address, after ``since``."""
        for ip, account, at in ((GUESSER, "a", 10.0), (GUESSER, "b", 20.0), (OTHER, "a", 30.0)):
            store.directory.record_login_failure(ip, account, at)
        assert store.directory.login_failures(GUESSER, "a", 0.0) == LoginFailures(2, 2)
        assert store.directory.login_failures(GUESSER, "a", 15.0) == LoginFailures(1, 1)
        assert store.directory.login_failures(GUESSER, "a", 30.0) == LoginFailures(0, 0)
        assert store.directory.login_failures("192.0.2.9", "c", 0.0) == LoginFailures(0, 0)

    def test_forgetting_a_pair_keeps_the_other_failures(self, store: SqliteStore) -> None:
        """A login as a from the guesser's address forgives neither b's nor a's elsewhere."""
        for ip, account, at in ((GUESSER, "a", 10.0), (GUESSER, "b", 20.0), (OTHER, "a", 30.0)):
            store.directory.record_login_failure(ip, account, at)
        store.directory.forget_login_failures(GUESSER, "a")
        assert store.directory.login_failures(GUESSER, "a", 0.0) == LoginFailures(1, 1)

    def test_expire_drops_failures_up_to_the_cutoff(self, store: SqliteStore) -> None:
        """Failures at or before the cutoff go and are counted; later ones stay."""
        for at in (10.0, 20.0, 30.0):
            store.directory.record_login_failure(GUESSER, "a", at)
        assert store.directory.expire_login_failures(20.0) == 2
        assert store.directory.login_failures(GUESSER, "a", 0.0) == LoginFailures(1, 1)


@SQLITE_ONLY
class TestBlobs:
    def test_blob_round_trips_and_reports_its_size(self, store: SqliteStore) -> None:
        """What is written is what is read back."""
        ref = blob(store, "abc123", b"x" * 5000)
        assert (ref.name, ref.size) == ("abc123", 5000)
        assert store.blobs.read_blob("abc123") == b"x" * 5000
        assert store.blobs.read_blob("abc123", 4990, 100) == b"x" * 10

    @pytest.mark.parametrize(
        "name", ["../x", "..", "a/b", "/etc/passwd", "", "a.b", "x\x00y", "ab cd"]
    )
    def test_path_like_names_are_refused(self, store: SqliteStore, name: str) -> None:
        """A name that could leave the message directory is NotFound, never a path."""
        with pytest.raises(NotFound):
            store.blobs.blob_path(name)
        with pytest.raises(NotFound):
            store.blobs.read_blob(name)
        with pytest.raises(NotFound):
            store.blobs.new_blob(name)

    def test_aborted_blob_leaves_no_file(self, store: SqliteStore) -> None:
        """An abandoned message leaves nothing behind."""
        writer = store.blobs.new_blob("aborted")
        writer.write(b"partial")
        writer.abort()
        assert not has_file(store, "aborted")

    def test_collector_keeps_referenced_and_recently_released_files(
        self, store: SqliteStore
    ) -> None:
        """Only files released before the cutoff go; files the database never saw stay."""
        deliver(store, "kept", (ALICE,))
        deliver(store, "queued", (), ("x@remote.test",))
        deliver(store, "gone", (BOB,))
        blob(store, "unknown")
        expunge(store, BOB, [1])
        assert store.blobs.collect(older_than=0.0) == 0  # released just now: too young
        assert store.blobs.collect(older_than=float("inf")) == 1
        assert [has_file(store, n) for n in ("gone", "unknown", "kept", "queued")] == [
            False, True, True, True
        ]
        assert [u.name for u in store.blobs.unknown_files()] == ["unknown"]


class TestCommitAcceptances:
    @SQLITE_ONLY
    def test_message_to_three_local_users_is_stored_once(self, store: SqliteStore) -> None:
        """One file on disk, one INBOX row per account, all naming that file."""
        ref = deliver(store, "q1", (ALICE, BOB, CAROL))
        assert [p.name for p in store.blobs.blob_dir.rglob("*") if p.is_file()] == ["q1"]
        for account in (ALICE, BOB, CAROL):
            found = messages(store, account)
            assert [(m.blob and m.blob.name, m.blob and m.blob.size, m.uid)
                    for m in found] == [("q1", ref.size, 1)]
            assert (found[0].flags, found[0].keywords) == (0, frozenset())
            assert found[0].internaldate == 1000.0

    def test_uids_increase_per_mailbox(self, store: SqliteStore) -> None:
        """Each INBOX numbers its own messages 1, 2, 3 and advances UIDNEXT."""
        deliver(store, "m1", (ALICE,))
        deliver(store, "m2", (ALICE, BOB))
        deliver(store, "m3", (ALICE,))
        assert [m.uid for m in messages(store, ALICE)] == [1, 2, 3]
        assert [m.uid for m in messages(store, BOB)] == [1]
        assert store.mailboxes.status(inbox_id(store, ALICE)).uidnext == 4

    def test_modseq_increases_with_each_message(self, store: SqliteStore) -> None:
        """CONDSTORE: a later message has a higher MODSEQ than an earlier one."""
        deliver(store, "m1", (ALICE,))
        deliver(store, "m2", (ALICE,))
        first, second = messages(store, ALICE)
        assert second.modseq > first.modseq
        assert store.mailboxes.status(inbox_id(store, ALICE)).highestmodseq >= second.modseq

    def test_remote_recipients_are_queued_with_their_parameters(
        self, store: SqliteStore
    ) -> None:
        """The queue entry keeps sender, DSN parameters and one pending row per recipient."""
        ref = blob(store, "q2")
        store.delivery.commit_acceptances([
            Acceptance(
                "q2", ref, "alice@example.test", (ALICE,),
                (NewRecipient("x@remote.test", "rfc822;x@remote.test", ("FAILURE", "DELAY")),
                 NewRecipient("y@remote.test")),
                envid="env-1", ret="HDRS", smtputf8=True, received_at=500.0,
            )
        ])
        queued = store.queue.get_queued("q2")
        assert queued is not None
        assert (queued.blob, queued.size, queued.sender) == ("q2", ref.size, ALICE)
        assert (queued.envid, queued.ret, queued.smtputf8) == ("env-1", "HDRS", True)
        assert (queued.delay_notified, queued.trusted_origin) == (False, False)
        assert [(r.address, r.orcpt, r.notify, r.state, r.attempts, r.next_attempt)
                for r in queued.recipients] == [
            ("x@remote.test", "rfc822;x@remote.test", ("FAILURE", "DELAY"),
             RecipientState.PENDING, 0, 500.0),
            ("y@remote.test", None, (), RecipientState.PENDING, 0, 500.0),
        ]
        assert store.queue.queued_ids() == ["q2"]
        assert len(messages(store, ALICE)) == 1

    def test_batch_is_all_or_nothing(self, store: SqliteStore) -> None:
        """A failing acceptance rolls back the whole batch."""
        good = blob(store, "good")
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
            store.delivery.commit_acceptances([
                Acceptance("good", good, "", (ALICE,), (NewRecipient("x@remote.test"),)),
                Acceptance("good", good, "", (), (NewRecipient("y@remote.test"),)),
            ])
        assert messages(store, ALICE) == []
        assert store.queue.queued_ids() == []

    def test_local_only_message_is_not_queued(self, store: SqliteStore) -> None:
        """Nothing to send onward means no queue entry."""
        deliver(store, "m1", (ALICE,))
        assert store.queue.get_queued("m1") is None
        assert store.queue.queued_ids() == []


class TestExpunge:
    def test_file_goes_only_with_the_last_mailbox_reference(self, store: SqliteStore) -> None:
        """Expunging one user's copy keeps the file for the other."""
        deliver(store, "m1", (ALICE, BOB))
        assert expunge(store, ALICE, [1]) == 1
        assert not collected(store, "m1")
        assert store.blobs.read_blob("m1") == MESSAGE
        assert expunge(store, BOB, [1]) == 1
        assert collected(store, "m1")

    def test_file_shared_with_the_queue_survives_expunge(self, store: SqliteStore) -> None:
        """A message both delivered locally and queued keeps its file until both are gone."""
        deliver(store, "m1", (ALICE,), ("x@remote.test",))
        expunge(store, ALICE, [1])
        assert not collected(store, "m1")
        assert store.queue.remove_queued("m1") is True
        assert collected(store, "m1")

    def test_queue_removal_keeps_a_file_still_in_a_mailbox(self, store: SqliteStore) -> None:
        """Dropping the queue entry first leaves the mailbox copy readable."""
        deliver(store, "m1", (ALICE,), ("x@remote.test",))
        store.queue.remove_queued("m1")
        assert not collected(store, "m1")
        assert store.blobs.read_blob("m1") == MESSAGE
        expunge(store, ALICE, [1])
        assert collected(store, "m1")

    def test_expunging_unknown_uids_counts_nothing(self, store: SqliteStore) -> None:
        """Absent UIDs are skipped, and the count says so."""
        deliver(store, "m1", (ALICE,))
        assert expunge(store, ALICE, [7, 8]) == 0
        assert len(messages(store, ALICE)) == 1

    def test_uids_are_not_reused_after_expunge(self, store: SqliteStore) -> None:
        """IMAP UIDs only ever grow within one UIDVALIDITY."""
        deliver(store, "m1", (ALICE,))
        expunge(store, ALICE, [1])
        deliver(store, "m2", (ALICE,))
        assert [m.uid for m in messages(store, ALICE)] == [2]


A = "manager-a"
B = "manager-b"


def record(store: SqliteStore, owner: str, rec: AttemptRecord) -> bool:
    """Record under the entry's current claim token, as the manager that claimed it would."""
    queued = store.queue.get_queued(rec.queue_id)
    token = None if queued is None else queued.lease_token
    (recorded,) = store.queue.record_attempts([(owner, replace(rec, lease_token=token))])
    return recorded


def claimed(store: SqliteStore, owner: str, now: float, until: float,
            limit: int = 10) -> list[str]:
    return [m.queue_id for m in store.queue.claim_due(owner, now, limit, until)]


class TestQueue:
    def test_recorded_attempt_updates_each_recipient(self, store: SqliteStore) -> None:
        """Delivered, failed and deferred recipients each get their state and attempt."""
        deliver(store, "q", (), ("a@r.test", "b@r.test", "c@r.test"), at=100.0)
        assert claimed(store, A, 100.0, 200.0) == ["q"]
        a, b, c = recipient_ids(store, "q")
        assert record(store, A, AttemptRecord(
            "q", (a,), ((b, "550 5.1.1 no", "mx.r.test"),),
            ((c, "451 4.3.0 later", "mx.r.test", 900.0),), delay_notified=True))
        queued = store.queue.get_queued("q")
        assert queued is not None
        ra, rb, rc = queued.recipients
        assert (ra.state, ra.attempts) == (RecipientState.DELIVERED, 1)
        assert (rb.state, rb.attempts, rb.last_error, rb.remote_mta) == (
            RecipientState.FAILED, 1, "550 5.1.1 no", "mx.r.test")
        assert (rc.state, rc.attempts, rc.last_error, rc.next_attempt) == (
            RecipientState.PENDING, 1, "451 4.3.0 later", 900.0)
        assert queued.delay_notified is True
        assert store.queue.next_due_time() == 900.0

    def test_recipient_ids_of_another_message_are_ignored(self, store: SqliteStore) -> None:
        """A recipient id only counts for its own queue entry."""
        deliver(store, "q1", (), ("a@r.test",))
        deliver(store, "q2", (), ("b@r.test",))
        (other,) = recipient_ids(store, "q2")
        claimed(store, A, 2000.0, 3000.0)
        record(store, A, AttemptRecord("q1", (other,)))
        queued = store.queue.get_queued("q2")
        assert queued is not None
        assert queued.recipients[0].state is RecipientState.PENDING

    def test_claims_follow_next_attempt_oldest_first(self, store: SqliteStore) -> None:
        """Only messages with a pending recipient whose time has come are claimed."""
        deliver(store, "early", (), ("a@r.test",), at=100.0)
        deliver(store, "late", (), ("b@r.test",), at=500.0)
        assert store.queue.next_due_time() == 100.0
        assert claimed(store, A, 200.0, 250.0) == ["early"]
        assert claimed(store, B, 1000.0, 1100.0, limit=1) == ["early"]  # A's lease ran out
        assert claimed(store, A, 1000.0, 1100.0) == ["late"]

    def test_a_claimed_message_is_nobody_elses_until_the_lease_ends(
        self, store: SqliteStore
    ) -> None:
        """B gets nothing while A's lease runs, and A's message once it has run out."""
        deliver(store, "q", (), ("a@r.test",), at=100.0)
        assert claimed(store, A, 100.0, 200.0) == ["q"]
        assert claimed(store, B, 150.0, 250.0) == []
        assert claimed(store, A, 150.0, 250.0) == []  # nor twice to the same owner
        assert claimed(store, B, 200.0, 300.0) == ["q"]

    def test_only_the_lease_holder_records(self, store: SqliteStore) -> None:
        """A's late result, after B took over, changes nothing and says so."""
        deliver(store, "q", (), ("a@r.test",), at=100.0)
        claimed(store, A, 100.0, 200.0)
        claimed(store, B, 300.0, 400.0)
        (rid,) = recipient_ids(store, "q")
        assert record(store, A, AttemptRecord("q", (rid,))) is False
        queued = store.queue.get_queued("q")
        assert queued is not None
        assert queued.recipients[0].state is RecipientState.PENDING
        assert record(store, B, AttemptRecord("q", (rid,))) is True
        assert store.queue.get_queued("q") is None
        assert collected(store, "q")

    def test_a_result_from_an_earlier_claim_is_not_recorded(self, store: SqliteStore) -> None:
        """A's lease ran out and A claimed the entry again: the first attempt's token is stale."""
        deliver(store, "q", (), ("a@r.test",), at=100.0)
        (first,) = store.queue.claim_due(A, 100.0, 1, 200.0)
        (second,) = store.queue.claim_due(A, 300.0, 1, 400.0)
        assert first.lease_token and second.lease_token
        assert first.lease_token != second.lease_token
        (rid,) = recipient_ids(store, "q")
        stale = AttemptRecord("q", (rid,), lease_token=first.lease_token)
        assert store.queue.record_attempts([(A, stale)]) == [False]
        queued = store.queue.get_queued("q")
        assert queued is not None and queued.recipients[0].state is RecipientState.PENDING
        current = replace(stale, lease_token=second.lease_token)
        assert store.queue.record_attempts([(A, current)]) == [True]
        assert store.queue.get_queued("q") is None

    def test_recording_releases_the_lease_and_the_last_result_drops_the_entry(
        self, store: SqliteStore
    ) -> None:
        """A deferred recipient is due again for anyone; the entry goes with its last one."""
        deliver(store, "q", (), ("a@r.test", "b@r.test"), at=100.0)
        a, b = recipient_ids(store, "q")
        claimed(store, A, 100.0, 10_000.0)
        assert record(store, A, AttemptRecord("q", (a,), deferred=((b, "451", None, 500.0),)))
        assert claimed(store, B, 600.0, 700.0) == ["q"]
        assert record(store, B, AttemptRecord("q", failed=((b, "550", None),)))
        assert store.queue.get_queued("q") is None
        assert store.queue.queued_ids() == []

    def test_extend_and_release_leases(self, store: SqliteStore) -> None:
        """An extended lease keeps B out; a released one lets B in at once."""
        deliver(store, "q", (), ("a@r.test",), at=100.0)
        claimed(store, A, 100.0, 200.0)
        assert store.queue.extend_leases(A, 500.0) == 1
        leased = store.queue.get_queued("q")
        assert leased is not None
        assert (leased.lease_owner, leased.lease_until) == (A, 500.0)
        assert claimed(store, B, 300.0, 400.0) == []
        assert store.queue.release_leases(A) == 1
        released = store.queue.get_queued("q")
        assert released is not None and released.lease_owner is None
        assert claimed(store, B, 300.0, 400.0) == ["q"]
        assert store.queue.extend_leases(A, 900.0) == 0  # A holds nothing now

    def test_retry_now_makes_pending_recipients_due(self, store: SqliteStore) -> None:
        """``queue retry`` moves pending recipients, one message or all, to now."""
        deliver(store, "q1", (), ("a@r.test", "b@r.test"), at=100.0)
        deliver(store, "q2", (), ("c@r.test",), at=100.0)
        claimed(store, A, 100.0, 150.0)
        a, b = recipient_ids(store, "q1")
        (c,) = recipient_ids(store, "q2")
        record(store, A, AttemptRecord("q1", (a,), deferred=((b, "451", None, 9000.0),)))
        record(store, A, AttemptRecord("q2", deferred=((c, "451", None, 9000.0),)))
        assert store.queue.retry_now("q1", 200.0) == 1
        assert store.queue.next_due_time() == 200.0
        assert store.queue.retry_now(None, 300.0) == 2
        assert sorted(claimed(store, B, 300.0, 400.0)) == ["q1", "q2"]
        assert store.queue.retry_now("absent", 300.0) == 0

    def test_remove_queued_drops_entry_recipients_and_file(self, store: SqliteStore) -> None:
        """Removal is complete, and reports whether there was anything to remove."""
        deliver(store, "q", (), ("a@r.test",))
        assert store.queue.remove_queued("q") is True
        assert store.queue.get_queued("q") is None
        assert claimed(store, A, 1e12, 2e12) == []
        assert collected(store, "q")
        assert store.queue.remove_queued("q") is False
        assert record(store, A, AttemptRecord("q")) is False

    def test_queue_survives_reopening(
        self, store: SqliteStore, open_store: Callable[[Path], SqliteStore], tmp_path: Path
    ) -> None:
        """The queue is durable: a new store on the same data sees it."""
        deliver(store, "q", (), ("a@r.test",))
        reopened = open_store(tmp_path / "data")
        assert reopened.queue.queued_ids() == ["q"]
        assert reopened.blobs.read_blob("q") == MESSAGE
        reopened.close()


class TestIdleIndexer:
    def test_a_flood_is_left_alone_and_a_trickle_is_indexed(self, store: SqliteStore) -> None:
        """More new messages than a batch since the last step: wait; fewer: index
        the backlog, batch after batch (for up to ``IDLE_SECONDS``)."""
        for i in range(5):
            deliver(store, f"f{i}", (ALICE,))
        assert store.indexer.idle_step(limit=3) == 0  # 5 arrived: the intake is busy
        assert store.indexer.idle_step(limit=2) == 5  # quiet now: the whole backlog
        deliver(store, "t1", (ALICE,))
        assert store.indexer.idle_step(limit=3) == 1  # one new: indexed
        assert store.indexer.idle_step(limit=3) == 0  # nothing left

    def test_a_collected_message_never_matches_a_later_search(self, store: SqliteStore) -> None:
        """Blob ids are never reused, so the body index's old entries cannot match new mail."""
        writer = store.blobs.new_blob("old")
        writer.write(b"Subject: a\r\n\r\nperiwinkle\r\n")
        ref = writer.commit()
        store.delivery.commit_acceptances([Acceptance("old", ref, "", (ALICE,), ())])
        box = inbox_id(store, ALICE)
        assert store.mailboxes.search(box, SearchBody("periwinkle")) == [1]
        expunge(store, ALICE, [1])
        assert store.blobs.collect(older_than=float("inf")) == 1
        deliver(store, "new", (ALICE,))
        assert store.mailboxes.search(box, SearchBody("periwinkle")) == []

    def test_a_narrow_fetch_parses_only_its_messages(self, store: SqliteStore) -> None:
        """FETCH of one message does not wait for the rest of an unindexed mailbox."""
        for i in range(5):
            deliver(store, f"n{i}", (ALICE,))
        box = inbox_id(store, ALICE)
        (meta,) = store.mailboxes.metadata(box, UidSet.from_uids([2]), Field.HEADERS)
        assert dict(meta.headers)["subject"] == "hi"
        assert store.indexer.index_pending(100) == 4  # the other four were left
