"""The async boundary for SQLite: group commits, and failures reaching every caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from postwarden.config import RelayConfig
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.boundary import AsyncMailboxStore, ReadBlob
from postwarden.storage.interfaces import Acceptance
from postwarden.storage.mailbox import (
    Field,
    Flag,
    FlagChange,
    FlagMode,
    MessageMeta,
    UidSet,
    read_message,
)
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.delivery import SqliteDelivery

USER = "user@example.test"
DELIVERY_LINES = b"Return-Path: <a@remote.test>\r\nDelivered-To: user@example.test\r\n"
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class CountingDelivery(SqliteDelivery):
    """The real delivery part, noting the size of every batch it commits; can fail them."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store.db, store.blobs, store.mailboxes, store.queue)
        self.batches: list[int] = []
        self.fail = False

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
        self.batches.append(len(batch))
        if self.fail:
            raise OSError("disk on fire")
        super().commit_acceptances(batch)


class CountingStore(SqliteStore):
    """A real store whose delivery part counts its batches."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.delivery = self.counting = CountingDelivery(self)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[CountingStore, Intake]]:
    store = CountingStore(tmp_path / "data")
    store.directory.add_domain("example.test")
    store.directory.add_account(USER, "hash")
    aio = AsyncSqliteStore(store)
    policy = RecipientPolicy(aio, RelayConfig(), "mx.test")
    yield store, Intake(store.blobs, aio, policy, "mx.test", 30)
    aio.close()
    store.close()


def to_user() -> Envelope:
    return Envelope(parse_address("a@remote.test"), (DsnRecipient(parse_address(USER)),))


class TestGroupCommit:
    async def test_messages_accepted_together_share_one_transaction(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """Fifty concurrent acceptances: all stored, in fewer transactions than messages."""
        store, intake = world
        await asyncio.gather(*(intake.submit(to_user(), MESSAGE) for _ in range(50)))
        box = store.mailboxes.get_mailbox(USER, "INBOX")
        assert box is not None
        assert len(store.mailboxes.metadata(box.id, UidSet.all())) == 50
        assert sum(store.counting.batches) == 50
        assert len(store.counting.batches) < 50

    async def test_a_failed_batch_fails_every_message_and_keeps_no_file(
        self, world: tuple[CountingStore, Intake], tmp_path: Path
    ) -> None:
        """Each caller of the batch hears of the failure; no orphan file is left."""
        store, intake = world
        store.counting.fail = True
        results = await asyncio.gather(
            *(intake.submit(to_user(), MESSAGE) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OSError) for r in results)
        assert [p for p in (tmp_path / "data" / "messages").rglob("*") if p.is_file()] == []
        store.counting.fail = False
        await intake.submit(to_user(), MESSAGE)  # the next batch goes through
        box = store.mailboxes.get_mailbox(USER, "INBOX")
        assert box is not None
        assert len(store.mailboxes.metadata(box.id, UidSet.all())) == 1


def boundary(intake: Intake) -> AsyncSqliteStore:
    assert isinstance(intake.store, AsyncSqliteStore)
    return intake.store


class TestDirectoryAnswers:
    async def test_a_new_account_counts_at_once(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """Only "exists" is remembered, so an account added a moment ago is found."""
        store, intake = world
        assert await boundary(intake).account_exists("new@example.test") is False
        store.directory.add_account("new@example.test", "hash")
        assert await boundary(intake).account_exists("new@example.test") is True

    async def test_logins_always_read_the_store(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """A removed account's password stops working at once, whatever RCPT remembers."""
        store, intake = world
        assert await boundary(intake).account_exists(USER) is True
        store.directory.remove_account(USER)
        assert await boundary(intake).get_account(USER) is None


class TestMailboxesThroughTheBoundary:
    async def test_an_imap_like_session_runs_on_the_async_protocol(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """Create, deliver, status, flags, copy, changes, expunge, read: all awaited."""
        _, intake = world
        boxes: AsyncMailboxStore = boundary(intake)
        await intake.submit(to_user(), MESSAGE)
        inbox = await boxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        archive = await boxes.create_mailbox(USER, "Lists/Python")
        await boxes.subscribe(USER, "Lists/Python")
        assert "Lists/Python" in await boxes.subscriptions(USER)
        status = await boxes.status(inbox.id)
        assert (status.messages, status.unseen) == (1, 1)
        (uid,) = await boxes.uids(inbox.id)
        since = status.highestmodseq
        result = await boxes.store_flags(inbox.id, UidSet.all(),
                                         FlagChange(FlagMode.ADD, Flag.SEEN | Flag.DELETED))
        assert [u.uid for u in result.changed] == [uid]
        copied = await boxes.copy(inbox.id, UidSet.all(), archive.id)
        assert copied.mapping == ((uid, 1),)
        changes = await boxes.changes_since(inbox.id, since)
        assert [u.uid for u in changes.changed] == [uid]
        (meta,) = await boxes.metadata(archive.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert await boxes.read_blob(meta.blob.name, 9, 2) == b"hi"  # a ranged read
        assert [e.uid for e in await boxes.expunge(inbox.id)] == [uid]
        assert (await boxes.status(inbox.id)).messages == 0
        assert (await boxes.quota(USER)).messages == 1

    async def test_many_files_are_read_in_one_trip_off_the_loop(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """read_messages: the batch's metadata and a ranged reader, used on a file thread."""
        _, intake = world
        boxes: AsyncMailboxStore = boundary(intake)
        for _ in range(3):
            await intake.submit(to_user(), MESSAGE)
        inbox = await boxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        threads: list[str] = []

        def headers(metas: list[MessageMeta], read: ReadBlob) -> list[tuple[int, bytes]]:
            threads.append(threading.current_thread().name)
            return [(m.uid, read_message(read, m.blob, 0, m.blob.header_size)) for m in metas
                    if m.blob is not None]

        got = await boxes.read_messages(inbox.id, UidSet.from_uids([1, 3]), Field.SIZE, headers)
        header = DELIVERY_LINES + b"Subject: hi\r\n\r\n"
        assert got == [(1, header), (3, header)]
        assert threads[0].startswith("store-files"), threads

    async def test_a_long_range_is_read_whole(
        self, world: tuple[CountingStore, Intake]
    ) -> None:
        """A range longer than what is read on the loop comes back whole, from a thread."""
        _, intake = world
        boxes: AsyncMailboxStore = boundary(intake)
        body = b"x" * 99 + b"\r\n"
        await intake.submit(to_user(), b"Subject: big\r\n\r\n" + body * 2000)
        inbox = await boxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        (meta,) = await boxes.metadata(inbox.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None and meta.blob.size > 200_000
        data = await boxes.read_message(meta.blob, 0, None)  # the copy: its lines + the file
        assert len(data) == meta.blob.size and data.startswith(DELIVERY_LINES)
        assert data.endswith(body)
