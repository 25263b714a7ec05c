"""Per-account mailboxes and their messages (the MailboxStore)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from postwarden.storage.interfaces import BlobRef, MailboxInfo, StoredMessage
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import Database

SPECIAL_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)


class SqliteMailboxes:
    """Mailboxes with IMAP-ready UIDs, flags and MODSEQs."""

    def __init__(self, db: Database, blobs: BlobFiles) -> None:
        self._db = db
        self._blobs = blobs

    def create_mailboxes(self, db: sqlite3.Connection, account: str) -> None:
        """The special mailboxes every account has, inside the caller's transaction."""
        validity = int(time.time())
        for name, special in SPECIAL_MAILBOXES:
            db.execute(
                "INSERT OR IGNORE INTO mailboxes (account, name, uidvalidity, special_use)"
                " VALUES (?, ?, ?, ?)",
                (account, name, validity, special),
            )

    def remove_account_mailboxes(self, db: sqlite3.Connection, account: str) -> list[str]:
        """Drop an account's mailboxes; return the blobs no row references any more."""
        blobs = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT m.blob FROM mailbox_messages m JOIN mailboxes b"
                " ON m.mailbox_id = b.id WHERE b.account = ?",
                (account,),
            )
        ]
        db.execute("DELETE FROM mailboxes WHERE account = ?", (account,))
        return self._blobs.unreferenced(db, blobs)

    def ensure_mailboxes(self, account: str) -> None:
        with self._db.tx() as db:
            self.create_mailboxes(db, account)

    def append(
        self,
        db: sqlite3.Connection,
        account: str,
        mailbox: str,
        blob: BlobRef,
        flags: Iterable[str],
        when: float,
    ) -> int:
        """Add a message inside the caller's transaction; return its UID."""
        row = db.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            " WHERE account = ? AND name = ? RETURNING id, uidnext - 1, highestmodseq",
            (account, mailbox),
        ).fetchone()
        if row is None:
            self.create_mailboxes(db, account)
            return self.append(db, account, mailbox, blob, flags, when)
        mailbox_id, uid, modseq = row
        db.execute(
            "INSERT INTO mailbox_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, blob.name, blob.size, " ".join(sorted(flags)), modseq, when),
        )
        return int(uid)

    def get_mailbox(self, account: str, name: str) -> MailboxInfo | None:
        row = self._db.conn.execute(
            "SELECT id, account, name, uidvalidity, uidnext, highestmodseq, special_use,"
            " subscribed FROM mailboxes WHERE account = ? AND name = ?",
            (account, name),
        ).fetchone()
        return _mailbox(row) if row else None

    def list_mailboxes(self, account: str) -> list[MailboxInfo]:
        rows = self._db.conn.execute(
            "SELECT id, account, name, uidvalidity, uidnext, highestmodseq, special_use,"
            " subscribed FROM mailboxes WHERE account = ? ORDER BY name",
            (account,),
        )
        return [_mailbox(r) for r in rows]

    def list_messages(self, mailbox_id: int) -> list[StoredMessage]:
        rows = self._db.conn.execute(
            "SELECT mailbox_id, uid, blob, size, flags, modseq, internaldate"
            " FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        )
        return [
            StoredMessage(r[0], r[1], r[2], r[3], frozenset(r[4].split()), r[5], r[6])
            for r in rows
        ]

    def expunge(self, mailbox_id: int, uids: Iterable[int]) -> int:
        uid_list = list(uids)
        with self._db.tx() as db:
            blobs = []
            for uid in uid_list:
                row = db.execute(
                    "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ? RETURNING blob",
                    (mailbox_id, uid),
                ).fetchone()
                if row:
                    blobs.append(row[0])
            if blobs:
                db.execute(
                    "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?",
                    (mailbox_id,),
                )
            unreferenced = self._blobs.unreferenced(db, blobs)
        self._blobs.unlink(unreferenced)
        return len(blobs)


def _mailbox(row: Any) -> MailboxInfo:
    return MailboxInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))
