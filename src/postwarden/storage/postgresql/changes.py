"""Change hints across nodes: PostgreSQL's ``NOTIFY``, heard on one ``LISTEN`` connection.

A trigger on ``mailboxes.highestmodseq`` (schema migration 1) calls
``pg_notify`` with ``id:modseq``; PostgreSQL sends it at commit, never for
a rollback, and folds identical hints of one transaction into one. Each
serving process keeps one connection that LISTENs (on the event loop,
psycopg's async connection) and feeds what it hears, its own commits
included, into the ``ChangeHub``. A lost connection is re-made after a
pause; hints missed meanwhile only delay an update, as IDLE also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from postwarden.storage.events import ChangeHub, MailboxChanged, MailboxWatch
from postwarden.storage.postgresql.db import error_line

log = logging.getLogger("postwarden.storage")

CHANNEL = "postwarden_changes"
RECONNECT_SECONDS = 1.0


def decode(payload: str) -> list[MailboxChanged]:
    """``id:modseq``; anything else is ignored (hints)."""
    box, _, modseq = payload.partition(":")
    if box.isdigit() and modseq.isdigit():
        return [MailboxChanged(int(box), int(modseq))]
    return []


class PgChanges:
    """ChangeFeed for one process; ``listen()`` starts hearing every node's commits."""

    def __init__(self, dsn: str, password: str | None) -> None:
        self.hub = ChangeHub()
        self._dsn = dsn
        self._password = password
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    def watch(self, mailbox_id: int) -> MailboxWatch:
        return self.hub.watch(mailbox_id)

    def listen(self) -> None:
        """Hear every node's changes from now on (call on the event loop)."""
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def listening(self) -> None:
        """Wait until the LISTEN connection is up (tests, start-up)."""
        assert self._ready is not None, "listen() first"
        await self._ready.wait()

    async def _listen(self) -> None:
        while True:  # for the life of the server; close() cancels it
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, password=self._password)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    assert self._ready is not None
                    self._ready.set()
                    async for note in conn.notifies():
                        self.hub.publish(decode(note.payload))
            except psycopg.Error as exc:
                log.warning("change listener lost its PostgreSQL connection: %s",
                            error_line(exc))
            if self._ready is not None:
                self._ready.clear()
            await asyncio.sleep(RECONNECT_SECONDS)

    def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._task.cancel()
            self._task = None
