"""Failed-login throttling: a sliding window of failures per client IP and per account.

Each failure is counted twice: against the client address (one guesser,
many accounts) and against the account it named (many guessers, one
account). A success forgets only the failures of that same address *and*
account pair, so logging in as alice never forgives guesses at bob's
password, and alice's own typos from elsewhere still count against her.
An account over its limit is refused everywhere except from an address
where that account logged in within the window, so a guesser elsewhere
cannot lock its owner out.

Kept in memory: a restart forgives, which is the usual trade-off (Postfix's
anvil and Dovecot's auth penalty do the same). Bounded: at most ``max_keys``
addresses and as many accounts are tracked, the stalest forgotten first, and
each keeps only its newest ``limit`` failures (enough to know the limit is
reached inside the window).
"""

from __future__ import annotations

from collections import OrderedDict, deque

# One failure: when, and the other half of the (address, account) pair.
_Failure = tuple[float, str]


class _Window:
    """Recent failures per key, newest ``limit`` per key, at most ``max_keys`` keys."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._keys: OrderedDict[str, deque[_Failure]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        failures = self._keys.get(key)
        if failures is None:
            return 0
        while failures and failures[0][0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._keys[key]
        return len(failures)

    def add(self, key: str, other: str, now: float) -> None:
        self.count(key, now)  # drop what left the window
        failures = self._keys.setdefault(key, deque(maxlen=self.limit))
        failures.append((now, other))
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def forget(self, key: str, other: str) -> None:
        failures = self._keys.get(key)
        if failures is None:
            return
        kept = [f for f in failures if f[1] != other]
        if kept:
            self._keys[key] = deque(kept, maxlen=self.limit)
        else:
            del self._keys[key]


class _Seen:
    """Keys seen within the window (successful logins), at most ``max_keys``."""

    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def touch(self, key: str, now: float) -> None:
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)

    def recent(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        return last is not None and last > now - self.window


class AuthThrottle:
    """``limit`` failures per address, ``account_limit`` per account, within ``window_seconds``.

    Also watches the failure rate of the whole server: at ``flood_per_minute``
    failures in the last minute the server is under a login flood, and
    clients with failures of their own are made to wait (see ``penalty``).
    """

    def __init__(self, limit: int, window_seconds: float, account_limit: int | None = None,
                 max_keys: int = 100_000, flood_per_minute: int = 60,
                 failure_delay: float = 2.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self.account_limit = limit if account_limit is None else account_limit
        self._by_ip = _Window(limit, window_seconds, max_keys)
        self._by_account = _Window(self.account_limit, window_seconds, max_keys)
        self._good = _Seen(window_seconds, max_keys)  # "ip account" and "ip" that logged in
        self._flood: deque[float] = deque(maxlen=flood_per_minute)  # newest failures, any IP
        self.failure_delay = failure_delay

    def is_blocked(self, ip: str, account: str, now: float) -> bool:
        """True while ``ip`` or ``account`` has reached its limit inside the window."""
        if self._by_ip.count(ip, now) >= self.limit:
            return True
        return (self._by_account.count(account, now) >= self.account_limit
                and not self._good.recent(f"{ip} {account}", now))

    def known_good(self, ip: str, now: float) -> bool:
        """Did some account log in from ``ip`` within the window?"""
        return self._good.recent(ip, now)

    def failures(self, ip: str, now: float) -> int:
        """How many recent failures ``ip`` has (capped at the limit)."""
        return self._by_ip.count(ip, now)

    def priority(self, ip: str, now: float) -> int:
        """Order for scarce password checks: 0 for an address that logged in and has not
        failed since, 1 for one we know nothing about, 2 for one with recent failures."""
        if self._by_ip.count(ip, now):
            return 2
        return 0 if self._good.recent(ip, now) else 1

    def penalty(self, ip: str, now: float) -> float:
        """Seconds to make this client wait before its password is checked: only under a
        flood, and only for an address that has failed itself (others wait nothing)."""
        flood = self._flood
        under_flood = len(flood) == flood.maxlen and flood[0] > now - 60
        return self.failure_delay if under_flood and self._by_ip.count(ip, now) else 0.0

    def record_failure(self, ip: str, account: str, now: float) -> None:
        self._flood.append(now)
        self._by_ip.add(ip, account, now)
        self._by_account.add(account, ip, now)

    def record_success(self, ip: str, account: str, now: float) -> None:
        """Forget this pair's failures; other accounts' and other addresses' stay."""
        self._by_ip.forget(ip, account)
        self._by_account.forget(account, ip)
        self._good.touch(f"{ip} {account}", now)
        self._good.touch(ip, now)
