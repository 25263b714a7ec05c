"""PeerDeadline: one timer per connection bounds every wait on the peer."""

from __future__ import annotations

import asyncio

import pytest

from postwarden.servers.common import PeerDeadline


async def never() -> None:
    await asyncio.get_running_loop().create_future()


async def test_a_wait_that_outlasts_its_deadline_raises_timeout() -> None:
    """The session task sees TimeoutError, not a cancellation."""
    deadline = PeerDeadline()
    with pytest.raises(TimeoutError):
        await deadline.wait(never(), 0.01)
    deadline.close()


async def test_a_wait_that_finishes_returns_its_result_and_later_waits_still_time_out() -> None:
    """A finished wait leaves the timer armed harmlessly; the next stall still ends."""
    deadline = PeerDeadline()
    assert await deadline.wait(asyncio.sleep(0, "data"), 30) == "data"
    with pytest.raises(TimeoutError):
        await deadline.wait(never(), 0.01)
    deadline.close()


async def test_a_shorter_wait_after_a_longer_one_is_not_late() -> None:
    """A timer armed for a long wait is moved sooner when a short wait needs it."""
    deadline = PeerDeadline()
    await deadline.wait(asyncio.sleep(0), 3600)
    with pytest.raises(TimeoutError):
        await deadline.wait(never(), 0.01)  # late would mean an hour: pytest-timeout ends it
    deadline.close()


async def test_time_between_waits_does_not_count() -> None:
    """The timer firing while the session is busy elsewhere cancels nothing."""
    deadline = PeerDeadline()
    await deadline.wait(asyncio.sleep(0), 0.01)
    fired = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, fired.set)
    await fired.wait()  # the 0.01 s timer has fired by now, outside any wait
    assert await deadline.wait(asyncio.sleep(0, "still here"), 30) == "still here"
    deadline.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """Shutdown cancelling the session is not mistaken for a timeout."""

    async def session() -> None:
        deadline = PeerDeadline()
        try:
            await deadline.wait(never(), 3600)
        finally:
            deadline.close()

    task = asyncio.ensure_future(session())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
