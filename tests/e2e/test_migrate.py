"""``postwarden migrate --to DSN``: a SQLite data directory moved to PostgreSQL.

A SQLite server gets mail over SMTP, flags, a keyword, a subfolder and an
expunge (so the UIDs have a gap) over IMAP, and a remote message it cannot
deliver yet (the peer answers 451). After ``migrate``, ``serve`` on
PostgreSQL shows IMAP clients the same UIDVALIDITY, UIDs and flags and POP3
clients the same UIDLs, and delivers the queued message to the peer.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import poplib
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from delivery.smtppeers import Peer
from pgcluster import PgCluster
from postwarden.admin.migrate import NOT_COPIED, TABLES, shown_dsn
from postwarden.storage.sqlite import SqliteStore
from s3server import S3Server
from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 10
ALICE = f"alice@{DOMAIN}"
REMOTE = "ann@partner.example"

pytestmark = pytest.mark.slow


def message(n: int) -> bytes:
    return f"From: a@remote.test\r\nSubject: number {n}\r\n\r\nBody {n}.\r\n".encode()


def imap_state(server: ServerProcess) -> dict[str, object]:
    """What an IMAP client caches: UIDVALIDITY, UIDs and flags of each mailbox."""
    imap = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
    imap.login(ALICE, PASSWORD)
    state: dict[str, object] = {}
    for box in ("INBOX", "Work/2026"):
        imap.select(box, readonly=True)
        uidvalidity = imap.response("UIDVALIDITY")[1]
        _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        state[box] = (uidvalidity, sorted(d.decode() for d in data if isinstance(d, bytes)))
    state["subscribed"] = sorted(d.decode() for d in imap.lsub()[1] if isinstance(d, bytes))
    imap.logout()
    return state


def uidls(server: ServerProcess) -> list[bytes]:
    pop = poplib.POP3(*server.addr("pop3"), timeout=TIMEOUT)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    listing = pop.uidl()[1]
    pop.quit()
    return sorted(listing)


def fill(server: ServerProcess) -> None:
    """Mail in INBOX and a subfolder, flags, a keyword, a UID gap, and a queued remote."""
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
        for n in range(1, 4):
            smtp.sendmail("a@remote.test", [ALICE], message(n))
        smtp.sendmail("a@remote.test", [REMOTE], message(9))
    imap = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
    imap.login(ALICE, PASSWORD)
    assert imap.create("Work/2026")[0] == "OK"
    assert imap.subscribe("Work/2026")[0] == "OK"
    assert imap.append("Work/2026", r"(\Answered)", None, message(4))[0] == "OK"
    imap.select("INBOX")
    assert imap.uid("STORE", "1", "+FLAGS", r"(\Flagged $Label1)")[0] == "OK"
    assert imap.uid("STORE", "2", "+FLAGS", r"(\Deleted)")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    imap.logout()


ROLE, ROLE_PASSWORD = "pwcheck", "Right-Pw-4711"


def password_database(pg_cluster: PgCluster) -> str:
    """A new database owned by a role that must give its password (scram-sha-256, over
    TCP); its ``host:port/database``."""
    dsn = pg_cluster.database()
    with psycopg.connect(dsn, autocommit=True) as db:
        if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            db.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        hba = Path(db.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        if ROLE not in hba.read_text():
            hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            db.execute("SELECT pg_reload_conf()")
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        db.execute(f'ALTER DATABASE "{name}" OWNER TO {ROLE}')  # it may make the tables
    return dsn.split("@")[1]


def stopped_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A data directory with an account in it and no server running on it."""
    server = make_server()
    server.add_user(ALICE)
    server.store.close()
    return server


QUEUE_SQL = ("SELECT r.address, r.state, r.attempts, r.next_attempt, m.sender"
             " FROM queue_recipients r JOIN queue_messages m ON m.queue_id = r.queue_id")


async def test_a_migrated_server_looks_the_same_to_clients_and_delivers_its_queue(
    make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
) -> None:
    """Same UIDVALIDITY, UIDs, flags and UIDLs on PostgreSQL; the queued message goes out."""
    refusing = True
    peer = Peer(on_rcpt=lambda _: "451 4.3.0 not yet" if refusing else None)
    port = await peer.start()
    routes = [{"domain": "partner.example", "to": f"127.0.0.1:{port}"}]
    common = {"routes": routes, "relay": {"trusted_networks": ["127.0.0.0/8"]},
              "listen": {"imap": ["127.0.0.1:0"]}}
    old = make_server(**common)
    old.add_user(ALICE)
    old.start()
    try:
        await asyncio.to_thread(fill, old)
        await peer.wait_until(lambda: peer.connections >= 1, TIMEOUT)
        before = await asyncio.to_thread(imap_state, old)
        before_uidls = await asyncio.to_thread(uidls, old)
    finally:
        await asyncio.to_thread(old.stop)
    with old.store.db.conn as db:  # type: ignore[attr-defined]
        queued_before = sorted(db.execute(QUEUE_SQL).fetchall())
    old.store.close()
    dsn = pg_cluster.database()
    done = await asyncio.to_thread(old.cli, "migrate", "--to", dsn)
    assert done.returncode == 0, done.stderr
    assert "messages: 3 copied, 3 in the target, ok" in done.stdout
    assert "queue_recipients: 1 copied, 1 in the target, ok" in done.stdout
    assert "auth_failures: 0 copied, 0 in the target, ok" in done.stdout
    assert "blobs read back and hashed: 4" in done.stdout  # the expunged one is not needed

    with psycopg.connect(dsn) as db:  # attempts and due times came along
        assert sorted(db.execute(QUEUE_SQL).fetchall()) == queued_before
    assert queued_before[0][2] >= 1  # type: ignore[operator]

    refusing = False
    new = make_server(storage={"backend": "postgresql", "dsn": dsn, "pool_size": 4}, **common)
    new.start()
    try:
        after = await asyncio.to_thread(imap_state, new)
        after_uidls = await asyncio.to_thread(uidls, new)
        (delivered,) = await peer.wait_messages(1, timeout=TIMEOUT * 3)
    finally:
        await asyncio.to_thread(new.stop)
        await peer.close()
    assert after == before
    assert "$Label1" in str(before["INBOX"]) and "2 (UID 3" in str(before["INBOX"])
    assert after_uidls == before_uidls and len(after_uidls) == 2
    assert delivered.recipients == [REMOTE] and delivered.data.endswith(message(9))


def test_every_sqlite_table_is_copied_or_named_as_not(tmp_path: Path) -> None:
    """A table a schema migration adds is not left behind by ``migrate`` unnoticed."""
    store = SqliteStore(tmp_path)
    tables = {r[0] for r in store.db.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    store.close()
    assert {t for t in tables if not t.startswith(NOT_COPIED)} == set(TABLES)


class TestRefusals:
    def test_a_running_server_or_a_non_empty_target_is_refused(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """One line each, exit 2: the data directory is in use; the target holds data."""
        server = make_server()
        server.add_user(ALICE)
        server.start()
        dsn = pg_cluster.database()
        running = server.cli("migrate", "--to", dsn)
        assert running.returncode == 2
        assert running.stderr.strip().splitlines() == [
            f"postwarden: error: a server is running on data_dir {server.root / 'var'}:"
            " stop it first"]
        server.stop()
        assert server.cli("migrate", "--to", dsn).returncode == 0
        info = psycopg.conninfo.conninfo_to_dict(dsn)  # the query form, with a password
        query = (f"postgresql:///{info['dbname']}?host={info['host']}&port={info['port']}"
                 f"&user={info['user']}&password=unshown")
        again = server.cli("migrate", "--to", query)
        assert again.returncode == 2
        (line,) = again.stderr.strip().splitlines()
        assert (f"the database at {info['host']}:{info['port']}/{info['dbname']} already holds"
                " postwarden data (1 rows in domains)") in line
        assert "unshown" not in line

    def test_a_missing_message_file_copies_nothing(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """A data directory that lost a message file: one line naming it, exit 2, and the
        target left empty (one transaction), so a repaired directory can go after."""
        server = make_server()
        server.add_user(ALICE)
        server.start()
        with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
            smtp.sendmail("a@remote.test", [ALICE], message(1))
        server.stop()
        (lost,) = [f for f in (server.root / "var" / "messages").rglob("*") if f.is_file()]
        lost.unlink()
        dsn = pg_cluster.database()
        done = server.cli("migrate", "--to", dsn)
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert f"message file {lost.name} is missing" in line and "nothing was copied" in line
        with psycopg.connect(dsn) as db:
            assert db.execute("SELECT count(*) FROM accounts").fetchone() == (0,)

    @pytest.mark.parametrize(("dsn", "expected"), [
        ("mysql://x:hidden@127.0.0.1/db", "expected postgresql://user@host:port/database"),
        ("postgresql://postgres@127.0.0.1:1/db", "cannot connect to PostgreSQL at 127.0.0.1:1"),
    ])
    def test_a_bad_or_unreachable_dsn_is_one_line(
        self, make_server: Callable[..., ServerProcess], dsn: str, expected: str
    ) -> None:
        server = make_server()
        done = server.cli("migrate", "--to", dsn)
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("postwarden: error: ") and expected in line
        assert "hidden" not in line

    def test_blobs_s3_without_an_s3_table_is_one_line(
        self, make_server: Callable[..., ServerProcess]
    ) -> None:
        """``--blobs s3`` with no ``[s3]`` endpoint: refused before the target is touched."""
        server = make_server()
        done = server.cli("migrate", "--to", "postgresql://postgres@127.0.0.1:1/db",
                          "--blobs", "s3")
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("postwarden: error: s3.endpoint: S3 blobs need endpoint")

    def test_a_wrong_password_is_one_line(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """A role that must give a password (scram) and gets a wrong one."""
        where = password_database(pg_cluster)
        server = make_server()
        done = server.cli("migrate", "--to", f"postgresql://{ROLE}:wrong@{where}")
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert "cannot connect to PostgreSQL" in line and "password authentication failed" in line
        assert "wrong" not in line


def test_blobs_can_go_to_s3(make_server: Callable[..., ServerProcess], pg_cluster: PgCluster,
                            s3_server: S3Server) -> None:
    """``--blobs s3``: the bytes become objects named by their SHA-256, read back and hashed."""
    bucket = s3_server.bucket()
    server = make_server(s3=s3_server.settings(bucket))  # SQLite keeps [s3] for migrate
    server.add_user(ALICE)
    server.start()
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@remote.test", [ALICE], message(1))
        smtp.sendmail("a@remote.test", [ALICE], message(2))
    server.stop()
    done = server.cli("migrate", "--to", pg_cluster.database(), "--blobs", "s3")
    assert done.returncode == 0, done.stderr
    assert "blobs read back and hashed: 2" in done.stdout
    assert len(s3_server.keys(bucket)) == 2


class TestPassword:
    """The password never shows, and need not be on the command line (``ps``)."""

    def test_the_dsn_is_printed_without_its_password(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        where = password_database(pg_cluster)
        done = stopped_server(make_server).cli(
            "migrate", "--to", f"postgresql://{ROLE}:{ROLE_PASSWORD}@{where}")
        assert done.returncode == 0, done.stderr
        assert ROLE_PASSWORD not in done.stdout + done.stderr
        assert f'dsn = "postgresql://{ROLE}@{where}"' in done.stdout
        assert "put it in the file [storage] password_file names" in done.stdout

    def test_the_password_comes_from_a_file(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster, tmp_path: Path
    ) -> None:
        """``--password-file``: its first line, as ``[storage] password_file``; the hint
        names the file for the config."""
        where = password_database(pg_cluster)
        secret = tmp_path / "pgpassword"
        secret.write_text(f"{ROLE_PASSWORD}\nnot this line\n")
        done = stopped_server(make_server).cli(
            "migrate", "--to", f"postgresql://{ROLE}@{where}", "--password-file", str(secret))
        assert done.returncode == 0, done.stderr
        assert (f'dsn = "postgresql://{ROLE}@{where}", blobs = "database",'
                f' password_file = "{secret.resolve()}"') in done.stdout
        assert ROLE_PASSWORD not in done.stdout + done.stderr

    def test_pgpassword_is_honoured(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """libpq's own environment variable works, as the ``--to`` help says."""
        where = password_database(pg_cluster)
        server = stopped_server(make_server)
        done = subprocess.run(
            [sys.executable, "-m", "postwarden", "-c", str(server.config_path),
             "migrate", "--to", f"postgresql://{ROLE}@{where}"],
            env={**os.environ, "PGPASSWORD": ROLE_PASSWORD},
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "migrated: set [storage]" in done.stdout

    @pytest.mark.parametrize(("make", "reason"), [
        (lambda path: None, "No such file or directory"),
        (lambda path: path.mkdir(), "Is a directory"),
        (lambda path: path.write_bytes(b"\xff\xfe\x00pw\n"), "not text"),
    ])
    def test_an_unusable_password_file_is_one_line(
        self, make_server: Callable[..., ServerProcess], tmp_path: Path,
        make: Callable[[Path], None], reason: str
    ) -> None:
        """Refused before any connection (the DSN's port has no server): exit 2."""
        secret = tmp_path / "pgpassword"
        make(secret)
        done = stopped_server(make_server).cli(
            "migrate", "--to", "postgresql://u@127.0.0.1:1/db", "--password-file", str(secret))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"postwarden: error: --password-file {secret}: {reason}"]

    @pytest.mark.parametrize(("dsn", "shown"), [
        ("postgresql://u:pw@h:5433/db", "postgresql://u@h:5433/db"),
        ("postgres://u:p%40w@h1,h2/db?sslmode=disable", "postgres://u@h1,h2/db?sslmode=disable"),
        ("postgresql:///db?host=h&password=pw&port=5", "postgresql:///db?host=h&port=5"),
        ("postgresql://u@h/db?pass%77ord=pw", "postgresql://u@h/db"),
        ("postgresql://u@h/db?options=-c%3D1", "postgresql://u@h/db?options=-c%3D1"),
        ("postgresql://u:pw@h/db?bad=%zz", "the given dsn (it does not parse)"),
    ])
    def test_shown_dsn_drops_the_password_and_keeps_the_form(
        self, dsn: str, shown: str
    ) -> None:
        assert shown_dsn(dsn) == shown

    def test_shown_dsn_of_key_value_pairs_drops_the_password(self) -> None:
        shown = shown_dsn("host=h dbname=db user=u password='p w'")
        assert psycopg.conninfo.conninfo_to_dict(shown) == {"host": "h", "dbname": "db",
                                                            "user": "u"}
