"""Commands of issue 10 not driven elsewhere over a real socket: AUTHENTICATE with
SASL-IR and AUTH=LOGIN, NAMESPACE, ID, CHECK, UNSELECT, LSUB, ENABLE IMAP4rev2,
STATUS SIZE, APPEND with a date, HEADER.FIELDS.NOT / MIME / TEXT sections, SEARCH
keys (UTF-8 text too), STORE UNCHANGEDSINCE, and no EXPUNGE during FETCH, STORE or
SEARCH."""

from __future__ import annotations

import base64
import datetime
import re
import smtplib
import socket
from email.utils import parsedate_to_datetime
from typing import BinaryIO

import pytest

from e2e.imap_fixtures import TIMEOUT, IMAPWorld, imap_world
from serverproc import PASSWORD

__all__ = ["imap_world"]

MULTIPART = """\
From: Ann <ann@remote.example>\r
To: {to}\r
Cc: carl@remote.example\r
Subject: tour one\r
Date: Mon, 30 Nov 2026 10:00:00 +0000\r
Message-ID: <tour1@remote.example>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary="b"\r
\r
pre\r
--b\r
Content-Type: text/plain; charset=utf-8\r
Content-Language: en\r
\r
hello world\r
--b\r
Content-Type: application/octet-stream\r
Content-Transfer-Encoding: base64\r
\r
AAEC\r
--b--\r
"""
PLAIN = """\
From: bob@remote.example\r
To: {to}\r
Subject: second\r
Date: Tue, 1 Dec 2026 10:00:00 +0000\r
\r
small body\r
"""


def ok(result: tuple[str, list]) -> list:  # type: ignore[type-arg]
    status, data = result
    assert status == "OK", data
    return data


@pytest.fixture
def toured(imap_world: IMAPWorld) -> str:
    """An account with the multipart message (1) and a small plain one (2)."""
    account = imap_world.new_account()
    with smtplib.SMTP(*imap_world.server.addr("smtp"), timeout=TIMEOUT) as smtp:
        for text in (MULTIPART, PLAIN):
            smtp.sendmail("someone@remote.example", [account], text.format(to=account))
    return account


class Raw:
    """A plain socket session, for what imaplib cannot send (SASL-IR, ENABLE)."""

    def __init__(self, world: IMAPWorld) -> None:
        self.sock = socket.create_connection((world.host, world.port), TIMEOUT)
        self.reader: BinaryIO = self.sock.makefile("rb")
        assert self.reader.readline().startswith(b"* OK")

    def send(self, line: str, tag: str = "") -> list[bytes]:
        """One line; the lines that answer it, up to the tagged reply (the line's own tag
        unless ``tag`` says else) or a continuation."""
        self.sock.sendall(line.encode() + b"\r\n")
        tag = tag or line.split(" ", 1)[0]
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith((tag.encode() + b" ", b"+")):  # to EOF
            lines.append(self.reader.readline())
            assert lines[-1], lines
        return lines

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TestAuthenticate:
    def test_plain_with_an_initial_response(self, imap_world: IMAPWorld) -> None:
        """SASL-IR: AUTHENTICATE PLAIN and its response on one line, no continuation."""
        account = imap_world.new_account()
        raw = Raw(imap_world)
        token = b64("\0" + account + "\0" + PASSWORD)
        answer = raw.send(f"a AUTHENTICATE PLAIN {token}")
        assert len(answer) == 1 and answer[0].startswith(b"a OK"), answer
        raw.close()

    def test_login_mechanism_asks_for_name_then_password(self, imap_world: IMAPWorld
                                                         ) -> None:
        """AUTH=LOGIN: two continuations ("Username:", "Password:"), then OK."""
        account = imap_world.new_account()
        raw = Raw(imap_world)
        assert raw.send("a AUTHENTICATE LOGIN") == [b"+ " + b64("Username:").encode() + b"\r\n"]
        assert raw.send(b64(account)) == [b"+ " + b64("Password:").encode() + b"\r\n"]
        answer = raw.send(b64(PASSWORD), tag="a")
        assert answer[-1].startswith(b"a OK"), answer
        raw.close()

    def test_a_cancelled_exchange_is_bad_and_the_session_goes_on(self, imap_world: IMAPWorld
                                                                ) -> None:
        """"*" cancels (RFC 9051 §6.2.2): BAD, and a LOGIN afterwards works."""
        account = imap_world.new_account()
        raw = Raw(imap_world)
        raw.send("a AUTHENTICATE PLAIN")
        assert raw.send("*", tag="a")[-1].startswith(b"a BAD")
        assert raw.send(f'b LOGIN {account} "{PASSWORD}"')[-1].startswith(b"b OK")
        raw.close()


class TestSessionCommands:
    def test_namespace_id_check_lsub(self, imap_world: IMAPWorld, toured: str) -> None:
        """NAMESPACE names the personal "" with "/"; ID answers with the server's name;
        CHECK is OK; LSUB lists the subscribed ones."""
        client = imap_world.login(toured)
        typ, data = client.namespace()
        assert typ == "OK" and data == [b'(("" "/")) NIL NIL']
        typ, data = client.xatom("ID", '("name" "pytest")')
        assert typ == "OK"
        assert client.untagged_responses.pop("ID") == [b'("name" "postwarden")']
        ok(client.select("INBOX"))
        ok(client.check())
        lines = ok(client.lsub())
        assert b'(\\HasNoChildren) "/" INBOX' in lines and len(lines) == 6, lines
        ok(client.unsubscribe("Junk"))
        assert not any(line.endswith(b"Junk") for line in ok(client.lsub()))
        client.logout()

    def test_status_size_is_the_sum_of_the_messages_sizes(self, imap_world: IMAPWorld,
                                                          toured: str) -> None:
        """STATUS=SIZE (RFC 8438): the octets of all messages, as RFC822.SIZE counts them."""
        client = imap_world.login(toured)
        status = ok(client.status("INBOX", "(MESSAGES SIZE)"))[0]
        ok(client.select("INBOX", readonly=True))
        sizes = [int(re.search(rb"RFC822.SIZE (\d+)", line)[1])  # type: ignore[index]
                 for line in ok(client.fetch("1:*", "(RFC822.SIZE)"))]
        assert status == b"INBOX (MESSAGES 2 SIZE %d)" % sum(sizes), (status, sizes)
        client.logout()

    def test_enable_imap4rev2_and_unselect(self, imap_world: IMAPWorld, toured: str) -> None:
        """After ENABLE IMAP4rev2, SEARCH answers ESEARCH (RFC 9051 §6.4.4) and no
        RECENT is sent on SELECT; UNSELECT leaves the mailbox (FETCH is then BAD)."""
        raw = Raw(imap_world)
        raw.send(f'a LOGIN {toured} "{PASSWORD}"')
        assert raw.send("b ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2\r\n",
                                                  b"b OK ENABLE completed\r\n"]
        selected = raw.send("c SELECT INBOX")
        assert b"* 2 EXISTS\r\n" in selected
        assert not any(b"RECENT" in line for line in selected), selected
        assert raw.send("d SEARCH ALL") == [b'* ESEARCH (TAG "d") ALL 1:2\r\n',
                                            b"d OK SEARCH completed\r\n"]
        assert raw.send("e UNSELECT") == [b"e OK UNSELECT completed\r\n"]
        assert raw.send("f FETCH 1 FLAGS") == [b"f BAD No mailbox selected\r\n"]
        raw.close()


class TestAppend:
    def test_append_with_flags_and_date(self, imap_world: IMAPWorld) -> None:
        """APPEND's flags and date-time become the message's FLAGS and INTERNALDATE."""
        client = imap_world.login(imap_world.new_account())
        message = b"From: me@example.test\r\nSubject: dated\r\n\r\nhello\r\n"
        ok(client.append("INBOX", "(\\Seen $Later)", '"02-Jan-2026 03:04:05 +0100"', message))
        ok(client.select("INBOX", readonly=True))
        fetched = ok(client.fetch("1", "(FLAGS INTERNALDATE)"))[0]
        when = re.search(rb'INTERNALDATE "([ \d]\d-\w{3}-\d{4} [\d:]{8} [-+]\d{4})"', fetched)
        assert when is not None, fetched
        assert parsedate_to_datetime(when[1].decode().strip()) == datetime.datetime(
            2026, 1, 2, 2, 4, 5, tzinfo=datetime.UTC)
        assert b"\\Seen" in fetched and b"$Later" in fetched, fetched
        client.logout()


class TestUtf8Search:
    def test_search_charset_utf8_in_subject_and_body(self, imap_world: IMAPWorld) -> None:
        """SEARCH CHARSET UTF-8 with a literal: an encoded-word Subject and a UTF-8 body
        are found without regard to case."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="Grüße aus Köln", body="Schöne Straße\n")
        imap_world.deliver(account, subject="plain", body="nothing\n")
        raw = Raw(imap_world)
        raw.send(f'a LOGIN {account} "{PASSWORD}"')
        raw.send("b SELECT INBOX")
        for tag, key, word in (("c", "SUBJECT", "GRüße"), ("d", "BODY", "straße"),
                               ("e", "TEXT", "köln")):
            data = word.encode()
            raw.sock.sendall(f"{tag} SEARCH CHARSET UTF-8 {key} {{{len(data)}+}}\r\n".encode()
                             + data + b"\r\n")
            lines = []
            while not lines or not lines[-1].startswith(tag.encode() + b" "):  # to EOF
                lines.append(raw.reader.readline())
                assert lines[-1], lines
            assert lines == [b"* SEARCH 1\r\n", tag.encode() + b" OK SEARCH completed\r\n"]
        raw.close()


class TestSections:
    def test_header_fields_not_mime_and_text_partial(self, imap_world: IMAPWorld,
                                                     toured: str) -> None:
        """HEADER.FIELDS.NOT drops the named fields (and trace lines); 1.MIME is the part's
        own header; TEXT<0.5> the first five octets after the header."""
        client = imap_world.login(toured)
        ok(client.select("INBOX", readonly=True))
        data = ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Date Message-ID "
                                    "MIME-Version Content-Type Received Return-Path "
                                    "Delivered-To)] BODY.PEEK[1.MIME] BODY.PEEK[TEXT]<0.5>)"))
        parts = [item[1] for item in data if isinstance(item, tuple)]
        assert parts == [b"Subject: tour one\r\n\r\n",
                         b"Content-Type: text/plain; charset=utf-8\r\nContent-Language: en\r\n"
                         b"\r\n",
                         b"pre\r\n"]
        client.logout()


class TestSearchKeys:
    @pytest.mark.parametrize(("criteria", "found"), [
        ("ALL", "1 2"),
        ("LARGER 500", "1"),  # 636 and 352 octets, trace lines included
        ("SMALLER 500", "2"),
        ("NOT SUBJECT second", "1"),
        ("OR FROM bob SENTBEFORE 1-Dec-2026", "1 2"),
        ("SENTON 1-Dec-2026", "2"),
        ("SENTSINCE 1-Dec-2026", "2"),
        ("CC carl", "1"),
        ('HEADER Message-ID "<tour1@remote.example>"', "1"),
        ("BODY hello", "1"),
        ("TEXT bob", "2"),
        ("UID 2:*", "2"),
        ("2", "2"),
        ("UNSEEN", "1 2"),
        ("FLAGGED", ""),
        ("NEW", "1 2"),
    ])
    def test_search_key(self, imap_world: IMAPWorld, toured: str, criteria: str,
                        found: str) -> None:
        """Each key over the wire, on a multipart message (1) and a small one (2)."""
        client = imap_world.login(toured)
        ok(client.select("INBOX"))
        assert ok(client.search(None, criteria)) == [found.encode()]
        client.logout()

    def test_flags_keywords_and_modseq(self, imap_world: IMAPWorld, toured: str) -> None:
        """After STORE: KEYWORD/UNKEYWORD, FLAGGED/UNFLAGGED, SEEN, DELETED, and MODSEQ
        (only the message changed last)."""
        client = imap_world.login(toured)
        ok(client.select("INBOX"))
        ok(client.store("1", "+FLAGS", "($Label1 \\Flagged)"))
        ok(client.store("2", "+FLAGS", "(\\Seen \\Deleted)"))
        for criteria, found in [("KEYWORD $Label1", "1"), ("UNKEYWORD $Label1", "2"),
                                ("FLAGGED", "1"), ("UNFLAGGED", "2"), ("SEEN", "2"),
                                ("DELETED", "2"), ("UNDELETED", "1"), ("OLD", "")]:
            assert ok(client.search(None, criteria)) == [found.encode()], criteria
        status = ok(client.status("INBOX", "(HIGHESTMODSEQ)"))[0]
        highest = int(status.rsplit(b" ", 1)[1].rstrip(b")"))
        assert ok(client.search(None, f"MODSEQ {highest}")) == [b"2 (MODSEQ %d)" % highest]
        client.logout()


class TestStore:
    def test_add_remove_replace_and_silent(self, imap_world: IMAPWorld, toured: str) -> None:
        """+FLAGS adds, -FLAGS removes, FLAGS replaces (each answered with the new flags;
        \\Recent, this session's, left aside); .SILENT answers only the tagged OK."""
        raw = Raw(imap_world)
        raw.send(f'a LOGIN {toured} "{PASSWORD}"')
        raw.send("b SELECT INBOX")

        def store(tag: str, command: str) -> list[bytes]:
            return [line.replace(b" \\Recent", b"").replace(b"(\\Recent", b"(")
                    for line in raw.send(f"{tag} {command}")]

        assert store("c", "STORE 1 +FLAGS (\\Seen $A)")[0] == b"* 1 FETCH (FLAGS (\\Seen $A))\r\n"
        assert store("d", "STORE 1 -FLAGS ($A)")[0] == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
        assert store("e", "STORE 1 FLAGS (\\Flagged $B)")[0] == (
            b"* 1 FETCH (FLAGS (\\Flagged $B))\r\n")
        assert store("f", "STORE 1 -FLAGS.SILENT (\\Flagged)") == [b"f OK STORE completed\r\n"]
        assert store("g", "FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS ($B))\r\n"
        raw.close()


class TestConditionalStore:
    def test_unchangedsince_refuses_a_changed_message(self, imap_world: IMAPWorld,
                                                      toured: str) -> None:
        """STORE (UNCHANGEDSINCE m): a message changed after m is left as it is and named
        in [MODIFIED]; one not changed since is stored."""
        client = imap_world.login(toured)
        ok(client.select("INBOX"))
        data = ok(client.fetch("1:2", "(MODSEQ)"))
        modseqs = [int(re.search(rb"MODSEQ \((\d+)\)", line)[1]) for line in data]  # type: ignore[index]
        ok(client.store("1", "+FLAGS", "(\\Answered)"))
        typ, answer = client._simple_command(  # type: ignore[attr-defined]
            "STORE", "1:2", f"(UNCHANGEDSINCE {max(modseqs)})", "+FLAGS", "(\\Flagged)")
        assert typ == "OK" and answer[0].startswith(b"[MODIFIED 1]"), answer
        stored = client.untagged_responses.pop("FETCH")
        assert len(stored) == 1 and stored[0].startswith(b"2 (FLAGS (\\Flagged"), stored
        flags = ok(client.fetch("1:2", "(FLAGS)"))
        assert b"\\Flagged" not in flags[0] and b"\\Flagged" in flags[1], flags
        client.logout()


class TestExpungeTiming:
    def test_no_expunge_during_fetch_store_or_search(self, imap_world: IMAPWorld,
                                                     toured: str) -> None:
        """Another session expunges message 1: FETCH, STORE and SEARCH answer without an
        EXPUNGE (RFC 9051 §7.5.1) and message 2 keeps its number; NOOP then tells of it."""
        other = imap_world.login(toured)
        ok(other.select("INBOX"))
        raw = Raw(imap_world)
        raw.send(f'a LOGIN {toured} "{PASSWORD}"')
        raw.send("b SELECT INBOX")
        ok(other.store("1", "+FLAGS", "(\\Deleted)"))
        ok(other.expunge())
        other.logout()
        for tag, command in (("c", "FETCH 2 (FLAGS)"), ("d", "STORE 2 +FLAGS (\\Seen)"),
                             ("e", "SEARCH ALL")):
            lines = raw.send(f"{tag} {command}")
            assert lines[-1].startswith(tag.encode() + b" OK"), lines
            assert not any(b"EXPUNGE" in line for line in lines), lines
        # the expunged message is not found, and the other keeps its number until told
        assert raw.send("e2 SEARCH ALL")[0] == b"* SEARCH 2\r\n"
        lines = raw.send("f NOOP")
        assert b"* 1 EXPUNGE\r\n" in lines, lines
        assert raw.send("g SEARCH ALL")[0] == b"* SEARCH 1\r\n"
        raw.close()
