"""Issue 13's must-show: three ``serve`` nodes on one PostgreSQL are one mail system.

- 5,000 messages accepted over SMTP by three nodes, each to a local account
  and to a remote one (a loopback sink that records what it gets): every
  local copy exactly once; the remote copies at least once, and with one
  node killed (``kill -9``) mid-delivery only the killed node's in-flight
  messages (its active window) may arrive twice, plus one for each lease a
  survivor lost under load, which it logs as ``lease-lost`` (a possible
  duplicate, as the issue allows). The lease is five seconds, so the killed
  node's work is taken over by the others shortly after it dies.
- IMAP IDLE on one node hears of mail accepted by another (NOTIFY/LISTEN),
  and still hears after its LISTEN connection is killed with
  ``pg_terminate_backend`` (the listener reconnects; IDLE also polls).
- Concurrent APPENDs to one mailbox from three nodes: UIDs unique and
  increasing, 1..n with none skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from imapclient import IMAPClient

from delivery.smtppeers import Sink, message_id, running_sink
from pgcluster import PgCluster
from serverproc import DOMAIN, HOSTNAME, PASSWORD, ServerProcess

# The number the issue asks for. Measured on the shared 2-core machine this
# was written on, under others' load (load average 10-13): 88 s for this
# test, most of it the SMTP acceptance (three nodes, PostgreSQL and the
# test's clients on two cores); far less on a quiet machine.
N = 5000
ACTIVE_WINDOW = 100  # leases one node holds at most: the bound on remote duplicates
CLIENTS_PER_NODE = 3  # SMTP connections submitting at once to each node
ALICE = f"alice@{DOMAIN}"
TIMEOUT = 30
NAMES = (HOSTNAME, "node2.test", "node3.test")
_MESSAGE_ID = re.compile(rb"Message-ID: <(m\d+)@example\.test>", re.IGNORECASE)

pytestmark = pytest.mark.slow


def nodes_on(root: Path, dsn: str, sink_port: int | None = None) -> list[ServerProcess]:
    """Three nodes (not started) on one database, each greeting with its own name."""
    routes = [] if sink_port is None else [{"domain": "sink.test",
                                            "to": f"127.0.0.1:{sink_port}"}]
    first = ServerProcess(
        root, routes=routes,
        storage={"backend": "postgresql", "dsn": dsn, "pool_size": 6},
        listen={"imap": ["127.0.0.1:0"]},
        relay={"trusted_networks": ["127.0.0.1/32"]},  # the test's clients may relay
        delivery={"lease_seconds": "5s", "active_window": ACTIVE_WINDOW,
                  "max_concurrent": 8, "max_per_destination": 8},
        imap={"idle_poll_ms": 1000},
    )
    first.add_user(ALICE)
    return [first, first.sharing(NAMES[1]), first.sharing(NAMES[2])]


@contextlib.contextmanager
def running(nodes: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    try:
        threads = [threading.Thread(target=node.start) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def submit(node: ServerProcess, numbers: range) -> None:
    """Each message to alice (local) and to the sink (remote), over one SMTP session."""
    with smtplib.SMTP(*node.addr("smtp"), timeout=TIMEOUT) as smtp:
        for i in numbers:
            smtp.sendmail("sender@remote.test", [ALICE, "rcpt@sink.test"],
                          f"Message-ID: <m{i}@example.test>\r\n\r\nhi\r\n".encode())


def local_ids(node: ServerProcess) -> Counter[str]:
    """The Message-IDs in alice's INBOX, read over IMAP in one FETCH."""
    with IMAPClient(*node.addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search(["ALL"])
        fetched = [data for start in range(0, len(uids), 500) for data in imap.fetch(
            uids[start:start + 500], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values()]
    found = Counter[str]()
    for data in fetched:
        match = _MESSAGE_ID.search(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
        assert match is not None
        found[match.group(1).decode()] += 1
    return found


async def lease_lost_lines(nodes: tuple[ServerProcess, ...], expected: int) -> int:
    """How many ``lease-lost`` lines the nodes logged, waiting up to 10 s for ``expected``."""
    def count() -> int:
        return sum("lease-lost" in line for node in nodes for line in node.output)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while count() < expected:
                await asyncio.sleep(0.1)
    return count()


def distinct_ids(sink: Sink) -> Callable[[], int]:
    """A counter of the distinct Message-IDs the sink has got, reading only what came
    since it was last asked: the wait asks after every message, and recounting all
    5,000 each time (``sink.copies()``) was quadratic, seconds of CPU in this process."""
    seen: set[str] = set()
    read = 0

    def count() -> int:
        nonlocal read
        new = sink.messages[read:]
        read += len(new)
        seen.update(message_id(tx) for tx in new)
        return len(seen)

    return count


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as peer:
        yield peer


class TestThreeNodes:
    # Its own waits are bounded (60 + 90 + 30 + 10 s after the submission); the run's
    # 120 s per test cut it off on a loaded machine with both test processes busy.
    @pytest.mark.timeout(300)
    async def test_messages_through_three_nodes_with_one_killed_mid_run(
        self, tmp_path: Path, pg_cluster: PgCluster, sink: Sink
    ) -> None:
        """0 lost, 0 local duplicates; remote repeats: the killed node's window, or logged."""
        nodes = nodes_on(tmp_path, pg_cluster.schema(), sink.port)
        distinct = distinct_ids(sink)
        with running(nodes):
            share = [range(start, N, len(nodes) * CLIENTS_PER_NODE)
                     for start in range(len(nodes) * CLIENTS_PER_NODE)]
            await asyncio.gather(*(
                asyncio.to_thread(submit, nodes[k % len(nodes)], numbers)
                for k, numbers in enumerate(share)))
            sink.open.set()  # the nodes' first sessions were held until every message was in
            victim = nodes[1]
            await sink.wait_until(
                lambda: sum(tx.helo == NAMES[1] for tx in sink.messages) >= 200, timeout=60)
            victim.kill()  # SIGKILL: its leases run out, the others take its work over
            await sink.wait_until(lambda: distinct() >= N, timeout=90)
            survivors = (nodes[0], nodes[2])
            async with asyncio.timeout(TIMEOUT):  # bounded: the queue empties once recorded
                while nodes[0].store.queue.queued_ids():
                    await asyncio.sleep(0.2)
            local = await asyncio.to_thread(local_ids, survivors[0])
            copies = sink.copies()
            by_victim = {message_id(tx) for tx in sink.messages if tx.helo == NAMES[1]}
            repeated = {m for m, count in copies.items() if count > 1}
            # Any repeat not of the killed node's is a survivor's lease that ran out
            # (a starved loop on a loaded machine): each is logged as a possible duplicate.
            admitted = await lease_lost_lines(survivors, len(repeated - by_victim))
        assert len(copies) == N  # no remote message lost
        assert len(local) == N and max(local.values()) == 1  # every local copy exactly once
        assert len(repeated & by_victim) <= ACTIVE_WINDOW  # the killed node's in-flight work
        assert len(repeated - by_victim) <= admitted
        helos = Counter(tx.helo for tx in sink.messages)
        assert all(helos[name] > 0 for name in NAMES)  # every node delivered


class TestChangesAcrossNodes:
    def test_idle_hears_mail_from_another_node_also_after_its_listener_is_killed(
        self, tmp_path: Path, pg_cluster: PgCluster
    ) -> None:
        """A hint from node two's commit wakes IDLE on node one; killing node one's
        LISTEN connection delays the next one at most until it reconnects or polls."""
        dsn = pg_cluster.schema()
        with running(nodes_on(tmp_path, dsn)[:2]) as (one, two), \
                IMAPClient(*one.addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
            imap.login(ALICE, PASSWORD)
            imap.select_folder("INBOX")
            imap.idle()
            submit(two, range(1))
            assert idle_hears(imap, 1)
            with psycopg.connect(dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN%'").fetchall()
            assert killed and all(row[0] for row in killed)
            submit(two, range(1, 2))
            assert idle_hears(imap, 2)
            imap.idle_done()


def idle_hears(imap: IMAPClient, exists: int) -> bool:
    """Bounded: each check waits up to half a second, ten times at most."""
    return any((exists, b"EXISTS") in imap.idle_check(timeout=0.5) for _ in range(10))


class TestAppendsFromThreeNodes:
    def test_uids_are_unique_and_increasing(
        self, tmp_path: Path, pg_cluster: PgCluster
    ) -> None:
        """Three clients, one per node, APPEND at once: UIDs 1..n, each client's rising."""
        per_client = 40
        got: dict[int, list[int]] = {}
        with running(nodes_on(tmp_path, pg_cluster.schema())) as nodes:

            def append(k: int) -> None:
                with IMAPClient(*nodes[k].addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
                    imap.login(ALICE, PASSWORD)
                    got[k] = [int(imap.append("INBOX", f"Subject: {k}.{i}\r\n\r\nx\r\n"
                                              .encode()).split()[2].rstrip(b"]"))
                              for i in range(per_client)]

            threads = [threading.Thread(target=append, args=(k,)) for k in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT * 2)
        uids = [uid for k in range(3) for uid in got[k]]
        assert sorted(uids) == list(range(1, 3 * per_client + 1))
        assert all(got[k] == sorted(got[k]) for k in range(3))
