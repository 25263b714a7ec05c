"""Domains, accounts, aliases and POP/IMAP-before-SMTP records (the Directory)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from postwarden.storage.interfaces import Account, AlreadyExists, LoginFailures, NotFound
from postwarden.storage.sqlite.db import Database
from postwarden.storage.sqlite.mailboxes import SqliteMailboxes


class SqliteDirectory:
    """Who is local: an account brings its mailboxes, removing it drops them."""

    def __init__(self, db: Database, mailboxes: SqliteMailboxes) -> None:
        self._db = db
        self._mailboxes = mailboxes
        self._domains_cache: tuple[float, frozenset[str]] | None = None

    # --- domains ------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        # Read on every RCPT; a one-second cache keeps the hot path off SQLite
        # while CLI changes still take effect at once for practical purposes.
        now = time.monotonic()
        cached = self._domains_cache
        if cached is None or now - cached[0] > 1.0:
            names = frozenset(r[0] for r in self._db.conn.execute("SELECT name FROM domains"))
            self._domains_cache = cached = (now, names)
        return domain in cached[1]

    def list_domains(self) -> list[str]:
        return [r[0] for r in self._db.conn.execute("SELECT name FROM domains ORDER BY name")]

    def add_domain(self, domain: str) -> None:
        try:
            with self._db.tx() as db:
                db.execute("INSERT INTO domains VALUES (?)", (domain,))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"domain {domain} already exists") from None
        self._domains_cache = None

    def remove_domain(self, domain: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM domains WHERE name = ?", (domain,)).rowcount == 0:
                raise NotFound(f"no such domain: {domain}")
            db.execute("DELETE FROM alias_targets WHERE address LIKE ?", (f"%@{domain}",))
        self._domains_cache = None

    # --- accounts -------------------------------------------------------------

    def get_account(self, address: str) -> Account | None:
        row = self._db.conn.execute(
            "SELECT address, password_hash FROM accounts WHERE address = ?", (address,)
        ).fetchone()
        return Account(row[0], row[1]) if row else None

    def list_accounts(self) -> list[str]:
        return [
            r[0] for r in self._db.conn.execute("SELECT address FROM accounts ORDER BY address")
        ]

    def add_account(self, address: str, password_hash: str) -> None:
        try:
            with self._db.tx() as db:
                db.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?)", (address, password_hash, time.time())
                )
                self._mailboxes.create_mailboxes(db, address)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {address} already exists") from None

    def set_password(self, address: str, password_hash: str) -> None:
        with self._db.tx() as db:
            cur = db.execute(
                "UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no such user: {address}")

    def remove_account(self, address: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM accounts WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no such user: {address}")
            self._mailboxes.remove_account_mailboxes(db, address)

    # --- aliases ----------------------------------------------------------------

    def alias_targets(self, address: str) -> tuple[str, ...] | None:
        rows = self._db.conn.execute(
            "SELECT target FROM alias_targets WHERE address = ? ORDER BY position", (address,)
        ).fetchall()
        return tuple(r[0] for r in rows) if rows else None

    def list_aliases(self) -> list[tuple[str, tuple[str, ...]]]:
        out: dict[str, list[str]] = {}
        for address, target in self._db.conn.execute(
            "SELECT address, target FROM alias_targets ORDER BY address, position"
        ):
            out.setdefault(address, []).append(target)
        return [(a, tuple(t)) for a, t in out.items()]

    def add_alias(self, address: str, targets: Sequence[str]) -> None:
        with self._db.tx() as db:
            if db.execute("SELECT 1 FROM alias_targets WHERE address = ?", (address,)).fetchone():
                raise AlreadyExists(f"alias {address} already exists")
            db.executemany(
                "INSERT INTO alias_targets VALUES (?, ?, ?)",
                [(address, i, t) for i, t in enumerate(targets)],
            )

    def remove_alias(self, address: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM alias_targets WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no such alias: {address}")

    # --- POP/IMAP-before-SMTP -----------------------------------------------------

    def record_login(self, ip: str, at: float) -> None:
        with self._db.tx() as db:
            db.execute(
                "INSERT INTO login_records VALUES (?, ?)"
                " ON CONFLICT(ip) DO UPDATE SET at = max(at, excluded.at)",
                (ip, at),
            )

    def last_login(self, ip: str) -> float | None:
        row = self._db.conn.execute("SELECT at FROM login_records WHERE ip = ?", (ip,)).fetchone()
        return float(row[0]) if row else None

    def expire_logins(self, before: float) -> int:
        with self._db.tx() as db:
            return db.execute("DELETE FROM login_records WHERE at < ?", (before,)).rowcount

    # --- failed logins, shared by every process on the store ------------------------

    def record_login_failure(self, ip: str, account: str, at: float) -> None:
        with self._db.tx() as db:
            db.execute("INSERT INTO auth_failures VALUES (?, ?, ?)", (ip, account, at))

    def login_failures(self, ip: str, account: str, since: float) -> LoginFailures:
        row = self._db.conn.execute(_COUNT_FAILURES, (ip, since, account, since)).fetchone()
        return LoginFailures(row[0], row[1])

    def forget_login_failures(self, ip: str, account: str) -> None:
        with self._db.tx() as db:
            db.execute("DELETE FROM auth_failures WHERE ip = ? AND account = ?", (ip, account))

    def expire_login_failures(self, before: float) -> int:
        with self._db.tx() as db:
            return db.execute("DELETE FROM auth_failures WHERE at <= ?", (before,)).rowcount


# Both counts in one statement; each uses its own index.
_COUNT_FAILURES = (
    "SELECT (SELECT count(*) FROM auth_failures WHERE ip = ? AND at > ?),"
    " (SELECT count(*) FROM auth_failures WHERE account = ? AND at > ?)"
)
