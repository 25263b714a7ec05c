"""The outbound queue: messages with per-recipient state (the QueueStore).

Queue managers share it through leases: ``claim_due`` marks the messages a
manager takes on with its name, an expiry and a fresh token in one short
transaction, so no other manager takes them until the lease runs out;
``record_attempts`` counts a result only from the manager still holding the
lease under the same claim (token), and releases it. SQLite has no ``FOR
UPDATE SKIP LOCKED``; ``BEGIN IMMEDIATE`` makes the claim's select-and-mark
one step among processes instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from postwarden.storage.interfaces import (
    Acceptance,
    AttemptRecord,
    QueuedMessage,
    QueueRecipient,
    RecipientState,
    SenderProof,
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
            " envid, ret, smtputf8, trusted_origin, sender_proof)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                acc.sender_proof.value,
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
            " trusted_origin, lease_owner, lease_until, sender_proof, lease_token"
            " FROM queue_messages WHERE queue_id = ?",
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
            recipients, trusted_origin=bool(row[9]), lease_owner=row[10], lease_until=row[11],
            sender_proof=SenderProof(row[12]), lease_token=row[13],
        )

    def claim_due(
        self, owner: str, now: float, limit: int, until: float
    ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due messages nobody holds, most overdue first, and load them."""
        with self._db.tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT r.queue_id FROM queue_recipients r JOIN queue_messages m"
                    " ON m.queue_id = r.queue_id WHERE r.state = 'pending'"
                    " AND r.next_attempt <= ? AND m.lease_until <= ?"
                    " GROUP BY r.queue_id ORDER BY min(r.next_attempt) LIMIT ?",
                    (now, now, limit),
                )
            ]
            db.executemany(
                "UPDATE queue_messages SET lease_owner = ?, lease_until = ?,"
                " lease_token = lower(hex(randomblob(16))) WHERE queue_id = ?",
                [(owner, until, i) for i in ids],
            )
        # Loaded after the commit, to keep the write lock short: leased rows are ours.
        return [m for m in map(self.get_queued, ids) if m is not None]

    def next_due_time(self) -> float | None:
        """When the next pending recipient that nobody holds falls due."""
        row = self._db.conn.execute(
            "SELECT min(max(r.next_attempt, m.lease_until)) FROM queue_recipients r"
            " JOIN queue_messages m ON m.queue_id = r.queue_id WHERE r.state = 'pending'"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def extend_leases(self, owner: str, until: float) -> int:
        """Push every lease ``owner`` holds to ``until``; how many it holds."""
        with self._db.tx() as db:
            cur = db.execute(
                "UPDATE queue_messages SET lease_until = ? WHERE lease_owner = ?", (until, owner)
            )
            return cur.rowcount

    def release_leases(self, owner: str) -> int:
        """Give back every lease ``owner`` holds (a clean stop): others may take them now."""
        with self._db.tx() as db:
            cur = db.execute(
                "UPDATE queue_messages SET lease_owner = NULL, lease_until = 0,"
                " lease_token = NULL WHERE lease_owner = ?",
                (owner,),
            )
            return cur.rowcount

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
            self._blobs.release(db, [row[0]] if row else [])
        return row is not None

    def record_attempts(self, batch: Sequence[tuple[str, AttemptRecord]]) -> list[bool]:
        """One transaction (one fsync) for a batch of (lease owner, attempt); recorded or not.

        The delivery queue finishes messages far faster than one fsync each
        would allow, so it commits them in groups, like the intake does. An
        attempt counts only if its manager still holds the message's lease
        from the same claim (else the lease ran out and the message was
        claimed again, or `queue remove` dropped it).
        Recording releases the lease; an entry left with no pending recipient
        is dropped with its file.
        """
        recorded: list[bool] = []
        blobs: list[str] = []
        with self._db.tx() as db:
            for owner, rec in batch:
                holder = db.execute(
                    "SELECT lease_owner, lease_token FROM queue_messages WHERE queue_id = ?",
                    (rec.queue_id,),
                ).fetchone()
                recorded.append(holder is not None and rec.lease_token is not None
                                and tuple(holder) == (owner, rec.lease_token))
                if not recorded[-1]:
                    continue
                self._record(db, rec)
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
                    blobs.append(row[0])
                else:
                    db.execute(
                        "UPDATE queue_messages SET lease_owner = NULL, lease_until = 0,"
                        " lease_token = NULL, delay_notified = delay_notified OR ?"
                        " WHERE queue_id = ?",
                        (int(rec.delay_notified), rec.queue_id),
                    )
            self._blobs.release(db, blobs)
        return recorded

    @staticmethod
    def _record(db: sqlite3.Connection, rec: AttemptRecord) -> None:
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
