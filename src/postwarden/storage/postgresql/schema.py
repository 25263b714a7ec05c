"""Numbered schema migrations for PostgreSQL; the database records how far it has come.

Append a new entry to add a migration; never edit one that has shipped.
Each runs in one transaction (PostgreSQL's DDL is transactional), under an
advisory lock, so nodes starting together migrate once. Migration 1 is the
SQLite schema as it stands after its own migration 4 (store v2), in
PostgreSQL's types: message bytes live in ``blob_contents``, keyed by their
SHA-256 and stored once however many names (acceptances) refer to them.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the store v2 schema.
    r"""
    CREATE TABLE counters (
        name text PRIMARY KEY,
        value bigint NOT NULL
    );
    INSERT INTO counters VALUES ('uidvalidity', 0);
    CREATE TABLE domains (
        name text PRIMARY KEY
    );
    CREATE TABLE accounts (
        address text PRIMARY KEY,
        password_hash text NOT NULL,
        created double precision NOT NULL
    );
    CREATE TABLE alias_targets (
        address text NOT NULL,
        position integer NOT NULL,
        target text NOT NULL,
        PRIMARY KEY (address, position)
    );
    CREATE TABLE login_records (
        ip text PRIMARY KEY,
        at double precision NOT NULL
    );
    CREATE TABLE mailboxes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account text NOT NULL,
        name text NOT NULL,
        uidvalidity bigint NOT NULL,
        uidnext bigint NOT NULL DEFAULT 1,
        highestmodseq bigint NOT NULL DEFAULT 1,
        special_use text,
        messages bigint NOT NULL DEFAULT 0,
        unseen bigint NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        deleted bigint NOT NULL DEFAULT 0,
        first_recent bigint NOT NULL DEFAULT 1,
        UNIQUE (account, name)
    );
    CREATE TABLE blob_contents (
        digest bytea PRIMARY KEY,
        data bytea NOT NULL
    );
    ALTER TABLE blob_contents ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE blobs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        size bigint NOT NULL,
        wire_size bigint NOT NULL,
        lines bigint NOT NULL,
        header_size bigint NOT NULL,
        digest bytea NOT NULL REFERENCES blob_contents(digest),
        refs integer NOT NULL,
        created double precision NOT NULL,
        released double precision,
        indexed smallint NOT NULL DEFAULT 0
    );
    CREATE INDEX blobs_released ON blobs(released) WHERE refs <= 0;
    CREATE INDEX blobs_unindexed ON blobs(id) WHERE indexed = 0;
    CREATE INDEX blobs_digest ON blobs(digest);
    CREATE TABLE messages (
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        blob_id bigint NOT NULL REFERENCES blobs(id),
        modseq bigint NOT NULL,
        flags integer NOT NULL DEFAULT 0,
        keywords bigint NOT NULL DEFAULT 0,
        internaldate double precision NOT NULL,
        prefix bytea NOT NULL DEFAULT '\x'::bytea,  -- this copy's own header lines
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE INDEX messages_blob ON messages(blob_id);
    CREATE TABLE expunged (
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);
    CREATE TABLE keywords (
        mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        bit integer NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (mailbox_id, bit),
        UNIQUE (mailbox_id, name)
    );
    CREATE TABLE subscriptions (
        account text NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (account, name)
    );
    CREATE TABLE quota (
        account text PRIMARY KEY,
        limit_bytes bigint,
        used_bytes bigint NOT NULL DEFAULT 0,
        used_messages bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE maildrop_locks (
        account text PRIMARY KEY,
        owner text NOT NULL,
        until double precision NOT NULL
    );
    CREATE TABLE parsed (
        blob_id bigint PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
        from_ text,
        to_ text,
        cc text,
        bcc text,
        subject text,
        date text,
        message_id text,
        in_reply_to text,
        refs text,
        structure bytea NOT NULL,
        head bytea,
        body tsvector
    );
    CREATE INDEX parsed_body ON parsed USING gin (body);
    CREATE TABLE queue_messages (
        queue_id text PRIMARY KEY,
        blob text NOT NULL,
        size bigint NOT NULL,
        sender text NOT NULL,
        created double precision NOT NULL,
        envid text,
        ret text,
        smtputf8 boolean NOT NULL DEFAULT false,
        delay_notified boolean NOT NULL DEFAULT false,
        trusted_origin boolean NOT NULL DEFAULT false,
        sender_proof text NOT NULL DEFAULT '',
        lease_owner text,
        lease_until double precision NOT NULL DEFAULT 0
    );
    CREATE INDEX queue_messages_blob ON queue_messages(blob);
    CREATE INDEX queue_messages_lease_owner ON queue_messages(lease_owner);
    CREATE TABLE queue_recipients (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue_id text NOT NULL REFERENCES queue_messages(queue_id) ON DELETE CASCADE,
        address text NOT NULL,
        orcpt text,
        notify text NOT NULL DEFAULT '',
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt double precision NOT NULL,
        last_error text,
        remote_mta text
    );
    CREATE INDEX queue_recipients_due ON queue_recipients(state, next_attempt);
    CREATE INDEX queue_recipients_queue ON queue_recipients(queue_id);
    -- Every change to a mailbox raises its highestmodseq: a hint to every node
    -- that LISTENs, sent by PostgreSQL at commit (never for a rollback).
    CREATE FUNCTION postwarden_mailbox_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('postwarden_changes', NEW.id || ':' || NEW.highestmodseq);
        RETURN NULL;
    END $$;
    CREATE TRIGGER mailbox_changed AFTER UPDATE OF highestmodseq ON mailboxes
        FOR EACH ROW WHEN (NEW.highestmodseq <> OLD.highestmodseq)
        EXECUTE FUNCTION postwarden_mailbox_changed();
    """,
    # 2: a fresh token per claim (see the SQLite schema's migration 8).
    """
    ALTER TABLE queue_messages ADD COLUMN lease_token text;
    """,
    # 3: failed logins shared by every node (see the SQLite schema's migration 9).
    """
    CREATE TABLE auth_failures (
        ip text NOT NULL,
        account text NOT NULL,
        at double precision NOT NULL
    );
    CREATE INDEX auth_failures_ip ON auth_failures(ip, at);
    CREATE INDEX auth_failures_account ON auth_failures(account, at);
    """,
)
