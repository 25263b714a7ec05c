"""`postwarden import --mbox | --maildir`: files written here, read back over IMAP and the store."""

from __future__ import annotations

import calendar
import imaplib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from postwarden.storage.mailbox import Field, Flag, UidSet
from postwarden.storage.sqlite import SqliteStore
from serverproc import DOMAIN, PASSWORD, ServerProcess

USER = f"ida@{DOMAIN}"

MBOX = (
    b"From alice@example.org Tue Nov  3 09:15:00 2026\n"
    b"From: alice@example.org\nSubject: one\nStatus: RO\n\n"
    b"first line\n>From the start, quoted by the writer\n>>From a quoted quote\n\n"
    b"From bob@example.org Wed Nov  4 10:00:00 2026\n"
    b"From: bob@example.org\nSubject: two\n\nsecond\n"
)


def stored(server: ServerProcess, mailbox: str = "INBOX") -> list[tuple[Flag, frozenset[str],
                                                                         float, bytes]]:
    """(flags, keywords, internal date, bytes) of each message, oldest first."""
    store = SqliteStore(server.root / "var")
    box = store.mailboxes.get_mailbox(USER, mailbox)
    assert box is not None, f"no mailbox {mailbox}"
    found = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE | Field.INTERNALDATE)
    out = [(m.flags, m.keywords, m.internaldate, store.blobs.read_blob(m.blob.name))
           for m in found if m.blob is not None]
    store.close()
    return out


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    made = make_server(listen={"imap": ["127.0.0.1:0"]})
    made.add_user(USER)
    return made


def run_ok(server: ServerProcess, *args: str) -> str:
    result = server.cli("import", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(server: ServerProcess, *args: str) -> str:
    result = server.cli("import", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


class TestMbox:
    def test_messages_arrive_unescaped_with_from_line_dates_and_status_flags(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """One '>' comes off each quoted From line; Status: RO means \\Seen."""
        (tmp_path / "old.mbox").write_bytes(MBOX)
        out = run_ok(server, "--mbox", str(tmp_path / "old.mbox"), USER)
        assert out.strip() == f"imported 2 messages into {USER} (INBOX 2)"
        (f1, _, d1, one), (f2, _, d2, two) = stored(server)
        assert one == (b"From: alice@example.org\r\nSubject: one\r\nStatus: RO\r\n\r\n"
                       b"first line\r\nFrom the start, quoted by the writer\r\n"
                       b">From a quoted quote\r\n")
        assert two == b"From: bob@example.org\r\nSubject: two\r\n\r\nsecond\r\n"
        assert (f1, f2) == (Flag.SEEN, Flag(0))
        assert (d1, d2) == (utc("2026-11-03 09:15:00"), utc("2026-11-04 10:00:00"))

    def test_a_file_that_is_not_an_mbox_is_refused_and_nothing_is_stored(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """Text not opening with a From_ line would otherwise be skipped silently."""
        (tmp_path / "notes.txt").write_bytes(b"Subject: hello\n\nnot an mbox\n")
        assert one_line_error(server, "--mbox", str(tmp_path / "notes.txt"), USER) == (
            f"postwarden: error: {tmp_path / 'notes.txt'} is not an mbox file"
            " (it does not start with a 'From ' line)")
        assert stored(server) == []

    def test_a_missing_file_and_an_unknown_user_are_one_line_errors(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """Neither creates anything: no empty mbox file, no account."""
        missing = tmp_path / "missing.mbox"
        assert one_line_error(server, "--mbox", str(missing), USER) == (
            f"postwarden: error: {missing}: no such file")
        assert not missing.exists()
        (tmp_path / "old.mbox").write_bytes(MBOX)
        assert one_line_error(server, "--mbox", str(tmp_path / "old.mbox"),
                              f"nobody@{DOMAIN}") == (
            f"postwarden: error: no such user: nobody@{DOMAIN}")

    def test_the_quota_stops_the_import_and_says_how_far_it_got(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """APPEND's quota applies: the first message fits, the second does not."""
        assert server.cli("user", "quota", USER, "130").returncode == 0
        (tmp_path / "old.mbox").write_bytes(MBOX)
        assert one_line_error(server, "--mbox", str(tmp_path / "old.mbox"), USER) == (
            f"postwarden: error: {USER} is over quota: stopped after 1 messages (INBOX: 1)")
        assert len(stored(server)) == 1


    def test_a_message_over_the_append_limit_stops_the_import_naming_it(
            self, make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
        """[imap] max_append_size holds for imports as for APPEND."""
        server = make_server(imap={"max_append_size": 100})
        server.add_user(USER)
        (tmp_path / "old.mbox").write_bytes(MBOX)
        assert one_line_error(server, "--mbox", str(tmp_path / "old.mbox"), USER) == (
            "postwarden: error: message 1 is larger than [imap] max_append_size"
            " (125 > 100 octets): stopped after 0 messages (none)")
        assert stored(server) == []


def maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


class TestMaildir:
    def test_flags_folders_and_delivery_dates_as_an_imap_client_sees_them(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """:2,FRS is \\Flagged \\Answered \\Seen; .Work.2026 is Work/2026; mtime the date."""
        top = maildir(tmp_path / "Maildir")
        read = top / "cur" / "1700000000.1.host:2,FRS"
        read.write_bytes(b"Subject: read\n\nold\n")
        os.utime(read, (1700000000, 1700000000))
        (top / "new" / "1700000001.2.host").write_bytes(b"Subject: unread\n\nnew\n")
        sub = maildir(tmp_path / "Maildir" / ".Work.2026")
        filed = sub / "cur" / "1700000002.3.host:2,ST"
        filed.write_bytes(b"Subject: filed\n\nwork\n")
        os.utime(filed, (1700000002, 1700000002))

        out = run_ok(server, "--maildir", str(top), USER)
        assert out.strip() == f"imported 3 messages into {USER} (INBOX 2, Work/2026 1)"
        server.start()
        client = imaplib.IMAP4(*server.addr("imap"), timeout=30)
        try:
            client.login(USER, PASSWORD)
            client.select("INBOX", readonly=True)
            _, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            inbox = b" ".join(part[0] + part[1] if isinstance(part, tuple) else part
                              for part in data)
            client.select("Work/2026", readonly=True)
            _, work = client.fetch("1", "(FLAGS INTERNALDATE)")
        finally:
            client.logout()
        by_subject = {subject: set(flags.split()) for flags, subject
                      in re.findall(rb"FLAGS \(([^)]*)\).*?Subject: (\w+)", inbox)}
        assert by_subject == {
            b"read": {rb"\Flagged", rb"\Answered", rb"\Seen"}, b"unread": set()}
        assert b'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in inbox
        assert set(re.search(rb"FLAGS \(([^)]*)\)", work[0]).group(1).split()) == {  # type: ignore[arg-type, union-attr]
            rb"\Seen", rb"\Deleted"}
        assert b'"14-Nov-2023 22:13:22 +0000"' in work[0]  # type: ignore[operator]

    def test_a_folder_without_cur_new_tmp_is_refused(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """A wrong path says what a maildir needs instead of importing nothing."""
        (tmp_path / "mail").mkdir()
        assert one_line_error(server, "--maildir", str(tmp_path / "mail"), USER) == (
            f"postwarden: error: {tmp_path / 'mail'} is not a maildir"
            " (it needs cur, new and tmp folders)")
