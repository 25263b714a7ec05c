"""Change events: a committed change reaches watchers in this process and in others.

Watchers here stand for IMAP sessions in IDLE; the second process is a
script on the same data directory (as the CLI or a second server would be),
and a real ``serve`` process accepting mail over SMTP.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postwarden.config import RelayConfig
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.events import MailboxChanged, MailboxWatch
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.changes import EVENTS_DIR, decode, encode
from serverproc import ServerProcess

USER = "user@example.test"
OTHER = "other@example.test"
WATCHER = Path(__file__).with_name("watch_changes.py")
WAIT = 10  # seconds: a bound for a broken build, not a speed claim


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Intake]]:
    store = SqliteStore(tmp_path / "data")
    store.directory.add_domain("example.test")
    store.directory.add_account(USER, "hash")
    store.directory.add_account(OTHER, "hash")
    aio = AsyncSqliteStore(store)
    policy = RecipientPolicy(aio, RelayConfig(), "mx.example.test")
    yield store, Intake(store.blobs, aio, policy, "mx.example.test", 50)
    aio.close()
    store.changes.close()
    store.close()


def inbox(store: SqliteStore, account: str) -> tuple[int, int]:
    """The INBOX's id and highest modseq."""
    box = store.mailboxes.get_mailbox(account, "INBOX")
    assert box is not None
    return box.id, store.mailboxes.status(box.id).highestmodseq


async def deliver(intake: Intake, account: str) -> None:
    envelope = Envelope(parse_address("a@remote.test"), (DsnRecipient(parse_address(account)),))
    await intake.submit(envelope, b"Subject: hi\r\n\r\nhello\r\n")


async def heard(watch: MailboxWatch) -> int:
    async with asyncio.timeout(WAIT):
        return await watch.wait()


def bump(db: sqlite3.Connection, mailbox_id: int) -> None:
    """A change as any mailbox write makes one: the mailbox's modseq moves on."""
    db.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?",
               (mailbox_id,))


def send(addr: tuple[str, int], rcpt: str) -> None:
    with smtplib.SMTP(*addr, timeout=WAIT) as client:
        client.sendmail("a@remote.test", [rcpt], b"Subject: hi\r\n\r\nhi\r\n")


class TestInThisProcess:
    async def test_a_watcher_hears_a_delivery_with_its_modseq(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """Mail committed to INBOX wakes the INBOX's watcher, with the new modseq."""
        store, intake = world
        box, _ = inbox(store, USER)
        with store.changes.watch(box) as watch:
            assert not watch.pending()
            await deliver(intake, USER)
            modseq = await heard(watch)
        assert modseq == inbox(store, USER)[1]

    async def test_only_the_changed_mailbox_is_told(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """A watcher of another mailbox hears nothing of it."""
        store, intake = world
        mine, _ = inbox(store, USER)
        theirs, _ = inbox(store, OTHER)
        with store.changes.watch(mine) as watch_mine, store.changes.watch(theirs) as other:
            await deliver(intake, OTHER)
            await heard(other)
            assert not watch_mine.pending()

    async def test_a_rolled_back_change_is_never_published(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """Only commits count: a transaction that fails tells no one, then or later."""
        store, _ = world
        mine, _ = inbox(store, USER)
        theirs, _ = inbox(store, OTHER)
        with store.changes.watch(mine) as watch, store.changes.watch(theirs) as other:
            with pytest.raises(RuntimeError), store.db.tx() as db:
                bump(db, mine)
                raise RuntimeError("abandon the transaction")
            with store.db.tx() as db:  # a later commit on the same connection
                bump(db, theirs)
            await heard(other)
            assert not watch.pending()

    async def test_changes_coalesce_until_taken(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """Three deliveries before the watcher looks: one wake-up, the latest modseq."""
        store, intake = world
        box, _ = inbox(store, USER)
        with store.changes.watch(box) as watch:
            for _ in range(3):
                await deliver(intake, USER)
            modseq = await heard(watch)
            assert modseq == inbox(store, USER)[1]
            assert not watch.pending()


class TestAcrossProcesses:
    async def test_a_watcher_in_another_process_hears_our_commit(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """A second process on the data directory hears of mail this one committed."""
        store, intake = world
        box, _ = inbox(store, USER)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(WATCHER), str(store.data_dir), str(box),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT * 2):
                assert await proc.stdout.readline() == b"watching\n"
                await deliver(intake, USER)
                line = await proc.stdout.readline()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        assert line == f"changed {inbox(store, USER)[1]}\n".encode()

    @pytest.mark.slow
    async def test_a_watcher_here_hears_mail_a_server_process_accepted(
        self, tmp_path: Path
    ) -> None:
        """Mail accepted over SMTP by a `serve` process wakes a watcher in the test process."""
        server = ServerProcess(tmp_path)
        user = server.add_user(USER)
        box, _ = inbox(server.store, user)
        server.store.changes.listen()
        try:
            await asyncio.to_thread(server.start)
            with server.store.changes.watch(box) as watch:
                await asyncio.to_thread(send, server.addr("smtp"), user)
                modseq = await heard(watch)
        finally:
            server.stop()
            server.store.changes.close()
        assert modseq == inbox(server.store, user)[1]


class TestSignal:
    def test_pairs_round_trip_and_split_to_fit_a_datagram(self) -> None:
        """Thousands of changes travel in several datagrams, none too large, none lost."""
        changes = [MailboxChanged(i, i * 7) for i in range(1, 3001)]
        datagrams = encode(changes)
        assert len(datagrams) > 1
        assert all(len(d) <= 4096 for d in datagrams)
        assert [c for d in datagrams for c in decode(d)] == changes

    def test_garbage_in_a_datagram_is_ignored(self) -> None:
        """Anything but id:modseq pairs is skipped: they are only hints."""
        assert decode(b"x:1 2:3 :4 5: 6:7:8 \xff 9:10") == [
            MailboxChanged(2, 3), MailboxChanged(9, 10)]

    async def test_a_socket_left_by_a_dead_process_is_removed(
        self, world: tuple[SqliteStore, Intake]
    ) -> None:
        """A commit finds the stale socket (nobody reads it) and clears it away."""
        store, intake = world
        stale = store.data_dir / EVENTS_DIR / "99999-dead"
        dirfd = os.open(stale.parent, os.O_RDONLY)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(f"/proc/self/fd/{dirfd}/{stale.name}")  # short, however deep tmp_path is
        sock.close()  # as a killed process leaves it: the file stays, nobody listens
        os.close(dirfd)
        assert stale.exists()
        await deliver(intake, USER)
        assert not stale.exists()
