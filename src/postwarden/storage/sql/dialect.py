"""The few ways the backends' SQL differs, as data the shared query layer reads.

Statements in ``storage.sql`` are written once, with ``?`` placeholders
(SQLite's own style, so its statements run as written); ``Dialect.sql``
turns them into psycopg's ``%s`` for PostgreSQL. What cannot be spelled
alike (a row lock, a bytewise collation, ``max`` vs ``greatest``, the
text-search match, long UID sets as arrays) is a named field here, so a
difference is visible in one place instead of in a second copy of a module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

from postwarden.storage.mailbox import UidSet


class Cursor(Protocol):
    """What the shared layer uses of a DB-API cursor (sqlite3's and psycopg's)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> object: ...


class Connection(Protocol):
    """What the shared layer uses of a connection (sqlite3's and psycopg's)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...
    def cursor(self) -> Cursor: ...


C = TypeVar("C", bound=Connection)
C_co = TypeVar("C_co", bound=Connection, covariant=True)
C_contra = TypeVar("C_contra", bound=Connection, contravariant=True)


class Database(Protocol[C_co]):
    """A backend's connection plumbing, as the shared layer takes it."""

    def tx(self) -> AbstractContextManager[C_co]:
        """One write transaction: committed at the end, rolled back on an exception."""

    def read(self) -> AbstractContextManager[C_co]:
        """A connection for reads, each statement seeing the latest commits."""

    def snapshot(self) -> AbstractContextManager[C_co]:
        """A connection whose reads all see one snapshot."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """The spellings that differ; everything else is the same SQL text."""

    placeholder: str  # "?" (written as is) or "%s" (psycopg)
    for_update: str  # appended to a SELECT that takes rows it will change
    greatest: str  # the two-argument maximum: SQLite's max(), PostgreSQL's greatest()
    bytewise: str  # appended to ORDER BY name for byte order (IMAP LIST)
    like: str  # ASCII case-insensitive pattern match: LIKE (SQLite), ILIKE
    fold: str  # Unicode case folding of a text: pw_fold (ours), lower
    position: str  # 1-based position of a substring, 0 if absent: instr, strpos
    # A body search: a condition with ``{table}`` (the FTS table, SQLite) and one
    # placeholder for the words, each written with ``word`` and joined by ``word_and``.
    body_match: str
    word: str
    word_and: str
    ranges_per_statement: int  # UID ranges spelled out as BETWEENs in one statement
    # More ranges than that: one condition over two arrays of bounds, or, without
    # arrays (""), one statement per ``ranges_per_statement`` ranges.
    range_arrays: str = ""

    def sql(self, text: str) -> str:
        """A statement written with ``?`` placeholders, in this dialect."""
        return text if self.placeholder == "?" else _percent(text)

    def uid_condition(self, uids: UidSet, column: str = "m.uid") -> tuple[str, list[object]]:
        """One condition on ``column`` covering ``uids`` and its parameters."""
        ranges = uids.ranges
        if not ranges:
            return "false", []
        if len(ranges) > self.ranges_per_statement and self.range_arrays:
            return (self.range_arrays.format(column=column),
                    [[r[0] for r in ranges], [r[1] for r in ranges]])
        return ("(" + " OR ".join([f"{column} BETWEEN ? AND ?"] * len(ranges)) + ")",
                [n for r in ranges for n in r])

    def uid_clauses(self, uids: UidSet, column: str = "m.uid"
                    ) -> Iterator[tuple[str, list[object]]]:
        """``uid_condition`` in as many pieces as the statements' parameters allow
        (one, but for a long set without arrays): one statement each."""
        ranges = uids.ranges
        step = self.ranges_per_statement
        if len(ranges) <= step or self.range_arrays:
            yield self.uid_condition(uids, column)
            return
        for at in range(0, len(ranges), step):
            yield self.uid_condition(UidSet(ranges[at:at + step]), column)


@cache
def _percent(text: str) -> str:
    """psycopg's placeholders; a literal ``%`` is doubled."""
    return text.replace("%", "%%").replace("?", "%s")
