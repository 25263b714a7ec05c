"""Fills the parsed cache and the text-search vector, off the SMTP path.

As with SQLite: parsed in small batches when the server is idle, and on
demand for a mailbox before a search or fetch that needs it; each blob
once, whichever node gets there first (the ``indexed`` flag is claimed by
the update that stores the result). The MIME parsing and body-text
extraction are the SQLite indexer's, which know nothing of SQL.
"""

from __future__ import annotations

import time

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, MimeLimits, parse_message
from postwarden.mail.mime_headers import raw_fields
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import HEADER_NAMES, UidSet
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import Conn, PgDatabase
from postwarden.storage.sqlite.indexer import (
    HEAD_NAMES,
    HEADER_COLUMNS,
    IDLE_SECONDS,
    INDEXED,
    NARROW_FETCH,
    UNREADABLE,
    _field,
    _texts,
)

# Characters of body text indexed per message: a tsvector holds at most 1 MB.
MAX_TEXT = 256 * 1024


class PgIndexer:
    def __init__(self, db: PgDatabase, blobs: PgBlobs, limits: MimeLimits | None = None) -> None:
        self._db = db
        self._blobs = blobs
        self._limits = limits
        self._last_seen = 0

    def idle_step(self, limit: int) -> int:
        """Index a batch, unless more than a batch arrived since the last step."""
        with self._db.conn() as db:
            row = db.execute("SELECT coalesce(max(id), 0) FROM blobs").fetchone()
        assert row is not None
        arrived, self._last_seen = row[0] - self._last_seen, row[0]
        if arrived > limit:
            return 0
        done, deadline = 0, time.monotonic() + IDLE_SECONDS
        while time.monotonic() < deadline:  # the backlog, batch after batch, for a while
            step = self.index_pending(limit)
            done += step
            if step < limit:
                break
        return done

    def index_pending(self, limit: int) -> int:
        with self._db.conn() as db:
            rows = db.execute(
                "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0 AND EXISTS"
                " (SELECT 1 FROM messages m WHERE m.blob_id = b.id) ORDER BY b.id LIMIT %s",
                (limit,)).fetchall()
        self._index(rows)
        return len(rows)

    def index_mailbox(self, mailbox_id: int, uids: UidSet | None = None) -> int:
        """Index what a mailbox's messages still lack (only those of a small ``uids``)."""
        narrow = uids is not None and sum(hi - lo + 1 for lo, hi in uids.ranges) <= NARROW_FETCH
        with self._db.conn() as db:
            if narrow and uids is not None:
                rows = db.execute(
                    "SELECT DISTINCT b.id, b.name, b.header_size FROM messages m JOIN blobs b"
                    " ON b.id = m.blob_id JOIN unnest(%s::bigint[], %s::bigint[]) r(lo, hi)"
                    " ON m.uid BETWEEN r.lo AND r.hi WHERE m.mailbox_id = %s AND b.indexed = 0",
                    ([r[0] for r in uids.ranges], [r[1] for r in uids.ranges], mailbox_id),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0 AND"
                    " EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id"
                    " AND m.mailbox_id = %s)",
                    (mailbox_id,)).fetchall()
        self._index(rows)
        return len(rows)

    def _index(self, rows: list[tuple[int, str, int]]) -> None:
        parsed = [(blob_id, *self._parse(name, header_size))
                  for blob_id, name, header_size in rows]
        if not parsed:
            return
        with self._db.tx() as db:
            for blob_id, structure, text, head in parsed:
                _store(db, blob_id, structure, text, head)

    def _parse(self, name: str, header_size: int
               ) -> tuple[MessageStructure | None, str, bytes]:
        try:
            data = self._blobs.read_blob(name)
        except (OSError, NotFound):
            return None, "", b""
        structure = parse_message(data, self._limits)
        head = raw_fields(data[:header_size], HEAD_NAMES)
        return structure, "\n".join(_texts(data, structure.root))[:MAX_TEXT], head


def _store(db: Conn, blob_id: int, structure: MessageStructure | None, text: str,
           head: bytes) -> None:
    state = UNREADABLE if structure is None else INDEXED
    if db.execute("UPDATE blobs SET indexed = %s WHERE id = %s AND indexed = 0",
                  (state, blob_id)).rowcount == 0 or structure is None:
        return  # indexed meanwhile (another thread or node), or nothing to store
    values = [_text(_field(structure, name)) for name in HEADER_NAMES]
    db.execute(
        f"INSERT INTO parsed (blob_id, structure, head, body, {', '.join(HEADER_COLUMNS)})"
        f" VALUES (%s, %s, %s, to_tsvector('simple', %s){', %s' * len(HEADER_COLUMNS)})"
        " ON CONFLICT (blob_id) DO NOTHING",
        (blob_id, mime_codec.dumps(structure), head, _text(text), *values))


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a message's header or body may."""
    return value.replace("\x00", "") if value else value
