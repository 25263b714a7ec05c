"""IMAP session limits on a real server: sessions per user and per IP, autologout,
the longest IDLE, and LOGINDISABLED where plaintext passwords are not allowed."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Callable
from typing import BinaryIO

import pytest

from e2e.imap_fixtures import raw_login
from serverproc import DOMAIN, ServerProcess

TIMEOUT = 10


def login(server: ServerProcess, account: str, source: str = "127.0.0.1"
          ) -> tuple[socket.socket, BinaryIO, bytes]:
    return raw_login(server.addr("imap"), account, source)


def _server(make_server: Callable[..., ServerProcess], **imap: int) -> ServerProcess:
    server = make_server(listen={"imap": ["127.0.0.1:0"]}, imap=imap)
    for name in ("ann", "ben", "cat"):
        server.add_user(f"{name}@{DOMAIN}")
    return server.start()


@pytest.fixture
def limited(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return _server(make_server, max_sessions_per_user=2, max_sessions_per_ip=3)


@pytest.fixture
def impatient(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return _server(make_server, autologout_seconds=1, idle_seconds=1)


class TestSessionLimits:
    def test_third_session_of_a_user_is_refused(self, limited: ServerProcess) -> None:
        """With max_sessions_per_user = 2 the third login gets NO [LIMIT]; after one
        logs out, a new login works again."""
        first = login(limited, f"ann@{DOMAIN}")
        second = login(limited, f"ann@{DOMAIN}")
        assert first[2].startswith(b"a OK") and second[2].startswith(b"a OK")
        third = login(limited, f"ann@{DOMAIN}")
        assert third[2].startswith(b"a NO [LIMIT]")
        first[0].sendall(b"z LOGOUT\r\n")
        while first[1].readline():
            pass
        limited.wait_for_log("imap-login", "ann@", "result=ok")
        fourth = login(limited, f"ann@{DOMAIN}")
        assert fourth[2].startswith(b"a OK")

    def test_sessions_per_ip(self, limited: ServerProcess) -> None:
        """With max_sessions_per_ip = 3 a fourth login from one address is refused,
        while another address still logs in."""
        held = [login(limited, f"{name}@{DOMAIN}", "127.0.0.7") for name in ("ann", "ben", "cat")]
        assert all(s[2].startswith(b"a OK") for s in held)
        assert login(limited, f"cat@{DOMAIN}", "127.0.0.7")[2].startswith(b"a NO [LIMIT]")
        assert login(limited, f"ben@{DOMAIN}", "127.0.0.8")[2].startswith(b"a OK")


class TestTimeouts:
    def test_autologout(self, impatient: ServerProcess) -> None:
        """A logged-in session that stays silent gets BYE and is closed."""
        sock, reader, answer = login(impatient, f"ben@{DOMAIN}")
        assert answer.startswith(b"a OK")
        assert reader.readline().startswith(b"* BYE")
        assert reader.readline() == b""
        sock.close()

    def test_idle_ends_after_idle_seconds(self, impatient: ServerProcess) -> None:
        """An IDLE longer than idle_seconds is ended with BYE."""
        sock, reader, _ = login(impatient, f"cat@{DOMAIN}")
        sock.sendall(b"b SELECT INBOX\r\n")
        while not reader.readline().startswith(b"b OK"):
            pass
        sock.sendall(b"c IDLE\r\n")
        assert reader.readline().startswith(b"+")
        assert reader.readline().startswith(b"* BYE")
        sock.close()


class TestLoginDisabled:
    def test_no_plaintext_login_without_tls(self, make_server: Callable[..., ServerProcess]
                                            ) -> None:
        """With plaintext_without_tls = "never" the imap port advertises LOGINDISABLED
        and refuses LOGIN until STARTTLS."""
        server = make_server(listen={"imap": ["127.0.0.1:0"]},
                             auth={"plaintext_without_tls": "never"})
        account = server.add_user(f"dee@{DOMAIN}")
        server.start()
        client = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        client.shutdown()
        _, _, answer = login(server, account)  # imaplib itself would not send it
        assert answer.startswith(b"a NO [PRIVACYREQUIRED]")
