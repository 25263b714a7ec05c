"""The POP3 server over real sockets on 127.0.0.1, driven by poplib."""

from __future__ import annotations

import base64
import logging
import poplib
import ssl
import subprocess
import sys

import pytest

from postwarden.storage.mailbox import Field, Flag, UidSet
from servers.pop3_fixtures import (
    AUTH_LIMIT,
    OTHER,
    PASSWORD,
    USER,
    POP3Harness,
    pop3,
)

__all__ = ["pop3"]  # the fixture, imported explicitly

DOTTED = (
    b"From: carol@remote.example\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
)
PLAIN = b"From: dave@remote.example\r\nSubject: plain\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"
GREETING = b"+OK postwarden POP3 server ready"


def lines(message: bytes) -> list[bytes]:
    """A message as poplib returns it: lines without CRLF, dots unstuffed."""
    return message.split(b"\r\n")[:-1]


def session_checks(client: poplib.POP3) -> None:
    """login -> STAT, LIST, UIDL, TOP, RETR (dot-stuffing both ways) on two messages."""
    count, octets = client.stat()
    assert count == 2
    assert octets == len(DOTTED) + 3 + len(PLAIN)  # three stuffed dots
    _, listing, _ = client.list()
    assert listing == [b"1 %d" % (len(DOTTED) + 3), b"2 %d" % len(PLAIN)]
    _, uids, _ = client.uidl()
    assert len(uids) == 2 and len(set(uids)) == 2
    _, top, _ = client.top(2, 1)
    assert top == lines(PLAIN)[:4]  # header, empty line, one body line
    response, body, _ = client.retr(1)
    assert response == b"+OK %d octets" % (len(DOTTED) + 3)
    assert body == lines(DOTTED)
    assert client.retr(2)[1] == lines(PLAIN)


class TestSessions:
    def test_greeting(self, pop3: POP3Harness) -> None:
        """The banner of the issue."""
        assert pop3.pop3().getwelcome() == GREETING

    def test_plain_loopback_session(self, pop3: POP3Harness) -> None:
        """USER/PASS over plain loopback, then every read command."""
        pop3.deliver(DOTTED)
        pop3.deliver(PLAIN)
        client = pop3.login()
        session_checks(client)
        assert client.quit() == b"+OK postwarden POP3 server signing off"

    def test_stls_session(self, pop3: POP3Harness) -> None:
        """STLS with poplib, then AUTH PLAIN over TLS."""
        pop3.deliver(DOTTED)
        pop3.deliver(PLAIN)
        client = pop3.pop3()
        assert "STLS" in client.capa()
        client.stls(context=pop3.client_context())
        assert isinstance(client.sock, ssl.SSLSocket)
        assert "STLS" not in client.capa()
        client._shortcmd("AUTH PLAIN " + _plain(USER, PASSWORD))
        session_checks(client)
        client.quit()

    def test_stls_ignores_pipelined_plaintext(self, pop3: POP3Harness) -> None:
        """A command injected behind STLS is not obeyed after the handshake."""
        raw = pop3.raw()
        raw.send(b"STLS\r\nUSER " + USER.encode() + b"\r\n")
        assert raw.line() == b"+OK Begin TLS negotiation now\r\n"
        tls = pop3.client_context().wrap_socket(raw.sock, server_hostname="127.0.0.1")
        tls.sendall(b"PASS " + PASSWORD.encode() + b"\r\n")
        assert tls.recv(1024) == b"-ERR Send USER first\r\n"
        tls.close()

    def test_user_before_stls_does_not_survive_it(self, pop3: POP3Harness) -> None:
        """RFC 2595 §4: USER answered in plaintext, STLS, PASS over TLS: refused."""
        raw = pop3.raw()
        raw.send(b"USER " + USER.encode() + b"\r\n")
        assert raw.line() == b"+OK Send your password\r\n"
        raw.send(b"STLS\r\n")
        assert raw.line() == b"+OK Begin TLS negotiation now\r\n"
        tls = pop3.client_context().wrap_socket(raw.sock, server_hostname="127.0.0.1")
        tls.sendall(b"PASS " + PASSWORD.encode() + b"\r\n")
        assert tls.recv(1024) == b"-ERR Send USER first\r\n"
        tls.close()

    def test_pop3s_session(self, pop3: POP3Harness) -> None:
        """Implicit TLS on the pop3s port."""
        pop3.deliver(DOTTED)
        pop3.deliver(PLAIN)
        client = pop3.pop3s()
        assert client.getwelcome() == GREETING
        assert "STLS" not in client.capa()
        client.user(USER)
        client.pass_(PASSWORD)
        session_checks(client)
        client.quit()

    def test_capa(self, pop3: POP3Harness) -> None:
        """CAPA advertises what the issue lists."""
        capa = pop3.pop3().capa()
        for name in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                     "STLS"):
            assert name in capa
        assert capa["SASL"] == ["PLAIN"]
        assert capa["IMPLEMENTATION"] == ["postwarden"]

    def test_auth_plain_with_continuation(self, pop3: POP3Harness) -> None:
        """AUTH PLAIN, '+ ', then the response on its own line."""
        raw = pop3.raw()
        assert raw.command(b"AUTH PLAIN") == b"+ \r\n"
        assert raw.command(_plain(USER, PASSWORD).encode()).startswith(b"+OK")
        assert raw.command(b"STAT") == b"+OK 0 0\r\n"
        raw.close()


class TestMaildrop:
    def test_dele_and_quit_removes(self, pop3: POP3Harness) -> None:
        """Deleted messages are gone after QUIT, and the collector takes their files."""
        pop3.deliver(PLAIN)
        pop3.deliver(DOTTED)
        inbox = pop3.store.mailboxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        first = pop3.store.mailboxes.metadata(inbox.id, UidSet.all(), Field.SIZE)[0].blob
        assert first is not None
        client = pop3.login()
        client.dele(1)
        client.quit()
        remaining = pop3.store.mailboxes.metadata(inbox.id, UidSet.all(), Field.SIZE)
        assert [m.blob for m in remaining] != [first] and len(remaining) == 1
        assert pop3.store.blobs.collect(older_than=float("inf")) == 1
        assert not pop3.store.blobs.blob_path(first.name).exists()
        assert pop3.login().stat() == (1, len(DOTTED) + 3)

    def test_dele_and_dropped_connection_keeps(self, pop3: POP3Harness) -> None:
        """A connection that ends without QUIT deletes nothing."""
        pop3.deliver(PLAIN)
        client = pop3.login()
        client.dele(1)
        client.close()
        pop3.wait_idle()
        assert pop3.login().stat() == (1, len(PLAIN))

    def test_rset_unmarks(self, pop3: POP3Harness) -> None:
        """RSET undoes DELE; QUIT then removes nothing."""
        pop3.deliver(PLAIN)
        client = pop3.login()
        client.dele(1)
        assert client.stat() == (0, 0)
        client.rset()
        assert client.stat() == (1, len(PLAIN))
        client.quit()
        assert pop3.login().stat() == (1, len(PLAIN))

    def test_snapshot_hides_new_mail(self, pop3: POP3Harness) -> None:
        """Mail that arrives during a session shows up in the next one."""
        pop3.deliver(PLAIN)
        client = pop3.login()
        pop3.deliver(DOTTED)
        assert client.stat()[0] == 1
        client.quit()
        assert pop3.login().stat()[0] == 2

    def test_uidl_survives_restart(self, pop3: POP3Harness) -> None:
        """Same data directory, new server: the same UIDL strings."""
        pop3.deliver(PLAIN)
        pop3.deliver(DOTTED)
        client = pop3.login()
        before = client.uidl()[1]
        client.quit()
        pop3.stop()
        pop3.start()
        client = pop3.login()
        assert client.uidl()[1] == before
        client.quit()

    def test_second_session_is_in_use(self, pop3: POP3Harness) -> None:
        """A concurrent session on the same mailbox gets [IN-USE], even via pop3s."""
        first = pop3.login()
        second = pop3.pop3s()
        second.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_(PASSWORD)
        other = pop3.login(OTHER)  # other mailboxes are not affected
        first.quit()
        second.user(USER)
        second.pass_(PASSWORD)
        second.quit()
        other.quit()

    def test_login_records_pop_before_smtp(self, pop3: POP3Harness) -> None:
        """A successful login records the client IP for the relay rule."""
        assert pop3.store.directory.last_login("127.0.0.1") is None
        pop3.login().quit()
        assert pop3.store.directory.last_login("127.0.0.1") is not None

    def test_logs_logins_and_deletions_without_password(
        self, pop3: POP3Harness, caplog: pytest.LogCaptureFixture,
    ) -> None:
        """One key=value line per login and per deletion; no password anywhere."""
        pop3.deliver(PLAIN)
        caplog.set_level(logging.INFO, logger="postwarden.pop3")
        client = pop3.pop3()
        client.user(USER)
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong " + PASSWORD)
        client = pop3.login()
        client.dele(1)
        client.quit()
        text = caplog.text
        assert "pop3 login user=alice@example.test ip=127.0.0.1 method=USER" in text
        assert "result=auth" in text and "result=ok" in text
        assert "pop3 delete user=alice@example.test ip=127.0.0.1 requested=1 removed=1" in text
        assert PASSWORD not in text


class TestBadInput:
    def test_wrong_password_then_throttled(self, pop3: POP3Harness) -> None:
        """[AUTH] for bad credentials, [SYS/TEMP] once the per-IP limit is reached."""
        raw = pop3.raw()
        for _ in range(AUTH_LIMIT):
            assert raw.command(b"USER " + USER.encode()).startswith(b"+OK")
            assert raw.command(b"PASS wrong").startswith(b"-ERR [AUTH]")
        raw.command(b"USER " + USER.encode())
        assert raw.command(b"PASS " + PASSWORD.encode()).startswith(b"-ERR [SYS/TEMP]")
        assert raw.command(b"AUTH PLAIN " + _plain(USER, PASSWORD).encode()).startswith(
            b"-ERR [SYS/TEMP]")
        assert raw.command(b"NOOP").startswith(b"-ERR")  # still serving
        raw.close()

    def test_unknown_user_is_auth_error(self, pop3: POP3Harness) -> None:
        """No account: the same [AUTH] reply as a wrong password."""
        raw = pop3.raw()
        raw.command(b"USER nobody@example.test")
        assert raw.command(b"PASS " + PASSWORD.encode()) == b"-ERR [AUTH] Authentication failed\r\n"
        raw.close()

    def test_commands_before_login(self, pop3: POP3Harness) -> None:
        """Transaction commands in AUTHORIZATION are refused."""
        raw = pop3.raw()
        for command in (b"STAT", b"RETR 1", b"DELE 1", b"LIST"):
            assert raw.command(command).startswith(b"-ERR")
        raw.close()

    def test_message_numbers(self, pop3: POP3Harness) -> None:
        """Out of range, deleted, negative and garbage numbers: -ERR, session goes on."""
        pop3.deliver(PLAIN)
        raw = pop3.raw()
        raw.command(b"USER " + USER.encode())
        raw.command(b"PASS " + PASSWORD.encode())
        assert raw.command(b"RETR 2") == b"-ERR No such message\r\n"
        assert raw.command(b"RETR 0") == b"-ERR No such message\r\n"
        assert raw.command(b"RETR -1") == b"-ERR Invalid message number\r\n"
        assert raw.command(b"TOP 1 x") == b"-ERR Syntax error\r\n"
        assert raw.command(b"DELE 1") == b"+OK Message 1 deleted\r\n"
        assert raw.command(b"RETR 1") == b"-ERR Message is deleted\r\n"
        assert raw.command(b"STAT") == b"+OK 0 0\r\n"
        raw.close()

    def test_unknown_commands_and_garbage_then_close(self, pop3: POP3Harness) -> None:
        """Garbage is answered line by line; too many bad commands close the session."""
        raw = pop3.raw()
        assert raw.command(b"XYZZY").startswith(b"-ERR")
        assert raw.command(b"\x00\xff\xfe garbage \x80").startswith(b"-ERR")
        assert raw.command(b"A" * 1000) == b"-ERR Line too long\r\n"
        assert raw.command(b"CAPA") == b"+OK Capability list follows\r\n"
        raw.multiline()
        replies = [raw.command(b"BOGUS") for _ in range(7)]
        assert replies[-1] == b"-ERR Too many bad commands, closing connection\r\n"
        assert raw.line() == b""  # closed
        raw.close()
        assert pop3.login().stat() == (0, 0)  # the server keeps serving

    def test_thousand_pipelined_commands(self, pop3: POP3Harness) -> None:
        """1000 commands in one write, 1000 answers in order."""
        pop3.deliver(PLAIN)
        raw = pop3.raw()
        raw.command(b"USER " + USER.encode())
        raw.command(b"PASS " + PASSWORD.encode())
        raw.send(b"STAT\r\nUIDL 1\r\n" * 500)
        replies = [raw.line() for _ in range(1000)]
        assert replies[::2] == [b"+OK 1 %d\r\n" % len(PLAIN)] * 500
        assert all(r.startswith(b"+OK 1 ") for r in replies[1::2])
        assert raw.command(b"QUIT").startswith(b"+OK")
        raw.close()

    def test_large_message_streams_exactly(self, pop3: POP3Harness) -> None:
        """A message larger than one read chunk, with dots at chunk edges, arrives intact."""
        body = b"".join(b".%07d" % i + b"x" * 90 + b"\r\n" for i in range(30_000))
        message = b"Subject: big\r\n\r\n" + body
        pop3.deliver(message)
        client = pop3.login()
        stuffed = len(message) + 30_000
        assert client.stat() == (1, stuffed)
        _, got, _ = client.retr(1)
        assert got == lines(message)
        client.quit()


class TestDamagedMessages:
    def test_truncated_or_missing_file_is_a_temporary_error(
        self, pop3: POP3Harness, caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A file cut short or gone gets -ERR [SYS/TEMP] and a log line; the rest is served."""
        third = b"Subject: third\r\n\r\nthird body\r\n"
        for message in (DOTTED, PLAIN, third):
            pop3.deliver(message)
        inbox = pop3.store.mailboxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        first, _, gone = (pop3.store.blobs.blob_path(m.blob.name)
                          for m in pop3.store.mailboxes.metadata(inbox.id, UidSet.all(), Field.SIZE)
                          if m.blob is not None)
        first.write_bytes(DOTTED[: len(DOTTED) // 2])  # damaged before the login
        caplog.set_level(logging.ERROR, logger="postwarden.pop3")
        client = pop3.login()
        gone.unlink()  # and one vanishes during the session
        for command in (lambda: client.retr(1), lambda: client.top(1, 0),
                        lambda: client.retr(3)):
            with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
                command()
        assert client.retr(2)[1] == lines(PLAIN)
        assert client.noop().startswith(b"+OK")
        client.quit()
        assert "pop3 message-unavailable user=alice@example.test uid=1" in caplog.text
        assert "were expected" in caplog.text and "uid=3" in caplog.text


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class TestStoreV2:
    def test_retr_marks_seen_and_top_does_not(self, pop3: POP3Harness) -> None:
        """A full RETR sets \\Seen (IMAP clients of the box see it read); TOP leaves it."""
        pop3.deliver(PLAIN)
        pop3.deliver(DOTTED)
        client = pop3.login()
        client.retr(1)
        client.top(2, 0)
        client.quit()
        inbox = pop3.store.mailboxes.get_mailbox(USER, "INBOX")
        assert inbox is not None
        flags = [m.flags for m in pop3.store.mailboxes.metadata(inbox.id, UidSet.all())]
        assert flags == [Flag.SEEN, Flag(0)]

    def test_the_maildrop_lock_is_seen_by_another_process(self, pop3: POP3Harness) -> None:
        """While a session holds the maildrop, another process cannot take it; after QUIT it can."""
        probe = (
            "import sys, pathlib\n"
            "from postwarden.storage.sqlite import SqliteStore\n"
            "from postwarden.storage.mailbox import MailboxInUse\n"
            "store = SqliteStore(pathlib.Path(sys.argv[1]))\n"
            "try:\n"
            "    store.mailboxes.lock_maildrop(sys.argv[2], 'probe', 9e9)\n"
            "except MailboxInUse:\n"
            "    print('in-use')\n"
            "else:\n"
            "    store.mailboxes.unlock_maildrop(sys.argv[2], 'probe')\n"
            "    print('free')\n"
        )

        def other_process() -> str:
            return subprocess.run(
                [sys.executable, "-c", probe, str(pop3.cfg.data_dir), USER],
                capture_output=True, text=True, timeout=60, check=True).stdout.strip()

        client = pop3.login()
        assert other_process() == "in-use"
        client.quit()
        assert other_process() == "free"

    def test_login_reads_no_message_file(self, pop3: POP3Harness) -> None:
        """Sizes come from the store: with every file gone, login, STAT and LIST still work."""
        pop3.deliver(PLAIN)
        for path in pop3.store.blobs.blob_dir.glob("*/*"):
            path.unlink()
        client = pop3.login()
        assert client.stat() == (1, len(PLAIN))
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
            client.retr(1)
        client.quit()
