"""When to try a deferred recipient again: the configured intervals, the last repeating."""

from __future__ import annotations

from collections.abc import Sequence


def retry_delay(attempts: int, intervals: Sequence[int]) -> int:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    index = min(max(attempts, 1), len(intervals)) - 1
    return intervals[index]
