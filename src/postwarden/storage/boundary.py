"""The async boundary in front of the store: the event loop never waits on it.

Servers and the queue manager hold only these async Protocols. A backend
implements them natively (PostgreSQL with an async driver) or by handing
its synchronous calls to threads (SQLite, ``storage.sqlite.aio``). Writes
that come in bursts (accepted messages, delivery attempts) are joined by
``GroupCommit`` into one transaction per batch, for either kind of backend.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from postwarden.storage import mailbox as mb
from postwarden.storage.interfaces import (
    Acceptance,
    Account,
    AttemptRecord,
    BlobWriter,
    LoginFailures,
    QueuedMessage,
)
from postwarden.storage.mailbox import Appended, Flag

T = TypeVar("T")
R = TypeVar("R")
# A synchronous ranged read of a message file: (name, start, length or None).
ReadBlob = Callable[[str, int, int | None], bytes]


class AsyncDirectory(Protocol):
    """What the SMTP, POP3 and IMAP servers read from (and record in) the directory."""

    async def is_local_domain(self, domain: str) -> bool: ...
    async def list_domains(self) -> list[str]: ...
    async def get_account(self, address: str) -> Account | None: ...
    # For RCPT and alias expansion: may answer "yes" from a second-old memory.
    async def account_exists(self, address: str) -> bool: ...
    async def alias_targets(self, address: str) -> tuple[str, ...] | None: ...
    async def record_login(self, ip: str, at: float) -> None: ...
    async def last_login(self, ip: str) -> float | None: ...
    async def expire_logins(self, before: float) -> int: ...
    async def record_login_failure(self, ip: str, account: str, at: float) -> None: ...
    async def login_failures(self, ip: str, account: str, since: float) -> LoginFailures: ...
    async def forget_login_failures(self, ip: str, account: str) -> None: ...
    async def expire_login_failures(self, before: float) -> int: ...


class AsyncIntakeStore(Protocol):
    """The intake's door: a message's bytes made durable, then its rows committed.

    Messages arriving together share one transaction (a group commit); the
    call returns once this message is durable, and only then may the server
    say ``250``.
    """

    def commit(self, writer: BlobWriter, acceptance: Acceptance) -> Awaitable[None]: ...
    # IMAP APPEND of a written message into one mailbox: (UIDVALIDITY, UID).
    # Raises NotFound (no such mailbox) or QuotaExceeded; the file is dropped then.
    async def append(self, writer: BlobWriter, account: str, mailbox: str, flags: Flag,
                     keywords: frozenset[str], internaldate: float | None) -> Appended: ...


class AsyncBlobs(Protocol):
    async def read_blob(self, name: str, start: int = 0, length: int | None = None
                        ) -> bytes: ...


class AsyncMailboxStore(AsyncBlobs, Protocol):
    """``MailboxStore`` for the servers (POP3, IMAP): the same calls, awaited."""

    async def ensure_mailboxes(self, account: str) -> None: ...
    async def create_mailbox(self, account: str, name: str, special_use: str | None = None
                             ) -> mb.Mailbox: ...
    async def delete_mailbox(self, account: str, name: str) -> None: ...
    async def rename_mailbox(self, account: str, old: str, new: str) -> None: ...
    async def get_mailbox(self, account: str, name: str) -> mb.Mailbox | None: ...
    async def list_mailboxes(self, account: str) -> list[mb.Mailbox]: ...
    async def subscribe(self, account: str, name: str) -> None: ...
    async def unsubscribe(self, account: str, name: str) -> None: ...
    async def subscriptions(self, account: str) -> list[str]: ...
    async def status(self, mailbox_id: int) -> mb.MailboxStatus: ...
    async def uids(self, mailbox_id: int) -> array[int]: ...
    async def metadata(self, mailbox_id: int, uids: mb.UidSet, fields: mb.Field = mb.Field.NONE
                       ) -> list[mb.MessageMeta]: ...
    async def store_flags(self, mailbox_id: int, uids: mb.UidSet, change: mb.FlagChange
                          ) -> mb.FlagResult: ...
    async def expunge(self, mailbox_id: int, uids: mb.UidSet | None = None, *,
                      deleted_only: bool = True) -> list[mb.Expunged]: ...
    async def copy(self, source_id: int, uids: mb.UidSet, target_id: int) -> mb.CopyResult: ...
    async def move(self, source_id: int, uids: mb.UidSet, target_id: int) -> mb.CopyResult: ...
    async def changes_since(self, mailbox_id: int, modseq: int) -> mb.Changes: ...
    async def search(self, mailbox_id: int, query: mb.Query) -> list[int]: ...
    async def claim_recent(self, mailbox_id: int) -> range: ...
    async def quota(self, account: str) -> mb.Quota: ...
    async def lock_maildrop(self, account: str, owner: str, until: float) -> None: ...
    async def unlock_maildrop(self, account: str, owner: str) -> None: ...
    # One copy's bytes as its handle (``metadata`` with Field.SIZE) describes them:
    # the copy's own header lines, then the file (``mailbox.read_message``).
    async def read_message(self, blob: mb.BlobHandle, start: int = 0,
                           length: int | None = None) -> bytes: ...
    # Many files in one trip (a FETCH batch, SEARCH HEADER over raw headers):
    # ``use`` gets the metadata of ``uids`` and a synchronous ranged reader,
    # and runs off the event loop (it may parse and render as it reads).
    async def read_messages(self, mailbox_id: int, uids: mb.UidSet, fields: mb.Field,
                            use: Callable[[list[mb.MessageMeta], ReadBlob], T]) -> T: ...


class AsyncQueue(Protocol):
    """The outbound queue as the queue manager uses it: claims under a lease.

    ``owner`` names one running queue manager. A claim takes due messages
    nobody else holds (or whose holder's lease ran out) until ``until``;
    attempts are recorded only while the recorder still holds the lease,
    which also releases it.
    """

    async def claim_due(
        self, owner: str, now: float, limit: int, until: float
    ) -> list[QueuedMessage]: ...
    async def next_due_time(self) -> float | None: ...
    async def extend_leases(self, owner: str, until: float) -> int: ...
    async def release_leases(self, owner: str) -> int: ...
    # False when the owner had lost the lease: nothing was recorded (another
    # manager may have delivered the message too).
    def record_attempt(self, owner: str, record: AttemptRecord) -> Awaitable[bool]: ...


class GroupCommit(Generic[T, R]):
    """Items that arrive while a batch commits form the next batch.

    Under load N items cost one transaction (one fsync) instead of N; a lone
    item goes at once. ``commit`` commits a list of items in one transaction
    and returns one result per item; if it fails, every item of the batch
    gets the exception.
    """

    def __init__(self, commit: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._commit = commit
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    def submit(self, item: T) -> asyncio.Future[R]:
        """Join the next batch; a plain future, so shielding it costs no task."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._drain())
        return future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
