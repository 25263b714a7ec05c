"""The async boundary on PostgreSQL: the store's calls run natively on the event loop.

The SQLite boundary hands each call to a thread, because sqlite3 blocks.
Here each call runs in a bridged greenlet (``bridge.run``): the same query
code, its database I/O awaited on the loop through psycopg's async pool.
What the SQLite boundary adds on top is kept as it is (inherited): the
directory answers cached for a second, acceptances and delivery results
group-committed, one transaction per batch. Writes are not serialised on one
writer as there: PostgreSQL orders concurrent transactions itself (row
locks), as it must for several nodes anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from postwarden.storage import bridge
from postwarden.storage import mailbox as mb
from postwarden.storage.boundary import ReadBlob
from postwarden.storage.postgresql.store import PgStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore

T = TypeVar("T")


class AsyncPgStore(AsyncSqliteStore):
    """Every async store Protocol over a PgStore, without threads for the database."""

    def __init__(self, store: PgStore) -> None:
        super().__init__(store)
        self.pg = store

    async def _read(self, func: Callable[..., T], *args: object) -> T:
        return await bridge.run(func, *args)

    _write = _read

    async def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        return await bridge.run(self.store.blobs.read_blob, name, start, length)

    async def read_messages(self, mailbox_id: int, uids: mb.UidSet, fields: mb.Field,
                            use: Callable[[list[mb.MessageMeta], ReadBlob], T]) -> T:
        """The metadata read on the loop; ``use`` (it parses and renders) on a file
        thread, its reads handed back to the loop one by one."""
        meta = await bridge.run(self.store.mailboxes.metadata, mailbox_id, uids, fields)
        loop = asyncio.get_running_loop()

        def read(name: str, start: int = 0, length: int | None = None) -> bytes:
            return asyncio.run_coroutine_threadsafe(
                self.read_blob(name, start, length), loop).result()

        return await loop.run_in_executor(self._files, use, meta, read)

    async def aclose(self) -> None:
        await super().aclose()
        await self.pg.db.aclose()
