"""The only door into storage: every message, from SMTP or a generated report.

A message is streamed to its file by a ``MessageBuilder``; ``Intake.accept``
then resolves recipients (aliases, local vs remote) and hands the message to
the store's async boundary, which group-commits it: the files of a whole
batch are fsynced and their local deliveries and queue entries committed in
one transaction. Only when that returns does the caller say ``250 queued``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from postwarden.intake.headers import (
    MAX_HEADER_BYTES,
    HeaderSectionTooLarge,
    MessageBuilder,
    TraceInfo,
    delivery_headers,
    received_header,
)
from postwarden.intake.held import HeldWriter
from postwarden.intake.recipients import AliasLoop, RecipientPolicy
from postwarden.mail.address import AddressError
from postwarden.mail.envelope import Envelope
from postwarden.metrics import Metrics
from postwarden.policy.authchecks import Action, AuthVerdict
from postwarden.storage.boundary import AsyncIntakeStore
from postwarden.storage.interfaces import (
    Acceptance,
    BlobRef,
    BlobStore,
    BlobWriter,
    NewRecipient,
    SenderProof,
)
from postwarden.storage.mailbox import NO_FLAGS, Appended, Flag


class IntakeError(Exception):
    """The message cannot be accepted; ``permanent`` says whether to retry.

    ``status`` is the RFC 3463 enhanced status code that explains it;
    ``public`` is the text for the client when the message (for the log)
    names what a stranger must not learn, such as our alias addresses.
    """

    def __init__(self, message: str, permanent: bool, status: str = "5.4.6",
                 public: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.public = public or message


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


class Intake:
    def __init__(
        self,
        blobs: BlobStore,
        store: AsyncIntakeStore,
        recipients: RecipientPolicy,
        hostname: str,
        max_received_headers: int,
        on_queued: Callable[[], None] = lambda: None,
        max_header_size: int = MAX_HEADER_BYTES,
        metrics: Metrics | None = None,
    ) -> None:
        self.blobs = blobs
        self.metrics = metrics or Metrics()
        self.max_header_size = max_header_size
        self.recipients = recipients
        self.hostname = hostname
        self.max_received_headers = max_received_headers
        self.on_queued = on_queued
        self.store = store

    def open_message(self, queue_id: str, trace: TraceInfo | None,
                     add_submission_headers: bool, hold: bool = False) -> MessageBuilder:
        """``hold``: keep the bytes in memory for sender checks (see ``intake.held``)."""
        prefix = received_header(trace) if trace is not None else b""
        blob = self.blobs.new_blob(queue_id)
        return MessageBuilder(
            HeldWriter(blob) if hold else blob, prefix, hostname=self.hostname,
            add_submission_headers=add_submission_headers, max_header_bytes=self.max_header_size,
        )

    async def accept(self, queue_id: str, envelope: Envelope, message: MessageBuilder, *,
                     trusted_origin: bool, verdict: AuthVerdict | None = None) -> Accepted:
        """Commit the message durably; raises IntakeError (and discards it) on refusal.

        ``trusted_origin``: the client authenticated or may relay, so the
        envelope sender is believed (it decides what reports may carry).
        ``verdict``: the sender checks' answer on a stranger's message: a
        quarantine sends the local copies to Junk, and whether SPF or aligned
        DKIM vouched for the sender is kept with the queue entry.
        """
        try:
            message.finish()
            acceptance = await self._acceptance(queue_id, envelope, message, trusted_origin,
                                                verdict)
        except BaseException:
            message.writer.abort()
            raise
        # Shielded: once handed over, the commit finishes even if this session
        # is cancelled, so a committed message never loses its file.
        began = time.monotonic()
        await asyncio.shield(self.store.commit(message.writer, acceptance))
        self.metrics.store_call("commit", time.monotonic() - began)
        if acceptance.remote:
            self.on_queued()
        return Accepted(queue_id, acceptance.local_accounts, len(acceptance.remote))

    async def _acceptance(self, queue_id: str, envelope: Envelope, message: MessageBuilder,
                          trusted_origin: bool, verdict: AuthVerdict | None) -> Acceptance:
        if message.received_count >= self.max_received_headers:
            raise IntakeError("Too many hops (mail loop?)", permanent=True)
        local: list[str] = []
        remote: list[NewRecipient] = []
        for rcpt in envelope.recipients:
            try:
                resolved = await self.recipients.resolve(rcpt.address)
            except AliasLoop as exc:
                raise IntakeError(f"alias loop: {exc}", permanent=True,
                                  public="Mail loop in local forwarding") from None
            except AddressError as exc:
                # A stored alias target that no longer parses: the admin must fix it.
                raise IntakeError(f"bad alias target: {exc}", permanent=False) from None
            local.extend(resolved.local_accounts)
            remote.extend(NewRecipient(str(a), rcpt.orcpt, rcpt.notify) for a in resolved.remote)
        if not local and not remote:
            # Every recipient vanished (alias removed) since RCPT was accepted.
            raise IntakeError("No recipient exists any more", permanent=True, status="5.1.1")
        sender = str(envelope.sender or "")
        accounts = tuple(dict.fromkeys(local))
        return Acceptance(
            queue_id=queue_id,
            blob=BlobRef(queue_id, message.size),
            sender=sender,
            local_accounts=accounts,
            prefixes=tuple(delivery_headers(sender, account) for account in accounts),
            remote=tuple(dict.fromkeys(remote)),
            envid=envelope.envid,
            ret=envelope.ret,
            smtputf8=envelope.smtputf8,
            received_at=time.time(),
            trusted_origin=trusted_origin,
            sender_proof=SenderProof(verdict.sender_proof if verdict else ""),
            junk=verdict is not None and verdict.action is Action.QUARANTINE,
        )

    def open_append(self) -> BlobWriter:
        """A file for an IMAP APPEND: the client's bytes exactly, no trace header."""
        return self.blobs.new_blob(new_queue_id())

    async def append(self, writer: BlobWriter, account: str, mailbox: str, *,
                     flags: Flag = NO_FLAGS, keywords: frozenset[str] = frozenset(),
                     internaldate: float | None = None) -> Appended:
        """Store an appended message durably; (UIDVALIDITY, UID) for APPENDUID.

        Raises the store's NotFound (no such mailbox) or QuotaExceeded, having
        dropped the file.
        """
        return await asyncio.shield(self.store.append(writer, account, mailbox, flags,
                                                      keywords, internaldate))

    async def submit(self, envelope: Envelope, data: bytes) -> Accepted:
        """Accept a generated message (reports, CLI) through the same door: ours, so trusted."""
        queue_id = new_queue_id()
        message = self.open_message(queue_id, None, add_submission_headers=False)
        try:
            message.write(data)
        except HeaderSectionTooLarge as exc:
            message.writer.abort()
            raise IntakeError(str(exc), permanent=True, status="5.3.4") from None
        return await self.accept(queue_id, envelope, message, trusted_origin=True)
