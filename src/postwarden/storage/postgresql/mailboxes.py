"""Per-account mailboxes and their messages: the PostgreSQL ``MailboxStore``.

The same tables and rules as the SQLite backend (narrow message rows, flag
and keyword bits, counters and quota kept in the same transaction). What
several nodes need is in how rows are taken: an append takes its UIDs and
MODSEQ by updating the mailbox row, whose lock it holds until it commits,
so UIDs are assigned inside the inserting transaction and no client on any
node sees UID n+1 before n.

The naming, flag and keyword rules are the SQLite backend's own functions:
they are not about SQL, and one copy of them is the point.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Sequence

from postwarden.storage.interfaces import AlreadyExists, BlobRef, NotFound, StoreError
from postwarden.storage.mailbox import (
    DELIMITER,
    HEADER_NAMES,
    INBOX,
    NO_FLAGS,
    Appended,
    Changes,
    CopyResult,
    Expunged,
    Field,
    Flag,
    FlagChange,
    FlagResult,
    FlagUpdate,
    Mailbox,
    MailboxInUse,
    MailboxStatus,
    MessageMeta,
    Query,
    Quota,
    QuotaExceeded,
    UidSet,
    copy_handle,
    normalise_name,
)
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import Conn, PgDatabase
from postwarden.storage.postgresql.indexer import PgIndexer
from postwarden.storage.postgresql.search import compile_query, uid_condition
from postwarden.storage.sqlite.indexer import HEADER_COLUMNS
from postwarden.storage.sqlite.mailboxes import (
    MAX_KEYWORDS,
    SPECIAL_MAILBOXES,
    _apply,
    _bit,
    _keywords,
    _valid_name,
)

_MAILBOX = "SELECT id, account, name, uidvalidity, special_use FROM mailboxes"
# blob id, size (prefix included), flags, keyword mask, internal date, prefix
_Row = tuple[int, int, int, int, float, bytes]


class PgMailboxes:
    """Mailboxes with IMAP-ready UIDs, flags, MODSEQs, counters and quota."""

    def __init__(self, db: PgDatabase, blobs: PgBlobs, indexer: PgIndexer) -> None:
        self._db = db
        self._blobs = blobs
        self._indexer = indexer

    # --- accounts' mailboxes ------------------------------------------------------

    def create_mailboxes(self, db: Conn, account: str) -> None:
        """The special mailboxes and quota row every account has (caller's transaction)."""
        db.execute("INSERT INTO quota (account) VALUES (%s) ON CONFLICT DO NOTHING", (account,))
        for name, special in SPECIAL_MAILBOXES:
            if _row(db, account, name) is None:
                _insert(db, account, name, special)
                db.execute("INSERT INTO subscriptions VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (account, name))

    def remove_account_mailboxes(self, db: Conn, account: str) -> None:
        ids = [r[0] for r in db.execute(
            "SELECT m.blob_id FROM messages m JOIN mailboxes b ON m.mailbox_id = b.id"
            " WHERE b.account = %s", (account,))]
        self._blobs.release_ids(db, ids, time.time())
        for table in ("mailboxes", "subscriptions", "quota", "maildrop_locks"):
            db.execute(f"DELETE FROM {table} WHERE account = %s", (account,))

    def ensure_mailboxes(self, account: str) -> None:
        with self._db.tx() as db:
            self.create_mailboxes(db, account)

    # --- mailbox CRUD -------------------------------------------------------------

    def create_mailbox(self, account: str, name: str, special_use: str | None = None
                       ) -> Mailbox:
        """Create a mailbox, and any missing parents (RFC 9051 §6.3.4)."""
        name = _valid_name(name)
        with self._db.tx() as db:
            if _row(db, account, name) is not None:
                raise AlreadyExists(f"mailbox {name} already exists")
            _make_parents(db, account, name)
            mailbox_id = _insert(db, account, name, special_use)
            row = db.execute(_MAILBOX + " WHERE id = %s", (mailbox_id,)).fetchone()
        assert row is not None
        return Mailbox(*row)

    def delete_mailbox(self, account: str, name: str) -> None:
        name = normalise_name(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted")
        with self._db.tx() as db:
            mailbox_id = _row(db, account, name)
            if mailbox_id is None:
                raise NotFound(f"no such mailbox: {name}")
            if db.execute("SELECT 1 FROM mailboxes WHERE account = %s AND"
                          " left(name, %s) = %s LIMIT 1",
                          (account, len(name) + 1, name + DELIMITER)).fetchone():
                raise StoreError(f"mailbox {name} has children; delete them first")
            blob_ids = [r[0] for r in db.execute(
                "SELECT blob_id FROM messages WHERE mailbox_id = %s", (mailbox_id,))]
            counts = db.execute("SELECT messages, bytes FROM mailboxes WHERE id = %s",
                                (mailbox_id,)).fetchone()
            assert counts is not None
            self._blobs.release_ids(db, blob_ids, time.time())
            db.execute("UPDATE quota SET used_messages = used_messages - %s,"
                       " used_bytes = used_bytes - %s WHERE account = %s",
                       (counts[0], counts[1], account))
            db.execute("DELETE FROM mailboxes WHERE id = %s", (mailbox_id,))

    def rename_mailbox(self, account: str, old: str, new: str) -> None:
        """Rename with children; renaming INBOX moves its messages (RFC 9051 §6.3.6)."""
        old, new = normalise_name(old), _valid_name(new)
        if new == INBOX or new.startswith(old + DELIMITER):
            raise StoreError(f"cannot rename {old} to {new}")
        if old == INBOX:
            source = self.get_mailbox(account, INBOX)
            if source is None:
                raise NotFound("no INBOX")
            target = self.create_mailbox(account, new)
            self.move(source.id, UidSet.all(), target.id)
            return
        with self._db.tx() as db:
            if _row(db, account, old) is None:
                raise NotFound(f"no such mailbox: {old}")
            if _row(db, account, new) is not None:
                raise AlreadyExists(f"mailbox {new} already exists")
            db.execute(
                "UPDATE mailboxes SET name = %s || substr(name, %s)"
                " WHERE account = %s AND (name = %s OR left(name, %s) = %s)",
                (new, len(old) + 1, account, old, len(old) + 1, old + DELIMITER))
            _make_parents(db, account, new)

    def get_mailbox(self, account: str, name: str) -> Mailbox | None:
        with self._db.conn() as db:
            row = db.execute(_MAILBOX + " WHERE account = %s AND name = %s",
                             (account, normalise_name(name))).fetchone()
        return Mailbox(*row) if row else None

    def list_mailboxes(self, account: str) -> list[Mailbox]:
        with self._db.conn() as db:
            rows = db.execute(_MAILBOX + ' WHERE account = %s ORDER BY name COLLATE "C"',
                              (account,)).fetchall()
        return [Mailbox(*r) for r in rows]

    # --- subscriptions ------------------------------------------------------------

    def subscribe(self, account: str, name: str) -> None:
        """A subscription may name a mailbox that does not exist (RFC 9051 §6.3.7)."""
        with self._db.tx() as db:
            db.execute("INSERT INTO subscriptions VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (account, normalise_name(name)))

    def unsubscribe(self, account: str, name: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM subscriptions WHERE account = %s AND name = %s",
                          (account, normalise_name(name))).rowcount == 0:
                raise NotFound(f"not subscribed to {name}")

    def subscriptions(self, account: str) -> list[str]:
        with self._db.conn() as db:
            return [r[0] for r in db.execute(
                'SELECT name FROM subscriptions WHERE account = %s ORDER BY name COLLATE "C"',
                (account,))]

    # --- reading ----------------------------------------------------------------------

    def status(self, mailbox_id: int) -> MailboxStatus:
        with self._db.conn() as db:
            row = db.execute(
                "SELECT id, account, name, uidvalidity, special_use, messages, unseen, bytes,"
                " deleted, uidnext, highestmodseq, first_recent FROM mailboxes WHERE id = %s",
                (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return MailboxStatus(Mailbox(*row[:5]), *row[5:])

    def uids(self, mailbox_id: int) -> array[int]:
        with self._db.conn() as db:
            row = db.execute(
                "SELECT (SELECT array_agg(uid ORDER BY uid) FROM messages"
                " WHERE mailbox_id = b.id) FROM mailboxes b WHERE b.id = %s",
                (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return array("I", row[0] or ())

    def metadata(self, mailbox_id: int, uids: UidSet, fields: Field = Field.NONE,
                 header_names: Sequence[str] | None = None) -> list[MessageMeta]:
        """The chosen fields for the messages in ``uids``, ascending, one statement."""
        want_blob = bool(fields & Field.SIZE)
        want_headers = bool(fields & Field.HEADERS)
        want_structure = bool(fields & Field.STRUCTURE)
        want_head = bool(fields & Field.HEAD)
        if want_headers or want_structure:
            self._indexer.index_mailbox(mailbox_id, uids)
        asked = {h.lower() for h in header_names} if header_names is not None else None
        wanted = [n for n in HEADER_NAMES if asked is None or n in asked]
        columns = ["m.uid", "m.flags", "m.keywords", "m.modseq", "m.internaldate",
                   "b.name", "b.size", "b.wire_size", "b.header_size", "b.lines",
                   "p.structure" if want_structure else "NULL", "m.prefix",
                   "p.head" if want_head else "NULL"]
        columns += [f"p.{HEADER_COLUMNS[HEADER_NAMES.index(n)]}" for n in wanted] \
            if want_headers else []
        where, params = uid_condition(uids)
        with self._db.conn() as db:
            names = _keyword_names(db, mailbox_id)
            rows = db.execute(
                f"SELECT {', '.join(columns)} FROM messages m JOIN blobs b ON b.id = m.blob_id"
                " LEFT JOIN parsed p ON p.blob_id = m.blob_id"
                f" WHERE m.mailbox_id = %s AND {where} ORDER BY m.uid",
                (mailbox_id, *params)).fetchall()
        return [MessageMeta(
            r[0], Flag(r[1]), _keywords(r[2], names), r[3], r[4],
            copy_handle(r[5], r[6], r[7], r[8], r[9], bytes(r[11])) if want_blob else None,
            tuple((n, v) for n, v in zip(wanted, r[13:], strict=True) if v)
            if want_headers else (),
            bytes(r[10]) if want_structure and r[10] is not None else None,
            bytes(r[12]) if want_head and r[12] is not None else None,
        ) for r in rows]

    def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        with self._db.conn() as db, db.transaction():  # one snapshot for all three reads
            highest = db.execute("SELECT highestmodseq FROM mailboxes WHERE id = %s",
                                 (mailbox_id,)).fetchone()
            if highest is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            names = _keyword_names(db, mailbox_id)
            changed = tuple(
                FlagUpdate(r[0], Flag(r[1]), _keywords(r[2], names), r[3])
                for r in db.execute(
                    "SELECT uid, flags, keywords, modseq FROM messages"
                    " WHERE mailbox_id = %s AND modseq > %s ORDER BY uid", (mailbox_id, modseq)))
            vanished = tuple(r[0] for r in db.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                (mailbox_id, modseq)))
        return Changes(highest[0], changed, vanished)

    def search(self, mailbox_id: int, query: Query) -> list[int]:
        """UIDs matching ``query``, ascending, from the indexes."""
        sql, params, needs_index = compile_query(query)
        if needs_index:
            self._indexer.index_mailbox(mailbox_id)
        with self._db.conn() as db:
            return [r[0] for r in db.execute(
                "SELECT m.uid FROM messages m JOIN blobs b ON b.id = m.blob_id"
                " LEFT JOIN parsed p ON p.blob_id = m.blob_id"
                f" WHERE m.mailbox_id = %s AND {sql} ORDER BY m.uid", (mailbox_id, *params))]

    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        return self._blobs.read_blob(name, start, length)

    def quota(self, account: str) -> Quota:
        with self._db.conn() as db:
            row = db.execute("SELECT limit_bytes, used_bytes, used_messages FROM quota"
                             " WHERE account = %s", (account,)).fetchone()
        if row is None:
            raise NotFound(f"no such user: {account}")
        return Quota(row[0], row[1], row[2])

    def set_quota(self, account: str, limit: int | None) -> None:
        with self._db.tx() as db:
            if db.execute("UPDATE quota SET limit_bytes = %s WHERE account = %s",
                          (limit, account)).rowcount == 0:
                raise NotFound(f"no such user: {account}")

    # --- writing -------------------------------------------------------------------------

    def deliver(self, db: Conn, account: str, blob_id: int, size: int, when: float,
                prefix: bytes = b"", *, junk: bool = False) -> int:
        """SMTP delivery into INBOX (with ``junk`` the \\Junk mailbox) inside the
        caller's transaction; the UID.

        Not refused over quota: the message was accepted already.
        """
        mailbox_id = _row(db, account, INBOX)
        if mailbox_id is None:
            self.create_mailboxes(db, account)
            return self.deliver(db, account, blob_id, size, when, prefix, junk=junk)
        target = _junk(db, account) if junk else mailbox_id
        ((uid, _),) = self._add(db, target, account,
                                [(blob_id, size + len(prefix), 0, 0, when, prefix)])
        return uid

    def append(self, account: str, mailbox: str, blob: BlobRef, flags: Flag = NO_FLAGS,
               keywords: frozenset[str] = frozenset(), internaldate: float | None = None
               ) -> Appended:
        """IMAP APPEND of a written blob: its bytes, row and UID in one transaction."""
        now = time.time()
        with self._db.tx() as db:
            row = db.execute("SELECT id, uidvalidity FROM mailboxes WHERE account = %s"
                             " AND name = %s FOR UPDATE",
                             (account, normalise_name(mailbox))).fetchone()
            if row is None:
                raise NotFound(f"no such mailbox: {mailbox}")
            _check_quota(db, account, blob.size)
            blob_id = self._blobs.register(db, blob, 1, now)
            mask = _keyword_mask(db, row[0], keywords)
            when = now if internaldate is None else internaldate
            ((uid, _),) = self._add(db, row[0], account,
                                    [(blob_id, blob.size, int(flags), mask, when, b"")])
        self._blobs.stored([blob.name])
        return Appended(row[1], uid)

    def attach_unknown(self, account: str, names: Iterable[str]) -> int:
        """No files, so none unknown: ``fsck --attach`` has nothing to do here."""
        return 0

    def _add(self, db: Conn, mailbox_id: int, account: str, rows: Sequence[_Row]
             ) -> list[tuple[int, int]]:
        """Insert rows with the next UIDs and one new MODSEQ; (UID, modseq)s.

        The mailbox row's update takes its lock until commit: concurrent
        appends to one mailbox, from any node, get their UIDs in commit order.
        """
        count = len(rows)
        size = sum(r[1] for r in rows)
        unseen = sum(1 for r in rows if not r[2] & Flag.SEEN)
        deleted = sum(1 for r in rows if r[2] & Flag.DELETED)
        got = db.execute(
            "UPDATE mailboxes SET uidnext = uidnext + %s, highestmodseq = highestmodseq + 1,"
            " messages = messages + %s, unseen = unseen + %s, bytes = bytes + %s,"
            " deleted = deleted + %s WHERE id = %s RETURNING uidnext - %s, highestmodseq",
            (count, count, unseen, size, deleted, mailbox_id, count)).fetchone()
        assert got is not None
        first, modseq = got
        db.cursor().executemany(
            "INSERT INTO messages (mailbox_id, uid, blob_id, modseq, flags, keywords,"
            " internaldate, prefix) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(mailbox_id, first + i, blob_id, modseq, flags, mask, when, prefix)
             for i, (blob_id, _, flags, mask, when, prefix) in enumerate(rows)])
        db.execute("UPDATE quota SET used_messages = used_messages + %s,"
                   " used_bytes = used_bytes + %s WHERE account = %s", (count, size, account))
        return [(first + i, modseq) for i in range(count)]

    def store_flags(self, mailbox_id: int, uids: UidSet, change: FlagChange) -> FlagResult:
        """One STORE: every changed message gets the same new MODSEQ."""
        where, params = uid_condition(uids)
        with self._db.tx() as db:
            _lock_mailbox(db, mailbox_id)
            mask = _keyword_mask(db, mailbox_id, change.keywords)
            changed: list[tuple[int, int, int]] = []
            failed: list[int] = []
            unseen = deleted = 0
            for uid, flags, keywords, modseq in db.execute(
                    f"SELECT uid, flags, keywords, modseq FROM messages m"
                    f" WHERE m.mailbox_id = %s AND {where}", (mailbox_id, *params)).fetchall():
                if change.unchanged_since is not None and modseq > change.unchanged_since:
                    failed.append(uid)
                    continue
                new = _apply(change.mode, flags, keywords, int(change.flags), mask)
                if new == (flags, keywords):
                    continue
                changed.append((uid, *new))
                unseen += _bit(flags, Flag.SEEN) - _bit(new[0], Flag.SEEN)
                deleted += _bit(new[0], Flag.DELETED) - _bit(flags, Flag.DELETED)
            if not changed:
                return FlagResult((), tuple(sorted(failed)))
            got = db.execute(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1,"
                " unseen = unseen + %s, deleted = deleted + %s WHERE id = %s"
                " RETURNING highestmodseq", (unseen, deleted, mailbox_id)).fetchone()
            assert got is not None
            modseq = got[0]
            db.cursor().executemany(
                "UPDATE messages SET flags = %s, keywords = %s, modseq = %s"
                " WHERE mailbox_id = %s AND uid = %s",
                [(f, k, modseq, mailbox_id, uid) for uid, f, k in changed])
            names = _keyword_names(db, mailbox_id)
        updates = tuple(FlagUpdate(uid, Flag(f), _keywords(k, names), modseq)
                        for uid, f, k in sorted(changed))
        return FlagResult(updates, tuple(sorted(failed)))

    def expunge(self, mailbox_id: int, uids: UidSet | None = None, *,
                deleted_only: bool = True) -> list[Expunged]:
        """Remove messages; ``uids=None``: every ``\\Deleted`` one. Logged for QRESYNC."""
        with self._db.tx() as db:
            return self._expunge(db, mailbox_id, uids or UidSet.all(), deleted_only)

    def _expunge(self, db: Conn, mailbox_id: int, uids: UidSet, deleted_only: bool
                 ) -> list[Expunged]:
        account = _lock_mailbox(db, mailbox_id)
        where, params = uid_condition(uids)
        only = f" AND m.flags & {int(Flag.DELETED)} <> 0" if deleted_only else ""
        gone = sorted(db.execute(
            "SELECT m.uid, m.blob_id, m.flags, b.size + length(m.prefix) FROM messages m"
            f" JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = %s AND {where}{only}",
            (mailbox_id, *params)).fetchall())
        if not gone:
            return []
        size = sum(g[3] for g in gone)
        unseen = sum(1 for g in gone if not g[2] & Flag.SEEN)
        deleted = sum(1 for g in gone if g[2] & Flag.DELETED)
        got = db.execute(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1, messages = messages - %s,"
            " unseen = unseen - %s, bytes = bytes - %s, deleted = deleted - %s WHERE id = %s"
            " RETURNING highestmodseq",
            (len(gone), unseen, size, deleted, mailbox_id)).fetchone()
        assert got is not None
        modseq = got[0]
        gone_uids = [g[0] for g in gone]
        db.execute("DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                   (mailbox_id, gone_uids))
        db.execute(
            "INSERT INTO expunged SELECT %s, u, %s FROM unnest(%s::bigint[]) u"
            " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
            (mailbox_id, modseq, gone_uids))
        db.execute("UPDATE quota SET used_messages = used_messages - %s,"
                   " used_bytes = used_bytes - %s WHERE account = %s",
                   (len(gone), size, account))
        self._blobs.release_ids(db, [g[1] for g in gone], time.time())
        return [Expunged(uid, modseq) for uid in gone_uids]

    def copy(self, source_id: int, uids: UidSet, target_id: int) -> CopyResult:
        with self._db.tx() as db:
            return self._copy(db, source_id, uids, target_id)

    def move(self, source_id: int, uids: UidSet, target_id: int) -> CopyResult:
        """COPY then EXPUNGE of the originals, in one transaction (RFC 6851)."""
        with self._db.tx() as db:
            result = self._copy(db, source_id, uids, target_id, moving=True)
            if result.mapping:
                self._expunge(db, source_id, UidSet.from_uids(s for s, _ in result.mapping),
                              deleted_only=False)
            return result

    def _copy(self, db: Conn, source_id: int, uids: UidSet, target_id: int,
              moving: bool = False) -> CopyResult:
        target = db.execute("SELECT account, uidvalidity FROM mailboxes WHERE id = %s"
                            " FOR UPDATE", (target_id,)).fetchone()
        if target is None:
            raise NotFound(f"no mailbox {target_id}")
        source_names = _keyword_names(db, source_id)
        where, params = uid_condition(uids)
        rows = db.execute(
            "SELECT m.uid, m.blob_id, b.size + length(m.prefix), m.flags, m.keywords,"
            " m.internaldate, m.prefix FROM messages m JOIN blobs b ON b.id = m.blob_id"
            f" WHERE m.mailbox_id = %s AND {where} ORDER BY m.uid",
            (source_id, *params)).fetchall()
        if not rows:
            return CopyResult(target[1], ())
        source = db.execute("SELECT account FROM mailboxes WHERE id = %s",
                            (source_id,)).fetchone()
        if not (moving and source == (target[0],)):
            _check_quota(db, target[0], sum(r[2] for r in rows))
        new_rows = [
            (blob_id, size, flags, _keyword_mask(db, target_id, _keywords(kw, source_names)),
             when, bytes(prefix))
            for _, blob_id, size, flags, kw, when, prefix in rows]
        added = self._add(db, target_id, target[0], new_rows)
        self._blobs.add_refs(db, [r[1] for r in rows])
        return CopyResult(target[1], tuple((r[0], a[0]) for r, a in zip(rows, added,
                                                                          strict=True)))

    def claim_recent(self, mailbox_id: int) -> range:
        """The UIDs that are \\Recent for the caller; later sessions will not see them."""
        with self._db.tx() as db:
            row = db.execute(
                "UPDATE mailboxes n SET first_recent = n.uidnext FROM mailboxes o"
                " WHERE n.id = %s AND o.id = n.id RETURNING o.first_recent, n.uidnext",
                (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return range(int(row[0]), int(row[1]))

    # --- the POP3 maildrop lock, shared by every node ---------------------------------

    def lock_maildrop(self, account: str, owner: str, until: float) -> None:
        """Take the lock unless another live owner holds it (any node)."""
        with self._db.tx() as db:
            row = db.execute(
                "INSERT INTO maildrop_locks VALUES (%s, %s, %s) ON CONFLICT (account) DO UPDATE"
                " SET owner = excluded.owner, until = excluded.until"
                " WHERE maildrop_locks.until < %s OR maildrop_locks.owner = excluded.owner"
                " RETURNING owner", (account, owner, until, time.time())).fetchone()
        if row is None:
            raise MailboxInUse(f"maildrop of {account} is in use")

    def unlock_maildrop(self, account: str, owner: str) -> None:
        with self._db.tx() as db:
            db.execute("DELETE FROM maildrop_locks WHERE account = %s AND owner = %s",
                       (account, owner))


# --- helpers ------------------------------------------------------------------------------


def _row(db: Conn, account: str, name: str) -> int | None:
    row = db.execute("SELECT id FROM mailboxes WHERE account = %s AND name = %s",
                     (account, name)).fetchone()
    return int(row[0]) if row else None


def _insert(db: Conn, account: str, name: str, special_use: str | None) -> int:
    row = db.execute(
        "INSERT INTO mailboxes (account, name, uidvalidity, special_use)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (account, name, _next_uidvalidity(db), special_use)).fetchone()
    assert row is not None
    return int(row[0])


def _junk(db: Conn, account: str) -> int:
    """The account's \\Junk mailbox, else one named Junk; made if neither exists."""
    row = db.execute(
        "SELECT id FROM mailboxes WHERE account = %s AND (special_use = '\\Junk'"
        " OR name = 'Junk') ORDER BY special_use IS NOT DISTINCT FROM '\\Junk' DESC, id"
        " LIMIT 1", (account,)).fetchone()
    if row is not None:
        return int(row[0])
    db.execute("INSERT INTO subscriptions VALUES (%s, 'Junk') ON CONFLICT DO NOTHING",
               (account,))
    return _insert(db, account, "Junk", "\\Junk")


def _make_parents(db: Conn, account: str, name: str) -> None:
    levels = name.split(DELIMITER)
    for depth in range(1, len(levels)):
        parent = DELIMITER.join(levels[:depth])
        if _row(db, account, parent) is None:
            _insert(db, account, parent, None)


def _next_uidvalidity(db: Conn) -> int:
    """Strictly growing across deletes, renames, restarts and nodes (a counter row)."""
    row = db.execute(
        "UPDATE counters SET value = greatest(value + 1, %s) WHERE name = 'uidvalidity'"
        " RETURNING value", (int(time.time()),)).fetchone()
    assert row is not None
    return int(row[0])


def _lock_mailbox(db: Conn, mailbox_id: int) -> str:
    """Take the mailbox row for this transaction (changes to one mailbox go one by one)."""
    row = db.execute("SELECT account FROM mailboxes WHERE id = %s FOR UPDATE",
                     (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return str(row[0])


def _check_quota(db: Conn, account: str, adding: int) -> None:
    row = db.execute("SELECT limit_bytes, used_bytes FROM quota WHERE account = %s FOR UPDATE",
                     (account,)).fetchone()
    if row is not None and row[0] is not None and row[1] + adding > row[0]:
        raise QuotaExceeded(f"quota of {account} exceeded ({row[1]} + {adding} > {row[0]})")


def _keyword_names(db: Conn, mailbox_id: int) -> dict[int, str]:
    return {r[0]: r[1] for r in db.execute(
        "SELECT bit, name FROM keywords WHERE mailbox_id = %s", (mailbox_id,))}


def _keyword_mask(db: Conn, mailbox_id: int, keywords: Iterable[str]) -> int:
    """Bits for keywords, adding unknown ones to the mailbox's table."""
    mask = 0
    for word in keywords:
        row = db.execute("SELECT bit FROM keywords WHERE mailbox_id = %s AND name = %s",
                         (mailbox_id, word)).fetchone()
        if row is None:
            used = db.execute("SELECT count(*) FROM keywords WHERE mailbox_id = %s",
                              (mailbox_id,)).fetchone()
            assert used is not None
            if used[0] >= MAX_KEYWORDS:
                raise StoreError(f"too many keywords in this mailbox (at most {MAX_KEYWORDS})")
            db.execute("INSERT INTO keywords VALUES (%s, %s, %s)", (mailbox_id, used[0], word))
            row = (used[0],)
        mask |= 1 << row[0]
    return mask
