"""The password-hash pool: bounded workers, priority order, a deadline to start."""

from __future__ import annotations

import asyncio
import threading

import pytest

from postwarden.servers.hashing import HashPool, HashPoolBusy


class Gate:
    """A job that blocks its worker thread until released (bounded: 30 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def job(self, name: str) -> str:
        self.started.release()
        self.release.wait(30)
        return name


async def started(gate: Gate) -> None:
    """Wait until a worker has started one job."""
    assert await asyncio.to_thread(gate.started.acquire, True, 30)


async def one_worker_busy(queue_timeout: float) -> tuple[HashPool, Gate, asyncio.Future[str]]:
    """A one-worker pool whose worker is held by a job named "running"."""
    pool = HashPool(workers=1, queue_timeout=queue_timeout)
    gate = Gate()
    running = asyncio.ensure_future(pool.run(0, gate.job, "running"))
    await started(gate)
    return pool, gate, running


class TestHashPool:
    async def test_runs_at_most_workers_at_once_and_lower_priority_first(self) -> None:
        """With the one worker busy, waiting jobs start by priority, FIFO within one."""
        pool = HashPool(workers=1, queue_timeout=30)
        gate = Gate()
        order: list[str] = []

        async def submit(priority: int, name: str) -> None:
            order.append(await pool.run(priority, gate.job, name))

        first = asyncio.ensure_future(submit(1, "first"))
        await started(gate)
        waiting = [asyncio.ensure_future(submit(p, n)) for p, n in
                   ((2, "failing"), (1, "unknown-a"), (0, "known"), (1, "unknown-b"))]
        await asyncio.sleep(0)  # let them queue
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(first, *waiting), 30)
        assert order == ["first", "known", "unknown-a", "unknown-b", "failing"]
        pool.close()

    async def test_a_job_that_cannot_start_in_time_is_busy(self) -> None:
        """The deadline bounds the wait for a worker, not the work: HashPoolBusy."""
        pool, gate, running = await one_worker_busy(queue_timeout=0.05)
        with pytest.raises(HashPoolBusy):
            await pool.run(0, gate.job, "late")
        gate.release.set()
        assert await asyncio.wait_for(running, 30) == "running"
        assert await asyncio.wait_for(pool.run(0, gate.job, "after"), 30) == "after"
        pool.close()

    async def test_a_cancelled_waiter_does_not_keep_its_place(self) -> None:
        """A session that ends while waiting gives up its turn; the next waiter runs."""
        pool, gate, running = await one_worker_busy(queue_timeout=30)
        gone = asyncio.ensure_future(pool.run(0, gate.job, "gone"))
        kept = asyncio.ensure_future(pool.run(1, gate.job, "kept"))
        await asyncio.sleep(0)
        gone.cancel()
        gate.release.set()
        assert await asyncio.wait_for(kept, 30) == "kept"
        assert gone.cancelled() and await running == "running"
        pool.close()
