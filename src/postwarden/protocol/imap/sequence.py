"""Sequence sets (RFC 9051 §9 ``sequence-set``), as values.

A set is kept as the client wrote it (ranges with ``*`` as None) because
``*`` means "the largest number in use" only once the mailbox is known:
``resolve`` turns it into sorted, merged, closed ranges for a given mailbox.
``$`` (RFC 5182 SEARCHRES) is its own value: the result the last SEARCH
saved, which only the session knows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``first:last`` as written; None is ``*``. A single number has first == last."""

    first: int | None
    last: int | None

    def render(self) -> str:
        first = "*" if self.first is None else str(self.first)
        if self.first == self.last:
            return first
        return f"{first}:{'*' if self.last is None else self.last}"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """One or more ranges; ``saved`` means ``$`` (then ``ranges`` is empty)."""

    ranges: tuple[SeqRange, ...]
    saved: bool = False

    def render(self) -> str:
        return "$" if self.saved else ",".join(r.render() for r in self.ranges)

    def resolve(self, largest: int) -> tuple[tuple[int, int], ...]:
        """Sorted, merged, closed ranges with ``*`` replaced by ``largest``.

        ``largest`` is the highest sequence number or UID in use (0 for an
        empty mailbox, where ``*`` matches nothing). Numbers above
        ``largest`` are kept: a UID range may name UIDs not in use, and the
        caller intersects with what exists.
        """
        if self.saved:
            raise ValueError("resolve the saved search result ($) in the session")
        spans: list[tuple[int, int]] = []
        for r in self.ranges:
            first = largest if r.first is None else r.first
            last = largest if r.last is None else r.last
            low, high = min(first, last), max(first, last)
            if high > 0:
                spans.append((max(low, 1), high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return tuple(merged)

    def numbers(self, largest: int) -> Iterator[int]:
        """Every number of ``resolve(largest)`` in order (mind the size of ``1:*``)."""
        for low, high in self.resolve(largest):
            yield from range(low, high + 1)


SAVED_RESULT = SequenceSet((), saved=True)


def compact(numbers: list[int] | tuple[int, ...]) -> str:
    """Sorted numbers as a short sequence set (``1:3,7``), e.g. for COPYUID; "" if none."""
    parts: list[str] = []
    ordered = sorted(set(numbers))
    start = prev = None
    for n in ordered:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
