"""The PostgreSQL indexer: body text in a ``simple`` tsvector (no stemming, as FTS5).

The shared indexer (``storage.sql.indexer``) parses and claims blobs,
whichever node gets there first; here is only how a result is stored.
"""

from __future__ import annotations

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, MimeLimits
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import POSTGRESQL, Conn, PgDatabase
from postwarden.storage.sql.indexer import HEADER_COLUMNS, SqlIndexer, header_values


class PgIndexer(SqlIndexer[Conn]):
    max_text = 256 * 1024  # a tsvector holds at most 1 MB

    def __init__(self, db: PgDatabase, blobs: PgBlobs, limits: MimeLimits | None = None) -> None:
        super().__init__(db, POSTGRESQL, blobs, limits)

    def _store(self, db: Conn, blob_id: int, structure: MessageStructure, text: str,
               head: bytes) -> None:
        values = [_text(v) for v in header_values(structure)]
        db.execute(
            f"INSERT INTO parsed (blob_id, structure, head, body, {', '.join(HEADER_COLUMNS)})"
            f" VALUES (%s, %s, %s, to_tsvector('simple', %s){', %s' * len(HEADER_COLUMNS)})"
            " ON CONFLICT (blob_id) DO NOTHING",
            (blob_id, mime_codec.dumps(structure), head, _text(text), *values))


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a message's header or body may."""
    return value.replace("\x00", "") if value else value
