"""Fills the parsed cache and the full-text index, off the SMTP path.

Intake only measures bytes (``BlobMeter``); parsing MIME and extracting body
text costs far more, so it happens here: in small batches when the server is
otherwise idle, and on demand for a mailbox just before a search or a fetch
that needs it. Each blob is parsed once however many mailboxes hold it.
"""

from __future__ import annotations

import binascii
import codecs
import sqlite3
import time
from collections.abc import Iterator

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, MimeLimits, MimePart, parse_message
from postwarden.mail.mime_headers import raw_fields
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import HEAD_FIELDS, HEADER_NAMES, UidSet
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import Database

# The parsed cache's header columns and the field names they hold, in order.
HEADER_COLUMNS = ("from_", "to_", "cc", "bcc", "subject", "date", "message_id", "in_reply_to",
                  "refs")
MAX_TEXT = 1 << 20  # characters of body text indexed per message
INDEXED, UNREADABLE = 1, 2  # blobs.indexed values (0: not yet)
NARROW_FETCH = 1000  # UIDs in a fetch small enough to index just those messages
INDEX_SLICE = 200  # messages parsed, then written in one transaction
SEARCH_INDEX_NOW = 500  # waiting messages a search indexes first; more are scanned instead
IDLE_SECONDS = 1.0  # the longest an idle step keeps indexing a backlog
_SCAN_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS scan_parsed (blob_id INTEGER PRIMARY KEY, "
    + ", ".join(HEADER_COLUMNS) + ")",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.scan_body USING fts5("
    "body, content='', detail=none, tokenize='unicode61 remove_diacritics 2')",
)
HEAD_NAMES = tuple(sorted(HEAD_FIELDS))


class Indexer:
    def __init__(self, db: Database, blobs: BlobFiles, limits: MimeLimits | None = None) -> None:
        self._db = db
        self._blobs = blobs
        self._limits = limits
        self._last_seen = 0  # the newest blob id at the previous idle step

    def idle_step(self, limit: int) -> int:
        """Index while the intake is quiet: batches for up to ``IDLE_SECONDS``,
        none when more than a batch arrived since the last step.

        A flood of mail gets the CPU to itself (the intake first); after it,
        the backlog goes at the parser's speed, not one batch per step.
        """
        (newest,) = self._db.conn.execute("SELECT coalesce(max(id), 0) FROM blobs").fetchone()
        arrived, self._last_seen = newest - self._last_seen, newest
        if arrived > limit:
            return 0
        done, started = 0, time.monotonic()
        while time.monotonic() - started < IDLE_SECONDS:
            step = self.index_pending(limit)
            done += step
            if step < limit:
                break
        return done

    def index_pending(self, limit: int) -> int:
        """Index up to ``limit`` mailbox messages not indexed yet, oldest first; how many.

        Files only the outbound queue refers to are never parsed.
        """
        rows = self._db.conn.execute(
            "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0"
            " AND EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id) ORDER BY b.id LIMIT ?",
            (limit,),
        ).fetchall()
        self._index(rows)
        return len(rows)

    def index_mailbox(self, mailbox_id: int, uids: UidSet | None = None) -> int:
        """Index what a mailbox's messages still lack (before a search or fetch needs it).

        With a small ``uids`` (a FETCH of a few messages) only those are
        parsed, so a client never waits for a whole unindexed mailbox.
        """
        if uids is not None and sum(hi - lo + 1 for lo, hi in uids.ranges) <= NARROW_FETCH:
            rows: list[tuple[int, str, int]] = []
            for lo, hi in uids.ranges:
                rows += self._db.conn.execute(
                    "SELECT b.id, b.name, b.header_size FROM messages m"
                    " JOIN blobs b ON b.id = m.blob_id"
                    " WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ? AND b.indexed = 0",
                    (mailbox_id, lo, hi),
                ).fetchall()
            self._index(list(dict.fromkeys(rows)))
            return len(rows)
        rows = self.waiting(mailbox_id)
        self._index(rows)
        return len(rows)

    def waiting(self, mailbox_id: int) -> list[tuple[int, str, int]]:
        """(blob id, name, header size) of a mailbox's messages not indexed yet."""
        return self._db.conn.execute(  # from the few unindexed blobs, not the many messages
            "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0 AND EXISTS"
            " (SELECT 1 FROM messages m WHERE m.blob_id = b.id AND m.mailbox_id = ?)",
            (mailbox_id,),
        ).fetchall()

    def prepare_search(self, mailbox_id: int, body: bool) -> bool:
        """Before a search that needs the parsed cache: True if it must also look
        in this thread's scan tables (``scan_parsed``, ``scan_body``).

        A few waiting messages are indexed at once. A long backlog (a bulk
        load the idle indexer has not reached) is scanned instead: only
        what the search needs (the header fields; the body text if it
        searches bodies) goes to temporary tables, so the search does not
        wait for every message to be parsed, indexed and written.
        """
        rows = self.waiting(mailbox_id)
        if len(rows) <= SEARCH_INDEX_NOW:
            self._index(rows)
            return False
        db = self._db.conn
        for statement in _SCAN_TABLES:
            db.execute(statement)
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM scan_parsed")
            db.execute("INSERT INTO scan_body (scan_body) VALUES ('delete-all')")
            for blob_id, name, header_size in rows:
                self._scan(db, blob_id, name, header_size, body)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def _scan(self, db: sqlite3.Connection, blob_id: int, name: str, header_size: int,
              body: bool) -> None:
        try:  # the header's fields parse the same from the header alone
            data = self._blobs.read_blob(name, 0, None if body else header_size)
        except (OSError, NotFound):  # a missing file: this message only
            data = None
        structure = parse_message(data, self._limits) if data is not None else None
        values = [_field(structure, n) if structure else None for n in HEADER_NAMES]
        db.execute(f"INSERT INTO scan_parsed VALUES (?{', ?' * len(HEADER_COLUMNS)})",
                   (blob_id, *values))
        if body and data is not None and structure is not None:
            text = "\n".join(_texts(data, structure.root))[:MAX_TEXT]
            if text:
                db.execute("INSERT INTO scan_body (rowid, body) VALUES (?, ?)", (blob_id, text))

    def _index(self, rows: list[tuple[int, str, int]]) -> None:
        """Parse and store in slices: memory stays bounded however many are waiting."""
        for at in range(0, len(rows), INDEX_SLICE):
            parsed = [(blob_id, *self._parse(name, header_size))
                      for blob_id, name, header_size in rows[at:at + INDEX_SLICE]]
            with self._db.tx() as db:
                for blob_id, structure, text, head in parsed:
                    _store(db, blob_id, structure, text, head)

    def _parse(self, name: str, header_size: int
               ) -> tuple[MessageStructure | None, str, bytes]:
        try:
            data = self._blobs.read_blob(name)
        except (OSError, NotFound):  # a missing file: this message only
            return None, "", b""
        structure = parse_message(data, self._limits)
        head = raw_fields(data[:header_size], HEAD_NAMES)
        return structure, "\n".join(_texts(data, structure.root))[:MAX_TEXT], head


def _store(db: sqlite3.Connection, blob_id: int, structure: MessageStructure | None,
           text: str, head: bytes) -> None:
    if structure is None:
        db.execute("UPDATE blobs SET indexed = ? WHERE id = ? AND indexed = 0",
                   (UNREADABLE, blob_id))
        return
    if db.execute("UPDATE blobs SET indexed = ? WHERE id = ? AND indexed = 0",
                  (INDEXED, blob_id)).rowcount == 0:
        return  # indexed meanwhile (another thread or process)
    values = [_field(structure, name) for name in HEADER_NAMES]
    db.execute(
        f"INSERT OR REPLACE INTO parsed (blob_id, structure, head, {', '.join(HEADER_COLUMNS)})"
        f" VALUES (?, ?, ?{', ?' * len(HEADER_COLUMNS)})",
        (blob_id, mime_codec.dumps(structure), head, *values))
    if text:
        db.execute("INSERT INTO body_index (rowid, body) VALUES (?, ?)", (blob_id, text))


def _field(structure: MessageStructure, name: str) -> str | None:
    values = [v for k, v in structure.fields if k == name]
    return ", ".join(values) if values else None


def _texts(data: bytes, part: MimePart) -> Iterator[str]:
    """The decoded text of every text/* body that is not an attachment."""
    if part.children:
        for child in part.children:
            yield from _texts(data, child)
        return
    if part.media_type.lower() != "text" or (part.disposition or "").lower() == "attachment":
        return
    raw = data[part.body_start:part.end]
    match (part.encoding or "").lower():
        case "base64":
            try:
                raw = binascii.a2b_base64(raw)
            except (binascii.Error, ValueError):
                return
        case "quoted-printable":
            raw = binascii.a2b_qp(raw)
    charset = part.param("charset") or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "latin-1"
    yield raw.decode(charset, errors="replace")
