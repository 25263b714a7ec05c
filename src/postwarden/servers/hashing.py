"""A small pool for password hashing, with a priority queue and a deadline.

argon2id is deliberately expensive (~0.1 s of CPU and 64 MiB per check).
Handing every login to asyncio's default executor let a flood of failing
logins from rotating addresses queue hundreds of checks ahead of a real
user's (issue 8, defect 6: a POP3 login took 13 s). Here at most
``workers`` checks run at once; the others wait in order of priority (a
client that logged in before first, one with recent failures last), and a
login that cannot start within ``queue_timeout`` is told to come back later
instead of hanging.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class HashPoolBusy(Exception):
    """No worker became free before the deadline."""


class HashPool:
    def __init__(self, workers: int, queue_timeout: float) -> None:
        self.workers = workers
        self.queue_timeout = queue_timeout
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="password-hash")
        self._running = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def run(self, priority: int, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the pool once a worker is free (lower ``priority`` first).

        Raises ``HashPoolBusy`` if none is free within ``queue_timeout``.
        """
        await self._acquire(priority)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._running < self.workers and not self._waiting:
            self._running += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.queue_timeout)
        except BaseException as exc:  # the deadline, or the session is being cancelled
            if turn.done() and not turn.cancelled():
                self._release()  # the slot arrived as we gave up: pass it on
            else:
                turn.cancel()  # left in the heap; _release skips it
            if isinstance(exc, TimeoutError):
                raise HashPoolBusy from None
            raise

    def _release(self) -> None:
        """A worker is free: hand it to the first waiter, else count it free."""
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)  # the slot moves to the waiter: _running unchanged
                return
        self._running -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
