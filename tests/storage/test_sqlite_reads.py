"""Read paths of the SQLite store that take shortcuts, checked against the long way.

SEARCH while the indexer has a long backlog: the messages it has not reached
are scanned for just what the search needs, and the answers are the ones the
indexes give once they have caught up. The UID list of a mailbox without
gaps is a range. Real SQLite, real message files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.storage.mailbox import (
    Field,
    HeaderField,
    Query,
    SearchAnd,
    SearchBody,
    SearchHeader,
    SearchNot,
    SearchOr,
    SearchSize,
    UidSet,
)
from postwarden.storage.sqlite import SqliteStore, indexer
from storage.conftest import ALICE
from storage.test_mailbox_store import MULTIPART, PLAIN, deliver, inbox

QUERIES: list[Query] = [
    SearchHeader(HeaderField.SUBJECT, "REPORT"),
    SearchHeader(HeaderField.FROM, "jürgen"),
    SearchNot(SearchHeader(HeaderField.SUBJECT, "report")),
    SearchBody("harbour"),
    SearchBody("harbour", with_headers=True),
    SearchBody("münchen"),
    SearchBody("PNGDATA"),
    SearchOr((SearchBody("münchen"), SearchHeader(HeaderField.SUBJECT, "news"))),
    SearchAnd((SearchBody("harbour", True), SearchSize(smaller_than=len(PLAIN)))),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """Four messages in ALICE's INBOX, the first two indexed, the rest waiting."""
    store = SqliteStore(tmp_path / "data")
    store.directory.add_domain("example.test")
    store.directory.add_account(ALICE, "hash")
    deliver(store, PLAIN, ALICE)
    deliver(store, b"Subject: other\r\n\r\nnothing\r\n", ALICE)
    store.indexer.index_pending(100)
    deliver(store, MULTIPART, ALICE)
    deliver(store, b"Subject: harbour news\r\n\r\nsmall\r\n", ALICE)
    yield store
    store.close()


def waiting(store: SqliteStore) -> int:
    return len(store.indexer.waiting(inbox(store)))


def test_search_scans_a_backlog_instead_of_waiting(store: SqliteStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexer, "SEARCH_INDEX_NOW", 1)  # a backlog of 2 is "long"
    box = inbox(store)
    scanned = [store.mailboxes.search(box, q) for q in QUERIES]
    assert waiting(store) == 2  # answered without indexing them
    assert scanned[0] == [1] and scanned[5] == [3] and scanned[4] == [1, 4]
    store.indexer.index_pending(100)
    assert waiting(store) == 0
    assert [store.mailboxes.search(box, q) for q in QUERIES] == scanned


def test_a_short_backlog_is_indexed_first(store: SqliteStore) -> None:
    assert store.mailboxes.search(inbox(store), SearchBody("münchen")) == [3]
    assert waiting(store) == 0


def test_a_missing_file_in_the_backlog_only_misses_itself(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexer, "SEARCH_INDEX_NOW", 1)
    box = inbox(store)
    name = store.mailboxes.metadata(box, UidSet.from_uids([3]), Field.SIZE)[0].blob
    assert name is not None
    store.blobs.blob_path(name.name).unlink()
    assert store.mailboxes.search(box, SearchHeader(HeaderField.SUBJECT, "news")) == [4]
    assert store.mailboxes.search(box, SearchNot(SearchBody("zzz"))) == [1, 2, 3, 4]


@pytest.mark.parametrize(("gone", "left"), [
    ([], [1, 2, 3, 4]), ([2], [1, 3, 4]), ([1], [2, 3, 4]), ([4], [1, 2, 3]),
    ([1, 2, 3, 4], []),
])
def test_uid_list_with_and_without_gaps(store: SqliteStore, tmp_path: Path,
                                        gone: list[int], left: list[int]) -> None:
    box = inbox(store)
    if gone:
        store.mailboxes.expunge(box, UidSet.from_uids(gone), deleted_only=False)
    fresh = SqliteStore(tmp_path / "data")  # another process: nothing cached
    try:
        assert list(fresh.mailboxes.uids(box)) == left
    finally:
        fresh.close()
    assert list(store.mailboxes.uids(box)) == left
