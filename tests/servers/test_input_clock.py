"""InputClock: deadlines per line or message, not per read (issue 8, defect 7)."""

from __future__ import annotations

from postwarden.servers.deadlines import InputClock


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_unit_keeps_its_deadline_across_reads() -> None:
    """Reads within one line share one deadline; a new line gets a fresh one."""
    t = FakeTime()
    clock = InputClock(line_seconds=100, now=t)
    assert clock.seconds_left(1) == 100
    t.now += 60
    clock.received(50_000)  # command octets earn no time
    assert clock.seconds_left(1) == 40
    t.now += 41
    assert clock.seconds_left(1) == -1
    assert clock.seconds_left(2) == 100


def test_message_octets_earn_time_at_the_minimum_rate() -> None:
    """A body gets data_seconds plus octets / min_rate, never more than one
    timeout per read."""
    t = FakeTime()
    clock = InputClock(line_seconds=10, data_seconds=60, min_rate=100, now=t)
    unit = (5, True)
    assert clock.seconds_left(unit, in_message=True) == 60
    t.now += 55
    clock.received(1_000)  # ten more seconds
    assert clock.seconds_left(unit, in_message=True) == 15
    clock.received(1_000_000)
    assert clock.seconds_left(unit, in_message=True) == 60  # one read's timeout at most
    assert clock.seconds_left((6, False)) == 10
