"""The greenlet bridge: blocking-style store code run on the event loop.

Unit tests of ``bridge`` first (no database), then what matters on a real
PostgreSQL: a cancelled store call gives its connection back and leaves no
half-done transaction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import psycopg
import pytest

from pgcluster import PgCluster
from postwarden.mail.mime import MessageStructure, MimeLimits
from postwarden.storage import bridge
from postwarden.storage.factory import async_boundary
from postwarden.storage.mailbox import (
    Flag,
    FlagChange,
    FlagMode,
    HeaderField,
    SearchHeader,
    UidSet,
)
from postwarden.storage.postgresql import PgStore
from postwarden.storage.sql import indexer
from storage.conftest import ALICE
from storage.test_pg_store import accept, two_nodes


async def answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def fail(message: str) -> None:
    await asyncio.sleep(0)
    raise LookupError(message)


class TestBridge:
    async def test_awaits_in_sequence_and_returns(self) -> None:
        def body(base: int) -> int:
            assert bridge.bridged()
            return sum(bridge.await_only(answer(base + i)) for i in range(3))

        assert await bridge.run(body, 10) == 33
        assert not bridge.bridged()  # the task itself is not a bridged greenlet

    async def test_an_awaited_exception_is_raised_where_it_was_awaited(self) -> None:
        def body() -> str:
            try:
                bridge.await_only(fail("gone"))
            except LookupError as exc:
                return f"caught {exc}"
            return "not raised"

        assert await bridge.run(body) == "caught gone"

    async def test_an_exception_of_the_body_reaches_the_caller(self) -> None:
        def body() -> None:
            bridge.await_only(answer(1))
            raise KeyError("mine")

        with pytest.raises(KeyError, match="mine"):
            await bridge.run(body)

    def test_await_only_outside_a_bridged_call_is_refused(self) -> None:
        coro = answer(1)
        with pytest.raises(RuntimeError, match="outside a bridged store call"):
            bridge.await_only(coro)
        coro.close()

    async def test_cancellation_unwinds_the_body(self) -> None:
        unwound: list[str] = []
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        def body() -> None:
            try:
                bridge.await_only(forever())
            finally:  # a ``with`` block's exit, e.g. a connection going back to its pool
                unwound.append(str(bridge.await_only(answer(7))))

        task = asyncio.create_task(bridge.run(body))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert unwound == ["7"]

    async def test_blocking_calls_go_to_a_thread_only_when_bridged(self) -> None:
        loop_thread = threading.get_ident()
        assert bridge.blocking(threading.get_ident) == loop_thread
        assert await bridge.run(bridge.blocking, threading.get_ident) != loop_thread

    async def test_entered_passes_the_exception_to_the_manager(self) -> None:
        seen: list[str] = []

        @asynccontextmanager
        async def managed() -> AsyncIterator[str]:
            try:
                yield "in"
            except ValueError as exc:
                seen.append(f"exit with {exc}")
                raise

        def body() -> None:
            with bridge.entered(managed()) as value:
                seen.append(value)
                raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            await bridge.run(body)
        assert seen == ["in", "exit with bad"]


@pytest.fixture
def node(pg_cluster: PgCluster) -> Iterator[PgStore]:
    with two_nodes(pg_cluster.schema()) as (one, _):
        yield one


class TestCancelledStoreCalls:
    async def test_cancelled_calls_give_their_connections_back(self, node: PgStore) -> None:
        """More cancelled calls than the pool has connections, each cancelled while
        it waited on PostgreSQL: the pool still serves the next call."""
        accept(node, "first", (ALICE,))
        box = node.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        aio = async_boundary(node)
        size = node.db.aio_pool.max_size
        try:
            with psycopg.connect(node.dsn) as locker:
                locker.execute("LOCK TABLE mailboxes IN ACCESS EXCLUSIVE MODE")
                calls = [asyncio.create_task(aio.status(box.id)) for _ in range(size + 2)]
                for _ in range(100):  # every call reaches PostgreSQL or waits for a connection
                    await asyncio.sleep(0)
                for call in calls:
                    call.cancel()
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(r, asyncio.CancelledError) for r in results)
                locker.rollback()
            assert (await aio.status(box.id)).messages == 1
        finally:
            await aio.aclose()

    async def test_a_cancelled_write_leaves_nothing_half_done(self, node: PgStore) -> None:
        accept(node, "first", (ALICE,))
        box = node.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        aio = async_boundary(node)
        try:
            with psycopg.connect(node.dsn) as locker:
                locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                change = FlagChange(FlagMode.ADD, Flag.SEEN, frozenset({"$Done"}))
                write = asyncio.create_task(aio.store_flags(box.id, UidSet.all(), change))
                for _ in range(100):
                    await asyncio.sleep(0)
                write.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await write
                locker.rollback()
            meta = await aio.metadata(box.id, UidSet.all())
            assert [(m.flags & Flag.SEEN, m.keywords) for m in meta] == [(Flag(0), frozenset())]
            assert (await aio.status(box.id)).highestmodseq == node.mailboxes.status(
                box.id).highestmodseq
        finally:
            await aio.aclose()


class TestWorkOffTheLoop:
    async def test_a_search_parses_its_backlog_on_a_thread(
        self, node: PgStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A search first indexes the messages waiting: reading them is awaited on
        the loop, parsing them (all CPU) runs on a thread, never on the loop."""
        for i in range(3):
            accept(node, f"waiting{i}", (ALICE,))
        box = node.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        parsed_on: list[str] = []
        parse = indexer.parse_message

        def recording(data: bytes, limits: MimeLimits) -> MessageStructure:
            parsed_on.append(threading.current_thread().name)
            return parse(data, limits)

        monkeypatch.setattr(indexer, "parse_message", recording)
        aio = async_boundary(node)
        try:
            hits = await aio.search(box.id, SearchHeader(HeaderField.SUBJECT, "nothing-matches"))
        finally:
            await aio.aclose()
        assert hits == []
        assert len(parsed_on) == 3
        assert threading.main_thread().name not in parsed_on
