"""Numbered schema migrations; the database records how far it has come.

Append a new entry to add a migration; never edit one that has shipped. An
entry is SQL (statements split on ";", so no triggers) or a function given
the connection and the data directory, for migrations that move data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from postwarden.storage.sqlite.store_v2_schema import mailbox_store_v2

Migration = str | Callable[[sqlite3.Connection, Path], None]

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE domains (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE accounts (
        address TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE alias_targets (
        address TEXT NOT NULL,
        position INTEGER NOT NULL,
        target TEXT NOT NULL,
        PRIMARY KEY (address, position)
    );
    CREATE TABLE login_records (
        ip TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        highestmodseq INTEGER NOT NULL DEFAULT 1,
        special_use TEXT,
        subscribed INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account, name)
    );
    CREATE TABLE mailbox_messages (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        modseq INTEGER NOT NULL,
        internaldate REAL NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX mailbox_messages_blob ON mailbox_messages(blob);
    CREATE TABLE queue_messages (
        queue_id TEXT PRIMARY KEY,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        sender TEXT NOT NULL,
        created REAL NOT NULL,
        envid TEXT,
        ret TEXT,
        smtputf8 INTEGER NOT NULL DEFAULT 0,
        delay_notified INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX queue_messages_blob ON queue_messages(blob);
    CREATE TABLE queue_recipients (
        id INTEGER PRIMARY KEY,
        queue_id TEXT NOT NULL REFERENCES queue_messages(queue_id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        orcpt TEXT,
        notify TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_error TEXT,
        remote_mta TEXT
    );
    CREATE INDEX queue_recipients_due ON queue_recipients(state, next_attempt);
    CREATE INDEX queue_recipients_queue ON queue_recipients(queue_id);
    """,
    # 2: whether a queued message's sender was vouched for (the client had
    # authenticated or was allowed to relay); reports to a sender nobody
    # vouched for carry headers only. Entries queued before are not vouched for.
    """
    ALTER TABLE queue_messages ADD COLUMN trusted_origin INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: leases, so that several queue managers share one queue: the manager
    # working on a message, and until when unless it renews the claim.
    """
    ALTER TABLE queue_messages ADD COLUMN lease_owner TEXT;
    ALTER TABLE queue_messages ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    CREATE INDEX queue_messages_lease_owner ON queue_messages(lease_owner);
    """,
    # 4: mailbox store v2 (issue 9): blobs with reference counts, narrow
    # message rows with flag bits, an expunge log, mailbox counters,
    # subscriptions, quota, the parsed cache and full-text index.
    mailbox_store_v2,
    # 5: what vouched for a stranger's envelope sender at intake (SenderProof:
    # "" not checked, "spf", "dkim", "none"); "none" gets no reports.
    """
    ALTER TABLE queue_messages ADD COLUMN sender_proof TEXT NOT NULL DEFAULT '';
    """,
    # 6: the parsed cache keeps the raw lines of the header fields clients
    # fetch for message lists (``HEAD_FIELDS``), so FETCH HEADER.FIELDS of
    # them reads no file. Entries made before have none: those messages are
    # answered from their files, as before.
    """
    ALTER TABLE parsed ADD COLUMN head BLOB;
    """,
    # 7: a copy's own header lines before the shared file (local delivery's
    # Return-Path and Delivered-To); empty for every message stored before.
    """
    ALTER TABLE messages ADD COLUMN prefix BLOB NOT NULL DEFAULT x'';
    """,
    # 8: a fresh token per claim, so a result counts only from the claim that
    # is current: an attempt whose lease ran out and was claimed again (by
    # anyone, its own manager included) is not recorded.
    """
    ALTER TABLE queue_messages ADD COLUMN lease_token TEXT;
    """,
    # 9: failed logins, counted per client address and per account inside the
    # throttle's window by every server sharing the store (a guesser cannot
    # spread over processes or nodes); swept once they leave the window.
    """
    CREATE TABLE auth_failures (
        ip TEXT NOT NULL,
        account TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX auth_failures_ip ON auth_failures(ip, at);
    CREATE INDEX auth_failures_account ON auth_failures(account, at);
    """,
)
