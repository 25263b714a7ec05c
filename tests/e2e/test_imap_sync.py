"""imapclient against a real server: CONDSTORE/QRESYNC resync, COMPRESS, limits, bad
input over sockets, a missing or damaged message file, and IMAP-before-SMTP."""

from __future__ import annotations

import os
import smtplib
import socket
import sqlite3
import zlib
from typing import BinaryIO

import imapclient
import pytest

from e2e.imap_fixtures import TIMEOUT, IMAPWorld, imap_world, raw_login
from postwarden.storage.mailbox import Field, UidSet
from postwarden.storage.sqlite import SqliteStore
from serverproc import PASSWORD

__all__ = ["imap_world"]

CHANGES = 1000  # flag changes between the client's two visits
PIPELINE = 50  # STORE commands sent before reading their answers
CLIENT_IP = "127.0.0.5"
EXTERNAL = "someone@external.example"


def client_for(world: IMAPWorld, account: str) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(world.host, world.port, ssl=False, timeout=TIMEOUT)
    client.login(account, PASSWORD)
    return client


def blob_path(world: IMAPWorld, account: str, uid: int) -> str:
    """Where message ``uid`` of the account's INBOX lives (to damage it)."""
    store = SqliteStore(world.server.root / "var")
    box = store.mailboxes.get_mailbox(account, "INBOX")
    assert box is not None
    meta = store.mailboxes.metadata(box.id, UidSet.from_uids([uid]), Field.SIZE)[0]
    assert meta.blob is not None
    path = str(store.blobs.blob_path(meta.blob.name))
    store.close()
    return path


def toggle_flags_pipelined(world: IMAPWorld, account: str) -> None:
    """CHANGES single-message UID STOREs (uid 1..5 toggled; the last state of each is
    known), each its own change, sent PIPELINE commands at a time (RFC 9051 §5.5) so
    the test does not pay a round trip per change; every one must be answered OK."""
    sock, reader, _ = raw_login((world.host, world.port), account)
    sock.sendall(b"s SELECT INBOX\r\n")
    while not (line := reader.readline()).startswith(b"s "):
        pass
    assert line.startswith(b"s OK")
    for start in range(0, CHANGES, PIPELINE):
        numbers = range(start, min(start + PIPELINE, CHANGES))
        sock.sendall(b"".join(
            f"t{n} UID STORE {n % 5 + 1} {'-' if n % 2 else '+'}FLAGS ($Toggle)\r\n".encode()
            for n in numbers))
        for n in numbers:
            while not (line := reader.readline()).startswith(f"t{n} ".encode()):
                assert line.startswith(b"* "), line
            assert line.startswith(f"t{n} OK".encode()), line
    sock.close()


class TestQResync:
    def test_resync_after_many_changes_returns_exactly_what_changed(
            self, imap_world: IMAPWorld) -> None:
        """After 1,000 flag changes and 3 expunges elsewhere, SELECT (QRESYNC) returns
        the changed UIDs with their flags and the vanished UIDs, nothing else."""
        account = imap_world.new_account()
        for n in range(12):
            imap_world.deliver(account, subject=f"m{n}")
        first = client_for(imap_world, account)
        first.enable("QRESYNC")
        selected = first.select_folder("INBOX")
        uidvalidity, modseq = selected[b"UIDVALIDITY"], selected[b"HIGHESTMODSEQ"]
        first.logout()

        toggle_flags_pipelined(imap_world, account)
        other = client_for(imap_world, account)
        other.select_folder("INBOX")
        other.delete_messages([10, 11, 12])
        other.expunge()
        other.logout()

        sock, reader, _ = raw_login((imap_world.host, imap_world.port), account)
        sock.sendall(f"b ENABLE QRESYNC\r\n"
                     f"c SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:12))\r\n".encode())
        lines: list[bytes] = []
        while not (line := reader.readline()).startswith(b"c "):
            lines.append(line)
        assert line.startswith(b"c OK")
        vanished = [ln for ln in lines if ln.startswith(b"* VANISHED")]
        assert vanished == [b"* VANISHED (EARLIER) 10:12\r\n"]
        fetched = sorted(int(ln.split(b"UID ")[1].split()[0]) for ln in lines
                         if b" FETCH " in ln)
        assert fetched == [1, 2, 3, 4, 5]
        sock.close()

    def test_changedsince_fetch(self, imap_world: IMAPWorld) -> None:
        """FETCH (FLAGS) (CHANGEDSINCE m) returns only messages changed after m."""
        account = imap_world.new_account()
        for _ in range(3):
            imap_world.deliver(account)
        client = client_for(imap_world, account)
        modseq = client.select_folder("INBOX")[b"HIGHESTMODSEQ"]
        client.add_flags([2], [imapclient.FLAGGED])
        changed = client.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
        assert list(changed) == [2]
        assert imapclient.FLAGGED in changed[2][b"FLAGS"]
        client.logout()


class TestCompression:
    def test_compress_deflate(self, imap_world: IMAPWorld) -> None:
        """After COMPRESS DEFLATE both directions are raw deflate and commands still work."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="squeezed")
        sock, reader, _ = raw_login((imap_world.host, imap_world.port), account)
        sock.sendall(b"b COMPRESS DEFLATE\r\n")
        while not reader.readline().startswith(b"b OK"):
            pass
        deflate, inflate = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        command = b"c SELECT INBOX\r\nd FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
        sock.sendall(deflate.compress(command) + deflate.flush(zlib.Z_SYNC_FLUSH))
        received = b""
        while b"d OK" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += inflate.decompress(chunk)
        assert b"Subject: squeezed" in received and b"c OK" in received
        sock.close()


class TestBadInput:
    def _session(self, world: IMAPWorld, account: str) -> tuple[socket.socket, BinaryIO]:
        sock, reader, _ = raw_login((world.host, world.port), account)
        return sock, reader

    def test_literal_over_the_limit_is_refused_before_it_is_sent(
            self, imap_world: IMAPWorld) -> None:
        """A synchronising literal above max_literal_size gets NO/BAD, no continuation."""
        sock, reader = self._session(imap_world, imap_world.new_account())
        sock.sendall(b"b CREATE {10000000}\r\n")
        line = reader.readline()
        assert line.startswith((b"b NO", b"b BAD")) and not line.startswith(b"+")
        sock.sendall(b"c NOOP\r\n")
        assert reader.readline().startswith(b"c OK")
        sock.close()

    def test_selected_state_commands_without_a_mailbox(self, imap_world: IMAPWorld) -> None:
        """FETCH before SELECT is BAD; the session keeps serving."""
        sock, reader = self._session(imap_world, imap_world.new_account())
        sock.sendall(b"b FETCH 1 FLAGS\r\nc SELECT NoSuchBox\r\nd NOOP\r\n")
        assert reader.readline().startswith(b"b BAD")
        assert reader.readline().startswith(b"c NO [NONEXISTENT]")
        assert reader.readline().startswith(b"d OK")
        sock.close()

    def test_store_in_examined_mailbox_is_refused(self, imap_world: IMAPWorld) -> None:
        """STORE and EXPUNGE in an EXAMINEd mailbox: NO [READ-ONLY]."""
        account = imap_world.new_account()
        imap_world.deliver(account)
        client = client_for(imap_world, account)
        client.select_folder("INBOX", readonly=True)
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="READ-ONLY"):
            client.add_flags([1], [imapclient.SEEN])
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="READ-ONLY"):
            client.expunge()
        assert client.noop()[0].startswith(b"NOOP")
        client.logout()


class TestDamagedMessages:
    def test_missing_file_is_no_for_that_message_only(self, imap_world: IMAPWorld) -> None:
        """A message whose file is gone: its FETCH gets NO, the others are served."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="lost")
        imap_world.deliver(account, subject="kept")
        os.unlink(blob_path(imap_world, account, 1))
        client = client_for(imap_world, account)
        client.select_folder("INBOX")
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="could not be read"):
            client.fetch([1], ["BODY.PEEK[]"])
        kept = client.fetch([2], ["BODY.PEEK[]"])
        assert b"Subject: kept" in kept[2][b"BODY[]"]
        client.logout()

    def test_truncated_file_is_no(self, imap_world: IMAPWorld) -> None:
        """A message file shorter than the store says is refused, not sent short."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="cut short")
        with open(blob_path(imap_world, account, 1), "r+b") as f:
            f.truncate(10)
        client = client_for(imap_world, account)
        client.select_folder("INBOX")
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="could not be read"):
            client.fetch([1], ["BODY.PEEK[]"])
        assert client.fetch([1], ["FLAGS"])[1][b"FLAGS"] == (b"\\Recent",)  # still served
        client.logout()


class TestIMAPBeforeSMTP:
    def _rcpt(self, world: IMAPWorld) -> int:
        host, port = world.server.addr("smtp")
        with smtplib.SMTP(host, port, source_address=(CLIENT_IP, 0), timeout=10) as smtp:
            smtp.ehlo("client.example")
            assert smtp.mail("sender@external.example")[0] == 250
            return smtp.rcpt(EXTERNAL)[0]

    def test_imap_login_opens_the_relay_for_the_window(self, imap_world: IMAPWorld) -> None:
        """550, then an IMAP login from that IP, then 250; 550 once the window has passed."""
        account = imap_world.new_account()
        assert self._rcpt(imap_world) == 550
        sock, _, answer = raw_login((imap_world.host, imap_world.port), account, CLIENT_IP)
        assert answer.startswith(b"a OK")
        sock.close()
        assert self._rcpt(imap_world) == 250
        database = imap_world.server.root / "var" / "postwarden.sqlite3"
        with sqlite3.connect(database) as db:
            db.execute("UPDATE login_records SET at = at - 660 WHERE ip = ?", (CLIENT_IP,))
        db.close()
        assert self._rcpt(imap_world) == 550
