"""Two `serve` processes on one data directory share the queue through leases.

The must-show of store v2: each queued message goes out once however the
two divide the work, and when one is killed the other finishes its work once
the dead one's leases run out (set to two seconds here to keep the test
short). The sink holds every message until both servers are up, so both
take part; it tells them apart by the name they greet it with. And a
database that goes away while a message is at the peer costs no second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deliveryworld import World, make_config
from smtppeers import Peer, Sink, Transaction, message_id, running_sink

from pgcluster import PgCluster
from postwarden.config import RelayConfig, load
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.factory import open_store
from postwarden.storage.interfaces import RecipientState
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from serverproc import HOSTNAME, ServerProcess

SECOND = "mail2.example.test"
ACTIVE_WINDOW = 100


async def queue_messages(server: ServerProcess, n: int) -> None:
    """Queue ``n`` messages to the sink through the real intake, before any server runs."""
    store = server.store
    aio = AsyncSqliteStore(store)
    intake = Intake(store.blobs, aio, RecipientPolicy(aio, RelayConfig(), HOSTNAME),
                    HOSTNAME, 50)
    envelope = Envelope(parse_address("sender@example.test"),
                        (DsnRecipient(parse_address("rcpt@sink.test")),))
    for start in range(0, n, 500):
        await asyncio.gather(*(
            intake.submit(envelope, f"Message-ID: <m{i}@example.test>\r\n\r\nhi\r\n".encode())
            for i in range(start, min(n, start + 500))
        ))
    aio.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as peer:
        yield peer


@contextlib.asynccontextmanager
async def two_servers(
    root: Path, sink: Sink, n: int, max_concurrent: int
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """``n`` messages queued, then two servers on the data directory, both up."""
    first = ServerProcess(
        root, routes=[{"domain": "sink.test", "to": f"127.0.0.1:{sink.port}"}],
        delivery={"lease_seconds": "2s", "active_window": ACTIVE_WINDOW,
                  "max_concurrent": max_concurrent, "max_per_destination": max_concurrent},
    )
    second = first.sharing(SECOND)
    await queue_messages(first, n)
    try:
        await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
        sink.open.set()
        yield first, second
        await until_queue_empty(first)
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)


async def until_queue_empty(server: ServerProcess, timeout: float = 60) -> None:
    """Bounded poll of the shared queue (it lives in SQLite; no event says it emptied)."""
    async with asyncio.timeout(timeout):
        while server.store.queue.queued_ids():
            await asyncio.sleep(0.1)


@pytest.mark.slow
class TestTwoServersOneDataDirectory:
    async def test_each_message_is_delivered_exactly_once(
        self, tmp_path: Path, sink: Sink
    ) -> None:
        """2,000 queued messages, two servers: every one arrives once, and both worked."""
        n = 2000
        async with two_servers(tmp_path, sink, n, max_concurrent=8):
            await sink.wait_until(lambda: len(sink.messages) >= n, timeout=90)
        copies = sink.copies()
        assert len(copies) == n
        assert max(copies.values()) == 1
        senders = Counter(tx.helo for tx in sink.messages)
        assert senders[HOSTNAME] > 0 and senders[SECOND] > 0

    async def test_when_one_is_killed_the_other_finishes_its_work(
        self, tmp_path: Path, sink: Sink
    ) -> None:
        """kill -9 mid-run: every message still arrives; only the dead one's can repeat."""
        n = 600
        async with two_servers(tmp_path, sink, n, max_concurrent=4) as (first, _):
            await sink.wait_until(
                lambda: sum(tx.helo == HOSTNAME for tx in sink.messages) >= 50, timeout=60)
            first.kill()
            await sink.wait_until(lambda: len(sink.copies()) >= n, timeout=60)
        copies = sink.copies()
        assert len(copies) == n
        by_first = {message_id(tx) for tx in sink.messages if tx.helo == HOSTNAME}
        repeated = {m for m, count in copies.items() if count > 1}
        assert repeated <= by_first  # a repeat is of the killed server's work, never B's
        # At least once: what the dead one had sent but not yet recorded goes again,
        # bounded by what it could hold at once (its active window of leases).
        assert len(repeated) <= ACTIVE_WINDOW


class TestLeaseTokens:
    async def test_an_attempt_whose_lease_ran_out_and_was_claimed_again_is_not_recorded(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The manager's clock passes its lease mid-delivery and it claims the entry again:
        the first attempt's result is refused and logged as a possible duplicate; the
        second claim's result is what counts."""
        release = [asyncio.Event(), asyncio.Event()]  # one per attempt
        held: list[Transaction] = []

        async def hold(tx: Transaction) -> None:
            held.append(tx)
            await release[len(held) - 1].wait()

        sink = Peer("sink.test", on_data=hold)
        await sink.start()
        skew = [0.0]  # seconds the manager's clock runs ahead of the wall
        cfg = make_config(tmp_path, delivery={"smarthost": f"127.0.0.1:{sink.port}",
                                              "lease_seconds": "5m"})
        world = await World(tmp_path, cfg, clock=lambda: time.time() + skew[0]).start()
        assert world.manager is not None
        caplog.set_level(logging.WARNING, "postwarden.delivery")
        try:
            queue_id = (await world.submit("rcpt@remote.test")).queue_id
            await world.until(lambda: len(held) == 1)
            first = world.queued(queue_id)
            assert first is not None and first.lease_token
            skew[0] = 301.0  # past the lease: the entry is due for a claim again
            world.manager.wake()
            await world.until(lambda: getattr(world.queued(queue_id), "lease_token", None)
                              != first.lease_token)
            release[0].set()
            lost = f"lease-lost queue_id={queue_id} outcome=possible-duplicate"
            await world.until(lambda: lost in caplog.text)
            still = world.queued(queue_id)
            assert still is not None and still.recipients[0].state is RecipientState.PENDING
            release[1].set()
            await world.until(lambda: world.queued(queue_id) is None)  # the second claim's
            assert caplog.text.count("lease-lost") == 1
            assert len(sink.messages) == 2  # the duplicate the log line warns of
        finally:
            for event in release:
                event.set()
            await world.stop()
            await sink.close()


@pytest.mark.slow
class TestDatabaseOutage:
    async def test_an_attempt_that_ends_in_an_outage_is_recorded_once_the_database_is_back(
        self, tmp_path: Path, own_pg_cluster: PgCluster
    ) -> None:
        """PostgreSQL stops while a message is at the peer: the manager keeps the result,
        retries the record, and once the database is back the queue empties without a
        second copy (not after the lease ran out, by a new claim sending it again). The
        blob collector's round in the outage is a log line too, not a traceback."""
        arrived, release = asyncio.Event(), asyncio.Event()

        async def hold(_: Transaction) -> None:
            arrived.set()
            await release.wait()

        peer = Peer("sink.test", on_data=hold)
        await peer.start()
        server = ServerProcess(
            tmp_path, routes=[{"domain": "sink.test", "to": f"127.0.0.1:{peer.port}"}],
            storage={"backend": "postgresql", "dsn": own_pg_cluster.database(),
                     "pool_size": 4, "timeout_seconds": 2, "blob_gc_interval_seconds": 1})
        await queue_messages(server, 1)
        try:
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(30):
                await arrived.wait()
            await asyncio.to_thread(own_pg_cluster.halt)
            release.set()  # the peer says 250 while the database is down
            await asyncio.to_thread(server.wait_for_log, "delivery store-unavailable",
                                    "queue_id=")
            await asyncio.to_thread(server.wait_for_log, "blob-gc-")  # its round: one line
            await asyncio.to_thread(own_pg_cluster.resume)
            store = open_store(load(server.config_path))  # the test's old pool saw it go
            try:
                async with asyncio.timeout(30):  # bounded: recorded within a few retries
                    while store.queue.queued_ids():
                        await asyncio.sleep(0.1)
            finally:
                store.close()
            assert len(peer.messages) == 1
            assert await asyncio.to_thread(server.stop) == 0
            assert "Traceback" not in "".join(server.output)
        finally:
            release.set()
            await asyncio.to_thread(server.kill)
            server.store.close()
            await peer.close()
