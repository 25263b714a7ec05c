"""Slowloris (issue 8, defect 7): a client dripping octets cannot hold a session.

Each test drips one octet per ``DRIP`` seconds, well inside the per-read
timeout, so a server that only times single reads never answers; ours must
say goodbye once the whole line (or message) has taken too long. The drip
loop is bounded; ``select`` paces it and notices the reply at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator

import pytest

from postwarden.mail import reply as R
from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 2  # command_timeout_seconds and data_timeout_seconds
DRIP = 0.25
MAX_DRIPS = 60  # 15 s: far past TIMEOUT, so a per-read timeout never fires


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("slow"), limits={
        "command_timeout_seconds": TIMEOUT, "data_timeout_seconds": TIMEOUT,
        "data_min_rate": 1000, "handshake_timeout_seconds": 1,
    }, listen={"imap": ["127.0.0.1:0"]}, imap={
        "preauth_seconds": TIMEOUT, "autologout_seconds": TIMEOUT, "idle_seconds": TIMEOUT,
    })
    srv.add_user(f"bob@{DOMAIN}")
    srv.start()
    yield srv
    srv.stop()


def connect(server: ServerProcess, kind: str, greeting: bytes) -> socket.socket:
    sock = socket.create_connection(server.addr(kind), timeout=30)
    assert sock.recv(1000).startswith(greeting)
    return sock


def drip_until_answered(sock: socket.socket, octet: bytes = b"a") -> bytes:
    """Send ``octet`` every DRIP seconds until the server says something; return it."""
    for _ in range(MAX_DRIPS):
        readable, _, _ = select.select([sock], [], [], DRIP)
        if readable:
            return sock.recv(1000)
        sock.sendall(octet)
    raise AssertionError("the server let a drip-feeding client stay")


def assert_closed(sock: socket.socket) -> None:
    """The server hung up: EOF (or a reset, if a drip raced the close)."""
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1000) == b""
    sock.close()


def smtp_command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return sock.recv(1000)


class TestSMTP:
    def test_a_partial_command_line(self, server: ServerProcess) -> None:
        """``MAIL FROM:<aaaa...`` one octet at a time: 421 and close."""
        sock = connect(server, "smtp", b"220 ")
        assert smtp_command(sock, b"EHLO slow.test").startswith(b"250-")
        sock.sendall(b"MAIL FROM:<")
        assert drip_until_answered(sock) == R.TIMEOUT.encode()
        assert_closed(sock)
        server.wait_for_log("smtp timeout", "ip=127.0.0.1")

    def test_an_overlong_line_being_skipped(self, server: ServerProcess) -> None:
        """Past the line limit the server drops input while it waits for LF;
        dripping that tail is bounded the same way."""
        sock = connect(server, "smtp", b"220 ")
        sock.sendall(b"X" * 2000)
        assert drip_until_answered(sock, b"X") == R.TIMEOUT.encode()
        assert_closed(sock)

    def test_a_message_body_below_the_minimum_rate(self, server: ServerProcess) -> None:
        """DATA dripped at 4 octets/s against a minimum of 1000: 421 and close,
        and nothing is stored."""
        before = len(server.inbox(f"bob@{DOMAIN}"))
        sock = connect(server, "smtp", b"220 ")
        assert smtp_command(sock, b"EHLO slow.test").startswith(b"250-")
        assert smtp_command(sock, b"MAIL FROM:<a@sender.example>") == R.SENDER_OK.encode()
        assert smtp_command(sock, f"RCPT TO:<bob@{DOMAIN}>".encode()) == R.RECIPIENT_OK.encode()
        assert smtp_command(sock, b"DATA") == R.START_DATA.encode()
        sock.sendall(b"Subject: slow\r\n\r\n")
        assert drip_until_answered(sock) == R.TIMEOUT.encode()
        assert_closed(sock)
        assert len(server.inbox(f"bob@{DOMAIN}")) == before

    def test_a_bdat_chunk_below_the_minimum_rate(self, server: ServerProcess) -> None:
        """The octets of a BDAT chunk are message data: the same rate applies."""
        sock = connect(server, "smtp", b"220 ")
        assert smtp_command(sock, b"EHLO slow.test").startswith(b"250-")
        assert smtp_command(sock, b"MAIL FROM:<a@sender.example>") == R.SENDER_OK.encode()
        assert smtp_command(sock, f"RCPT TO:<bob@{DOMAIN}>".encode()) == R.RECIPIENT_OK.encode()
        sock.sendall(b"BDAT 100000 LAST\r\n")
        assert drip_until_answered(sock) == R.TIMEOUT.encode()
        assert_closed(sock)


def assert_closed_without_a_word(sock: socket.socket) -> None:
    """Silent after the go-ahead to start TLS: the server hangs up within the
    handshake deadline (the bound here is far above it)."""
    readable, _, _ = select.select([sock], [], [], TIMEOUT * 5)
    assert readable, "the server waited on a silent TLS handshake"
    assert_closed(sock)


class TestTLSHandshake:
    def test_silent_after_starttls(self, server: ServerProcess) -> None:
        """STARTTLS, 220, then no ClientHello: closed after handshake_timeout_seconds."""
        sock = connect(server, "smtp", b"220 ")
        assert smtp_command(sock, b"EHLO slow.test").startswith(b"250-")
        assert smtp_command(sock, b"STARTTLS") == R.READY_TLS.encode()
        assert_closed_without_a_word(sock)

    def test_silent_after_stls(self, server: ServerProcess) -> None:
        """STLS, +OK, then no ClientHello: closed the same way."""
        sock = connect(server, "pop3", b"+OK ")
        sock.sendall(b"STLS\r\n")
        assert sock.recv(1000) == b"+OK Begin TLS negotiation now\r\n"
        assert_closed_without_a_word(sock)


class TestPOP3:
    def test_a_partial_command_line(self, server: ServerProcess) -> None:
        """``USER aaaa...`` one octet at a time: autologout and close."""
        sock = connect(server, "pop3", b"+OK ")
        sock.sendall(b"USER ")
        assert drip_until_answered(sock) == b"-ERR Autologout; idle for too long\r\n"
        assert_closed(sock)


def imap_login(server: ServerProcess) -> socket.socket:
    sock = connect(server, "imap", b"* OK ")
    sock.sendall(f'a LOGIN bob@{DOMAIN} "{PASSWORD}"\r\n'.encode())
    assert read_line(sock).startswith(b"a OK")
    return sock


def read_line(sock: socket.socket) -> bytes:
    """One reply line, octet by octet (so nothing after it is taken off the socket)."""
    line = b""
    while not line.endswith(b"\n") and (octet := sock.recv(1)):
        line += octet
    return line


def assert_bye(sock: socket.socket, answer: bytes, text: bytes) -> None:
    """``answer`` (the first reply to the drip) begins the BYE, then the server hangs up."""
    assert answer.startswith(b"* BYE " + text), answer
    assert_closed(sock)


class TestIMAP:
    """IMAP's clocks: before login, logged in, in IDLE, and an APPEND message."""

    def test_silent_before_login(self, server: ServerProcess) -> None:
        """No command at all after the greeting: BYE within preauth_seconds."""
        sock = connect(server, "imap", b"* OK ")
        readable, _, _ = select.select([sock], [], [], TIMEOUT * 5)
        assert readable, "the server waited on a silent client"
        assert_bye(sock, sock.recv(1000), b"Too slow to log in")
        server.wait_for_log("imap-timeout", "phase=login")

    def test_a_partial_login_line(self, server: ServerProcess) -> None:
        """``a LOGIN bob...`` one octet at a time: BYE and close."""
        sock = connect(server, "imap", b"* OK ")
        sock.sendall(b"a LOGIN ")
        assert_bye(sock, drip_until_answered(sock), b"Too slow to log in")

    def test_a_partial_command_line_logged_in(self, server: ServerProcess) -> None:
        sock = imap_login(server)
        sock.sendall(b"b SELECT ")
        assert_bye(sock, drip_until_answered(sock), b"Autologout")

    def test_a_dripped_done_during_idle(self, server: ServerProcess) -> None:
        """IDLE's bound runs from IDLE to a complete DONE line, however it is dripped."""
        sock = imap_login(server)
        sock.sendall(b"b IDLE\r\n")
        assert read_line(sock).startswith(b"+ ")
        assert_bye(sock, drip_until_answered(sock, b" "), b"IDLE for too long")

    def test_an_append_message_below_the_minimum_rate(self, server: ServerProcess) -> None:
        """APPEND's octets are message data: the data rate applies, and nothing is stored."""
        before = len(server.inbox(f"bob@{DOMAIN}"))
        sock = imap_login(server)
        sock.sendall(b"b APPEND INBOX {100000}\r\n")
        assert read_line(sock).startswith(b"+ ")
        assert_bye(sock, drip_until_answered(sock), b"Autologout")
        assert len(server.inbox(f"bob@{DOMAIN}")) == before
