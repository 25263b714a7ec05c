"""Per-IP authentication failure throttling (a sliding window of failures).

Kept in memory: a restart forgives, which is the usual trade-off (Postfix's
anvil and Dovecot's auth penalty do the same). Bounded: at most ``max_ips``
addresses are tracked, the stalest forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class AuthThrottle:
    def __init__(self, limit: int, window_seconds: float, max_ips: int = 100_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_ips = max_ips
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, ip: str, now: float) -> deque[float]:
        times = self._failures.get(ip)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[ip]
        return times

    def is_blocked(self, ip: str, now: float) -> bool:
        return len(self._recent(ip, now)) >= self.limit

    def record_failure(self, ip: str, now: float) -> None:
        times = self._recent(ip, now)
        times.append(now)
        self._failures[ip] = times
        self._failures.move_to_end(ip)
        while len(self._failures) > self.max_ips:
            self._failures.popitem(last=False)

    def record_success(self, ip: str) -> None:
        self._failures.pop(ip, None)
