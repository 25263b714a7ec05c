"""Per-account mailboxes and their messages: the ``MailboxStore`` both SQL backends share.

A message row is narrow (UID, blob id, MODSEQ, flag bits, keyword bits,
internal date, the copy's own header prefix); sizes live in the ``blobs``
table, parsed fields in the parsed cache. Every change updates the
mailbox's counters and the account's quota in the same transaction, so
STATUS and QUOTA are one-row reads. A change to a mailbox first updates (or
with ``Dialect.for_update`` locks) its row: on PostgreSQL that row lock
orders the writers of one mailbox on every node, so UIDs are assigned
inside the inserting transaction and no client sees UID n+1 before n;
SQLite has one writer at a time anyway.

A backend subclasses ``SqlMailboxes`` with its connection type, dialect and
the little that differs (how a UID list comes back, when a blob's bytes are
durable, files a database does not know).
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from typing import Generic

from postwarden.storage.interfaces import AlreadyExists, BlobRef, NotFound, StoreError
from postwarden.storage.mailbox import (
    DELIMITER,
    HEADER_NAMES,
    INBOX,
    NO_FLAGS,
    Appended,
    BlobHandle,
    Changes,
    CopyResult,
    Expunged,
    Field,
    Flag,
    FlagChange,
    FlagMode,
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
from postwarden.storage.sql.dialect import C, Database, Dialect
from postwarden.storage.sql.indexer import HEADER_COLUMNS
from postwarden.storage.sql.parts import BlobRows, SearchIndex
from postwarden.storage.sql.search import KeywordName, compile_query

SPECIAL_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
_FLAGS = tuple(Flag(i) for i in range(32))  # every combination; Flag(n) is slow per row
_NO_KEYWORDS: frozenset[str] = frozenset()
MAX_KEYWORDS = 63  # keyword bits per mailbox (one signed 64-bit integer)
MAX_NAME_LENGTH = 1000  # octets of a mailbox path
_MAILBOX = "SELECT id, account, name, uidvalidity, special_use FROM mailboxes"
# blob id, size (prefix included), flags, keyword mask, internal date, prefix
_Row = tuple[int, int, int, int, float, bytes]


class SqlMailboxes(Generic[C]):
    """Mailboxes with IMAP-ready UIDs, flags, MODSEQs, counters and quota."""

    def __init__(self, db: Database[C], dialect: Dialect, blobs: BlobRows[C],
                 indexer: SearchIndex) -> None:
        self._db = db
        self._q = dialect.sql
        self._dialect = dialect
        self._blobs = blobs
        self._indexer = indexer
        # mailbox id -> (uidnext, messages, UIDs): appends only add at uidnext
        # and expunges only lower the count, so an unchanged pair means an
        # unchanged list, whichever process or node changed it.
        self._uid_cache: dict[int, tuple[int, int, array[int]]] = {}
        self._cache_lock = threading.Lock()

    # --- what a backend does its own way ------------------------------------------

    def _uid_list(self, db: C, mailbox_id: int) -> array[int]:
        """Every UID of a mailbox, ascending, in one statement."""
        raise NotImplementedError

    def blobs_durable(self, names: Iterable[str]) -> None:
        """Before a transaction refers to these new blobs (files: sync their entries)."""

    # --- accounts' mailboxes ------------------------------------------------------

    def create_mailboxes(self, db: C, account: str) -> None:
        """The special mailboxes and quota row every account has (caller's transaction)."""
        db.execute(self._q("INSERT INTO quota (account) VALUES (?) ON CONFLICT DO NOTHING"),
                   (account,))
        for name, special in SPECIAL_MAILBOXES:
            if self._row(db, account, name) is None:
                self._insert(db, account, name, special)
                self._subscribe(db, account, name)

    def remove_account_mailboxes(self, db: C, account: str) -> None:
        """Drop an account's mailboxes, subscriptions and quota; release its blobs."""
        ids = [r[0] for r in db.execute(self._q(
            "SELECT m.blob_id FROM messages m JOIN mailboxes b ON m.mailbox_id = b.id"
            " WHERE b.account = ?"), (account,))]
        self._blobs.release_ids(db, ids, time.time())
        for table in ("mailboxes", "subscriptions", "quota", "maildrop_locks"):
            db.execute(self._q(f"DELETE FROM {table} WHERE account = ?"), (account,))

    def ensure_mailboxes(self, account: str) -> None:
        with self._db.tx() as db:
            self.create_mailboxes(db, account)

    # --- mailbox CRUD -------------------------------------------------------------

    def create_mailbox(self, account: str, name: str, special_use: str | None = None
                       ) -> Mailbox:
        """Create a mailbox, and any missing parents (RFC 9051 §6.3.4)."""
        name = _valid_name(name)
        with self._db.tx() as db:
            if self._row(db, account, name) is not None:
                raise AlreadyExists(f"mailbox {name} already exists")
            self._make_parents(db, account, name)
            mailbox_id = self._insert(db, account, name, special_use)
            return Mailbox(*db.execute(self._q(_MAILBOX + " WHERE id = ?"),
                                       (mailbox_id,)).fetchone())

    def delete_mailbox(self, account: str, name: str) -> None:
        name = normalise_name(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted")
        with self._db.tx() as db:
            mailbox_id = self._row(db, account, name)
            if mailbox_id is None:
                raise NotFound(f"no such mailbox: {name}")
            if db.execute(self._q(
                "SELECT 1 FROM mailboxes WHERE account = ? AND substr(name, 1, ?) = ? LIMIT 1"),
                (account, len(name) + 1, name + DELIMITER),
            ).fetchone():
                raise StoreError(f"mailbox {name} has children; delete them first")
            blob_ids = [r[0] for r in db.execute(
                self._q("SELECT blob_id FROM messages WHERE mailbox_id = ?"), (mailbox_id,))]
            counts = db.execute(self._q("SELECT messages, bytes FROM mailboxes WHERE id = ?"),
                                (mailbox_id,)).fetchone()
            self._blobs.release_ids(db, blob_ids, time.time())
            db.execute(self._q(
                "UPDATE quota SET used_messages = used_messages - ?, used_bytes = used_bytes - ?"
                " WHERE account = ?"), (counts[0], counts[1], account))
            db.execute(self._q("DELETE FROM mailboxes WHERE id = ?"), (mailbox_id,))

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
            if self._row(db, account, old) is None:
                raise NotFound(f"no such mailbox: {old}")
            if self._row(db, account, new) is not None:
                raise AlreadyExists(f"mailbox {new} already exists")
            db.execute(self._q(
                "UPDATE mailboxes SET name = ? || substr(name, ?)"
                " WHERE account = ? AND (name = ? OR substr(name, 1, ?) = ?)"),
                (new, len(old) + 1, account, old, len(old) + 1, old + DELIMITER),
            )
            self._make_parents(db, account, new)

    def get_mailbox(self, account: str, name: str) -> Mailbox | None:
        with self._db.read() as db:
            row = db.execute(self._q(_MAILBOX + " WHERE account = ? AND name = ?"),
                             (account, normalise_name(name))).fetchone()
        return Mailbox(*row) if row else None

    def list_mailboxes(self, account: str) -> list[Mailbox]:
        with self._db.read() as db:
            rows = db.execute(self._q(
                _MAILBOX + " WHERE account = ? ORDER BY name" + self._dialect.bytewise),
                (account,)).fetchall()
        return [Mailbox(*r) for r in rows]

    def _row(self, db: C, account: str, name: str) -> int | None:
        row = db.execute(self._q("SELECT id FROM mailboxes WHERE account = ? AND name = ?"),
                         (account, name)).fetchone()
        return int(row[0]) if row else None

    def _insert(self, db: C, account: str, name: str, special_use: str | None) -> int:
        row = db.execute(self._q(
            "INSERT INTO mailboxes (account, name, uidvalidity, special_use)"
            " VALUES (?, ?, ?, ?) RETURNING id"),
            (account, name, self._next_uidvalidity(db), special_use),
        ).fetchone()
        return int(row[0])

    def _make_parents(self, db: C, account: str, name: str) -> None:
        levels = name.split(DELIMITER)
        for depth in range(1, len(levels)):
            parent = DELIMITER.join(levels[:depth])
            if self._row(db, account, parent) is None:
                self._insert(db, account, parent, None)

    def _next_uidvalidity(self, db: C) -> int:
        """Strictly growing across deletes, renames, restarts and nodes (a counter row,
        not the clock)."""
        row = db.execute(self._q(
            f"UPDATE counters SET value = {self._dialect.greatest}(value + 1, ?)"
            " WHERE name = 'uidvalidity' RETURNING value"), (int(time.time()),)).fetchone()
        return int(row[0])

    # --- subscriptions ------------------------------------------------------------

    def subscribe(self, account: str, name: str) -> None:
        """A subscription may name a mailbox that does not exist (RFC 9051 §6.3.7)."""
        with self._db.tx() as db:
            self._subscribe(db, account, normalise_name(name))

    def _subscribe(self, db: C, account: str, name: str) -> None:
        db.execute(self._q("INSERT INTO subscriptions VALUES (?, ?) ON CONFLICT DO NOTHING"),
                   (account, name))

    def unsubscribe(self, account: str, name: str) -> None:
        with self._db.tx() as db:
            if db.execute(self._q("DELETE FROM subscriptions WHERE account = ? AND name = ?"),
                          (account, normalise_name(name))).rowcount == 0:
                raise NotFound(f"not subscribed to {name}")

    def subscriptions(self, account: str) -> list[str]:
        with self._db.read() as db:
            return [r[0] for r in db.execute(self._q(
                "SELECT name FROM subscriptions WHERE account = ? ORDER BY name"
                + self._dialect.bytewise), (account,))]

    # --- reading ----------------------------------------------------------------------

    def status(self, mailbox_id: int) -> MailboxStatus:
        with self._db.read() as db:
            row = db.execute(self._q(
                "SELECT id, account, name, uidvalidity, special_use, messages, unseen, bytes,"
                " deleted, uidnext, highestmodseq, first_recent FROM mailboxes WHERE id = ?"),
                (mailbox_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return MailboxStatus(Mailbox(*row[:5]), *row[5:])

    def uids(self, mailbox_id: int) -> array[int]:
        """Every UID, ascending; served from a cache while the mailbox is unchanged."""
        with self._db.read() as db:
            row = db.execute(self._q(
                "SELECT uidnext, messages, (SELECT min(uid) FROM messages WHERE mailbox_id = ?),"
                " (SELECT max(uid) FROM messages WHERE mailbox_id = ?)"
                " FROM mailboxes WHERE id = ?"), (mailbox_id, mailbox_id, mailbox_id)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            with self._cache_lock:
                cached = self._uid_cache.get(mailbox_id)
            if cached is not None and cached[:2] == (row[0], row[1]):
                return cached[2]
            if row[2] is not None and row[3] - row[2] + 1 == row[1]:
                # No gap (never expunged in the middle): the UIDs are that range. One
                # statement, one snapshot, so the count and the ends agree.
                uids = array("I", range(row[2], row[3] + 1))
            else:
                uids = self._uid_list(db, mailbox_id)
        if len(uids) == row[1]:  # a consistent read (the list has as many as counted)
            with self._cache_lock:
                self._uid_cache[mailbox_id] = (row[0], row[1], uids)
        return uids

    def metadata(self, mailbox_id: int, uids: UidSet, fields: Field = Field.NONE,
                 header_names: Sequence[str] | None = None) -> list[MessageMeta]:
        """The chosen fields for the messages in ``uids``, ascending.

        Only the tables and columns the fields need are read: flags alone
        come from the narrow message rows, headers from the parsed cache,
        never from the blobs.
        """
        want_blob = bool(fields & Field.SIZE)
        want_headers = bool(fields & Field.HEADERS)
        want_structure = bool(fields & Field.STRUCTURE)
        want_head = bool(fields & Field.HEAD)
        if want_headers or want_structure:
            self._indexer.index_mailbox(mailbox_id, uids)
        wanted = tuple(HEADER_NAMES if header_names is None else
                       [n for n in HEADER_NAMES if n in {h.lower() for h in header_names}])
        columns = "m.uid, m.flags, m.keywords, m.modseq, m.internaldate"
        joins = ""
        if want_blob:
            columns += ", b.name, b.size, b.wire_size, b.header_size, b.lines, m.prefix"
            joins += " JOIN blobs b ON b.id = m.blob_id"
        if want_headers or want_structure or want_head:
            joins += " LEFT JOIN parsed p ON p.blob_id = m.blob_id"
        if want_structure:
            columns += ", p.structure"
        if want_head:
            columns += ", p.head"
        if want_headers and wanted:
            columns += ", " + ", ".join(f"p.{HEADER_COLUMNS[HEADER_NAMES.index(n)]}"
                                        for n in wanted)
        at = 11 if want_blob else 5  # the structure's column, then the head's
        at_head = at + want_structure
        at_headers = at_head + want_head
        plain = at == 5 and not (want_headers or want_structure or want_head)
        out: list[MessageMeta] = []
        with self._db.read() as db:
            names = self._keyword_names(db, mailbox_id)
            for where, params in self._dialect.uid_clauses(uids):
                rows = db.execute(self._q(
                    f"SELECT {columns} FROM messages m{joins} WHERE m.mailbox_id = ?"
                    f" AND {where} ORDER BY m.uid"), (mailbox_id, *params)
                ).fetchall()
                if plain and not names:  # the FETCH 1:* (UID FLAGS) case, kept tight
                    out += [MessageMeta(r[0], _FLAGS[r[1]], _NO_KEYWORDS, r[3], r[4])
                            for r in rows]
                    continue
                if want_headers and not (want_blob or want_structure or want_head or names):
                    out += [MessageMeta(
                        r[0], _FLAGS[r[1]], _NO_KEYWORDS, r[3], r[4], None,
                        tuple([(n, v) for n, v in zip(wanted, r[5:], strict=True) if v])
                    ) for r in rows]
                    continue
                for r in rows:
                    flags = _FLAGS[r[1]]
                    keywords = _keywords(r[2], names) if r[2] else _NO_KEYWORDS
                    if plain:
                        out.append(MessageMeta(r[0], flags, keywords, r[3], r[4]))
                        continue
                    blob = None
                    if want_blob:  # most rows have no prefix: skip the call for them
                        blob = (copy_handle(*r[5:11]) if r[10]
                                else BlobHandle(r[5], r[6], r[7], r[8], r[9]))
                    structure = r[at] if want_structure else None
                    head = r[at_head] if want_head else None
                    headers = (tuple([(n, v) for n, v in zip(wanted, r[at_headers:],
                                                             strict=True) if v])
                               if want_headers else ())
                    out.append(MessageMeta(r[0], flags, keywords, r[3], r[4], blob, headers,
                                           structure, head))
        return out

    def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        with self._db.snapshot() as db:  # one snapshot for the three reads
            highest = db.execute(self._q("SELECT highestmodseq FROM mailboxes WHERE id = ?"),
                                 (mailbox_id,)).fetchone()
            if highest is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            names = self._keyword_names(db, mailbox_id)
            changed = tuple(
                FlagUpdate(r[0], _FLAGS[r[1]], _keywords(r[2], names), r[3])
                for r in db.execute(self._q(
                    "SELECT uid, flags, keywords, modseq FROM messages"
                    " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid"), (mailbox_id, modseq))
            )
            vanished = tuple(r[0] for r in db.execute(self._q(
                "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid"),
                (mailbox_id, modseq)))
        return Changes(highest[0], changed, vanished)

    def search(self, mailbox_id: int, query: Query) -> list[int]:
        """UIDs matching ``query``, ascending, from the indexes (and, for messages
        a long indexing backlog still holds, from a scan of just those)."""
        compiled = compile_query(query, self._dialect)
        sql = compiled.sql
        with self._db.read() as db:
            params = self._resolve_keywords(db, mailbox_id, compiled.params)
        blobs = " JOIN blobs b ON b.id = m.blob_id"
        parsed = " LEFT JOIN parsed p ON p.blob_id = m.blob_id"
        scan = (self._indexer.prepare_search(mailbox_id, body=compiled.body)
                if compiled.parsed else None)
        if scan is None:
            joins = (blobs if "b." in sql else "") + (parsed if "p." in sql else "")
            return self._search_uids(mailbox_id, sql, params, joins)
        found = self._search_uids(mailbox_id, f"b.indexed <> 0 AND ({sql})", params,
                                  blobs + parsed)
        scan_sql = compile_query(query, self._dialect, body_table=scan.body).sql
        found += self._search_uids(mailbox_id, scan_sql, params,
                                   blobs + f" JOIN {scan.parsed} p ON p.blob_id = m.blob_id")
        return sorted(set(found))  # a message indexed meanwhile may be in both

    def _search_uids(self, mailbox_id: int, sql: str, params: Sequence[object], joins: str
                     ) -> list[int]:
        with self._db.read() as db:
            return [r[0] for r in db.execute(self._q(
                f"SELECT m.uid FROM messages m{joins} WHERE m.mailbox_id = ? AND ({sql})"
                " ORDER BY m.uid"), (mailbox_id, *params))]

    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        return self._blobs.read_blob(name, start, length)

    def quota(self, account: str) -> Quota:
        with self._db.read() as db:
            row = db.execute(self._q(
                "SELECT limit_bytes, used_bytes, used_messages FROM quota WHERE account = ?"),
                (account,)).fetchone()
        if row is None:
            raise NotFound(f"no such user: {account}")
        return Quota(row[0], row[1], row[2])

    def set_quota(self, account: str, limit: int | None) -> None:
        with self._db.tx() as db:
            if db.execute(self._q("UPDATE quota SET limit_bytes = ? WHERE account = ?"),
                          (limit, account)).rowcount == 0:
                raise NotFound(f"no such user: {account}")

    # --- writing -------------------------------------------------------------------------

    def deliver(self, db: C, account: str, blob_id: int, size: int, when: float,
                prefix: bytes = b"", *, junk: bool = False) -> int:
        """SMTP delivery into INBOX (or with ``junk`` the \\Junk mailbox) inside the
        caller's transaction; the UID.

        ``prefix``: this copy's own header lines, before the shared blob.
        Not refused over quota: the message was accepted already; the usage
        still counts it, so IMAP APPEND and COPY see the account as full.
        """
        inbox = self._row(db, account, INBOX)
        if inbox is None:
            self.create_mailboxes(db, account)
            return self.deliver(db, account, blob_id, size, when, prefix, junk=junk)
        target = self._junk(db, account) if junk else inbox
        ((uid, _),) = self._add(db, target, account,
                                [(blob_id, size + len(prefix), 0, 0, when, prefix)])
        return uid

    def _junk(self, db: C, account: str) -> int:
        """The account's \\Junk mailbox, else one named Junk; made if neither exists."""
        row = db.execute(self._q(
            "SELECT id FROM mailboxes WHERE account = ? AND (special_use = '\\Junk'"
            " OR name = 'Junk') ORDER BY special_use IS NOT DISTINCT FROM '\\Junk' DESC, id"
            " LIMIT 1"), (account,)).fetchone()
        if row is not None:
            return int(row[0])
        mailbox_id = self._insert(db, account, "Junk", "\\Junk")
        self._subscribe(db, account, "Junk")
        return mailbox_id

    def append(self, account: str, mailbox: str, blob: BlobRef, flags: Flag = NO_FLAGS,
               keywords: frozenset[str] = frozenset(), internaldate: float | None = None
               ) -> Appended:
        """IMAP APPEND of a written blob (through the intake): its row and UID in one
        transaction."""
        now = time.time()
        self.blobs_durable([blob.name])
        with self._db.tx() as db:
            row = db.execute(self._q(
                "SELECT id, uidvalidity FROM mailboxes WHERE account = ? AND name = ?"
                + self._dialect.for_update), (account, normalise_name(mailbox))).fetchone()
            if row is None:
                raise NotFound(f"no such mailbox: {mailbox}")
            self._check_quota(db, account, blob.size)
            blob_id = self._blobs.register(db, blob, 1, now)
            mask = self._keyword_mask(db, row[0], keywords)
            when = now if internaldate is None else internaldate
            ((uid, _),) = self._add(db, row[0], account,
                                    [(blob_id, blob.size, int(flags), mask, when, b"")])
        return Appended(row[1], uid)

    def _add(self, db: C, mailbox_id: int, account: str, rows: Sequence[_Row]
             ) -> list[tuple[int, int]]:
        """Insert rows with the next UIDs and one new MODSEQ; their (UID, modseq)s.

        The mailbox row's update holds its lock until commit: concurrent
        appends to one mailbox, from any node, get their UIDs in commit order.
        """
        count = len(rows)
        size = sum(r[1] for r in rows)
        unseen = sum(1 for r in rows if not r[2] & Flag.SEEN)
        deleted = sum(1 for r in rows if r[2] & Flag.DELETED)
        first, modseq = db.execute(self._q(
            "UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1,"
            " messages = messages + ?, unseen = unseen + ?, bytes = bytes + ?,"
            " deleted = deleted + ? WHERE id = ? RETURNING uidnext - ?, highestmodseq"),
            (count, count, unseen, size, deleted, mailbox_id, count)).fetchone()
        db.cursor().executemany(self._q(
            "INSERT INTO messages (mailbox_id, uid, blob_id, modseq, flags, keywords,"
            " internaldate, prefix) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            [(mailbox_id, first + i, blob_id, modseq, flags, mask, when, prefix)
             for i, (blob_id, _, flags, mask, when, prefix) in enumerate(rows)])
        db.execute(self._q(
            "UPDATE quota SET used_messages = used_messages + ?, used_bytes = used_bytes + ?"
            " WHERE account = ?"), (count, size, account))
        return [(first + i, modseq) for i in range(count)]

    def _check_quota(self, db: C, account: str, adding: int) -> None:
        row = db.execute(self._q("SELECT limit_bytes, used_bytes FROM quota WHERE account = ?"
                                 + self._dialect.for_update), (account,)).fetchone()
        if row is not None and row[0] is not None and row[1] + adding > row[0]:
            raise QuotaExceeded(f"quota of {account} exceeded ({row[1]} + {adding} > {row[0]})")

    def store_flags(self, mailbox_id: int, uids: UidSet, change: FlagChange) -> FlagResult:
        """One STORE: every changed message gets the same new MODSEQ."""
        with self._db.tx() as db:
            self._lock_mailbox(db, mailbox_id)
            mask = self._keyword_mask(db, mailbox_id, change.keywords)
            changed: list[tuple[int, int, int]] = []
            failed: list[int] = []
            unseen = deleted = 0
            for where, params in self._dialect.uid_clauses(uids):
                for uid, flags, keywords, modseq in db.execute(self._q(
                    f"SELECT uid, flags, keywords, modseq FROM messages m"
                    f" WHERE m.mailbox_id = ? AND {where}"), (mailbox_id, *params)
                ).fetchall():
                    if change.unchanged_since is not None and modseq > change.unchanged_since:
                        failed.append(uid)
                        continue
                    new_flags, new_keywords = _apply(change.mode, flags, keywords,
                                                     int(change.flags), mask)
                    if (new_flags, new_keywords) == (flags, keywords):
                        continue
                    changed.append((uid, new_flags, new_keywords))
                    unseen += _bit(flags, Flag.SEEN) - _bit(new_flags, Flag.SEEN)
                    deleted += _bit(new_flags, Flag.DELETED) - _bit(flags, Flag.DELETED)
            if not changed:
                return FlagResult((), tuple(sorted(failed)))
            (modseq,) = db.execute(self._q(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1, unseen = unseen + ?,"
                " deleted = deleted + ? WHERE id = ? RETURNING highestmodseq"),
                (unseen, deleted, mailbox_id)).fetchone()
            db.cursor().executemany(self._q(
                "UPDATE messages SET flags = ?, keywords = ?, modseq = ?"
                " WHERE mailbox_id = ? AND uid = ?"),
                [(f, k, modseq, mailbox_id, uid) for uid, f, k in changed])
            names = self._keyword_names(db, mailbox_id)
        updates = tuple(FlagUpdate(uid, _FLAGS[f], _keywords(k, names), modseq)
                        for uid, f, k in sorted(changed))
        return FlagResult(updates, tuple(sorted(failed)))

    def expunge(self, mailbox_id: int, uids: UidSet | None = None, *,
                deleted_only: bool = True) -> list[Expunged]:
        """Remove messages; ``uids=None``: every ``\\Deleted`` one. Logged for QRESYNC."""
        with self._db.tx() as db:
            return self._expunge(db, mailbox_id, uids or UidSet.all(), deleted_only)

    def _expunge(self, db: C, mailbox_id: int, uids: UidSet, deleted_only: bool
                 ) -> list[Expunged]:
        account = self._lock_mailbox(db, mailbox_id)
        gone: list[tuple[int, int, int, int]] = []  # uid, blob id, flags, size
        only = f" AND m.flags & {int(Flag.DELETED)} <> 0" if deleted_only else ""
        for where, params in self._dialect.uid_clauses(uids):
            gone += db.execute(self._q(
                "SELECT m.uid, m.blob_id, m.flags, b.size + length(m.prefix) FROM messages m"
                f" JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = ? AND {where}{only}"),
                (mailbox_id, *params)).fetchall()
        if not gone:
            return []
        gone.sort()
        size = sum(g[3] for g in gone)
        unseen = sum(1 for g in gone if not g[2] & Flag.SEEN)
        deleted = sum(1 for g in gone if g[2] & Flag.DELETED)
        (modseq,) = db.execute(self._q(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1, messages = messages - ?,"
            " unseen = unseen - ?, bytes = bytes - ?, deleted = deleted - ? WHERE id = ?"
            " RETURNING highestmodseq"),
            (len(gone), unseen, size, deleted, mailbox_id)).fetchone()
        db.cursor().executemany(self._q("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?"),
                                [(mailbox_id, g[0]) for g in gone])
        db.cursor().executemany(self._q(
            "INSERT INTO expunged VALUES (?, ?, ?) ON CONFLICT (mailbox_id, uid)"
            " DO UPDATE SET modseq = excluded.modseq"),
            [(mailbox_id, g[0], modseq) for g in gone])
        db.execute(self._q(
            "UPDATE quota SET used_messages = used_messages - ?, used_bytes = used_bytes - ?"
            " WHERE account = ?"), (len(gone), size, account))
        self._blobs.release_ids(db, [g[1] for g in gone], time.time())
        return [Expunged(g[0], modseq) for g in gone]

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

    def _copy(self, db: C, source_id: int, uids: UidSet, target_id: int,
              moving: bool = False) -> CopyResult:
        target = db.execute(self._q("SELECT account, uidvalidity FROM mailboxes WHERE id = ?"
                                    + self._dialect.for_update), (target_id,)).fetchone()
        if target is None:
            raise NotFound(f"no mailbox {target_id}")
        source_names = self._keyword_names(db, source_id)
        rows = []
        for where, params in self._dialect.uid_clauses(uids):
            rows += db.execute(self._q(
                "SELECT m.uid, m.blob_id, b.size + length(m.prefix), m.flags, m.keywords,"
                " m.internaldate, m.prefix FROM messages m JOIN blobs b ON b.id = m.blob_id"
                f" WHERE m.mailbox_id = ? AND {where}"), (source_id, *params)).fetchall()
        if not rows:
            return CopyResult(target[1], ())
        rows.sort()
        source = db.execute(self._q("SELECT account FROM mailboxes WHERE id = ?"),
                            (source_id,)).fetchone()
        if not (moving and source[0] == target[0]):
            self._check_quota(db, target[0], sum(r[2] for r in rows))
        new_rows = [
            (blob_id, size, flags,
             self._keyword_mask(db, target_id, _keywords(kw, source_names)), when, prefix)
            for _, blob_id, size, flags, kw, when, prefix in rows
        ]
        added = self._add(db, target_id, target[0], new_rows)
        self._blobs.add_refs(db, [r[1] for r in rows])
        return CopyResult(target[1], tuple((r[0], a[0]) for r, a in zip(rows, added,
                                                                          strict=True)))

    def claim_recent(self, mailbox_id: int) -> range:
        """The UIDs that are \\Recent for the caller; later sessions will not see them."""
        with self._db.tx() as db:
            row = db.execute(self._q("SELECT first_recent, uidnext FROM mailboxes WHERE id = ?"
                                     + self._dialect.for_update), (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            db.execute(self._q("UPDATE mailboxes SET first_recent = uidnext WHERE id = ?"),
                       (mailbox_id,))
        return range(int(row[0]), int(row[1]))

    def _lock_mailbox(self, db: C, mailbox_id: int) -> str:
        """Take the mailbox row for this transaction (changes to one mailbox go one
        by one); its account."""
        row = db.execute(self._q("SELECT account FROM mailboxes WHERE id = ?"
                                 + self._dialect.for_update), (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return str(row[0])

    # --- the POP3 maildrop lock, shared by every process and node ---------------------

    def lock_maildrop(self, account: str, owner: str, until: float) -> None:
        """Take the lock unless another live owner holds it."""
        with self._db.tx() as db:
            row = db.execute(self._q(
                "INSERT INTO maildrop_locks VALUES (?, ?, ?) ON CONFLICT (account) DO UPDATE"
                " SET owner = excluded.owner, until = excluded.until"
                " WHERE maildrop_locks.until < ? OR maildrop_locks.owner = excluded.owner"
                " RETURNING owner"), (account, owner, until, time.time())).fetchone()
        if row is None:
            raise MailboxInUse(f"maildrop of {account} is in use")

    def unlock_maildrop(self, account: str, owner: str) -> None:
        with self._db.tx() as db:
            db.execute(self._q("DELETE FROM maildrop_locks WHERE account = ? AND owner = ?"),
                       (account, owner))

    # --- keywords ---------------------------------------------------------------------

    def _keyword_names(self, db: C, mailbox_id: int) -> dict[int, str]:
        return {r[0]: r[1] for r in db.execute(
            self._q("SELECT bit, name FROM keywords WHERE mailbox_id = ?"), (mailbox_id,))}

    def _keyword_bit(self, db: C, mailbox_id: int, word: str) -> int | None:
        row = db.execute(self._q("SELECT bit FROM keywords WHERE mailbox_id = ? AND name = ?"),
                         (mailbox_id, word)).fetchone()
        return int(row[0]) if row else None

    def _keyword_mask(self, db: C, mailbox_id: int, keywords: Iterable[str]) -> int:
        """Bits for keywords, adding unknown ones to the mailbox's table."""
        mask = 0
        for word in keywords:
            bit = self._keyword_bit(db, mailbox_id, word)
            if bit is None:
                (bit,) = db.execute(self._q("SELECT count(*) FROM keywords WHERE mailbox_id = ?"),
                                    (mailbox_id,)).fetchone()
                if bit >= MAX_KEYWORDS:
                    raise StoreError(
                        f"too many keywords in this mailbox (at most {MAX_KEYWORDS})")
                db.execute(self._q("INSERT INTO keywords VALUES (?, ?, ?)"),
                           (mailbox_id, bit, word))
            mask |= 1 << bit
        return mask

    def _resolve_keywords(self, db: C, mailbox_id: int, params: Sequence[object]
                          ) -> list[object]:
        """Search parameters with keyword names replaced by their bit masks (0: unknown)."""
        out: list[object] = []
        for p in params:
            if isinstance(p, KeywordName):
                bit = self._keyword_bit(db, mailbox_id, p.name)
                out.append(0 if bit is None else 1 << bit)
            else:
                out.append(p)
        return out


# --- helpers ------------------------------------------------------------------------------


def _valid_name(name: str) -> str:
    name = normalise_name(name)
    levels = name.split(DELIMITER)
    if (not name or len(name.encode()) > MAX_NAME_LENGTH or any(not level for level in levels)
            or any(not c.isprintable() for c in name) or any(c in name for c in "*%")):
        raise StoreError(f"bad mailbox name {name!r}")
    return name


def _keywords(mask: int, names: dict[int, str]) -> frozenset[str]:
    if not mask:
        return _NO_KEYWORDS
    return frozenset(name for bit, name in names.items() if mask >> bit & 1)


def _apply(mode: FlagMode, flags: int, keywords: int, add_flags: int, add_keywords: int
           ) -> tuple[int, int]:
    match mode:
        case FlagMode.SET:
            return add_flags, add_keywords
        case FlagMode.ADD:
            return flags | add_flags, keywords | add_keywords
        case FlagMode.REMOVE:
            return flags & ~add_flags, keywords & ~add_keywords


def _bit(flags: int, flag: Flag) -> int:
    return 1 if flags & flag else 0
