"""Change events: telling the sessions that watch a mailbox that it changed.

A store publishes ``MailboxChanged`` after each commit that changed a mailbox,
never before, so a watcher that re-reads finds the change. The ``ChangeHub``
fans events out to the watches of this process; a backend's signal carries
them to the other processes on the same data (UNIX datagrams in the data
directory for SQLite, ``NOTIFY`` for PostgreSQL) and feeds what it hears
into the hub. Events are hints, coalesced per watch: a watcher learns
"mailbox 7 changed, up to modseq 42" and reads the changes itself, so a lost
hint only delays an update when the session also polls now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol


@dataclass(frozen=True, slots=True)
class MailboxChanged:
    """A committed change to one mailbox; ``modseq`` is its highest MODSEQ after it."""

    mailbox_id: int
    modseq: int


class ChangePublisher(Protocol):
    """Where a store sends the changes it has just committed (any thread)."""

    def publish(self, changes: Sequence[MailboxChanged]) -> None: ...


class ChangeFeed(Protocol):
    """What a session (IDLE, NOOP) asks to hear about one mailbox."""

    def watch(self, mailbox_id: int) -> MailboxWatch: ...


class MailboxWatch:
    """One session's interest in one mailbox; changes coalesce until taken.

    Made and used on the event loop; the hub delivers to it on the loop too.
    """

    def __init__(self, hub: ChangeHub, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id
        self.modseq = 0  # the highest modseq heard of so far
        self._hub = hub
        self._changed = asyncio.Event()

    def pending(self) -> bool:
        """For NOOP: has a change arrived since the last ``take`` or ``wait``?"""
        return self._changed.is_set()

    def take(self) -> int:
        """Clear the pending flag; return the highest modseq heard of."""
        self._changed.clear()
        return self.modseq

    async def wait(self) -> int:
        """For IDLE: wait for the next change (or return a pending one) and take it."""
        await self._changed.wait()
        return self.take()

    def notify(self, modseq: int) -> None:
        self.modseq = max(self.modseq, modseq)
        self._changed.set()

    def close(self) -> None:
        self._hub.forget(self)

    def __enter__(self) -> MailboxWatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChangeHub:
    """In-process fan-out from committed changes to the watches on each mailbox.

    ``publish`` may be called from any thread (the store's writer thread
    commits); delivery always happens on the event loop the watches live on.
    """

    def __init__(self) -> None:
        self._watches: dict[int, set[MailboxWatch]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def watch(self, mailbox_id: int) -> MailboxWatch:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        watch = MailboxWatch(self, mailbox_id)
        self._watches.setdefault(mailbox_id, set()).add(watch)
        return watch

    def forget(self, watch: MailboxWatch) -> None:
        watches = self._watches.get(watch.mailbox_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.mailbox_id]

    @property
    def watched(self) -> int:
        """How many mailboxes have at least one watch."""
        return len(self._watches)

    def publish(self, changes: Sequence[MailboxChanged]) -> None:
        loop = self._loop
        if loop is None or not changes:
            return  # nobody has ever watched here
        if threading.get_ident() == self._thread:
            self._deliver(changes)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop has no session left to tell
            loop.call_soon_threadsafe(self._deliver, tuple(changes))

    def _deliver(self, changes: Iterable[MailboxChanged]) -> None:
        for change in changes:
            for watch in self._watches.get(change.mailbox_id, ()):
                watch.notify(change.modseq)


def coalesce(changes: Iterable[MailboxChanged]) -> list[MailboxChanged]:
    """One event per mailbox, with its highest modseq: what a batch commit publishes."""
    highest: dict[int, int] = {}
    for change in changes:
        highest[change.mailbox_id] = max(highest.get(change.mailbox_id, 0), change.modseq)
    return [MailboxChanged(box, modseq) for box, modseq in highest.items()]
