"""The async boundary for SQLite: reads on a few threads, writes on one.

sqlite3 blocks, so every call leaves the event loop. Reads go to a small
pool (WAL lets readers run beside the writer, and sqlite3 releases the GIL
while a query runs); writes go to one writer thread, so our own writers
never compete for SQLite's lock, and bursts of acceptances and delivery
attempts are group-committed: one transaction, one fsync, per batch.
Message files are read on a pool of their own, so a large FETCH being
rendered never keeps SMTP's lookups waiting for a reader.
"""

from __future__ import annotations

import asyncio
import functools
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from postwarden.storage import mailbox as mb
from postwarden.storage.boundary import GroupCommit, ReadBlob
from postwarden.storage.interfaces import (
    Acceptance,
    Account,
    AttemptRecord,
    BlobWriter,
    LoginFailures,
    QueuedMessage,
)
from postwarden.storage.mailbox import Appended, Flag

if TYPE_CHECKING:
    from postwarden.storage.factory import Store

T = TypeVar("T")
# Concurrent readers: enough for SMTP's lookups and POP3's logins to overlap
# on two cores, few enough that SQLite's connection memory stays small.
READ_THREADS = 4
# Threads reading (and rendering from) message files: FETCH batches, POP3 RETR.
FILE_THREADS = 4
# A range up to this size is read on the event loop: one read from the page
# cache costs less than the trip to a thread (POP3 RETR of typical mail ran
# about 40% faster so); larger ranges go to the file threads. Only for blobs
# in local files (``local_reads``): a database or S3 read is a round trip.
INLINE_READ_LIMIT = 64 * 1024
# How long the directory answers kept on the loop side may be old: the domain
# list, and that an account exists (asked at RCPT and again at the end of DATA).
DIRECTORY_CACHE_SECONDS = 1.0
MAX_CACHED_ACCOUNTS = 10_000


class AsyncSqliteStore:
    """Every async store Protocol (storage.boundary) over a SqliteStore.

    It uses only the ``Store`` Protocol; the PostgreSQL boundary
    (storage.postgresql.aio) keeps all but where a call runs.
    """

    def __init__(self, store: Store, read_threads: int = READ_THREADS) -> None:
        self.store = store
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="store-read")
        self._files = ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="store-files")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._acceptances: GroupCommit[tuple[BlobWriter, Acceptance], None] = GroupCommit(
            self._commit_acceptances)
        self._domains: tuple[float, frozenset[str]] | None = None
        self._accounts: dict[str, float] = {}  # address -> when it was seen to exist
        self._attempts: GroupCommit[tuple[str, AttemptRecord], bool] = GroupCommit(
            self._record_attempts)

    async def _read(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, func, *args)

    async def _write(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, func, *args)

    def close(self) -> None:
        """Finish the calls already handed over, then stop the threads."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._files.shutdown(wait=True)

    async def aclose(self) -> None:
        """``close`` from the event loop, with what lives on the loop (none here)."""
        self.close()

    # --- AsyncDirectory -----------------------------------------------------------

    async def is_local_domain(self, domain: str) -> bool:
        # Asked on every RCPT: the domain list is kept here for a second, so the
        # hot path makes no trip to a thread, while CLI changes still show soon.
        now = time.monotonic()
        cached = self._domains
        if cached is None or now - cached[0] > DIRECTORY_CACHE_SECONDS:
            names = frozenset(await self._read(self.store.directory.list_domains))
            self._domains = cached = (now, names)
        return domain in cached[1]

    async def list_domains(self) -> list[str]:
        return await self._read(self.store.directory.list_domains)

    async def get_account(self, address: str) -> Account | None:
        return await self._read(self.store.directory.get_account, address)

    async def account_exists(self, address: str) -> bool:
        """Each thread trip costs the loop more than the query; a message asks twice.

        Only "exists" is remembered (a new account works at once); a removed
        one may be taken for existing for up to a second, the same window as
        between RCPT and the end of DATA.
        """
        now = time.monotonic()
        seen = self._accounts.get(address)
        if seen is not None and now - seen <= DIRECTORY_CACHE_SECONDS:
            return True
        if await self.get_account(address) is None:
            self._accounts.pop(address, None)
            return False
        if len(self._accounts) >= MAX_CACHED_ACCOUNTS:
            self._accounts.clear()
        self._accounts[address] = now
        return True

    async def alias_targets(self, address: str) -> tuple[str, ...] | None:
        return await self._read(self.store.directory.alias_targets, address)

    async def record_login(self, ip: str, at: float) -> None:
        await self._write(self.store.directory.record_login, ip, at)

    async def last_login(self, ip: str) -> float | None:
        return await self._read(self.store.directory.last_login, ip)

    async def expire_logins(self, before: float) -> int:
        return await self._write(self.store.directory.expire_logins, before)

    async def record_login_failure(self, ip: str, account: str, at: float) -> None:
        await self._write(self.store.directory.record_login_failure, ip, account, at)

    async def login_failures(self, ip: str, account: str, since: float) -> LoginFailures:
        return await self._read(self.store.directory.login_failures, ip, account, since)

    async def forget_login_failures(self, ip: str, account: str) -> None:
        await self._write(self.store.directory.forget_login_failures, ip, account)

    async def expire_login_failures(self, before: float) -> int:
        return await self._write(self.store.directory.expire_login_failures, before)

    # --- AsyncIntakeStore -----------------------------------------------------------

    def commit(self, writer: BlobWriter, acceptance: Acceptance) -> asyncio.Future[None]:
        """A future rather than a coroutine: the intake shields it, at no task's cost."""
        return self._acceptances.submit((writer, acceptance))

    async def _commit_acceptances(
        self, batch: list[tuple[BlobWriter, Acceptance]]
    ) -> Sequence[None]:
        try:
            await self._write(self._commit_batch, batch)
        except BaseException:
            for writer, _ in batch:
                writer.abort()
            raise
        return [None] * len(batch)

    def _commit_batch(self, batch: list[tuple[BlobWriter, Acceptance]]) -> None:
        # The committed reference carries what the writer measured of the bytes.
        self.store.delivery.commit_acceptances(
            [replace(acceptance, blob=writer.commit()) for writer, acceptance in batch])

    async def append(self, writer: BlobWriter, account: str, mailbox: str, flags: Flag,
                     keywords: frozenset[str], internaldate: float | None) -> Appended:
        """IMAP APPEND: the file made durable, then its row, on the writer thread."""
        return await self._write(self._append, writer, account, mailbox, flags, keywords,
                                 internaldate)

    def _append(self, writer: BlobWriter, account: str, mailbox: str, flags: Flag,
                keywords: frozenset[str], internaldate: float | None) -> Appended:
        try:
            return self.store.mailboxes.append(account, mailbox, writer.commit(), flags,
                                               keywords, internaldate)
        except BaseException:
            writer.abort()  # nothing refers to it: refused appends leave no file
            raise

    # --- AsyncBlobs -------------------------------------------------------------------

    async def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        if self.store.blobs.local_reads and length is not None and length <= INLINE_READ_LIMIT:
            return self.store.blobs.read_blob(name, start, length)
        return await asyncio.get_running_loop().run_in_executor(
            self._files, self.store.blobs.read_blob, name, start, length)

    async def read_message(self, blob: mb.BlobHandle, start: int = 0,
                           length: int | None = None) -> bytes:
        if not blob.prefix:
            return await self.read_blob(blob.name, start, length)
        head, at, rest = mb.split_range(blob, start, length)
        return head if at is None else head + await self.read_blob(blob.name, at, rest)

    # --- AsyncMailboxStore: reads on the pool, changes on the writer -------------------

    async def ensure_mailboxes(self, account: str) -> None:
        await self._write(self.store.mailboxes.ensure_mailboxes, account)

    async def create_mailbox(self, account: str, name: str, special_use: str | None = None
                             ) -> mb.Mailbox:
        return await self._write(self.store.mailboxes.create_mailbox, account, name, special_use)

    async def delete_mailbox(self, account: str, name: str) -> None:
        await self._write(self.store.mailboxes.delete_mailbox, account, name)

    async def rename_mailbox(self, account: str, old: str, new: str) -> None:
        await self._write(self.store.mailboxes.rename_mailbox, account, old, new)

    async def get_mailbox(self, account: str, name: str) -> mb.Mailbox | None:
        return await self._read(self.store.mailboxes.get_mailbox, account, name)

    async def list_mailboxes(self, account: str) -> list[mb.Mailbox]:
        return await self._read(self.store.mailboxes.list_mailboxes, account)

    async def subscribe(self, account: str, name: str) -> None:
        await self._write(self.store.mailboxes.subscribe, account, name)

    async def unsubscribe(self, account: str, name: str) -> None:
        await self._write(self.store.mailboxes.unsubscribe, account, name)

    async def subscriptions(self, account: str) -> list[str]:
        return await self._read(self.store.mailboxes.subscriptions, account)

    async def status(self, mailbox_id: int) -> mb.MailboxStatus:
        return await self._read(self.store.mailboxes.status, mailbox_id)

    async def uids(self, mailbox_id: int) -> array[int]:
        return await self._read(self.store.mailboxes.uids, mailbox_id)

    async def metadata(self, mailbox_id: int, uids: mb.UidSet, fields: mb.Field = mb.Field.NONE
                       ) -> list[mb.MessageMeta]:
        return await self._read(self.store.mailboxes.metadata, mailbox_id, uids, fields)

    async def store_flags(self, mailbox_id: int, uids: mb.UidSet, change: mb.FlagChange
                          ) -> mb.FlagResult:
        return await self._write(self.store.mailboxes.store_flags, mailbox_id, uids, change)

    async def expunge(self, mailbox_id: int, uids: mb.UidSet | None = None, *,
                      deleted_only: bool = True) -> list[mb.Expunged]:
        return await self._write(functools.partial(
            self.store.mailboxes.expunge, mailbox_id, uids, deleted_only=deleted_only))

    async def copy(self, source_id: int, uids: mb.UidSet, target_id: int) -> mb.CopyResult:
        return await self._write(self.store.mailboxes.copy, source_id, uids, target_id)

    async def move(self, source_id: int, uids: mb.UidSet, target_id: int) -> mb.CopyResult:
        return await self._write(self.store.mailboxes.move, source_id, uids, target_id)

    async def changes_since(self, mailbox_id: int, modseq: int) -> mb.Changes:
        return await self._read(self.store.mailboxes.changes_since, mailbox_id, modseq)

    async def search(self, mailbox_id: int, query: mb.Query) -> list[int]:
        return await self._read(self.store.mailboxes.search, mailbox_id, query)

    async def claim_recent(self, mailbox_id: int) -> range:
        return await self._write(self.store.mailboxes.claim_recent, mailbox_id)

    async def quota(self, account: str) -> mb.Quota:
        return await self._read(self.store.mailboxes.quota, account)

    async def lock_maildrop(self, account: str, owner: str, until: float) -> None:
        await self._write(self.store.mailboxes.lock_maildrop, account, owner, until)

    async def unlock_maildrop(self, account: str, owner: str) -> None:
        await self._write(self.store.mailboxes.unlock_maildrop, account, owner)

    async def read_messages(self, mailbox_id: int, uids: mb.UidSet, fields: mb.Field,
                            use: Callable[[list[mb.MessageMeta], ReadBlob], T]) -> T:
        """The metadata read and the file work in one trip, on a file thread."""
        def run() -> T:
            return use(self.store.mailboxes.metadata(mailbox_id, uids, fields),
                       self.store.blobs.read_blob)
        return await asyncio.get_running_loop().run_in_executor(self._files, run)

    # --- AsyncQueue ---------------------------------------------------------------------

    async def claim_due(
        self, owner: str, now: float, limit: int, until: float
    ) -> list[QueuedMessage]:
        return await self._write(self.store.queue.claim_due, owner, now, limit, until)

    async def next_due_time(self) -> float | None:
        return await self._read(self.store.queue.next_due_time)

    async def extend_leases(self, owner: str, until: float) -> int:
        return await self._write(self.store.queue.extend_leases, owner, until)

    async def release_leases(self, owner: str) -> int:
        return await self._write(self.store.queue.release_leases, owner)

    def record_attempt(self, owner: str, record: AttemptRecord) -> asyncio.Future[bool]:
        return self._attempts.submit((owner, record))

    async def _record_attempts(self, batch: list[tuple[str, AttemptRecord]]) -> Sequence[bool]:
        return await self._write(self.store.queue.record_attempts, batch)
