"""How long a client may take over what it is sending: a line or a message.

A timeout per read lets a client hold a session for ever by sending one
octet just before each read times out (slowloris). ``InputClock`` runs per
*unit* instead: one command line (however many reads it takes, an over-long
line being skipped included), or one message body (DATA, a BDAT chunk). The
machine says when a unit is complete; only then does the clock restart.

A message body gets ``data_seconds`` plus one second for every
``min_rate`` octets received, as Postfix's ``smtpd_min_data_rate``: a
large message sent at any reasonable pace is never cut, a trickle is. The
total is bounded by the message size limit over the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class InputClock:
    """Seconds left for the next read, for the unit the client is on."""

    __slots__ = ("_data", "_end", "_line", "_min_rate", "_now", "_rate_applies", "_unit")

    def __init__(self, line_seconds: float, data_seconds: float = 0.0, min_rate: int = 0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._line = line_seconds
        self._data = data_seconds
        self._min_rate = min_rate
        self._unit: Hashable = None
        self._end = 0.0
        self._rate_applies = False

    def seconds_left(self, unit: Hashable, in_message: bool = False) -> float:
        """Time the next read may wait: never more than one timeout, never past
        the unit's deadline. ``unit`` changes whenever the client finishes one."""
        now = self._now()
        per_read = self._data if in_message else self._line
        if unit != self._unit:
            self._unit = unit
            self._end = now + per_read
            self._rate_applies = in_message and self._min_rate > 0
        return min(self._end - now, per_read)

    def received(self, octets: int) -> None:
        """Message octets earn time at the minimum rate; command octets do not."""
        if self._rate_applies:
            self._end += octets / self._min_rate
