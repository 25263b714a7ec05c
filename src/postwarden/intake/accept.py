"""The only door into storage: every message, from SMTP or a generated report.

A message is streamed to its file by a ``MessageBuilder``; ``Intake.accept``
then resolves recipients (aliases, local vs remote) and hands the message to
the group committer, which fsyncs the files and commits the local deliveries
and queue entries of a whole batch in one SQLite transaction. Only when that
returns does the caller say ``250 queued``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from postwarden.intake.headers import MessageBuilder, TraceInfo, received_header
from postwarden.intake.recipients import AliasLoop, RecipientPolicy
from postwarden.mail.address import AddressError
from postwarden.mail.envelope import Envelope
from postwarden.storage.interfaces import (
    Acceptance,
    BlobRef,
    BlobStore,
    BlobWriter,
    DeliveryStore,
    NewRecipient,
)


class IntakeError(Exception):
    """The message cannot be accepted; ``permanent`` says whether to retry.

    ``status`` is the RFC 3463 enhanced status code that explains it.
    """

    def __init__(self, message: str, permanent: bool, status: str = "5.4.6") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def new_queue_id() -> str:
    """Unique, alphanumeric (safe as a file name), 16 chars, sorting in time order.

    Microseconds then 24 random bits, in base32hex, whose alphabet keeps the
    byte order when the text is sorted.
    """
    stamp = time.time_ns() // 1000
    raw = stamp.to_bytes(7, "big") + os.urandom(3)
    return base64.b32hexencode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Accepted:
    queue_id: str
    local_accounts: tuple[str, ...]
    remote_count: int


class _Pending:
    __slots__ = ("acceptance", "future", "writer")

    def __init__(self, writer: BlobWriter, acceptance: Acceptance,
                 future: asyncio.Future[None]) -> None:
        self.writer = writer
        self.acceptance = acceptance
        self.future = future


class GroupCommitter:
    """Batches acceptances: while one batch commits, the next one gathers.

    One writer thread, so SQLite never sees competing writers from us, and
    under load N messages cost one database fsync instead of N.
    """

    def __init__(self, store: DeliveryStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")
        self._pending: list[_Pending] = []
        self._running: asyncio.Task[None] | None = None

    def commit(self, writer: BlobWriter, acceptance: Acceptance) -> asyncio.Future[None]:
        """Join the next batch; the future is done once the message is durable.

        A plain future rather than a coroutine, so that shielding it costs no
        task per message.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(writer, acceptance, future))
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self._executor, self._commit_batch, batch)
            except Exception as exc:
                for item in batch:
                    item.writer.abort()
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)

    def _commit_batch(self, batch: Sequence[_Pending]) -> None:
        for item in batch:
            item.writer.commit()
        self._store.commit_acceptances([item.acceptance for item in batch])

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class Intake:
    def __init__(
        self,
        blobs: BlobStore,
        store: DeliveryStore,
        recipients: RecipientPolicy,
        hostname: str,
        max_received_headers: int,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.blobs = blobs
        self.recipients = recipients
        self.hostname = hostname
        self.max_received_headers = max_received_headers
        self.on_queued = on_queued
        self.committer = GroupCommitter(store)

    def open_message(self, queue_id: str, trace: TraceInfo | None,
                     add_submission_headers: bool) -> MessageBuilder:
        prefix = received_header(trace) if trace is not None else b""
        return MessageBuilder(
            self.blobs.new_blob(queue_id), prefix, hostname=self.hostname,
            add_submission_headers=add_submission_headers,
        )

    async def accept(self, queue_id: str, envelope: Envelope, message: MessageBuilder, *,
                     trusted_origin: bool) -> Accepted:
        """Commit the message durably; raises IntakeError (and discards it) on refusal.

        ``trusted_origin``: the client authenticated or may relay, so the
        envelope sender is believed (it decides what reports may carry).
        """
        try:
            message.finish()
            acceptance = self._acceptance(queue_id, envelope, message, trusted_origin)
        except BaseException:
            message.writer.abort()
            raise
        # Shielded: once handed over, the commit finishes even if this session
        # is cancelled, so a committed message never loses its file.
        await asyncio.shield(self.committer.commit(message.writer, acceptance))
        if acceptance.remote:
            self.on_queued()
        return Accepted(queue_id, acceptance.local_accounts, len(acceptance.remote))

    def _acceptance(self, queue_id: str, envelope: Envelope,
                    message: MessageBuilder, trusted_origin: bool) -> Acceptance:
        if message.received_count >= self.max_received_headers:
            raise IntakeError("Too many hops (mail loop?)", permanent=True)
        local: list[str] = []
        remote: list[NewRecipient] = []
        for rcpt in envelope.recipients:
            try:
                resolved = self.recipients.resolve(rcpt.address)
            except AliasLoop as exc:
                raise IntakeError(f"alias loop: {exc}", permanent=True) from None
            except AddressError as exc:
                # A stored alias target that no longer parses: the admin must fix it.
                raise IntakeError(f"bad alias target: {exc}", permanent=False) from None
            local.extend(resolved.local_accounts)
            remote.extend(NewRecipient(str(a), rcpt.orcpt, rcpt.notify) for a in resolved.remote)
        if not local and not remote:
            # Every recipient vanished (alias removed) since RCPT was accepted.
            raise IntakeError("No recipient exists any more", permanent=True, status="5.1.1")
        return Acceptance(
            queue_id=queue_id,
            blob=BlobRef(queue_id, message.size),
            sender=str(envelope.sender or ""),
            local_accounts=tuple(dict.fromkeys(local)),
            remote=tuple(dict.fromkeys(remote)),
            envid=envelope.envid,
            ret=envelope.ret,
            smtputf8=envelope.smtputf8,
            received_at=time.time(),
            trusted_origin=trusted_origin,
        )

    async def submit(self, envelope: Envelope, data: bytes) -> Accepted:
        """Accept a generated message (reports, CLI) through the same door: ours, so trusted."""
        queue_id = new_queue_id()
        message = self.open_message(queue_id, None, add_submission_headers=False)
        message.write(data)
        return await self.accept(queue_id, envelope, message, trusted_origin=True)

    def close(self) -> None:
        self.committer.close()
