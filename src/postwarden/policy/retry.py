"""When to try a deferred recipient again: the configured intervals, the last repeating."""

from __future__ import annotations

import math
from collections.abc import Sequence


def retry_delay(attempts: int, intervals: Sequence[int]) -> int:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    index = min(max(attempts, 1), len(intervals)) - 1
    return intervals[index]


def next_retry(created: float, now: float, intervals: Sequence[int]) -> float:
    """The first point of the schedule after ``now``, counted from the message's arrival.

    The schedule is arrival + 5m, + 10m more, + 30m more... (the intervals
    summed, the last repeating). Counting from arrival, not from the number
    of attempts, means an attempt forced by `queue retry` leaves it as it
    was: the next scheduled attempt stays where it was.
    """
    at = created
    for n in range(1, len(intervals) + 1):
        at += retry_delay(n, intervals)
        if at > now:
            return at
    last = intervals[-1]
    return at + last * (math.floor((now - at) / last) + 1)
