"""The queue in its own process: SIGKILL mid-delivery, and the queue CLI on a live queue."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from deliveryworld import World, delivery_status, message
from smtppeers import Peer, Transaction

from postwarden.config import load

RUNNER = Path(__file__).with_name("run_queue.py")
TRY_LATER = "451 4.3.0 Try again later"


def write_config(root: Path, port: int) -> Path:
    path = root / "postwarden.toml"
    path.write_text(
        'hostname = "mx.local.test"\n'
        'data_dir = "var"\n'
        "[delivery]\n"
        'retry_intervals = ["1h"]\n'
        "max_per_destination = 1\n"
        'lease_seconds = "2s"\n'  # a killed runner's claims pass to the next one soon
        "connect_timeout = 5\n"
        "command_timeout = 10\n"
        "[[routes]]\n"
        'domain = "one.test"\n'
        f'to = "127.0.0.1:{port}"\n'
    )
    return path


class QueueProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(RUNNER), str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            assert (await self.proc.stdout.readline()).strip() == b"ready"

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def processes() -> AsyncIterator[list[QueueProcess]]:
    started: list[QueueProcess] = []
    yield started
    for proc in started:
        await proc.kill()


@pytest.fixture
async def feeder(tmp_path: Path) -> AsyncIterator[Callable[[Path], World]]:
    """A store and intake on the same data dir, without a queue manager of its own."""
    made: list[World] = []

    def make(config: Path) -> World:
        world = World(tmp_path, load(config))
        made.append(world)
        return world

    yield make
    for world in made:
        await world.stop()


async def postwarden(config: Path, *args: str) -> tuple[int, str, str]:
    """The real CLI in a subprocess (awaited, so the peers keep serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postwarden", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
class TestCrash:
    async def test_sigkill_during_delivery_loses_nothing(
        self, tmp_path: Path, processes: list[QueueProcess],
        feeder: Callable[[Path], World],
    ) -> None:
        """kill -9 while the peer holds a DATA reply; after restart every message arrives."""
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold_fourth(tx: Transaction) -> str | None:
            if len(peer.messages) == 3 and not release.is_set():
                held.set()
                await release.wait()
            return None

        peer = Peer(on_data=hold_fourth)
        await peer.start()
        try:
            config = write_config(tmp_path, peer.port)
            world = feeder(config)
            subjects = {f"crash {i}" for i in range(10)}
            for subject in sorted(subjects):
                await world.submit("bob@one.test", data=message(subject))
            first = QueueProcess(config)
            processes.append(first)
            await first.start()
            async with asyncio.timeout(20):
                await held.wait()
            await first.kill()
            release.set()
            second = QueueProcess(config)
            processes.append(second)
            await second.start()

            def got_all() -> bool:
                seen = {_subject(tx) for tx in peer.messages}
                return subjects <= seen

            await peer.wait_until(got_all, timeout=30)
            await world.until(lambda: world.store.queue.queued_ids() == [], timeout=15)
        finally:
            await peer.close()


def _subject(tx: Transaction) -> str:
    for line in tx.data.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    return ""


@pytest.mark.slow
class TestQueueCli:
    async def test_list_show_retry_remove_on_a_live_queue(
        self, tmp_path: Path, processes: list[QueueProcess],
        feeder: Callable[[Path], World],
    ) -> None:
        """The commands read and steer the queue while the queue manager runs."""
        refusing = [True]
        peer = Peer(on_rcpt=lambda _: TRY_LATER if refusing[0] else None)
        await peer.start()
        try:
            config = write_config(tmp_path, peer.port)
            world = feeder(config)
            live = QueueProcess(config)
            processes.append(live)
            await live.start()
            a = await world.submit("bob@one.test", data=message("first"))
            b = await world.submit("carol@one.test", data=message("second"))
            # From a client that neither logged in nor may relay: reports carry headers only.
            c = await world.submit("dave@one.test", data=message("third"), trusted=False)
            bounce = await world.submit("erin@one.test", sender=None, data=message("fourth"))

            def deferred() -> bool:
                msgs = [world.queued(q.queue_id) for q in (a, b, c, bounce)]
                return all(m is not None and m.recipients[0].attempts == 1 for m in msgs)

            await world.until(deferred)

            code, out, _ = await postwarden(config, "queue", "list")
            assert code == 0
            assert a.queue_id in out and b.queue_id in out
            assert "alice@local.test" in out and "bob@one.test" in out
            assert TRY_LATER in out

            code, out, _ = await postwarden(config, "queue", "show", a.queue_id)
            assert code == 0
            assert "state=pending" in out and "attempts=1" in out and TRY_LATER in out
            assert "origin:      vouched for" in out
            assert "in delivery: no" in out  # the attempt was recorded: the lease is back
            code, out, _ = await postwarden(config, "queue", "show", c.queue_id)
            assert code == 0 and "origin:      stranger (reports: headers only" in out

            for args in (("show", "NOPE"), ("retry", "NOPE"), ("remove", "NOPE")):
                code, out, err = await postwarden(config, "queue", *args)
                assert code != 0
                assert err == "postwarden: error: no such queue entry: NOPE\n"

            code, out, _ = await postwarden(config, "queue", "remove", b.queue_id)
            assert code == 0 and "no report sent" in out
            assert world.queued(b.queue_id) is None
            assert world.inbox() == []  # removal sends no report unless asked

            code, out, _ = await postwarden(config, "queue", "remove", c.queue_id, "--report")
            assert code == 0 and "report sent to <alice@local.test>" in out
            assert world.queued(c.queue_id) is None
            [report] = world.inbox()
            _, status = delivery_status(report)
            assert status["Final-Recipient"] == "rfc822; dave@one.test"
            assert status["Action"] == "failed" and status["Status"] == "5.0.0"
            assert "Removed from the queue by the administrator" in status["Diagnostic-Code"]
            assert report.get_payload(2).get_content_type() == "text/rfc822-headers"

            # A message from <> (itself a report) never gets one, even when asked.
            code, out, _ = await postwarden(config, "queue", "remove", bounce.queue_id, "--report")
            assert code == 0 and "no report sent" in out
            assert len(world.inbox()) == 1

            refusing[0] = False
            code, _, _ = await postwarden(config, "queue", "retry", a.queue_id)
            assert code == 0
            [tx] = await peer.wait_messages(1)
            assert tx.recipients == ["bob@one.test"]
            await world.until(lambda: world.queued(a.queue_id) is None)

            code, out, _ = await postwarden(config, "queue", "retry", "--all")
            assert code == 0
            code, out, _ = await postwarden(config, "queue", "list")
            assert code == 0 and "queue is empty" in out
            assert len(world.inbox()) == 1  # only the report that was asked for
        finally:
            await peer.close()
