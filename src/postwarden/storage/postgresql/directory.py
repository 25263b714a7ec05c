"""Domains, accounts, aliases and POP/IMAP-before-SMTP records (the Directory).

The login records live in the database, so a POP3 login on one node opens
relaying on every node sharing it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from postwarden.storage.interfaces import Account, AlreadyExists, LoginFailures, NotFound
from postwarden.storage.postgresql.db import PgDatabase
from postwarden.storage.postgresql.mailboxes import PgMailboxes


class PgDirectory:
    """Who is local: an account brings its mailboxes, removing it drops them."""

    def __init__(self, db: PgDatabase, mailboxes: PgMailboxes) -> None:
        self._db = db
        self._mailboxes = mailboxes

    # --- domains ------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        with self._db.conn() as db:
            return db.execute("SELECT 1 FROM domains WHERE name = %s",
                              (domain,)).fetchone() is not None

    def list_domains(self) -> list[str]:
        with self._db.conn() as db:
            return [r[0] for r in db.execute("SELECT name FROM domains ORDER BY name")]

    def add_domain(self, domain: str) -> None:
        try:
            with self._db.tx() as db:
                db.execute("INSERT INTO domains VALUES (%s)", (domain,))
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"domain {domain} already exists") from None

    def remove_domain(self, domain: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM domains WHERE name = %s", (domain,)).rowcount == 0:
                raise NotFound(f"no such domain: {domain}")
            db.execute("DELETE FROM alias_targets WHERE address LIKE %s",
                       ("%@" + domain.replace("\\", "\\\\").replace("%", "\\%")
                        .replace("_", "\\_"),))

    # --- accounts -------------------------------------------------------------

    def get_account(self, address: str) -> Account | None:
        with self._db.conn() as db:
            row = db.execute("SELECT address, password_hash FROM accounts WHERE address = %s",
                             (address,)).fetchone()
        return Account(row[0], row[1]) if row else None

    def list_accounts(self) -> list[str]:
        with self._db.conn() as db:
            return [r[0] for r in db.execute("SELECT address FROM accounts ORDER BY address")]

    def add_account(self, address: str, password_hash: str) -> None:
        try:
            with self._db.tx() as db:
                db.execute("INSERT INTO accounts VALUES (%s, %s, %s)",
                           (address, password_hash, time.time()))
                self._mailboxes.create_mailboxes(db, address)
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"user {address} already exists") from None

    def set_password(self, address: str, password_hash: str) -> None:
        with self._db.tx() as db:
            if db.execute("UPDATE accounts SET password_hash = %s WHERE address = %s",
                          (password_hash, address)).rowcount == 0:
                raise NotFound(f"no such user: {address}")

    def remove_account(self, address: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM accounts WHERE address = %s", (address,)).rowcount == 0:
                raise NotFound(f"no such user: {address}")
            self._mailboxes.remove_account_mailboxes(db, address)

    # --- aliases ----------------------------------------------------------------

    def alias_targets(self, address: str) -> tuple[str, ...] | None:
        with self._db.conn() as db:
            rows = db.execute(
                "SELECT target FROM alias_targets WHERE address = %s ORDER BY position",
                (address,)).fetchall()
        return tuple(r[0] for r in rows) if rows else None

    def list_aliases(self) -> list[tuple[str, tuple[str, ...]]]:
        out: dict[str, list[str]] = {}
        with self._db.conn() as db:
            for address, target in db.execute(
                    "SELECT address, target FROM alias_targets ORDER BY address, position"):
                out.setdefault(address, []).append(target)
        return [(a, tuple(t)) for a, t in out.items()]

    def add_alias(self, address: str, targets: Sequence[str]) -> None:
        try:
            with self._db.tx() as db:
                db.cursor().executemany(
                    "INSERT INTO alias_targets VALUES (%s, %s, %s)",
                    [(address, i, t) for i, t in enumerate(targets)])
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"alias {address} already exists") from None

    def remove_alias(self, address: str) -> None:
        with self._db.tx() as db:
            if db.execute("DELETE FROM alias_targets WHERE address = %s",
                          (address,)).rowcount == 0:
                raise NotFound(f"no such alias: {address}")

    # --- POP/IMAP-before-SMTP, shared by every node -------------------------------

    def record_login(self, ip: str, at: float) -> None:
        with self._db.tx() as db:
            db.execute(
                "INSERT INTO login_records VALUES (%s, %s)"
                " ON CONFLICT (ip) DO UPDATE SET at = greatest(login_records.at, excluded.at)",
                (ip, at))

    def last_login(self, ip: str) -> float | None:
        with self._db.conn() as db:
            row = db.execute("SELECT at FROM login_records WHERE ip = %s", (ip,)).fetchone()
        return float(row[0]) if row else None

    def expire_logins(self, before: float) -> int:
        """Every node sweeps on its own schedule; one at a time does (0 for the others)."""
        with self._db.exclusive("login-expiry") as db:
            if db is None:
                return 0
            return db.execute("DELETE FROM login_records WHERE at < %s", (before,)).rowcount

    # --- failed logins, shared by every node ----------------------------------------------

    def record_login_failure(self, ip: str, account: str, at: float) -> None:
        with self._db.conn() as db:  # one statement: autocommit
            db.execute("INSERT INTO auth_failures VALUES (%s, %s, %s)", (ip, account, at))

    def login_failures(self, ip: str, account: str, since: float) -> LoginFailures:
        with self._db.conn() as db:
            row = db.execute(
                "SELECT (SELECT count(*) FROM auth_failures WHERE ip = %s AND at > %s),"
                " (SELECT count(*) FROM auth_failures WHERE account = %s AND at > %s)",
                (ip, since, account, since)).fetchone()
        assert row is not None
        return LoginFailures(row[0], row[1])

    def forget_login_failures(self, ip: str, account: str) -> None:
        with self._db.conn() as db:
            db.execute("DELETE FROM auth_failures WHERE ip = %s AND account = %s", (ip, account))

    def expire_login_failures(self, before: float) -> int:
        """One node at a time, as ``expire_logins``."""
        with self._db.exclusive("login-failure-expiry") as db:
            if db is None:
                return 0
            return db.execute("DELETE FROM auth_failures WHERE at <= %s", (before,)).rowcount
