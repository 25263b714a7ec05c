"""FETCH BODY[HEADER.FIELDS (...)] from the parsed cache's ``head``: the same bytes
as filtering the message file's header, for every message of the MIME corpus.

Real SQLite store and files; the responses are rendered by the code the IMAP
session runs in its worker thread, then encoded to the wire.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.protocol.imap import encoder
from postwarden.protocol.imap.fetch import BodySection, Partial, Section, SectionText, Simple
from postwarden.servers import imap_fetch
from postwarden.storage.interfaces import Acceptance
from postwarden.storage.mailbox import Field, Flag, FlagChange, FlagMode, UidSet
from postwarden.storage.sqlite import SqliteStore

CORPUS = Path(__file__).resolve().parents[1] / "mail" / "corpus"
USER = "user@example.test"
FIELD_LISTS = [
    ("FROM", "SUBJECT", "DATE"),
    ("To", "Cc", "Message-ID", "References", "In-Reply-To", "Reply-To"),
    ("content-type", "X-Priority", "Newsgroups", "Bcc"),
    ("Subject", "X-Not-Kept"),  # a name the cache does not keep: the file's header
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """Every corpus message delivered to USER's INBOX; nothing indexed yet."""
    store = SqliteStore(tmp_path / "data")
    store.directory.add_domain("example.test")
    store.directory.add_account(USER, "hash")
    acceptances = []
    for n, path in enumerate(sorted(CORPUS.glob("*.eml"))):
        writer = store.blobs.new_blob(f"corpus{n:03d}")
        writer.write(path.read_bytes())
        ref = writer.commit()
        acceptances.append(Acceptance(ref.name, ref, "s@remote.test", (USER,), ()))
    store.delivery.commit_acceptances(acceptances)
    yield store
    store.close()


def inbox(store: SqliteStore) -> int:
    found = store.mailboxes.get_mailbox(USER, "INBOX")
    assert found is not None
    return found.id


def wire(store: SqliteStore, fields: tuple[str, ...], partial: Partial | None,
         *, files: bool = True) -> tuple[bytes, list[int]]:
    """FETCH 1:* of the fields, encoded as the session does it, and the numbers
    that failed; with ``files`` False every file read fails."""
    attribute = BodySection(Section((), SectionText.HEADER_FIELDS, fields), True, partial)
    plan = imap_fetch.plan([attribute], uid=True, modseq=False, utf8=False)
    metas = store.mailboxes.metadata(inbox(store), UidSet.all(), plan.fields)
    if imap_fetch.lacks(plan, metas):
        metas = store.mailboxes.metadata(inbox(store), UidSet.all(),
                                         plan.fields | plan.uncached)

    def no_files(name: str, start: int, length: int | None) -> bytes:
        raise OSError(f"read {name}")

    read = store.mailboxes.read_blob if files else no_files
    done = imap_fetch.render_wire(read, plan, list(enumerate(metas, 1)), ())
    return done.data, done.failed


@pytest.mark.parametrize("partial", [None, Partial(5, 40)])
def test_cached_header_fields_match_the_files(store: SqliteStore,
                                              partial: Partial | None) -> None:
    from_files = {fields: wire(store, fields, partial) for fields in FIELD_LISTS}
    assert all(not failed and data.count(b"* ") > 15 for data, failed in from_files.values())
    assert store.indexer.index_pending(1000) > 15  # type: ignore[attr-defined]
    for fields in FIELD_LISTS:
        assert wire(store, fields, partial) == from_files[fields], fields


def test_cached_header_fields_read_no_file(store: SqliteStore) -> None:
    kept = ("FROM", "SUBJECT", "DATE")
    _, failed = wire(store, kept, None, files=False)
    assert failed  # before indexing, the header comes from the file
    store.indexer.index_pending(1000)  # type: ignore[attr-defined]
    data, failed = wire(store, kept, None, files=False)
    assert not failed and b"Subject:" in data
    _, failed = wire(store, ("Subject", "X-Not-Kept"), None, files=False)
    assert failed  # a field the cache does not keep still needs the file


def test_direct_encoding_matches_the_encoder(store: SqliteStore) -> None:
    """The message-list attributes written straight to bytes are what the
    response objects encode to (flags with keywords and \\Recent, MODSEQ)."""
    box = inbox(store)
    store.mailboxes.store_flags(box, UidSet.of([(2, 4)]),
                                FlagChange(FlagMode.ADD, Flag.SEEN, frozenset({"$Junk"})))
    store.indexer.index_pending(1000)  # type: ignore[attr-defined]
    attributes = [Simple.UID, Simple.FLAGS, Simple.RFC822_SIZE, Simple.INTERNALDATE,
                  BodySection(Section((), SectionText.HEADER_FIELDS, ("Subject",)), True)]
    plan = imap_fetch.plan(attributes, uid=False, modseq=True, utf8=False)
    metas = store.mailboxes.metadata(box, UidSet.all(), plan.fields | Field.SIZE)
    batch = list(enumerate(metas, 1))
    recent = range(3, 9)
    objects = imap_fetch.render(store.mailboxes.read_blob, plan, batch,
                                is_recent=recent.__contains__)
    direct = imap_fetch.render_wire(store.mailboxes.read_blob, plan, batch, (recent,))
    assert direct.data == b"".join(encoder.fetch(x) for x in objects.responses)
    assert b"\\Recent" in direct.data and b"$Junk" in direct.data


@pytest.mark.parametrize("count", [0, 1, 499, 500, 501, 1500, 1501, 100_000])
def test_batches_cover_every_message_once(count: int) -> None:
    """FETCH 1:* goes out in batches: the first small, then doubling to a cap
    (bodies: small ones throughout, as each is held in memory whole)."""
    flags = imap_fetch.plan([Simple.FLAGS], uid=True, modseq=False, utf8=False)
    bodies = imap_fetch.plan([BodySection(Section())], uid=True, modseq=False, utf8=False)
    for plan, sizes in ((flags, (imap_fetch.BATCH, imap_fetch.BATCH_MOST)),
                        (bodies, (imap_fetch.BODY_BATCH, imap_fetch.BODY_BATCH))):
        spans = imap_fetch.spans(plan, count)
        assert [n for start, stop in spans for n in range(start, stop)] == list(range(count))
        lengths = [stop - start for start, stop in spans]
        assert all(length <= sizes[1] for length in lengths)
        if lengths:
            assert lengths[0] == min(count, sizes[0])
        full = lengths[:-1]  # the last one takes what is left
        assert all(b == min(2 * a, sizes[1]) for a, b in itertools.pairwise(full))
    assert len(imap_fetch.spans(flags, 100_000)) < 30  # not 200 trips of 500
