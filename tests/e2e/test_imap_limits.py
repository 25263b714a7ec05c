"""IMAP session limits on a real server: sessions per user and per IP, autologout,
the longest IDLE, and LOGINDISABLED where plaintext passwords are not allowed."""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Callable
from typing import BinaryIO

import psycopg
import pytest

from e2e.imap_fixtures import raw_login
from pgcluster import PgCluster
from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 10


def login(server: ServerProcess, account: str, source: str = "127.0.0.1"
          ) -> tuple[socket.socket, BinaryIO, bytes]:
    return raw_login(server.addr("imap"), account, source)


def tls_login(server: ServerProcess, account: str, source: str = "127.0.0.1"
              ) -> tuple[socket.socket, BinaryIO, bytes]:
    """As ``login``, on the imaps listener (TLS from the first byte)."""
    context = ssl.create_default_context(cafile=str(server.cert))
    context.check_hostname = False
    plain = socket.create_connection(server.addr("imaps"), TIMEOUT, source_address=(source, 0))
    sock = context.wrap_socket(plain)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f'a LOGIN {account} "{PASSWORD}"\r\n'.encode())
    return sock, reader, reader.readline()


def logout(session: tuple[socket.socket, BinaryIO, bytes]) -> None:
    """LOGOUT, then read to the end: the server has closed (and given back the place)."""
    session[0].sendall(b"z LOGOUT\r\n")
    while session[1].readline():
        pass
    session[0].close()


def hang_up(server: ServerProcess, session: tuple[socket.socket, BinaryIO, bytes]) -> None:
    """Close the socket without a word, and wait until the server has logged the end."""
    ip, port = session[0].getsockname()[:2]
    session[1].close()  # the reader holds the socket open until it is closed too
    session[0].close()
    server.wait_for_log("disconnect", f"client={ip}:{port} ")


def _server(make_server: Callable[..., ServerProcess], **imap: int) -> ServerProcess:
    server = make_server(listen={"imap": ["127.0.0.1:0"], "imaps": ["127.0.0.1:0"]}, imap=imap)
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


class TestSessionLimitsAcrossListeners:
    def test_imap_and_imaps_sessions_count_together_per_user(self, limited: ServerProcess
                                                              ) -> None:
        """One session on imap and one on imaps fill max_sessions_per_user = 2: a third is
        refused on either listener; after a LOGOUT on imaps, imap takes the place."""
        plain = login(limited, f"ann@{DOMAIN}")
        secure = tls_login(limited, f"ann@{DOMAIN}")
        assert plain[2].startswith(b"a OK") and secure[2].startswith(b"a OK")
        assert tls_login(limited, f"ann@{DOMAIN}")[2].startswith(b"a NO [LIMIT]")
        assert login(limited, f"ann@{DOMAIN}")[2].startswith(b"a NO [LIMIT]")
        logout(secure)
        assert login(limited, f"ann@{DOMAIN}")[2].startswith(b"a OK")

    def test_imap_and_imaps_sessions_count_together_per_ip(self, limited: ServerProcess
                                                            ) -> None:
        """max_sessions_per_ip = 3 from one address, whichever listener each used."""
        held = [login(limited, f"ann@{DOMAIN}", "127.0.0.9"),
                tls_login(limited, f"ben@{DOMAIN}", "127.0.0.9"),
                tls_login(limited, f"cat@{DOMAIN}", "127.0.0.9")]
        assert all(s[2].startswith(b"a OK") for s in held)
        assert login(limited, f"cat@{DOMAIN}", "127.0.0.9")[2].startswith(b"a NO [LIMIT]")
        assert tls_login(limited, f"ben@{DOMAIN}", "127.0.0.9")[2].startswith(b"a NO [LIMIT]")

    def test_a_client_that_hangs_up_frees_its_place(self, limited: ServerProcess) -> None:
        """No LOGOUT, just a closed socket (on imaps and on imap): once the server has
        seen each end, the next login of that user succeeds."""
        first = login(limited, f"ben@{DOMAIN}")
        second = tls_login(limited, f"ben@{DOMAIN}")
        assert login(limited, f"ben@{DOMAIN}")[2].startswith(b"a NO [LIMIT]")
        hang_up(limited, second)
        third = login(limited, f"ben@{DOMAIN}")
        assert third[2].startswith(b"a OK")
        hang_up(limited, first)
        assert tls_login(limited, f"ben@{DOMAIN}")[2].startswith(b"a OK")

    def test_logins_at_the_same_moment_do_not_pass_the_limit(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """Six clients send LOGIN for one user at once with max_sessions_per_user = 1
        (half on imap, half on imaps): exactly one is let in."""
        server = _server(make_server, max_sessions_per_user=1)
        logout(login(server, f"ann@{DOMAIN}"))  # the password verified: later logins are quick
        socks = []
        for n in range(6):
            address = server.addr("imap") if n % 2 else server.addr("imaps")
            sock = socket.create_connection(address, TIMEOUT)
            if not n % 2:
                context = ssl.create_default_context(cafile=str(server.cert))
                context.check_hostname = False
                sock = context.wrap_socket(sock)
            reader = sock.makefile("rb")
            reader.readline()
            socks.append((sock, reader))
        for sock, _ in socks:
            sock.sendall(f'a LOGIN ann@{DOMAIN} "{PASSWORD}"\r\n'.encode())
        answers = [reader.readline() for _, reader in socks]
        assert sum(a.startswith(b"a OK") for a in answers) == 1, answers
        assert sum(a.startswith(b"a NO [LIMIT]") for a in answers) == 5, answers


class TestAppendLimit:
    def test_a_message_over_max_append_size_is_refused_unread(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """APPENDLIMIT=1000 is advertised; APPEND of a 2,000-octet literal gets NO [TOOBIG]
        instead of the continuation, and the session serves on."""
        server = _server(make_server, max_append_size=1000)
        sock, reader, answer = login(server, f"ann@{DOMAIN}")
        assert b" APPENDLIMIT=1000" in answer
        sock.sendall(b"b APPEND INBOX {2000}\r\n")
        assert reader.readline().startswith(b"b NO [TOOBIG]")
        sock.sendall(b"c APPEND INBOX {5}\r\n")
        assert reader.readline().startswith(b"+")
        sock.sendall(b"hello\r\n")
        assert reader.readline().startswith(b"c OK [APPENDUID ")
        reader.close()
        sock.close()


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


class TestPlaceAfterAFailedLogin:
    def test_a_login_the_store_could_not_finish_holds_no_place(
            self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster) -> None:
        """max_sessions_per_user = 1 on PostgreSQL. The password is right but the mailbox
        setup after it fails as "unavailable" (a trigger raises SQLSTATE 57P03, which
        psycopg reports as a lost server): NO [UNAVAILABLE], and the place taken for
        the login is given back, so another connection logs in while the first is
        still open; once that one leaves, the first logs in on the same connection."""
        dsn = pg_cluster.schema()
        server = make_server(storage={"backend": "postgresql", "dsn": dsn},
                             listen={"imap": ["127.0.0.1:0"]}, imap={"max_sessions_per_user": 1})
        server.add_user(f"ann@{DOMAIN}")
        server.start()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$ BEGIN RAISE EXCEPTION 'going down' USING ERRCODE = '57P03'; END $$")
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON quota"
                       " FOR EACH ROW EXECUTE FUNCTION refuse()")
            first = login(server, f"ann@{DOMAIN}")
            assert first[2].startswith(b"a NO [UNAVAILABLE]"), first[2]
            db.execute("DROP TRIGGER refuse ON quota")
        second = login(server, f"ann@{DOMAIN}")
        assert second[2].startswith(b"a OK"), second[2]
        logout(second)
        first[0].sendall(f'b LOGIN ann@{DOMAIN} "{PASSWORD}"\r\n'.encode())
        assert first[1].readline().startswith(b"b OK")
        logout(first)
        assert login(server, f"ann@{DOMAIN}")[2].startswith(b"a OK")
