"""Authentication throttling and the retry schedule: pure, with the clock passed in."""

from __future__ import annotations

import pytest

from postwarden.policy.retry import retry_delay
from postwarden.policy.throttle import AuthThrottle

IP = "192.0.2.1"


class TestAuthThrottle:
    """The decision on the store's counts of failures inside the window."""

    def test_blocks_an_address_at_its_limit_of_failures(self) -> None:
        """``limit`` failures from an address block it, whatever account it names next."""
        throttle = AuthThrottle(limit=3, window_seconds=900, account_limit=100)
        assert not throttle.is_blocked(2, 0, IP, "c", 2.0)
        assert throttle.is_blocked(3, 0, IP, "d", 3.0)

    def test_blocks_an_account_at_its_limit_of_failures(self) -> None:
        """The per-account limit counts guesses from every address."""
        throttle = AuthThrottle(limit=10, window_seconds=900, account_limit=3)
        assert not throttle.is_blocked(0, 2, "198.51.100.1", "carol", 4.0)
        assert throttle.is_blocked(0, 3, "198.51.100.1", "carol", 4.0)

    def test_owner_keeps_logging_in_from_where_it_logged_in_before(self) -> None:
        """A locked account still lets in the address that logged in as it within the window."""
        throttle = AuthThrottle(limit=10, window_seconds=100, account_limit=2)
        throttle.record_success(IP, "carol", 0.0)
        assert not throttle.is_blocked(0, 2, IP, "carol", 3.0)
        assert throttle.is_blocked(0, 2, "192.0.2.9", "carol", 3.0)
        assert throttle.is_blocked(0, 2, IP, "carol", 100.5)  # the login left the window
        assert throttle.is_blocked(10, 0, IP, "carol", 3.0)  # never past the address limit

    def test_the_window_starts_window_seconds_ago(self) -> None:
        """The store counts the failures after ``since(now)``."""
        assert AuthThrottle(limit=3, window_seconds=900).since(1000.0) == 100.0

    def test_an_address_is_known_good_for_the_window_after_a_login(self) -> None:
        """An address is known good for ``window`` seconds after a successful login."""
        throttle = AuthThrottle(limit=3, window_seconds=100)
        assert throttle.priority(0, IP, 0.0) != 0
        throttle.record_success(IP, "alice", 0.0)
        assert throttle.priority(0, IP, 99.0) == 0
        assert throttle.priority(0, IP, 100.0) != 0

    def test_remembers_at_most_max_keys_logins_forgetting_the_stalest(self) -> None:
        """Memory is bounded: the oldest login is forgotten first."""
        throttle = AuthThrottle(limit=10, window_seconds=900, max_keys=2)
        for n in range(1, 4):
            throttle.record_success(f"192.0.2.{n}", "a", float(n))
        assert [throttle.priority(0, f"192.0.2.{n}", 4.0) == 0 for n in (1, 2, 3)] == [
            False, False, True]

    def test_priority_puts_known_clients_first_and_failing_ones_last(self) -> None:
        """0 after a login, 1 for a stranger, 2 with recent failures (even after a login)."""
        throttle = AuthThrottle(limit=5, window_seconds=100)
        assert throttle.priority(0, IP, 0.0) == 1
        throttle.record_success(IP, "alice", 0.0)
        assert throttle.priority(0, IP, 1.0) == 0
        assert throttle.priority(1, IP, 3.0) == 2
        assert throttle.priority(0, IP, 103.0) == 1  # the login left the window

    def test_penalty_only_under_a_flood_and_only_for_failing_addresses(self) -> None:
        """Below flood_per_minute failures in a minute nobody waits; above it, only addresses
        with failures of their own do."""
        throttle = AuthThrottle(limit=100, window_seconds=900, account_limit=100,
                                flood_per_minute=3, failure_delay=2.0)
        throttle.record_failure(0.0)
        throttle.record_failure(1.0)
        assert throttle.penalty(2, 2.0) == 0.0
        throttle.record_failure(2.0)
        assert throttle.penalty(2, 3.0) == 2.0
        assert throttle.penalty(0, 3.0) == 0.0  # no failures of its own
        assert throttle.penalty(2, 61.0) == 0.0  # the first failure is a minute old


class TestRetryDelay:
    INTERVALS = (300, 600, 1800, 3600)

    @pytest.mark.parametrize(
        ("attempts", "delay"),
        [(0, 300), (1, 300), (2, 600), (3, 1800), (4, 3600), (5, 3600), (100, 3600), (-1, 300)],
    )
    def test_follows_the_table_and_repeats_the_last_interval(
        self, attempts: int, delay: int
    ) -> None:
        """Attempt n waits the n-th interval; past the table the last one repeats."""
        assert retry_delay(attempts, self.INTERVALS) == delay

    def test_single_interval_is_used_for_every_attempt(self) -> None:
        """A one-entry schedule is a fixed retry interval."""
        assert {retry_delay(n, (60,)) for n in range(0, 10)} == {60}
