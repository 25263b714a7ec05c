"""Fills the parsed cache and the full-text index, off the SMTP path.

Intake only measures bytes (``BlobMeter``); parsing MIME and extracting body
text costs far more, so it happens here: in small batches when the server is
otherwise idle, and on demand for a mailbox just before a search or a fetch
that needs it. Each blob is parsed once however many mailboxes hold it, and
once whichever process or node gets there first: the update that stores the
result claims the blob's ``indexed`` state. A backend says how a result is
stored (``_store``: its full-text index differs) and may scan a long backlog
for a search instead of indexing it first (``prepare_search``).
"""

from __future__ import annotations

import binascii
import codecs
import time
from collections.abc import Iterator
from typing import Generic, Protocol

from postwarden.mail.mime import MessageStructure, MimeLimits, MimePart, parse_message
from postwarden.mail.mime_headers import raw_fields
from postwarden.storage.bridge import blocking
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import HEAD_FIELDS, HEADER_NAMES, UidSet
from postwarden.storage.sql.dialect import C, Database, Dialect
from postwarden.storage.sql.parts import ScanTables

# The parsed cache's header columns and the field names they hold, in order.
HEADER_COLUMNS = ("from_", "to_", "cc", "bcc", "subject", "date", "message_id", "in_reply_to",
                  "refs")
INDEXED, UNREADABLE = 1, 2  # blobs.indexed values (0: not yet)
NARROW_FETCH = 1000  # UIDs in a fetch small enough to index just those messages
INDEX_SLICE = 200  # messages parsed, then written in one transaction
IDLE_SECONDS = 1.0  # the longest an idle step keeps indexing a backlog
HEAD_NAMES = tuple(sorted(HEAD_FIELDS))
Waiting = tuple[int, str, int]  # blob id, name, header size


class BlobReader(Protocol):
    def read_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes: ...


class SqlIndexer(Generic[C]):
    """The indexer; a backend subclass stores results in its own index."""

    max_text = 1 << 20  # characters of body text indexed per message

    def __init__(self, db: Database[C], dialect: Dialect, blobs: BlobReader,
                 limits: MimeLimits | None = None) -> None:
        self._db = db
        self._q = dialect.sql
        self._dialect = dialect
        self._blobs = blobs
        self._limits = limits
        self._last_seen = 0  # the newest blob id at the previous idle step

    def _store(self, db: C, blob_id: int, structure: MessageStructure, text: str,
               head: bytes) -> None:
        """Store a parsed blob's fields and text (its ``indexed`` state is claimed)."""
        raise NotImplementedError

    def idle_step(self, limit: int) -> int:
        """Index while the intake is quiet: batches for up to ``IDLE_SECONDS``,
        none when more than a batch arrived since the last step.

        A flood of mail gets the CPU to itself (the intake first); after it,
        the backlog goes at the parser's speed, not one batch per step.
        """
        with self._db.read() as db:
            (newest,) = db.execute("SELECT coalesce(max(id), 0) FROM blobs").fetchone()
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

        Blobs only the outbound queue refers to are never parsed.
        """
        with self._db.read() as db:
            rows = db.execute(self._q(
                "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0 AND EXISTS"
                " (SELECT 1 FROM messages m WHERE m.blob_id = b.id) ORDER BY b.id LIMIT ?"),
                (limit,)).fetchall()
        self._index(rows)
        return len(rows)

    def index_mailbox(self, mailbox_id: int, uids: UidSet | None = None) -> int:
        """Index what a mailbox's messages still lack (before a search or fetch needs it).

        With a small ``uids`` (a FETCH of a few messages) only those are
        parsed, so a client never waits for a whole unindexed mailbox.
        """
        if uids is None or sum(hi - lo + 1 for lo, hi in uids.ranges) > NARROW_FETCH:
            rows = self.waiting(mailbox_id)
        else:
            rows = []
            with self._db.read() as db:
                for where, params in self._dialect.uid_clauses(uids):
                    rows += db.execute(self._q(
                        "SELECT b.id, b.name, b.header_size FROM messages m"
                        " JOIN blobs b ON b.id = m.blob_id"
                        f" WHERE m.mailbox_id = ? AND {where} AND b.indexed = 0"),
                        (mailbox_id, *params)).fetchall()
            rows = list(dict.fromkeys(rows))  # a blob held twice: once
        self._index(rows)
        return len(rows)

    def waiting(self, mailbox_id: int) -> list[Waiting]:
        """(blob id, name, header size) of a mailbox's messages not indexed yet."""
        with self._db.read() as db:
            return db.execute(self._q(  # from the few unindexed blobs, not the many messages
                "SELECT b.id, b.name, b.header_size FROM blobs b WHERE b.indexed = 0 AND EXISTS"
                " (SELECT 1 FROM messages m WHERE m.blob_id = b.id AND m.mailbox_id = ?)"),
                (mailbox_id,)).fetchall()

    def prepare_search(self, mailbox_id: int, body: bool) -> ScanTables | None:
        """Before a search that needs the parsed cache: index what is waiting."""
        self._index(self.waiting(mailbox_id))
        return None

    def _index(self, rows: list[Waiting]) -> None:
        """Parse and store in slices: memory stays bounded however many are waiting.

        The bytes are read here; the parsing, all CPU, goes to a thread when
        this runs bridged on the event loop (PostgreSQL), so a search that
        indexes a backlog first never stops the other sessions. Another
        indexer (the background one, another node's) may claim the same blobs
        meanwhile: both take them in id order, so one waits for the other
        rather than deadlocking.
        """
        rows = sorted(rows)  # blobs claimed in id order: two indexers never deadlock
        for at in range(0, len(rows), INDEX_SLICE):
            parsed = [(blob_id, *blocking(self._parse, self._read(name), header_size))
                      for blob_id, name, header_size in rows[at:at + INDEX_SLICE]]
            with self._db.tx() as db:
                for blob_id, structure, text, head in parsed:
                    state = UNREADABLE if structure is None else INDEXED
                    if db.execute(self._q(
                            "UPDATE blobs SET indexed = ? WHERE id = ? AND indexed = 0"),
                            (state, blob_id)).rowcount and structure is not None:
                        self._store(db, blob_id, structure, text, head)
                    # else: indexed meanwhile (another thread, process or node)

    def _read(self, name: str) -> bytes | None:
        try:
            return self._blobs.read_blob(name)
        except (OSError, NotFound):  # a missing blob: this message only
            return None

    def _parse(self, data: bytes | None, header_size: int
               ) -> tuple[MessageStructure | None, str, bytes]:
        if data is None:
            return None, "", b""
        structure = parse_message(data, self._limits)
        head = raw_fields(data[:header_size], HEAD_NAMES)
        return structure, "\n".join(body_texts(data, structure.root))[:self.max_text], head


def header_values(structure: MessageStructure) -> list[str | None]:
    """The parsed cache's header columns for a message, in ``HEADER_COLUMNS`` order."""
    return [field_value(structure, name) for name in HEADER_NAMES]


def field_value(structure: MessageStructure, name: str) -> str | None:
    values = [v for k, v in structure.fields if k == name]
    return ", ".join(values) if values else None


def body_texts(data: bytes, part: MimePart) -> Iterator[str]:
    """The decoded text of every text/* body that is not an attachment."""
    if part.children:
        for child in part.children:
            yield from body_texts(data, child)
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
