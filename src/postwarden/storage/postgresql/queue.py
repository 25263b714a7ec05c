"""The outbound queue on PostgreSQL: claims with ``FOR UPDATE SKIP LOCKED`` under a lease.

A claim is one short transaction: the due messages nobody holds are
selected and locked, skipping rows another node is claiming at the same
moment (``SKIP LOCKED``: no waiting, no double claim), and marked with the
claimer's name, lease expiry and a fresh token. Results count only from
the manager still holding the lease under the same claim (token); a dead
node's lease runs out and another takes over.
"""

from __future__ import annotations

from collections.abc import Sequence

from postwarden.storage.interfaces import (
    Acceptance,
    AttemptRecord,
    QueuedMessage,
    QueueRecipient,
    RecipientState,
    SenderProof,
)
from postwarden.storage.postgresql.blobs import PgBlobs
from postwarden.storage.postgresql.db import Conn, PgDatabase

_MESSAGE = ("SELECT queue_id, blob, size, sender, created, envid, ret, smtputf8, delay_notified,"
            " trusted_origin, lease_owner, lease_until, sender_proof, lease_token"
            " FROM queue_messages")
_RECIPIENTS = ("SELECT id, queue_id, address, orcpt, notify, state, attempts, next_attempt,"
               " last_error, remote_mta FROM queue_recipients")


class PgQueue:
    """Durable, shared by every node's queue manager."""

    def __init__(self, db: PgDatabase, blobs: PgBlobs) -> None:
        self._db = db
        self._blobs = blobs

    def enqueue(self, db: Conn, acc: Acceptance) -> None:
        """Queue an accepted message's remote recipients inside the caller's transaction."""
        db.execute(
            "INSERT INTO queue_messages (queue_id, blob, size, sender, created, envid, ret,"
            " smtputf8, trusted_origin, sender_proof)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (acc.queue_id, acc.blob.name, acc.blob.size, acc.sender, acc.received_at,
             acc.envid, acc.ret, acc.smtputf8, acc.trusted_origin, acc.sender_proof.value))
        db.cursor().executemany(
            "INSERT INTO queue_recipients (queue_id, address, orcpt, notify, next_attempt)"
            " VALUES (%s, %s, %s, %s, %s)",
            [(acc.queue_id, r.address, r.orcpt, ",".join(r.notify), acc.received_at)
             for r in acc.remote])

    def queued_ids(self) -> list[str]:
        with self._db.conn() as db:
            return [r[0] for r in db.execute(
                "SELECT queue_id FROM queue_messages ORDER BY created, queue_id")]

    def get_queued(self, queue_id: str) -> QueuedMessage | None:
        with self._db.conn() as db:
            return _load(db, [queue_id]).get(queue_id)

    def claim_due(self, owner: str, now: float, limit: int, until: float
                  ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due messages nobody holds, most overdue first, and load them."""
        with self._db.tx() as db:
            ids = [r[0] for r in db.execute(
                "WITH due AS (SELECT queue_id, min(next_attempt) AS due FROM queue_recipients"
                "  WHERE state = 'pending' AND next_attempt <= %s GROUP BY queue_id)"
                " SELECT m.queue_id FROM queue_messages m JOIN due d USING (queue_id)"
                " WHERE m.lease_until <= %s ORDER BY d.due, m.queue_id LIMIT %s"
                " FOR UPDATE OF m SKIP LOCKED", (now, now, limit))]
            db.execute("UPDATE queue_messages SET lease_owner = %s, lease_until = %s,"
                       " lease_token = gen_random_uuid()::text WHERE queue_id = ANY(%s)",
                       (owner, until, ids))
            loaded = _load(db, ids)
        return [loaded[i] for i in ids if i in loaded]

    def next_due_time(self) -> float | None:
        with self._db.conn() as db:
            row = db.execute(
                "SELECT min(greatest(r.next_attempt, m.lease_until)) FROM queue_recipients r"
                " JOIN queue_messages m ON m.queue_id = r.queue_id WHERE r.state = 'pending'"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def extend_leases(self, owner: str, until: float) -> int:
        with self._db.tx() as db:
            return db.execute("UPDATE queue_messages SET lease_until = %s WHERE lease_owner = %s",
                              (until, owner)).rowcount

    def release_leases(self, owner: str) -> int:
        with self._db.tx() as db:
            return db.execute("UPDATE queue_messages SET lease_owner = NULL, lease_until = 0,"
                              " lease_token = NULL WHERE lease_owner = %s", (owner,)).rowcount

    def retry_now(self, queue_id: str | None, now: float) -> int:
        with self._db.tx() as db:
            if queue_id is None:
                return db.execute("UPDATE queue_recipients SET next_attempt = %s"
                                  " WHERE state = 'pending'", (now,)).rowcount
            return db.execute("UPDATE queue_recipients SET next_attempt = %s"
                              " WHERE state = 'pending' AND queue_id = %s",
                              (now, queue_id)).rowcount

    def remove_queued(self, queue_id: str) -> bool:
        with self._db.tx() as db:
            row = db.execute("DELETE FROM queue_messages WHERE queue_id = %s RETURNING blob",
                             (queue_id,)).fetchone()
            self._blobs.release(db, [row[0]] if row else [])
        return row is not None

    def record_attempts(self, batch: Sequence[tuple[str, AttemptRecord]]) -> list[bool]:
        """One transaction for a batch of (lease owner, attempt); recorded or not.

        The message row is locked first, so a claim on another node cannot
        slip in between the lease check (owner and claim token) and the update.
        """
        recorded: list[bool] = []
        blobs: list[str] = []
        with self._db.tx() as db:
            for owner, rec in batch:
                holder = db.execute("SELECT lease_owner, lease_token FROM queue_messages"
                                    " WHERE queue_id = %s FOR UPDATE", (rec.queue_id,)).fetchone()
                recorded.append(holder is not None and rec.lease_token is not None
                                and tuple(holder) == (owner, rec.lease_token))
                if not recorded[-1]:
                    continue
                _record(db, rec)
                if db.execute("SELECT 1 FROM queue_recipients WHERE queue_id = %s"
                              " AND state = 'pending' LIMIT 1", (rec.queue_id,)).fetchone():
                    db.execute("UPDATE queue_messages SET lease_owner = NULL, lease_until = 0,"
                               " lease_token = NULL, delay_notified = delay_notified OR %s"
                               " WHERE queue_id = %s",
                               (rec.delay_notified, rec.queue_id))
                    continue
                row = db.execute("DELETE FROM queue_messages WHERE queue_id = %s RETURNING blob",
                                 (rec.queue_id,)).fetchone()
                assert row is not None
                blobs.append(row[0])
            self._blobs.release(db, blobs)
        return recorded


def _record(db: Conn, rec: AttemptRecord) -> None:
    cur = db.cursor()
    cur.executemany(
        "UPDATE queue_recipients SET state = 'delivered', attempts = attempts + 1"
        " WHERE id = %s AND queue_id = %s", [(i, rec.queue_id) for i in rec.delivered])
    cur.executemany(
        "UPDATE queue_recipients SET state = 'failed', attempts = attempts + 1,"
        " last_error = %s, remote_mta = %s WHERE id = %s AND queue_id = %s",
        [(err, mta, i, rec.queue_id) for i, err, mta in rec.failed])
    cur.executemany(
        "UPDATE queue_recipients SET attempts = attempts + 1, last_error = %s,"
        " remote_mta = %s, next_attempt = %s WHERE id = %s AND queue_id = %s",
        [(err, mta, when, i, rec.queue_id) for i, err, mta, when in rec.deferred])


def _load(db: Conn, ids: Sequence[str]) -> dict[str, QueuedMessage]:
    """Queue entries with their recipients, two statements for any number."""
    recipients: dict[str, list[QueueRecipient]] = {}
    for r in db.execute(_RECIPIENTS + " WHERE queue_id = ANY(%s) ORDER BY id", (list(ids),)):
        recipients.setdefault(r[1], []).append(QueueRecipient(
            r[0], r[1], r[2], r[3], tuple(x for x in r[4].split(",") if x),
            RecipientState(r[5]), r[6], r[7], r[8], r[9]))
    return {row[0]: QueuedMessage(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
        tuple(recipients.get(row[0], ())), trusted_origin=row[9], lease_owner=row[10],
        lease_until=row[11], sender_proof=SenderProof(row[12]), lease_token=row[13],
    ) for row in db.execute(_MESSAGE + " WHERE queue_id = ANY(%s)", (list(ids),))}
