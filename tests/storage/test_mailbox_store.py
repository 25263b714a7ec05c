"""Mailbox store v2 conformance: every ``MailboxStore`` method, per backend."""

from __future__ import annotations

import functools

import pytest

from postwarden.protocol.pop3.dotstuff import wire_size
from postwarden.storage.factory import Store
from postwarden.storage.interfaces import Acceptance, AlreadyExists, BlobRef, NotFound, StoreError
from postwarden.storage.mailbox import (
    Compare,
    Field,
    Flag,
    FlagChange,
    FlagMode,
    HeaderField,
    MailboxInUse,
    QuotaExceeded,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchDate,
    SearchFlags,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSize,
    SearchUids,
    UidSet,
    read_message,
)
from storage.conftest import ALICE, BOB

PLAIN = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@remote.test>\r\nTo: alice@example.test\r\n"
         b"Subject: Quarterly report\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
         b"Message-ID: <q1@remote.test>\r\n\r\nThe numbers for the harbour project.\r\n"
         b".a line with a dot\r\n")
MULTIPART = (b"From: b@remote.test\r\nSubject: Photos\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
             b"\r\nR3LDvMOfZSBhdXMgTcO8bmNoZW4=\r\n--XX\r\nContent-Type: image/png\r\n\r\n"
             b"PNGDATA\r\n--XX--\r\n")
counter = iter(range(1, 1_000_000))


def write(store: Store, data: bytes) -> BlobRef:
    writer = store.blobs.new_blob(f"B{next(counter):015d}")
    writer.write(data)
    return writer.commit()


def deliver(store: Store, data: bytes, *accounts: str, at: float = 1000.0) -> None:
    ref = write(store, data)
    store.delivery.commit_acceptances(
        [Acceptance(ref.name, ref, "s@remote.test", accounts, (), received_at=at)])


def inbox(store: Store, account: str = ALICE) -> int:
    box = store.mailboxes.get_mailbox(account, "inbox")
    assert box is not None
    return box.id


def uids(store: Store, mailbox_id: int) -> list[int]:
    return list(store.mailboxes.uids(mailbox_id))


class TestMailboxes:
    def test_create_makes_parents_and_refuses_a_duplicate(self, store: Store) -> None:
        """CREATE a/b/c creates a and a/b; creating it again is AlreadyExists."""
        store.mailboxes.create_mailbox(ALICE, "Projects/2026/Q4")
        names = [m.name for m in store.mailboxes.list_mailboxes(ALICE)]
        assert {"Projects", "Projects/2026", "Projects/2026/Q4"} <= set(names)
        with pytest.raises(AlreadyExists):
            store.mailboxes.create_mailbox(ALICE, "Projects/2026/Q4")

    def test_inbox_is_case_insensitive_and_unique(self, store: Store) -> None:
        """"inbox", "InBoX" and "INBOX" are one mailbox, which cannot be made twice."""
        assert store.mailboxes.get_mailbox(ALICE, "InBoX") == store.mailboxes.get_mailbox(
            ALICE, "INBOX")
        with pytest.raises(AlreadyExists):
            store.mailboxes.create_mailbox(ALICE, "inbox")

    @pytest.mark.parametrize("name", ["", "a//b", "/a", "a/", "bad*", "x%", "tab\there"])
    def test_bad_names_are_refused(self, store: Store, name: str) -> None:
        """Empty levels, wildcards and control characters never become mailboxes."""
        with pytest.raises(StoreError):
            store.mailboxes.create_mailbox(ALICE, name)

    def test_utf8_names_are_kept(self, store: Store) -> None:
        """Names are full UTF-8 paths (IMAP4rev2)."""
        store.mailboxes.create_mailbox(ALICE, "Entwürfe/Größe")
        assert store.mailboxes.get_mailbox(ALICE, "Entwürfe/Größe") is not None

    def test_uidvalidity_grows_across_delete_and_recreate(self, store: Store) -> None:
        """A recreated name never gets an old UIDVALIDITY, even within one second."""
        first = store.mailboxes.create_mailbox(ALICE, "Box")
        store.mailboxes.delete_mailbox(ALICE, "Box")
        second = store.mailboxes.create_mailbox(ALICE, "Box")
        assert second.uidvalidity > first.uidvalidity

    def test_uidvalidity_grows_across_user_remove_and_add(self, store: Store) -> None:
        """`user remove` + `user add` in the same second: a new, larger UIDVALIDITY."""
        before = store.mailboxes.get_mailbox(BOB, "INBOX")
        store.directory.remove_account(BOB)
        store.directory.add_account(BOB, "hash")
        after = store.mailboxes.get_mailbox(BOB, "INBOX")
        assert before is not None and after is not None
        assert after.uidvalidity > before.uidvalidity

    def test_rename_moves_children_and_frees_the_old_name(self, store: Store) -> None:
        """RENAME a -> b renames a/x too; a new "a" gets a larger UIDVALIDITY."""
        old = store.mailboxes.create_mailbox(ALICE, "a/x")
        parent = store.mailboxes.get_mailbox(ALICE, "a")
        assert parent is not None
        store.mailboxes.rename_mailbox(ALICE, "a", "b")
        names = {m.name for m in store.mailboxes.list_mailboxes(ALICE)}
        assert {"b", "b/x"} <= names and not {"a", "a/x"} & names
        renamed = store.mailboxes.get_mailbox(ALICE, "b/x")
        assert renamed is not None and renamed.uidvalidity == old.uidvalidity
        assert store.mailboxes.create_mailbox(ALICE, "a").uidvalidity > parent.uidvalidity

    def test_renaming_inbox_moves_its_messages_and_keeps_it(self, store: Store) -> None:
        """RFC 9051 §6.3.6: INBOX stays, empty; its messages are in the new mailbox."""
        deliver(store, PLAIN, ALICE)
        deliver(store, PLAIN, ALICE)
        store.mailboxes.rename_mailbox(ALICE, "INBOX", "Old")
        old = store.mailboxes.get_mailbox(ALICE, "Old")
        assert old is not None
        assert uids(store, old.id) == [1, 2]
        assert uids(store, inbox(store)) == []
        assert store.mailboxes.status(inbox(store)).uidnext == 3  # UIDs not reused

    def test_delete_refuses_inbox_and_parents_and_unknown(self, store: Store) -> None:
        """INBOX cannot go; a mailbox with children neither; an unknown one is NotFound."""
        store.mailboxes.create_mailbox(ALICE, "p/c")
        with pytest.raises(StoreError):
            store.mailboxes.delete_mailbox(ALICE, "inbox")
        with pytest.raises(StoreError):
            store.mailboxes.delete_mailbox(ALICE, "p")
        with pytest.raises(NotFound):
            store.mailboxes.delete_mailbox(ALICE, "nope")

    def test_subscriptions_are_apart_from_mailboxes(self, store: Store) -> None:
        """A subscription may name a mailbox that does not exist, and outlives a delete."""
        store.mailboxes.subscribe(ALICE, "Ghost")
        store.mailboxes.create_mailbox(ALICE, "Real")
        store.mailboxes.subscribe(ALICE, "Real")
        store.mailboxes.delete_mailbox(ALICE, "Real")
        assert {"Ghost", "Real", "INBOX"} <= set(store.mailboxes.subscriptions(ALICE))
        store.mailboxes.unsubscribe(ALICE, "Ghost")
        assert "Ghost" not in store.mailboxes.subscriptions(ALICE)
        with pytest.raises(NotFound):
            store.mailboxes.unsubscribe(ALICE, "Ghost")


class TestStatusAndMetadata:
    def test_status_counters_follow_every_change(self, store: Store) -> None:
        """messages, unseen, size and deleted stay exact through flags and expunge."""
        deliver(store, PLAIN, ALICE)
        deliver(store, MULTIPART, ALICE)
        box = inbox(store)
        status = store.mailboxes.status(box)
        assert (status.messages, status.unseen, status.size, status.deleted) == (
            2, 2, len(PLAIN) + len(MULTIPART), 0)
        store.mailboxes.store_flags(box, UidSet.from_uids([1]),
                                    FlagChange(FlagMode.ADD, Flag.SEEN | Flag.DELETED))
        status = store.mailboxes.status(box)
        assert (status.unseen, status.deleted) == (1, 1)
        assert [e.uid for e in store.mailboxes.expunge(box)] == [1]
        status = store.mailboxes.status(box)
        assert (status.messages, status.unseen, status.size, status.deleted) == (
            1, 1, len(MULTIPART), 0)

    def test_uid_list_is_a_compact_array_kept_current(self, store: Store) -> None:
        """The UID list is an array of UIDs; it follows appends and expunges."""
        for _ in range(3):
            deliver(store, PLAIN, ALICE)
        box = inbox(store)
        first = store.mailboxes.uids(box)
        assert first.typecode == "I" and list(first) == [1, 2, 3]
        store.mailboxes.expunge(box, UidSet.from_uids([2]), deleted_only=False)
        assert uids(store, box) == [1, 3]
        deliver(store, PLAIN, ALICE)
        assert uids(store, box) == [1, 3, 4]

    def test_metadata_gives_sizes_without_reading_files(self, store: Store) -> None:
        """Size, POP3 wire size, lines and header size come from the blob table."""
        deliver(store, PLAIN, ALICE)
        (meta,) = store.mailboxes.metadata(inbox(store), UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert (meta.blob.size, meta.blob.wire_size) == (len(PLAIN), wire_size([PLAIN]))
        assert meta.blob.lines == PLAIN.count(b"\n")
        assert meta.blob.header_size == PLAIN.index(b"\r\n\r\n") + 4
        assert store.mailboxes.read_blob(meta.blob.name, meta.blob.header_size, 11) == \
            b"The numbers"

    def test_metadata_headers_are_normalised_and_structure_has_offsets(
        self, store: Store
    ) -> None:
        """Encoded words are decoded; the MIME structure locates each part's bytes."""
        from postwarden.mail import mime_codec

        deliver(store, PLAIN, ALICE)
        deliver(store, MULTIPART, ALICE)
        first, second = store.mailboxes.metadata(
            inbox(store), UidSet.all(), Field.HEADERS | Field.STRUCTURE)
        assert dict(first.headers)["from"] == "Jürgen <j@remote.test>"
        assert dict(first.headers)["subject"] == "Quarterly report"
        (chosen,) = store.mailboxes.metadata(inbox(store), UidSet.from_uids([1]),
                                             Field.HEADERS, ("Subject", "Date"))
        assert chosen.headers == (("subject", "Quarterly report"),
                                  ("date", "Mon, 30 Nov 2026 10:00:00 +0000"))
        assert second.structure is not None
        root = mime_codec.loads(second.structure).root
        _text, image = root.children
        assert MULTIPART[image.body_start:image.end] == b"PNGDATA"
        assert image.media_type.lower() == "image"

    def test_metadata_for_a_uid_set_returns_only_those(self, store: Store) -> None:
        """1,3:4 gives exactly those messages, with their flags and MODSEQs."""
        for _ in range(5):
            deliver(store, PLAIN, ALICE)
        found = store.mailboxes.metadata(inbox(store), UidSet.of([(1, 1), (3, 4)]))
        assert [m.uid for m in found] == [1, 3, 4]
        assert all(m.flags == Flag(0) and m.blob is None for m in found)


class TestFlags:
    def test_add_remove_set_and_keywords(self, store: Store) -> None:
        """+FLAGS, -FLAGS and FLAGS with keywords; the result says what changed."""
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        one = UidSet.from_uids([1])
        added = store.mailboxes.store_flags(
            box, one, FlagChange(FlagMode.ADD, Flag.FLAGGED, frozenset({"$Label1", "Work"})))
        assert added.changed[0].keywords == {"$Label1", "Work"}
        removed = store.mailboxes.store_flags(
            box, one, FlagChange(FlagMode.REMOVE, keywords=frozenset({"Work"})))
        assert (removed.changed[0].flags, removed.changed[0].keywords) == (
            Flag.FLAGGED, {"$Label1"})
        replaced = store.mailboxes.store_flags(box, one, FlagChange(FlagMode.SET, Flag.SEEN))
        assert (replaced.changed[0].flags, replaced.changed[0].keywords) == (
            Flag.SEEN, frozenset())
        unchanged = store.mailboxes.store_flags(box, one, FlagChange(FlagMode.ADD, Flag.SEEN))
        assert unchanged.changed == ()

    def test_unchangedsince_reports_the_ones_that_failed(self, store: Store) -> None:
        """CONDSTORE: messages changed after the given MODSEQ fail; the rest change."""
        deliver(store, PLAIN, ALICE)
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        before = store.mailboxes.status(box).highestmodseq
        store.mailboxes.store_flags(box, UidSet.from_uids([2]), FlagChange(FlagMode.ADD,
                                                                           Flag.SEEN))
        result = store.mailboxes.store_flags(
            box, UidSet.all(), FlagChange(FlagMode.ADD, Flag.FLAGGED, unchanged_since=before))
        assert [c.uid for c in result.changed] == [1]
        assert result.failed == (2,)

    def test_modseq_strictly_grows_per_mailbox(self, store: Store) -> None:
        """Every change (append, flag, expunge) gets a higher MODSEQ than any before."""
        box = inbox(store)
        seen = [store.mailboxes.status(box).highestmodseq]
        deliver(store, PLAIN, ALICE)
        seen.append(store.mailboxes.status(box).highestmodseq)
        change = store.mailboxes.store_flags(box, UidSet.all(),
                                             FlagChange(FlagMode.ADD, Flag.DELETED))
        seen.append(change.changed[0].modseq)
        seen.append(store.mailboxes.expunge(box)[0].modseq)
        assert seen == sorted(set(seen))

    def test_too_many_keywords_is_a_clean_error(self, store: Store) -> None:
        """Past the per-mailbox keyword table a STORE fails as a whole."""
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        words = frozenset(f"k{i}" for i in range(63))
        store.mailboxes.store_flags(box, UidSet.all(), FlagChange(FlagMode.ADD, keywords=words))
        with pytest.raises(StoreError):
            store.mailboxes.store_flags(box, UidSet.all(),
                                        FlagChange(FlagMode.ADD, keywords=frozenset({"one"})))


class TestExpungeCopyMove:
    def test_expunge_returns_uid_and_modseq_and_changes_since_reports_it(
        self, store: Store
    ) -> None:
        """QRESYNC: the expunge log answers changes_since with vanished UIDs."""
        for _ in range(3):
            deliver(store, PLAIN, ALICE)
        box = inbox(store)
        mark = store.mailboxes.status(box).highestmodseq
        store.mailboxes.store_flags(box, UidSet.from_uids([1, 3]),
                                    FlagChange(FlagMode.ADD, Flag.DELETED))
        store.mailboxes.store_flags(box, UidSet.from_uids([2]),
                                    FlagChange(FlagMode.ADD, Flag.SEEN))
        gone = store.mailboxes.expunge(box, UidSet.from_uids([3]))
        assert [(e.uid, e.modseq > mark) for e in gone] == [(3, True)]
        changes = store.mailboxes.changes_since(box, mark)
        assert [c.uid for c in changes.changed] == [1, 2]
        assert changes.vanished == (3,)
        assert changes.highestmodseq == gone[0].modseq
        assert store.mailboxes.changes_since(box, changes.highestmodseq).changed == ()

    def test_uids_are_never_reused(self, store: Store) -> None:
        """After expunging the newest message the next one still gets a new UID."""
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        store.mailboxes.expunge(box, UidSet.all(), deleted_only=False)
        deliver(store, PLAIN, ALICE)
        assert uids(store, box) == [2]

    def test_copy_returns_the_uid_map_and_keeps_flags(self, store: Store) -> None:
        """UIDPLUS COPYUID: source UIDs paired with new target UIDs."""
        for _ in range(3):
            deliver(store, PLAIN, ALICE)
        box = inbox(store)
        store.mailboxes.store_flags(box, UidSet.from_uids([3]), FlagChange(
            FlagMode.ADD, Flag.FLAGGED, frozenset({"Work"})))
        target = store.mailboxes.create_mailbox(ALICE, "Keep")
        result = store.mailboxes.copy(box, UidSet.from_uids([1, 3]), target.id)
        assert result.uidvalidity == target.uidvalidity
        assert result.mapping == ((1, 1), (3, 2))
        copied = store.mailboxes.metadata(target.id, UidSet.all())
        assert (copied[1].flags, copied[1].keywords) == (Flag.FLAGGED, {"Work"})
        assert uids(store, box) == [1, 2, 3]

    def test_move_expunges_the_source(self, store: Store) -> None:
        """MOVE: the messages leave the source, with expunge log entries."""
        deliver(store, PLAIN, ALICE)
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        mark = store.mailboxes.status(box).highestmodseq
        target = store.mailboxes.create_mailbox(ALICE, "Moved")
        result = store.mailboxes.move(box, UidSet.from_uids([2]), target.id)
        assert result.mapping == ((2, 1),)
        assert uids(store, box) == [1]
        assert store.mailboxes.changes_since(box, mark).vanished == (2,)

    def test_append_with_flags_and_internaldate(self, store: Store) -> None:
        """APPEND returns (UIDVALIDITY, UID) and keeps flags and the given date."""
        store.mailboxes.create_mailbox(ALICE, "Sent/2026")
        ref = write(store, PLAIN)
        appended = store.mailboxes.append(ALICE, "Sent/2026", ref, Flag.SEEN,
                                          frozenset({"$Forwarded"}), 1234.5)
        box = store.mailboxes.get_mailbox(ALICE, "Sent/2026")
        assert box is not None
        assert (appended.uidvalidity, appended.uid) == (box.uidvalidity, 1)
        (meta,) = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
        assert (meta.flags, meta.keywords, meta.internaldate) == (
            Flag.SEEN, {"$Forwarded"}, 1234.5)
        with pytest.raises(NotFound):
            store.mailboxes.append(ALICE, "Nowhere", write(store, PLAIN))


def prefixed(account: str) -> bytes:
    return f"Return-Path: <s@remote.test>\r\nDelivered-To: {account}\r\n".encode()


class TestCopyPrefix:
    """Header lines held per copy (local delivery's Return-Path, Delivered-To): every
    size and every read sees prefix + file as one message; the shared file stays as is."""

    @pytest.fixture
    def delivered(self, store: Store) -> BlobRef:
        ref = write(store, PLAIN)
        store.delivery.commit_acceptances([Acceptance(
            ref.name, ref, "s@remote.test", (ALICE, BOB), (), received_at=1000.0,
            prefixes=(prefixed(ALICE), prefixed(BOB)))])
        return ref

    def test_sizes_count_the_prefix(self, store: Store, delivered: BlobRef) -> None:
        """size, POP3 wire size, header size and lines are those of prefix + file."""
        whole = prefixed(ALICE) + PLAIN
        (meta,) = store.mailboxes.metadata(inbox(store), UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert (meta.blob.size, meta.blob.wire_size, meta.blob.lines) == (
            len(whole), wire_size([whole]), whole.count(b"\n"))
        assert meta.blob.header_size == whole.index(b"\r\n\r\n") + 4
        assert store.mailboxes.status(inbox(store)).size == len(whole)
        assert store.mailboxes.quota(ALICE).used == len(whole)
        assert store.mailboxes.quota(BOB).used == len(prefixed(BOB) + PLAIN)

    def test_reads_join_prefix_and_file_at_any_range(self, store: Store,
                                                     delivered: BlobRef) -> None:
        """Whole, inside the prefix, across its end, and inside the file."""
        for account in (ALICE, BOB):
            whole = prefixed(account) + PLAIN
            n = len(prefixed(account))
            (meta,) = store.mailboxes.metadata(inbox(store, account), UidSet.all(), Field.SIZE)
            assert meta.blob is not None
            read = functools.partial(read_message, store.mailboxes.read_blob)
            assert read(meta.blob) == whole
            for start, length in ((0, 5), (3, n - 3), (n - 4, 10), (n, 7), (n + 9, None),
                                  (len(whole) - 3, 100)):
                end = None if length is None else start + length
                assert read(meta.blob, start, length) == whole[start:end], (start, length)
        assert store.blobs.read_blob(delivered.name) == PLAIN  # the shared file is untouched

    def test_copy_keeps_and_expunge_returns_the_prefix(self, store: Store,
                                                       delivered: BlobRef) -> None:
        """COPY carries the prefix; expunging gives back exactly what was counted."""
        keep = store.mailboxes.create_mailbox(ALICE, "Keep")
        store.mailboxes.copy(inbox(store), UidSet.all(), keep.id)
        (meta,) = store.mailboxes.metadata(keep.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert read_message(store.mailboxes.read_blob, meta.blob) == prefixed(ALICE) + PLAIN
        store.mailboxes.expunge(inbox(store), UidSet.all(), deleted_only=False)
        store.mailboxes.expunge(keep.id, UidSet.all(), deleted_only=False)
        assert store.mailboxes.quota(ALICE).used == 0
        assert store.mailboxes.status(keep.id).size == 0

    def test_search_size_counts_the_prefix(self, store: Store, delivered: BlobRef) -> None:
        """LARGER and SMALLER compare the size FETCH reports."""
        size = len(prefixed(ALICE) + PLAIN)
        box = inbox(store)
        assert store.mailboxes.search(box, SearchSize(larger_than=size - 1)) == [1]
        assert store.mailboxes.search(box, SearchSize(larger_than=size)) == []
        assert store.mailboxes.search(box, SearchSize(smaller_than=size + 1)) == [1]

    def test_append_and_plain_delivery_have_none(self, store: Store) -> None:
        """Without prefixes (APPEND, older messages) a copy is its file, byte for byte."""
        deliver(store, PLAIN, ALICE)
        store.mailboxes.append(ALICE, "INBOX", write(store, MULTIPART))
        metas = store.mailboxes.metadata(inbox(store), UidSet.all(), Field.SIZE)
        assert [read_message(store.mailboxes.read_blob, m.blob) for m in metas if m.blob] == [
            PLAIN, MULTIPART]
        assert [m.blob.size for m in metas if m.blob] == [len(PLAIN), len(MULTIPART)]


class TestQuota:
    def test_usage_is_exact_after_appends_copies_and_expunges(self, store: Store) -> None:
        """Usage counts every copy in every mailbox, and shrinks on expunge and delete."""
        deliver(store, PLAIN, ALICE, BOB)
        box = inbox(store)
        assert store.mailboxes.quota(ALICE).used == len(PLAIN)
        keep = store.mailboxes.create_mailbox(ALICE, "Keep")
        store.mailboxes.copy(box, UidSet.all(), keep.id)
        assert (store.mailboxes.quota(ALICE).used, store.mailboxes.quota(ALICE).messages) == (
            2 * len(PLAIN), 2)
        store.mailboxes.append(ALICE, "Keep", write(store, MULTIPART))
        assert store.mailboxes.quota(ALICE).used == 2 * len(PLAIN) + len(MULTIPART)
        store.mailboxes.expunge(box, UidSet.all(), deleted_only=False)
        store.mailboxes.delete_mailbox(ALICE, "Keep")
        assert (store.mailboxes.quota(ALICE).used, store.mailboxes.quota(ALICE).messages) == (
            0, 0)
        assert store.mailboxes.quota(BOB).used == len(PLAIN)

    def test_append_and_copy_past_the_limit_are_refused(self, store: Store) -> None:
        """Over quota: QuotaExceeded, and nothing changes."""
        deliver(store, PLAIN, ALICE)
        store.mailboxes.set_quota(ALICE, len(PLAIN) + 10)
        keep = store.mailboxes.create_mailbox(ALICE, "Keep")
        with pytest.raises(QuotaExceeded):
            store.mailboxes.copy(inbox(store), UidSet.all(), keep.id)
        with pytest.raises(QuotaExceeded):
            store.mailboxes.append(ALICE, "Keep", write(store, PLAIN))
        assert uids(store, keep.id) == []
        assert store.mailboxes.quota(ALICE).limit == len(PLAIN) + 10


class TestSearch:
    @pytest.fixture
    def box(self, store: Store) -> int:
        deliver(store, PLAIN, ALICE, at=1000.0)
        deliver(store, MULTIPART, ALICE, at=2000.0)
        deliver(store, b"Subject: harbour news\r\n\r\nnothing else\r\n", ALICE, at=3000.0)
        box = inbox(store)
        store.mailboxes.store_flags(box, UidSet.from_uids([2]), FlagChange(
            FlagMode.ADD, Flag.SEEN, frozenset({"Work"})))
        return box

    @pytest.mark.parametrize(("query", "expected"), [
        (SearchAll(), [1, 2, 3]),
        (SearchHeader(HeaderField.SUBJECT, "REPORT"), [1]),
        (SearchHeader(HeaderField.FROM, "jürgen"), [1]),
        (SearchHeader(HeaderField.SUBJECT, "100%"), []),
        (SearchBody("harbour"), [1]),
        (SearchBody("harbour", with_headers=True), [1, 3]),
        (SearchBody("münchen"), [2]),  # base64 and UTF-8 decoded before indexing
        (SearchBody("PNGDATA"), []),  # not text: not indexed
        (SearchFlags(present=Flag.SEEN), [2]),
        (SearchFlags(absent=Flag.SEEN), [1, 3]),
        (SearchFlags(keyword="Work"), [2]),
        (SearchFlags(keyword="Unknown"), []),
        (SearchFlags(keyword="Work", keyword_present=False), [1, 3]),
        (SearchDate(Compare.BEFORE, 2000.0), [1]),
        (SearchDate(Compare.ON_OR_AFTER, 2000.0), [2, 3]),
        (SearchSize(larger_than=len(PLAIN)), [2]),
        (SearchUids(UidSet.of([(2, 3)])), [2, 3]),
        (SearchNot(SearchUids(UidSet.from_uids([2]))), [1, 3]),
        (SearchOr((SearchUids(UidSet.from_uids([1])), SearchFlags(keyword="Work"))), [1, 2]),
        (SearchAnd((SearchBody("harbour", True), SearchDate(Compare.ON_OR_AFTER, 2500))), [3]),
    ])
    def test_query(self, store: Store, box: int, query: object, expected: list[int]) -> None:
        """Each key of the storage query type, from the indexes."""
        assert store.mailboxes.search(box, query) == expected  # type: ignore[arg-type]

    def test_modseq_key(self, store: Store, box: int) -> None:
        """MODSEQ n: messages changed at or after n."""
        changed = store.mailboxes.metadata(box, UidSet.from_uids([2]))[0].modseq
        assert store.mailboxes.search(box, SearchModSeq(changed)) == [2]


class TestMaildropLock:
    def test_lock_is_exclusive_until_released_or_expired(self, store: Store) -> None:
        """One owner at a time; a dead owner's lock runs out."""
        store.mailboxes.lock_maildrop(ALICE, "one", until=9e9)
        with pytest.raises(MailboxInUse):
            store.mailboxes.lock_maildrop(ALICE, "two", until=9e9)
        store.mailboxes.lock_maildrop(BOB, "two", until=9e9)  # other users unaffected
        store.mailboxes.unlock_maildrop(ALICE, "one")
        store.mailboxes.lock_maildrop(ALICE, "two", until=1.0)  # already expired
        store.mailboxes.lock_maildrop(ALICE, "three", until=9e9)

    def test_claim_recent_hands_recent_to_one_session(self, store: Store) -> None:
        """The first session sees new messages as \\Recent, the next one does not."""
        deliver(store, PLAIN, ALICE)
        box = inbox(store)
        assert store.mailboxes.claim_recent(box) == range(1, 2)
        assert store.mailboxes.claim_recent(box) == range(2, 2)
        deliver(store, PLAIN, ALICE)
        assert store.mailboxes.claim_recent(box) == range(2, 3)  # only what came since
