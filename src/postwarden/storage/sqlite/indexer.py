"""The SQLite indexer: FTS5 for body text, and a scan of a long backlog for a search.

The shared indexer (``storage.sql.indexer``) parses and claims blobs; here
is what is SQLite's own: results go to the ``parsed`` table and the
contentless FTS5 ``body_index``; and a search that finds a long backlog (a
bulk load the idle indexer has not reached) scans it into temporary tables
instead of waiting for every message to be parsed, indexed and written.
"""

from __future__ import annotations

import sqlite3

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, MimeLimits, parse_message
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import HEADER_NAMES
from postwarden.storage.sql.indexer import (
    HEADER_COLUMNS,
    SqlIndexer,
    body_texts,
    field_value,
    header_values,
)
from postwarden.storage.sql.parts import ScanTables
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import SQLITE, Database

SEARCH_INDEX_NOW = 500  # waiting messages a search indexes first; more are scanned instead
SCAN = ScanTables(parsed="temp.scan_parsed", body="scan_body")
_SCAN_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS scan_parsed (blob_id INTEGER PRIMARY KEY, "
    + ", ".join(HEADER_COLUMNS) + ")",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.scan_body USING fts5("
    "body, content='', detail=none, tokenize='unicode61 remove_diacritics 2')",
)


class Indexer(SqlIndexer[sqlite3.Connection]):
    def __init__(self, db: Database, blobs: BlobFiles, limits: MimeLimits | None = None) -> None:
        super().__init__(db, SQLITE, blobs, limits)
        self._sqlite = db

    def _store(self, db: sqlite3.Connection, blob_id: int, structure: MessageStructure,
               text: str, head: bytes) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO parsed (blob_id, structure, head, {', '.join(HEADER_COLUMNS)})"
            f" VALUES (?, ?, ?{', ?' * len(HEADER_COLUMNS)})",
            (blob_id, mime_codec.dumps(structure), head, *header_values(structure)))
        if text:
            db.execute("INSERT INTO body_index (rowid, body) VALUES (?, ?)", (blob_id, text))

    def prepare_search(self, mailbox_id: int, body: bool) -> ScanTables | None:
        """Before a search that needs the parsed cache: the scan tables (``SCAN``, this
        thread's) if it must also look there.

        A few waiting messages are indexed at once. A long backlog is
        scanned instead: only what the search needs (the header fields; the
        body text if it searches bodies) goes to temporary tables.
        """
        rows = self.waiting(mailbox_id)
        if len(rows) <= SEARCH_INDEX_NOW:
            self._index(rows)
            return None
        db = self._sqlite.conn
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
        return SCAN

    def _scan(self, db: sqlite3.Connection, blob_id: int, name: str, header_size: int,
              body: bool) -> None:
        try:  # the header's fields parse the same from the header alone
            data = self._blobs.read_blob(name, 0, None if body else header_size)
        except (OSError, NotFound):  # a missing file: this message only
            data = None
        structure = parse_message(data, self._limits) if data is not None else None
        values = [field_value(structure, n) if structure else None for n in HEADER_NAMES]
        db.execute(f"INSERT INTO scan_parsed VALUES (?{', ?' * len(HEADER_COLUMNS)})",
                   (blob_id, *values))
        if body and data is not None and structure is not None:
            text = "\n".join(body_texts(data, structure.root))[:self.max_text]
            if text:
                db.execute("INSERT INTO scan_body (rowid, body) VALUES (?, ?)", (blob_id, text))
