"""The async boundary for SQLite: group commits, and failures reaching every caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from postwarden.config import RelayConfig
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.interfaces import Acceptance
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore

USER = "user@example.test"
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class CountingStore(SqliteStore):
    """A real store that notes the size of every batch it commits, and can fail them."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.batches: list[int] = []
        self.fail = False

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
        self.batches.append(len(batch))
        if self.fail:
            raise OSError("disk on fire")
        super().commit_acceptances(batch)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[CountingStore, Intake]]:
    store = CountingStore(tmp_path / "data")
    store.add_domain("example.test")
    store.add_account(USER, "hash")
    aio = AsyncSqliteStore(store)
    yield store, Intake(store, aio, RecipientPolicy(store, RelayConfig(), "mx.test"), "mx.test", 30)
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
        box = store.get_mailbox(USER, "INBOX")
        assert box is not None
        assert len(store.list_messages(box.id)) == 50
        assert sum(store.batches) == 50
        assert len(store.batches) < 50

    async def test_a_failed_batch_fails_every_message_and_keeps_no_file(
        self, world: tuple[CountingStore, Intake], tmp_path: Path
    ) -> None:
        """Each caller of the batch hears of the failure; no orphan file is left."""
        store, intake = world
        store.fail = True
        results = await asyncio.gather(
            *(intake.submit(to_user(), MESSAGE) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OSError) for r in results)
        assert [p for p in (tmp_path / "data" / "messages").rglob("*") if p.is_file()] == []
        store.fail = False
        await intake.submit(to_user(), MESSAGE)  # the next batch goes through
        box = store.get_mailbox(USER, "INBOX")
        assert box is not None
        assert len(store.list_messages(box.id)) == 1
