"""The shared SQL layer (``storage.sql``) through both backends' stores.

The conformance suite uses short UID sets; here a set long enough to take
each dialect's other path (SQLite: more ranges than one statement's
parameters allow, so several statements; PostgreSQL: more than the inline
BETWEENs, so two arrays of bounds), and the dialect's placeholders.
"""

from __future__ import annotations

import pytest

from postwarden.storage.factory import Store
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import (
    Field,
    Flag,
    FlagChange,
    FlagMode,
    SearchFlags,
    SearchUids,
    UidSet,
)
from postwarden.storage.postgresql.db import POSTGRESQL
from postwarden.storage.sqlite.db import SQLITE
from storage.conftest import ALICE
from storage.test_mailbox_store import PLAIN, deliver, inbox, uids

DOUBLINGS = 10  # one message copied onto itself ten times: 1,024 messages
ODD = UidSet.from_uids(range(1, 2 ** DOUBLINGS + 1, 2))  # 512 ranges of one UID


@pytest.fixture
def big(store: Store) -> int:
    """ALICE's INBOX with UIDs 1..1024 (copies share one blob: quick to make)."""
    deliver(store, PLAIN, ALICE)
    box = inbox(store)
    for _ in range(DOUBLINGS):
        store.mailboxes.copy(box, UidSet.all(), box)
    return box


def test_the_long_set_takes_each_dialects_other_path() -> None:
    """What the test below exercises: several SQLite statements, one PG array condition."""
    assert len(list(SQLITE.uid_clauses(ODD))) == 2
    ((condition, params),) = POSTGRESQL.uid_clauses(ODD)
    assert "unnest" in condition and [len(p) for p in params] == [512, 512]


def test_a_long_uid_set_through_every_operation(store: Store, big: int) -> None:
    """STORE, FETCH, SEARCH, COPY and EXPUNGE of 512 separate UIDs act on exactly those."""
    odd = list(ODD)
    assert uids(store, big) == list(range(1, 1025))
    result = store.mailboxes.store_flags(big, ODD, FlagChange(FlagMode.ADD, Flag.FLAGGED,
                                                              frozenset({"Odd"})))
    assert [u.uid for u in result.changed] == odd
    metas = store.mailboxes.metadata(big, ODD, Field.SIZE)
    assert [m.uid for m in metas] == odd
    assert all(m.flags == Flag.FLAGGED and m.keywords == {"Odd"} for m in metas)
    assert store.mailboxes.search(big, SearchUids(ODD)) == odd
    assert store.mailboxes.search(big, SearchFlags(Flag.FLAGGED)) == odd
    assert store.mailboxes.search(big, SearchFlags(keyword="Odd")) == odd
    target = store.mailboxes.create_mailbox(ALICE, "Odd")
    copied = store.mailboxes.copy(big, ODD, target.id)
    assert [s for s, _ in copied.mapping] == odd
    assert [t for _, t in copied.mapping] == list(range(1, 513))
    gone = store.mailboxes.expunge(big, ODD, deleted_only=False)
    assert [e.uid for e in gone] == odd
    assert uids(store, big) == list(range(2, 1025, 2))
    status = store.mailboxes.status(big)
    assert (status.messages, status.size) == (512, 512 * len(PLAIN))


def test_a_read_of_a_missing_mailbox_leaves_the_connection_usable(store: Store) -> None:
    """changes_since reads in one snapshot; its NotFound ends that snapshot, so the
    thread's next write transaction can begin."""
    with pytest.raises(NotFound):
        store.mailboxes.changes_since(999_999, 0)
    deliver(store, PLAIN, ALICE)
    assert uids(store, inbox(store)) == [1]


@pytest.mark.parametrize(("text", "expected"), [
    ("SELECT a FROM t WHERE x = ? AND y LIKE ?", "SELECT a FROM t WHERE x = %s AND y LIKE %s"),
    ("SELECT 100 % 7 WHERE z = ?", "SELECT 100 %% 7 WHERE z = %s"),
])
def test_placeholders_in_each_dialect(text: str, expected: str) -> None:
    """Statements are written for SQLite; psycopg's are translated, a literal % doubled."""
    assert SQLITE.sql(text) == text
    assert POSTGRESQL.sql(text) == expected
