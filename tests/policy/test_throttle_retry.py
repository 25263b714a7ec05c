"""Authentication throttling and the retry schedule: pure, with the clock passed in."""

from __future__ import annotations

import pytest

from postwarden.policy.retry import retry_delay
from postwarden.policy.throttle import AuthThrottle

IP = "192.0.2.1"


class TestAuthThrottle:
    def test_blocks_after_the_limit_of_failures(self) -> None:
        """``limit`` failures within the window block the address; one fewer does not."""
        throttle = AuthThrottle(limit=3, window_seconds=900, account_limit=100)
        for t, account in ((0.0, "a"), (1.0, "b")):
            throttle.record_failure(IP, account, t)
        assert not throttle.is_blocked(IP, "c", 2.0)
        throttle.record_failure(IP, "c", 2.0)
        assert throttle.is_blocked(IP, "d", 3.0)

    def test_blocks_only_the_failing_address(self) -> None:
        """Another client is not punished for one address's failures."""
        throttle = AuthThrottle(limit=2, window_seconds=900, account_limit=100)
        throttle.record_failure(IP, "a", 0.0)
        throttle.record_failure(IP, "a", 0.0)
        assert throttle.is_blocked(IP, "a", 1.0)
        assert not throttle.is_blocked("192.0.2.2", "b", 1.0)

    def test_window_slides_so_old_failures_are_forgiven(self) -> None:
        """A failure older than the window no longer counts."""
        throttle = AuthThrottle(limit=2, window_seconds=100)
        throttle.record_failure(IP, "a", 0.0)
        throttle.record_failure(IP, "a", 50.0)
        assert throttle.is_blocked(IP, "a", 99.0)
        assert not throttle.is_blocked(IP, "a", 100.0)  # the first failure left the window
        throttle.record_failure(IP, "a", 120.0)
        assert throttle.is_blocked(IP, "a", 121.0)  # 50 and 120 are both within 100 s
        assert not throttle.is_blocked(IP, "a", 221.0)

    def test_success_forgives_only_its_own_account(self) -> None:
        """A login as alice forgets alice's typos from that address, never bob's failures."""
        throttle = AuthThrottle(limit=3, window_seconds=900, account_limit=100)
        throttle.record_failure(IP, "bob", 0.0)
        throttle.record_failure(IP, "alice", 1.0)
        throttle.record_failure(IP, "bob", 2.0)
        throttle.record_success(IP, "alice", 3.0)
        assert throttle.failures(IP, 4.0) == 2
        throttle.record_failure(IP, "bob", 5.0)
        assert throttle.is_blocked(IP, "alice", 6.0)

    def test_failures_for_one_account_from_many_addresses_block_that_account(self) -> None:
        """The per-account limit counts guesses from every address; other accounts pass."""
        throttle = AuthThrottle(limit=10, window_seconds=900, account_limit=3)
        for n in range(3):
            throttle.record_failure(f"192.0.2.{n}", "carol", float(n))
        assert throttle.is_blocked("198.51.100.1", "carol", 4.0)
        assert not throttle.is_blocked("198.51.100.1", "dave", 4.0)

    def test_owner_keeps_logging_in_from_where_it_logged_in_before(self) -> None:
        """A locked account still lets in the address that logged in as it within the window."""
        throttle = AuthThrottle(limit=10, window_seconds=100, account_limit=2)
        throttle.record_success(IP, "carol", 0.0)
        throttle.record_failure("192.0.2.7", "carol", 1.0)
        throttle.record_failure("192.0.2.8", "carol", 2.0)
        assert not throttle.is_blocked(IP, "carol", 3.0)
        assert throttle.is_blocked("192.0.2.9", "carol", 3.0)
        throttle.record_failure("192.0.2.8", "carol", 101.0)  # the login left the window
        assert throttle.is_blocked(IP, "carol", 101.5)

    def test_known_good_means_a_login_within_the_window(self) -> None:
        """An address is known good for ``window`` seconds after a successful login."""
        throttle = AuthThrottle(limit=3, window_seconds=100)
        assert not throttle.known_good(IP, 0.0)
        throttle.record_success(IP, "alice", 0.0)
        assert throttle.known_good(IP, 99.0)
        assert not throttle.known_good(IP, 100.0)

    def test_success_for_unknown_address_is_harmless(self) -> None:
        """Forgetting an address that never failed does nothing."""
        throttle = AuthThrottle(limit=1, window_seconds=900)
        throttle.record_success(IP, "a", 0.0)
        assert not throttle.is_blocked(IP, "a", 0.0)

    def test_tracks_at_most_max_keys_forgetting_the_stalest(self) -> None:
        """Memory is bounded: the address that failed longest ago is dropped first."""
        throttle = AuthThrottle(limit=1, window_seconds=900, account_limit=100, max_keys=3)
        for n, t in ((1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0)):
            throttle.record_failure(f"192.0.2.{n}", "a", t)
        assert not throttle.is_blocked("192.0.2.1", "a", 4.0)
        assert all(throttle.is_blocked(f"192.0.2.{n}", "a", 4.0) for n in (2, 3, 4))

    def test_accounts_are_bounded_too(self) -> None:
        """Guessing at endless made-up accounts keeps at most ``max_keys`` of them."""
        throttle = AuthThrottle(limit=100, window_seconds=900, account_limit=1, max_keys=2)
        for n in range(5):
            throttle.record_failure(IP, f"user{n}", float(n))
        assert [throttle.is_blocked("192.0.2.9", f"user{n}", 6.0) for n in range(5)] == [
            False, False, False, True, True]

    def test_keeps_only_the_newest_failures_per_key(self) -> None:
        """A key holds at most ``limit`` failures, yet stays blocked while they are recent."""
        throttle = AuthThrottle(limit=2, window_seconds=100)
        for t in range(50):
            throttle.record_failure(IP, "a", float(t))
        assert throttle.failures(IP, 50.0) == 2
        assert throttle.is_blocked(IP, "a", 50.0)
        assert not throttle.is_blocked(IP, "a", 149.0)

    def test_a_new_failure_makes_an_address_fresh_again(self) -> None:
        """The bound evicts by last failure, not by first."""
        throttle = AuthThrottle(limit=1, window_seconds=900, account_limit=100, max_keys=2)
        throttle.record_failure("192.0.2.1", "a", 0.0)
        throttle.record_failure("192.0.2.2", "a", 1.0)
        throttle.record_failure("192.0.2.1", "a", 2.0)
        throttle.record_failure("192.0.2.3", "a", 3.0)
        assert throttle.is_blocked("192.0.2.1", "b", 4.0)
        assert not throttle.is_blocked("192.0.2.2", "b", 4.0)

    def test_priority_puts_known_clients_first_and_failing_ones_last(self) -> None:
        """0 after a login, 1 for a stranger, 2 with recent failures (even after a login)."""
        throttle = AuthThrottle(limit=5, window_seconds=100)
        assert throttle.priority(IP, 0.0) == 1
        throttle.record_success(IP, "alice", 0.0)
        assert throttle.priority(IP, 1.0) == 0
        throttle.record_failure(IP, "bob", 2.0)
        assert throttle.priority(IP, 3.0) == 2
        assert throttle.priority(IP, 103.0) == 1  # both left the window

    def test_penalty_only_under_a_flood_and_only_for_failing_addresses(self) -> None:
        """Below flood_per_minute failures in a minute nobody waits; above it, only addresses
        with failures of their own do."""
        throttle = AuthThrottle(limit=100, window_seconds=900, account_limit=100,
                                flood_per_minute=3, failure_delay=2.0)
        throttle.record_failure(IP, "a", 0.0)
        throttle.record_failure(IP, "a", 1.0)
        assert throttle.penalty(IP, 2.0) == 0.0
        throttle.record_failure("192.0.2.2", "b", 2.0)
        assert throttle.penalty(IP, 3.0) == 2.0
        assert throttle.penalty("192.0.2.9", 3.0) == 0.0  # no failures of its own
        assert throttle.penalty(IP, 61.0) == 0.0  # the first failure is a minute old

    def test_checking_does_not_count_as_failing(self) -> None:
        """Asking whether an address is blocked never blocks it."""
        throttle = AuthThrottle(limit=1, window_seconds=900)
        for t in range(10):
            assert not throttle.is_blocked(IP, "a", float(t))


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
