"""Failed-login throttling: limits on recent failures per client IP and per account.

Each failure is counted twice: against the client address (one guesser,
many accounts) and against the account it named (many guessers, one
account). The failures are kept by the store (``Directory.login_failures``),
so every process and node sharing it counts the same ones: a guesser gains
nothing by spreading over ``serve --workers`` or over nodes. This module is
the decision on those counts, a pure function of them and the clock.

A success forgets only the failures of that same address *and* account
pair (the store does it), so logging in as alice never forgives guesses at
bob's password, and alice's own typos from elsewhere still count against
her. An account over its limit is refused everywhere except from an address
where that account logged in within the window, so a guesser elsewhere
cannot lock its owner out; those logins are remembered here, per process
(at most ``max_keys``, the stalest forgotten first): after a restart, or on
another node, the owner waits out the window like anyone else.

The flood watch (failures per minute, whole server) is per process too: it
only decides who waits before a password check, never who is refused.
"""

from __future__ import annotations

from collections import OrderedDict, deque


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

    ``by_ip`` and ``by_account`` are the store's counts of failures inside
    the window. Also watches the failure rate of this server: at
    ``flood_per_minute`` failures in the last minute it is under a login
    flood, and clients with failures of their own are made to wait (see
    ``penalty``).
    """

    def __init__(self, limit: int, window_seconds: float, account_limit: int | None = None,
                 max_keys: int = 100_000, flood_per_minute: int = 60,
                 failure_delay: float = 2.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self.account_limit = limit if account_limit is None else account_limit
        self._good = _Seen(window_seconds, max_keys)  # "ip account" and "ip" that logged in
        self._flood: deque[float] = deque(maxlen=flood_per_minute)  # newest failures, any IP
        self.failure_delay = failure_delay

    def since(self, now: float) -> float:
        """Failures after this moment are inside the window."""
        return now - self.window

    def is_blocked(self, by_ip: int, by_account: int, ip: str, account: str, now: float) -> bool:
        """True while ``ip`` or ``account`` has reached its limit inside the window."""
        if by_ip >= self.limit:
            return True
        return by_account >= self.account_limit and not self._good.recent(f"{ip} {account}", now)

    def priority(self, by_ip: int, ip: str, now: float) -> int:
        """Order for scarce password checks: 0 for an address that logged in and has not
        failed since, 1 for one we know nothing about, 2 for one with recent failures."""
        if by_ip:
            return 2
        return 0 if self._good.recent(ip, now) else 1

    def penalty(self, by_ip: int, now: float) -> float:
        """Seconds to make this client wait before its password is checked: only under a
        flood, and only for an address that has failed itself (others wait nothing)."""
        flood = self._flood
        under_flood = len(flood) == flood.maxlen and flood[0] > now - 60
        return self.failure_delay if under_flood and by_ip else 0.0

    def record_failure(self, now: float) -> None:
        """For the flood watch; the failure itself goes to the store."""
        self._flood.append(now)

    def record_success(self, ip: str, account: str, now: float) -> None:
        """Remember the login; the store forgets this pair's failures."""
        self._good.touch(f"{ip} {account}", now)
        self._good.touch(ip, now)
