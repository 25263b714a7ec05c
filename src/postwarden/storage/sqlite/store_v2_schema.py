"""Migration 4: the mailbox store v2 schema, and the move of v1 data into it.

Runs inside the migration transaction, so a crash half-way leaves the v1
data as it was. Mailbox ids, UIDVALIDITY and UIDs are kept, so POP3 UIDLs
("uidvalidity.uid") and IMAP clients' caches stay valid. Message files are
measured once here (size, POP3 wire size, lines, header size, digest); a
file that has gone missing is recorded as such, not dropped.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from postwarden.storage.blobmeter import measure_file
from postwarden.storage.mailbox import split_flags

APPLICATION_ID = 0x70777264  # "pwrd": marks the database as postwarden's

SCHEMA = """
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE blobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the body index keeps old ids
    name TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    wire_size INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    header_size INTEGER NOT NULL,
    digest BLOB,
    refs INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'live',
    created REAL NOT NULL,
    released REAL,
    indexed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX blobs_released ON blobs(released) WHERE refs <= 0;
CREATE INDEX blobs_unindexed ON blobs(id) WHERE indexed = 0;
CREATE TABLE messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    blob_id INTEGER NOT NULL REFERENCES blobs(id),
    modseq INTEGER NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    keywords INTEGER NOT NULL DEFAULT 0,
    internaldate REAL NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
CREATE INDEX messages_blob ON messages(blob_id);
CREATE TABLE expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);
CREATE TABLE keywords (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    bit INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, bit),
    UNIQUE (mailbox_id, name)
);
CREATE TABLE subscriptions (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE quota (
    account TEXT PRIMARY KEY,
    limit_bytes INTEGER,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    used_messages INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE maildrop_locks (
    account TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE parsed (
    blob_id INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    from_ TEXT,
    to_ TEXT,
    cc TEXT,
    bcc TEXT,
    subject TEXT,
    date TEXT,
    message_id TEXT,
    in_reply_to TEXT,
    refs TEXT,
    structure BLOB NOT NULL  -- last: the short fields before it stay on the row's first page
);
CREATE VIRTUAL TABLE body_index USING fts5(
    body, content='', detail=none, tokenize='unicode61 remove_diacritics 2'
);
ALTER TABLE mailboxes ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN first_recent INTEGER NOT NULL DEFAULT 1
"""


def mailbox_store_v2(db: sqlite3.Connection, data_dir: Path) -> None:
    for statement in SCHEMA.split(";"):
        db.execute(statement)
    now = time.time()
    db.execute(
        "INSERT INTO subscriptions SELECT account, name FROM mailboxes WHERE subscribed = 1"
    )
    db.execute("ALTER TABLE mailboxes DROP COLUMN subscribed")
    db.execute("UPDATE mailboxes SET first_recent = uidnext")
    seed = db.execute("SELECT max(uidvalidity) FROM mailboxes").fetchone()[0] or 0
    db.execute("INSERT INTO counters VALUES ('uidvalidity', ?)", (max(seed, int(now)),))
    _move_blobs(db, data_dir / "messages", now)
    _move_messages(db)
    db.execute("DROP TABLE mailbox_messages")
    _count(db)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _move_blobs(db: sqlite3.Connection, blob_dir: Path, now: float) -> None:
    refs: dict[str, list[int]] = {}  # name -> [references, size recorded in a row]
    for name, count, size in db.execute(
        "SELECT blob, count(*), max(size) FROM ("
        " SELECT blob, size FROM mailbox_messages"
        " UNION ALL SELECT blob, size FROM queue_messages) GROUP BY blob"
    ).fetchall():
        refs[name] = [count, size]
    for name, (count, size) in refs.items():
        path = blob_dir / name[:2] / name
        try:
            facts = measure_file(path)
        except OSError:  # kept, and reported as missing; never silently dropped
            db.execute(
                "INSERT INTO blobs (name, size, wire_size, lines, header_size, refs, state,"
                " created) VALUES (?, ?, ?, 0, 0, ?, 'missing', ?)",
                (name, size, size, count, now),
            )
            continue
        db.execute(
            "INSERT INTO blobs (name, size, wire_size, lines, header_size, digest, refs,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, facts.size, facts.wire_size, facts.lines, facts.header_size, facts.digest,
             count, now),
        )


def _move_messages(db: sqlite3.Connection) -> None:
    keyword_bits: dict[tuple[int, str], int] = {}
    rows = db.execute(
        "SELECT m.mailbox_id, m.uid, b.id, m.modseq, m.flags, m.internaldate"
        " FROM mailbox_messages m JOIN blobs b ON b.name = m.blob"
    ).fetchall()
    for mailbox_id, uid, blob_id, modseq, flag_text, internaldate in rows:
        bits, keywords = split_flags(flag_text.split())
        mask = 0
        for word in sorted(keywords):
            bit = keyword_bits.get((mailbox_id, word))
            if bit is None:
                bit = sum(1 for key in keyword_bits if key[0] == mailbox_id)
                if bit >= 63:
                    continue  # beyond the keyword table: v1 never set keywords
                keyword_bits[(mailbox_id, word)] = bit
                db.execute("INSERT INTO keywords VALUES (?, ?, ?)", (mailbox_id, bit, word))
            mask |= 1 << bit
        db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, blob_id, modseq, int(bits), mask, internaldate),
        )


def _count(db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE mailboxes SET"
        " messages = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id),"
        " unseen = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id"
        "  AND m.flags & 1 = 0),"
        " deleted = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id"
        "  AND m.flags & 8 != 0),"
        " bytes = (SELECT coalesce(sum(b.size), 0) FROM messages m JOIN blobs b"
        "  ON b.id = m.blob_id WHERE m.mailbox_id = mailboxes.id)"
    )
    db.execute(
        "INSERT INTO quota (account, used_bytes, used_messages)"
        " SELECT a.address, coalesce(sum(x.bytes), 0), coalesce(sum(x.messages), 0)"
        " FROM accounts a LEFT JOIN mailboxes x ON x.account = a.address GROUP BY a.address"
    )
