"""SQLite (WAL) implementation of every store interface, plus message files.

One connection per thread (sqlite3 connections must not be shared across
threads); WAL lets the readers on the event loop run beside the intake's
writer thread. ``synchronous=FULL`` makes every commit durable.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from postwarden.storage.interfaces import (
    Acceptance,
    Account,
    AlreadyExists,
    AttemptRecord,
    BlobRef,
    MailboxInfo,
    NotFound,
    QueuedMessage,
    QueueRecipient,
    RecipientState,
    StoredMessage,
)
from postwarden.storage.sqlite.schema import MIGRATIONS

SPECIAL_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter:
    """Writes a message straight to its final name; unreferenced until committed.

    A crash before the database commit leaves an orphan file, which
    ``SqliteStore.remove_orphan_blobs`` clears at start-up; it never leaves a
    half-written message visible, because only the commit references it.
    """

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._name = name
        self._file = open(path, "xb")  # noqa: SIM115 - closed in commit/abort
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> BlobRef:
        """Make the bytes durable; the directory entry is synced by ``commit_acceptances``."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return BlobRef(self._name, self._size)

    def abort(self) -> None:
        self._file.close()
        with suppress(FileNotFoundError):
            os.unlink(self._path)


class SqliteStore:
    """Directory, BlobStore, DeliveryStore, MailboxStore and QueueStore in one."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "messages"
        self.db_path = data_dir / "postwarden.sqlite3"
        self._local = threading.local()
        self._domains_cache: tuple[float, frozenset[str]] | None = None
        self._shards: set[str] = set()  # message directories known to exist
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.blob_dir.mkdir(exist_ok=True, mode=0o700)
        self._migrate()

    # --- plumbing -------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (0)")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (number,))

    def schema_version(self) -> int:
        return int(self._db.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- Directory: domains ------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        # Read on every RCPT; a one-second cache keeps the hot path off SQLite
        # while CLI changes still take effect at once for practical purposes.
        now = time.monotonic()
        cached = self._domains_cache
        if cached is None or now - cached[0] > 1.0:
            names = frozenset(r[0] for r in self._db.execute("SELECT name FROM domains"))
            self._domains_cache = cached = (now, names)
        return domain in cached[1]

    def list_domains(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM domains ORDER BY name")]

    def add_domain(self, domain: str) -> None:
        try:
            with self._tx() as db:
                db.execute("INSERT INTO domains VALUES (?)", (domain,))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"domain {domain} already exists") from None
        self._domains_cache = None

    def remove_domain(self, domain: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM domains WHERE name = ?", (domain,)).rowcount == 0:
                raise NotFound(f"no such domain: {domain}")
            db.execute("DELETE FROM alias_targets WHERE address LIKE ?", (f"%@{domain}",))
        self._domains_cache = None

    # --- Directory: accounts ----------------------------------------------

    def get_account(self, address: str) -> Account | None:
        row = self._db.execute(
            "SELECT address, password_hash FROM accounts WHERE address = ?", (address,)
        ).fetchone()
        return Account(row[0], row[1]) if row else None

    def list_accounts(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT address FROM accounts ORDER BY address")]

    def add_account(self, address: str, password_hash: str) -> None:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?)", (address, password_hash, time.time())
                )
                self._create_mailboxes(db, address)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {address} already exists") from None

    def set_password(self, address: str, password_hash: str) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no such user: {address}")

    def remove_account(self, address: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM accounts WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no such user: {address}")
            blobs = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT m.blob FROM mailbox_messages m JOIN mailboxes b"
                    " ON m.mailbox_id = b.id WHERE b.account = ?",
                    (address,),
                )
            ]
            db.execute("DELETE FROM mailboxes WHERE account = ?", (address,))
            unreferenced = self._unreferenced(db, blobs)
        self._unlink_blobs(unreferenced)

    # --- Directory: aliases -------------------------------------------------

    def alias_targets(self, address: str) -> tuple[str, ...] | None:
        rows = self._db.execute(
            "SELECT target FROM alias_targets WHERE address = ? ORDER BY position", (address,)
        ).fetchall()
        return tuple(r[0] for r in rows) if rows else None

    def list_aliases(self) -> list[tuple[str, tuple[str, ...]]]:
        out: dict[str, list[str]] = {}
        for address, target in self._db.execute(
            "SELECT address, target FROM alias_targets ORDER BY address, position"
        ):
            out.setdefault(address, []).append(target)
        return [(a, tuple(t)) for a, t in out.items()]

    def add_alias(self, address: str, targets: Sequence[str]) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM alias_targets WHERE address = ?", (address,)).fetchone():
                raise AlreadyExists(f"alias {address} already exists")
            db.executemany(
                "INSERT INTO alias_targets VALUES (?, ?, ?)",
                [(address, i, t) for i, t in enumerate(targets)],
            )

    def remove_alias(self, address: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM alias_targets WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no such alias: {address}")

    # --- Directory: POP/IMAP-before-SMTP ------------------------------------

    def record_login(self, ip: str, at: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO login_records VALUES (?, ?)"
                " ON CONFLICT(ip) DO UPDATE SET at = max(at, excluded.at)",
                (ip, at),
            )

    def last_login(self, ip: str) -> float | None:
        row = self._db.execute("SELECT at FROM login_records WHERE ip = ?", (ip,)).fetchone()
        return float(row[0]) if row else None

    def expire_logins(self, before: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM login_records WHERE at < ?", (before,)).rowcount

    # --- BlobStore ------------------------------------------------------------

    def blob_path(self, name: str) -> Path:
        return Path(self._shard(name), name)

    def _shard(self, name: str) -> str:
        """The directory of a message file (a str: pathlib is slow on the per-message path)."""
        if not name.isalnum():  # names are ours; refuse anything path-like
            raise NotFound(f"bad blob name {name!r}")
        return os.path.join(self.blob_dir, name[:2])

    def new_blob(self, name: str) -> FileBlobWriter:
        shard = self._shard(name)
        if shard not in self._shards:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            _fsync_dir(self.blob_dir)
            self._shards.add(shard)
        return FileBlobWriter(os.path.join(shard, name), name)

    def read_blob(self, name: str) -> bytes:
        return self.blob_path(name).read_bytes()

    def _unreferenced(self, db: sqlite3.Connection, blobs: Iterable[str]) -> list[str]:
        return [
            b
            for b in set(blobs)
            if not db.execute(
                "SELECT 1 FROM mailbox_messages WHERE blob = ?"
                " UNION ALL SELECT 1 FROM queue_messages WHERE blob = ? LIMIT 1",
                (b, b),
            ).fetchone()
        ]

    def _unlink_blobs(self, names: Iterable[str]) -> None:
        for name in names:
            self.blob_path(name).unlink(missing_ok=True)

    def remove_orphan_blobs(self, older_than: float) -> int:
        """Delete message files no row references (left by a crash before commit)."""
        referenced = {
            r[0]
            for r in self._db.execute(
                "SELECT blob FROM mailbox_messages UNION SELECT blob FROM queue_messages"
            )
        }
        removed = 0
        for path in self.blob_dir.glob("*/*"):
            if path.name not in referenced and path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # --- DeliveryStore --------------------------------------------------------

    def commit_acceptances(self, batch: Sequence[Acceptance]) -> None:
        """All messages of the batch in one transaction: one fsync for many.

        The files' bytes are already synced (``FileBlobWriter.commit``); their
        directory entries are synced here, once per directory for the batch,
        before any row can reference them.
        """
        for shard in {self._shard(acc.blob.name) for acc in batch}:
            _fsync_dir(shard)
        with self._tx() as db:
            for acc in batch:
                for account in acc.local_accounts:
                    self._append(db, account, "INBOX", acc.blob, (), acc.received_at)
                if acc.remote:
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

    # --- MailboxStore ---------------------------------------------------------

    def _create_mailboxes(self, db: sqlite3.Connection, account: str) -> None:
        validity = int(time.time())
        for name, special in SPECIAL_MAILBOXES:
            db.execute(
                "INSERT OR IGNORE INTO mailboxes (account, name, uidvalidity, special_use)"
                " VALUES (?, ?, ?, ?)",
                (account, name, validity, special),
            )

    def ensure_mailboxes(self, account: str) -> None:
        with self._tx() as db:
            self._create_mailboxes(db, account)

    def _append(
        self,
        db: sqlite3.Connection,
        account: str,
        mailbox: str,
        blob: BlobRef,
        flags: Iterable[str],
        when: float,
    ) -> int:
        row = db.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            " WHERE account = ? AND name = ? RETURNING id, uidnext - 1, highestmodseq",
            (account, mailbox),
        ).fetchone()
        if row is None:
            self._create_mailboxes(db, account)
            return self._append(db, account, mailbox, blob, flags, when)
        mailbox_id, uid, modseq = row
        db.execute(
            "INSERT INTO mailbox_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, blob.name, blob.size, " ".join(sorted(flags)), modseq, when),
        )
        return int(uid)

    def get_mailbox(self, account: str, name: str) -> MailboxInfo | None:
        row = self._db.execute(
            "SELECT id, account, name, uidvalidity, uidnext, highestmodseq, special_use,"
            " subscribed FROM mailboxes WHERE account = ? AND name = ?",
            (account, name),
        ).fetchone()
        return _mailbox(row) if row else None

    def list_mailboxes(self, account: str) -> list[MailboxInfo]:
        rows = self._db.execute(
            "SELECT id, account, name, uidvalidity, uidnext, highestmodseq, special_use,"
            " subscribed FROM mailboxes WHERE account = ? ORDER BY name",
            (account,),
        )
        return [_mailbox(r) for r in rows]

    def list_messages(self, mailbox_id: int) -> list[StoredMessage]:
        rows = self._db.execute(
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
        with self._tx() as db:
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
            unreferenced = self._unreferenced(db, blobs)
        self._unlink_blobs(unreferenced)
        return len(blobs)

    # --- QueueStore -------------------------------------------------------------

    def queued_ids(self) -> list[str]:
        return [
            r[0] for r in self._db.execute("SELECT queue_id FROM queue_messages ORDER BY created")
        ]

    def get_queued(self, queue_id: str) -> QueuedMessage | None:
        row = self._db.execute(
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
            for r in self._db.execute(
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
            for r in self._db.execute(
                "SELECT DISTINCT queue_id FROM queue_recipients"
                " WHERE state = 'pending' AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                (now, limit),
            )
        ]
        return [m for m in map(self.get_queued, ids) if m is not None]

    def next_due_time(self) -> float | None:
        row = self._db.execute(
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
        with self._tx() as db:
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
        with self._tx() as db:
            db.execute(
                "UPDATE queue_messages SET delay_notified = 1 WHERE queue_id = ?", (queue_id,)
            )

    def retry_now(self, queue_id: str | None, now: float) -> int:
        with self._tx() as db:
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
        with self._tx() as db:
            row = db.execute(
                "DELETE FROM queue_messages WHERE queue_id = ? RETURNING blob", (queue_id,)
            ).fetchone()
            unreferenced = self._unreferenced(db, [row[0]]) if row else []
        self._unlink_blobs(unreferenced)
        return row is not None

    def finish_if_done(self, queue_id: str) -> bool:
        """Drop the queue entry once no recipient is pending; True if dropped."""
        pending = self._db.execute(
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
        with self._tx() as db:
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
            unreferenced = self._unreferenced(db, blobs)
        self._unlink_blobs(unreferenced)
        return finished

    def due_queue_ids(self, now: float, limit: int) -> list[str]:
        """IDs of messages with a recipient due, oldest first, without loading them."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT queue_id FROM queue_recipients WHERE state = 'pending'"
                " AND next_attempt <= ? GROUP BY queue_id ORDER BY min(next_attempt) LIMIT ?",
                (now, limit),
            )
        ]


def _mailbox(row: Any) -> MailboxInfo:
    return MailboxInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))

