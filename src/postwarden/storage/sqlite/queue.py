"""The outbound queue: messages with per-recipient state (the QueueStore)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from postwarden.storage.interfaces import (
    Acceptance,
    AttemptRecord,
    QueuedMessage,
    QueueRecipient,
    RecipientState,
)
from postwarden.storage.sqlite.blobs import BlobFiles
from postwarden.storage.sqlite.db import Database


class SqliteQueue:
    """Durable across restarts; a message's file is dropped with its last reference."""

    def __init__(self, db: Database, blobs: BlobFiles) -> None:
        self._db = db
        self._blobs = blobs

    def enqueue(self, db: sqlite3.Connection, acc: Acceptance) -> None:
        """Queue an accepted message's remote recipients inside the caller's transaction."""
        db.execute(
            "INSERT INTO queue_messages (queue_id, blob, size, sender, created,"
            " envid, ret, smtputf8, trusted_origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                acc.queue_id,
                acc.blob.name,
                acc.blob.size,
                acc.sender,
                acc.received_at,
                acc.envid,
                acc.ret,
                int(acc.smtputf8),
                int(acc.trusted_origin),
            ),
        )
        db.executemany(
            "INSERT INTO queue_recipients (queue_id, address, orcpt, notify,"
            " next_attempt) VALUES (?, ?, ?, ?, ?)",
            [
                (acc.queue_id, r.address, r.orcpt, ",".join(r.notify), acc.received_at)
                for r in acc.remote
            ],
        )

    def queued_ids(self) -> list[str]:
        rows = self._db.conn.execute("SELECT queue_id FROM queue_messages ORDER BY created")
        return [r[0] for r in rows]

    def get_queued(self, queue_id: str) -> QueuedMessage | None:
        row = self._db.conn.execute(
            "SELECT queue_id, blob, size, sender, created, envid, ret, smtputf8, delay_notified,"
            " trusted_origin FROM queue_messages WHERE queue_id = ?",
            (queue_id,),
        ).fetchone()
        if row is None:
            return None
        recipients = tuple(
            QueueRecipient(
                r[0], r[1], r[2], r[3], tuple(x for x in r[4].split(",") if x),
                RecipientState(r[5]), r[6], r[7], r[8], r[9],
            )
            for r in self._db.conn.execute(
                "SELECT id, queue_id, address, orcpt, notify, state, attempts, next_attempt,"
                " last_error, remote_mta FROM queue_recipients WHERE queue_id = ? ORDER BY id",
                (queue_id,),
            )
        )
        return QueuedMessage(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), bool(row[8]),
            recipients, trusted_origin=bool(row[9]),
        )

    def due_messages(self, now: float, limit: int) -> list[QueuedMessage]:
        ids = [
            r[0]
            for r in self._db.conn.execute(
                "SELECT DISTINCT queue_id FROM queue_recipients"
                " WHERE state = 'pending' AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                (now, limit),
            )
        ]
        return [m for m in map(self.get_queued, ids) if m is not None]

    def next_due_time(self) -> float | None:
        row = self._db.conn.execute(
            "SELECT min(next_attempt) FROM queue_recipients WHERE state = 'pending'"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def record_results(
        self,
        queue_id: str,
        delivered: Iterable[int],
        failed: Iterable[tuple[int, str, str | None]],
        deferred: Iterable[tuple[int, str, str | None, float]],
    ) -> None:
        with self._db.tx() as db:
            db.executemany(
                "UPDATE queue_recipients SET state = 'delivered', attempts = attempts + 1"
                " WHERE id = ? AND queue_id = ?",
                [(i, queue_id) for i in delivered],
            )
            db.executemany(
                "UPDATE queue_recipients SET state = 'failed', attempts = attempts + 1,"
                " last_error = ?, remote_mta = ? WHERE id = ? AND queue_id = ?",
                [(err, mta, i, queue_id) for i, err, mta in failed],
            )
            db.executemany(
                "UPDATE queue_recipients SET attempts = attempts + 1, last_error = ?,"
                " remote_mta = ?, next_attempt = ? WHERE id = ? AND queue_id = ?",
                [(err, mta, when, i, queue_id) for i, err, mta, when in deferred],
            )

    def set_delay_notified(self, queue_id: str) -> None:
        with self._db.tx() as db:
            db.execute(
                "UPDATE queue_messages SET delay_notified = 1 WHERE queue_id = ?", (queue_id,)
            )

    def retry_now(self, queue_id: str | None, now: float) -> int:
        with self._db.tx() as db:
            if queue_id is None:
                cur = db.execute(
                    "UPDATE queue_recipients SET next_attempt = ? WHERE state = 'pending'", (now,)
                )
            else:
                cur = db.execute(
                    "UPDATE queue_recipients SET next_attempt = ?"
                    " WHERE state = 'pending' AND queue_id = ?",
                    (now, queue_id),
                )
            return cur.rowcount

    def remove_queued(self, queue_id: str) -> bool:
        with self._db.tx() as db:
            row = db.execute(
                "DELETE FROM queue_messages WHERE queue_id = ? RETURNING blob", (queue_id,)
            ).fetchone()
            unreferenced = self._blobs.unreferenced(db, [row[0]]) if row else []
        self._blobs.unlink(unreferenced)
        return row is not None

    def finish_if_done(self, queue_id: str) -> bool:
        """Drop the queue entry once no recipient is pending; True if dropped."""
        pending = self._db.conn.execute(
            "SELECT 1 FROM queue_recipients WHERE queue_id = ? AND state = 'pending' LIMIT 1",
            (queue_id,),
        ).fetchone()
        return False if pending else self.remove_queued(queue_id)

    def record_attempts(self, batch: Sequence[AttemptRecord]) -> list[str]:
        """One transaction (one fsync) for a whole batch of delivery attempts.

        The delivery queue finishes messages far faster than one fsync each
        would allow, so it commits them in groups, like the intake does.
        Entries left with no pending recipient are dropped; their IDs returned.
        """
        finished: list[str] = []
        blobs: list[str] = []
        with self._db.tx() as db:
            for rec in batch:
                db.executemany(
                    "UPDATE queue_recipients SET state = 'delivered', attempts = attempts + 1"
                    " WHERE id = ? AND queue_id = ?",
                    [(i, rec.queue_id) for i in rec.delivered],
                )
                db.executemany(
                    "UPDATE queue_recipients SET state = 'failed', attempts = attempts + 1,"
                    " last_error = ?, remote_mta = ? WHERE id = ? AND queue_id = ?",
                    [(err, mta, i, rec.queue_id) for i, err, mta in rec.failed],
                )
                db.executemany(
                    "UPDATE queue_recipients SET attempts = attempts + 1, last_error = ?,"
                    " remote_mta = ?, next_attempt = ? WHERE id = ? AND queue_id = ?",
                    [(err, mta, when, i, rec.queue_id) for i, err, mta, when in rec.deferred],
                )
                if rec.delay_notified:
                    db.execute(
                        "UPDATE queue_messages SET delay_notified = 1 WHERE queue_id = ?",
                        (rec.queue_id,),
                    )
                pending = db.execute(
                    "SELECT 1 FROM queue_recipients WHERE queue_id = ? AND state = 'pending'"
                    " LIMIT 1",
                    (rec.queue_id,),
                ).fetchone()
                if pending is None:
                    row = db.execute(
                        "DELETE FROM queue_messages WHERE queue_id = ? RETURNING blob",
                        (rec.queue_id,),
                    ).fetchone()
                    if row is not None:
                        finished.append(rec.queue_id)
                        blobs.append(row[0])
            unreferenced = self._blobs.unreferenced(db, blobs)
        self._blobs.unlink(unreferenced)
        return finished

    def due_queue_ids(self, now: float, limit: int) -> list[str]:
        """IDs of messages with a recipient due, oldest first, without loading them."""
        return [
            r[0]
            for r in self._db.conn.execute(
                "SELECT queue_id FROM queue_recipients WHERE state = 'pending'"
                " AND next_attempt <= ? GROUP BY queue_id ORDER BY min(next_attempt) LIMIT ?",
                (now, limit),
            )
        ]
