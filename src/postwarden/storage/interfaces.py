"""The narrow store interfaces every other room talks to.

They speak the project's own value types only, so a PostgreSQL backend can
be dropped in behind the same Protocols (and the same conformance tests).
Each room is handed only the interface it needs: the SMTP server gets a
``Directory`` and the ``Intake``'s ``DeliveryStore``, never mailbox writes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from postwarden.storage.blobmeter import BlobFacts


class StoreError(Exception):
    """A store operation failed in a way the caller should report."""


class AlreadyExists(StoreError):
    pass


class NotFound(StoreError):
    pass


class DatabaseUnusable(StoreError):
    """The database is empty, corrupt, not ours or too new: nothing may start on it."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (down, restarting, no connection in time).

    Temporary: servers answer "try again later" (SMTP 451 4.3.0, IMAP
    NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]) and carry on; nothing was committed.
    """


@dataclass(frozen=True, slots=True)
class Account:
    address: str  # lower-case key form, "user@example.test"
    password_hash: str


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A message file that has been written and fsynced.

    ``facts`` are measured while the bytes were written; without them (a
    reference made by hand) the store measures the file when committing.
    """

    name: str
    size: int
    facts: BlobFacts | None = None


@dataclass(frozen=True, slots=True)
class UnknownFile:
    """A message file the database has no row for (a crash, or an older database)."""

    name: str
    size: int
    modified: float


class BlobWriter(Protocol):
    """Streams one message into a temporary file; commit() fsyncs it."""

    @property
    def size(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    def commit(self) -> BlobRef: ...
    def abort(self) -> None: ...


class RecipientState(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class SenderProof(enum.Enum):
    """What vouched for a stranger's envelope sender when the message came in.

    Reports go only to a sender some check vouched for (no backscatter to
    forged senders): SPF passed for its domain, or a DKIM signature aligned
    with it did.
    """

    UNCHECKED = ""  # a trusted client, checks off, or queued before this was kept
    SPF = "spf"
    DKIM = "dkim"
    NONE = "none"  # checked, and neither passed


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    id: int
    queue_id: str
    address: str
    orcpt: str | None
    notify: tuple[str, ...]
    state: RecipientState
    attempts: int
    next_attempt: float
    last_error: str | None
    remote_mta: str | None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    blob: str
    size: int
    sender: str  # "" for the null sender
    created: float
    envid: str | None
    ret: str | None
    smtputf8: bool
    delay_notified: bool
    recipients: tuple[QueueRecipient, ...]
    # The client that handed it over had authenticated or may relay, so the
    # envelope sender is believed (see ``Acceptance.trusted_origin``).
    trusted_origin: bool = False
    sender_proof: SenderProof = SenderProof.UNCHECKED
    # The queue manager holding it for delivery, until when (0: nobody), and
    # the claim's own token: results are recorded only with the current one.
    lease_owner: str | None = None
    lease_until: float = 0.0
    lease_token: str | None = None


@dataclass(frozen=True, slots=True)
class NewRecipient:
    """A remote recipient to be queued, with its DSN parameters."""

    address: str
    orcpt: str | None = None
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Acceptance:
    """One accepted message: what the intake commits in a single transaction."""

    queue_id: str
    blob: BlobRef
    sender: str
    local_accounts: tuple[str, ...]  # each gets the message in INBOX, stored once
    remote: tuple[NewRecipient, ...]
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    received_at: float = 0.0
    # True when the client had authenticated or was allowed to relay: only
    # then may reports carry the whole message or announce success (a
    # stranger's envelope sender may be a forged victim: backscatter).
    trusted_origin: bool = False
    sender_proof: SenderProof = SenderProof.UNCHECKED
    # The local copies go to each account's \\Junk mailbox (created if
    # missing), not INBOX: sender checks quarantined the message.
    junk: bool = False
    # Per local account, in the same order: the header lines its copy starts
    # with (Return-Path, Delivered-To), held on the copy's row, not in the
    # shared file, so the queue's copy never carries them. Empty: none.
    prefixes: tuple[bytes, ...] = ()

    def local_copies(self) -> Iterator[tuple[str, bytes]]:
        """Each local account with the header lines its copy starts with."""
        prefixes = self.prefixes or (b"",) * len(self.local_accounts)
        return zip(self.local_accounts, prefixes, strict=True)


@dataclass(frozen=True, slots=True)
class LoginFailures:
    """Failed logins inside the throttle's window, counted over every server sharing the
    store: from one client address (any account), and for one account (any address)."""

    by_ip: int = 0
    by_account: int = 0


class Directory(Protocol):
    """Domains, accounts, aliases, the POP/IMAP-before-SMTP login record, failed logins."""

    def is_local_domain(self, domain: str) -> bool: ...
    def list_domains(self) -> list[str]: ...
    def add_domain(self, domain: str) -> None: ...
    def remove_domain(self, domain: str) -> None: ...

    def get_account(self, address: str) -> Account | None: ...
    def list_accounts(self) -> list[str]: ...
    def add_account(self, address: str, password_hash: str) -> None: ...
    def set_password(self, address: str, password_hash: str) -> None: ...
    def remove_account(self, address: str) -> None: ...

    def alias_targets(self, address: str) -> tuple[str, ...] | None: ...
    def list_aliases(self) -> list[tuple[str, tuple[str, ...]]]: ...
    def add_alias(self, address: str, targets: Sequence[str]) -> None: ...
    def remove_alias(self, address: str) -> None: ...

    def record_login(self, ip: str, at: float) -> None: ...
    def last_login(self, ip: str) -> float | None: ...
    def expire_logins(self, before: float) -> int: ...

    def record_login_failure(self, ip: str, account: str, at: float) -> None: ...
    def login_failures(self, ip: str, account: str, since: float) -> LoginFailures: ...
    # A successful login forgets the failures of that same (address, account) pair only.
    def forget_login_failures(self, ip: str, account: str) -> None: ...
    def expire_login_failures(self, before: float) -> int: ...


class BlobStore(Protocol):
    """Message bytes, referenced by name, read by range; never a path."""

    def new_blob(self, name: str) -> BlobWriter: ...
    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes: ...


class DeliveryStore(Protocol):
    """The intake's door: commits accepted messages atomically, in batches."""

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None: ...


class QueueStore(Protocol):
    """The outbound queue: per-recipient state, durable, shared by queue managers.

    A manager (``owner``) claims due messages under a lease until ``until``;
    no other claims them before the lease runs out. Each claim gets a fresh
    ``lease_token``. ``record_attempts`` takes (owner, attempt) pairs, records
    in one transaction only those whose owner still holds the lease under the
    attempt's token (True), releases it, and drops entries left with nothing
    pending. The rest serves the ``queue`` CLI.
    """

    def claim_due(
        self, owner: str, now: float, limit: int, until: float
    ) -> list[QueuedMessage]: ...
    def next_due_time(self) -> float | None: ...
    def extend_leases(self, owner: str, until: float) -> int: ...
    def release_leases(self, owner: str) -> int: ...
    def record_attempts(self, batch: Sequence[tuple[str, AttemptRecord]]) -> list[bool]: ...
    def queued_ids(self) -> list[str]: ...
    def get_queued(self, queue_id: str) -> QueuedMessage | None: ...
    def retry_now(self, queue_id: str | None, now: float) -> int: ...
    def remove_queued(self, queue_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The results of one delivery attempt for one queued message.

    ``failed`` and ``deferred`` carry (recipient id, reply, remote MTA), and
    deferred ones also the next attempt time; ``delay_notified`` marks that
    the one delay notice has gone out. ``lease_token`` is the token of the
    claim the attempt was made under (``QueuedMessage.lease_token``).
    """

    queue_id: str
    delivered: tuple[int, ...] = ()
    failed: tuple[tuple[int, str, str | None], ...] = ()
    deferred: tuple[tuple[int, str, str | None, float], ...] = ()
    delay_notified: bool = False
    lease_token: str | None = None
