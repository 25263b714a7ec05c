"""Authentication throttling and the retry schedule: pure, with the clock passed in."""

from __future__ import annotations

import pytest

from postwarden.policy.retry import retry_delay
from postwarden.policy.throttle import AuthThrottle

IP = "192.0.2.1"


class TestAuthThrottle:
    def test_blocks_after_the_limit_of_failures(self) -> None:
        """``limit`` failures within the window block the address; one fewer does not."""
        throttle = AuthThrottle(limit=3, window_seconds=900)
        for t in (0.0, 1.0):
            throttle.record_failure(IP, t)
        assert not throttle.is_blocked(IP, 2.0)
        throttle.record_failure(IP, 2.0)
        assert throttle.is_blocked(IP, 3.0)

    def test_blocks_only_the_failing_address(self) -> None:
        """Another client is not punished for one address's failures."""
        throttle = AuthThrottle(limit=2, window_seconds=900)
        throttle.record_failure(IP, 0.0)
        throttle.record_failure(IP, 0.0)
        assert throttle.is_blocked(IP, 1.0)
        assert not throttle.is_blocked("192.0.2.2", 1.0)

    def test_window_slides_so_old_failures_are_forgiven(self) -> None:
        """A failure older than the window no longer counts."""
        throttle = AuthThrottle(limit=2, window_seconds=100)
        throttle.record_failure(IP, 0.0)
        throttle.record_failure(IP, 50.0)
        assert throttle.is_blocked(IP, 99.0)
        assert not throttle.is_blocked(IP, 100.0)  # the first failure left the window
        throttle.record_failure(IP, 120.0)
        assert throttle.is_blocked(IP, 121.0)  # 50 and 120 are both within 100 s
        assert not throttle.is_blocked(IP, 221.0)

    def test_success_resets_the_count(self) -> None:
        """A successful login clears the address's failures."""
        throttle = AuthThrottle(limit=2, window_seconds=900)
        throttle.record_failure(IP, 0.0)
        throttle.record_success(IP)
        throttle.record_failure(IP, 1.0)
        assert not throttle.is_blocked(IP, 2.0)

    def test_success_for_unknown_address_is_harmless(self) -> None:
        """Forgetting an address that never failed does nothing."""
        throttle = AuthThrottle(limit=1, window_seconds=900)
        throttle.record_success(IP)
        assert not throttle.is_blocked(IP, 0.0)

    def test_tracks_at_most_max_ips_forgetting_the_stalest(self) -> None:
        """Memory is bounded: the address that failed longest ago is dropped first."""
        throttle = AuthThrottle(limit=1, window_seconds=900, max_ips=3)
        for n, t in ((1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0)):
            throttle.record_failure(f"192.0.2.{n}", t)
        assert not throttle.is_blocked("192.0.2.1", 4.0)
        assert all(throttle.is_blocked(f"192.0.2.{n}", 4.0) for n in (2, 3, 4))

    def test_a_new_failure_makes_an_address_fresh_again(self) -> None:
        """The bound evicts by last failure, not by first."""
        throttle = AuthThrottle(limit=1, window_seconds=900, max_ips=2)
        throttle.record_failure("192.0.2.1", 0.0)
        throttle.record_failure("192.0.2.2", 1.0)
        throttle.record_failure("192.0.2.1", 2.0)
        throttle.record_failure("192.0.2.3", 3.0)
        assert throttle.is_blocked("192.0.2.1", 4.0)
        assert not throttle.is_blocked("192.0.2.2", 4.0)

    def test_checking_does_not_count_as_failing(self) -> None:
        """Asking whether an address is blocked never blocks it."""
        throttle = AuthThrottle(limit=1, window_seconds=900)
        for t in range(10):
            assert not throttle.is_blocked(IP, float(t))


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
