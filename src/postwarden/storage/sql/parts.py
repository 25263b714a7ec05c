"""The other parts of a backend as the shared mailbox code uses them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postwarden.storage.interfaces import Acceptance, BlobRef
from postwarden.storage.mailbox import UidSet
from postwarden.storage.sql.dialect import C_contra


class BlobRows(Protocol[C_contra]):
    """A backend's blobs: reference counting inside the caller's transaction."""

    def keep_bytes(self, db: C_contra, blobs: Sequence[BlobRef]) -> None:
        """Store a group's bytes for the caller's transaction (before ``register``)."""

    def register(self, db: C_contra, blob: BlobRef, refs: int, now: float) -> int: ...
    def add_refs(self, db: C_contra, blob_ids: Iterable[int]) -> None: ...
    def release_ids(self, db: C_contra, blob_ids: Iterable[int], now: float) -> None: ...
    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes: ...


class QueueRows(Protocol[C_contra]):
    """A backend's queue: new entries inside the caller's transaction."""

    def enqueue(self, db: C_contra, acc: Acceptance) -> None: ...


@dataclass(frozen=True, slots=True)
class ScanTables:
    """Where ``prepare_search`` put a backlog's parsed fields and body text."""

    parsed: str
    body: str


class SearchIndex(Protocol):
    """The indexer, as reads ask it to catch up first."""

    def index_mailbox(self, mailbox_id: int, uids: UidSet | None = None) -> int: ...

    def prepare_search(self, mailbox_id: int, body: bool) -> ScanTables | None:
        """Index what a search needs; tables holding a backlog left unindexed, if any."""
