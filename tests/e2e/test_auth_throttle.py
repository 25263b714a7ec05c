"""Failed-login throttling per client IP and per account, over real SMTP, POP3 and IMAP
sockets."""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from postwarden.mail import reply as R
from serverproc import DOMAIN, PASSWORD, ServerProcess
from servers.pop3_fixtures import RawClient

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
DAVE = f"dave@{DOMAIN}"
ERIN = f"erin@{DOMAIN}"
PER_IP = 3
PER_ACCOUNT = 4
THROTTLED = R.AUTH_THROTTLED.code, f"{R.AUTH_THROTTLED.status} {R.AUTH_THROTTLED.text}".encode()
FAILED = R.AUTH_FAILED.code, f"{R.AUTH_FAILED.status} {R.AUTH_FAILED.text}".encode()
OK = R.AUTH_OK.code, f"{R.AUTH_OK.status} {R.AUTH_OK.text}".encode()
T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("throttle")
    srv = ServerProcess(root, listen={"imap": ["127.0.0.1:0"]},
                        limits={"auth_failures_per_ip": PER_IP,
                                "auth_failures_per_account": PER_ACCOUNT})
    for user in (ALICE, BOB, CAROL, DAVE, ERIN):
        srv.add_user(user)
    srv.start()
    yield srv
    srv.stop()


def smtp_auth(server: ServerProcess, source: str, user: str, password: str) -> tuple[int, bytes]:
    """One AUTH PLAIN on a fresh connection (a session cannot log in twice)."""
    with smtplib.SMTP(*server.addr("smtp"), source_address=(source, 0), timeout=30) as c:
        c.ehlo("client.test")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return c.docmd("AUTH", f"PLAIN {token}")


def pop3_login(server: ServerProcess, source: str, user: str, password: str) -> bytes:
    """USER/PASS on a fresh connection; the server's reply line to PASS."""
    with socket.create_connection(server.addr("pop3"), timeout=30,
                                  source_address=(source, 0)) as sock:
        client = RawClient(sock)
        assert client.greeting.startswith(b"+OK")
        assert client.command(f"USER {user}".encode()).startswith(b"+OK")
        return client.command(f"PASS {password}".encode())


def imap_login(server: ServerProcess, source: str, user: str, password: str) -> bytes:
    """LOGIN on a fresh connection; the server's tagged reply."""
    with socket.create_connection(server.addr("imap"), timeout=30,
                                  source_address=(source, 0)) as sock:
        client = RawClient(sock)
        assert client.greeting.startswith(b"* OK")
        return client.command(f'a LOGIN {user} "{password}"'.encode())


def guesses_between_logins(login: Callable[[ServerProcess, str, str, str], T],
                           server: ServerProcess, source: str, victim: str) -> list[T]:
    """From ``source``: wrong passwords for ``victim`` with alice's right one after every
    ``PER_IP - 1`` of them, three rounds (bounded: past the per-IP limit); every reply."""
    replies: list[T] = []
    for _ in range(3):
        replies += [login(server, source, victim, "wrong") for _ in range(PER_IP - 1)]
        replies.append(login(server, source, ALICE, PASSWORD))
    return replies


class TestPerAccountAndPerIP:
    def test_a_good_login_does_not_forgive_guesses_at_another_account(
        self, server: ServerProcess,
    ) -> None:
        """Wrong passwords for bob, a right one for alice, repeated: bob's guesses still add up
        to the per-IP limit and the address gets 454 4.7.0 (issue 8, defect 2)."""
        source = "127.0.1.1"
        replies = guesses_between_logins(smtp_auth, server, source, BOB)
        assert replies[:PER_IP] == [FAILED, FAILED, OK]
        assert replies[PER_IP] == FAILED  # bob's third failure: the limit is reached
        assert replies[PER_IP + 1:] == [THROTTLED] * (len(replies) - PER_IP - 1)

    def test_pop3_logins_count_the_same_way(self, server: ServerProcess) -> None:
        """The same attack over POP3 (at dave: each test guesses at its own account, below the
        per-account limit) is refused with -ERR [SYS/TEMP]."""
        source = "127.0.1.2"
        replies = guesses_between_logins(pop3_login, server, source, DAVE)
        assert [r.split(b" ")[0] for r in replies[:PER_IP + 1]] == [b"-ERR", b"-ERR", b"+OK",
                                                                    b"-ERR"]
        assert all(r.startswith(b"-ERR [SYS/TEMP]") for r in replies[PER_IP + 1:])

    def test_imap_logins_count_the_same_way(self, server: ServerProcess) -> None:
        """The same attack over IMAP (at erin) is refused with NO [UNAVAILABLE], and the
        address is refused over SMTP too: one count for every protocol."""
        source = "127.0.1.3"
        replies = guesses_between_logins(imap_login, server, source, ERIN)
        assert [r.split(b" ")[1] for r in replies[:PER_IP + 1]] == [b"NO", b"NO", b"OK", b"NO"]
        assert all(r.startswith(b"a NO [UNAVAILABLE]") for r in replies[PER_IP + 1:]), replies
        assert smtp_auth(server, source, ALICE, PASSWORD) == THROTTLED

    def test_guesses_from_many_addresses_lock_the_account_not_its_owner(
        self, server: ServerProcess,
    ) -> None:
        """Failures for carol from several IPs reach the per-account limit: carol is refused
        from a new address, another account there is not, nor carol where she logged in."""
        home = "127.0.2.1"
        assert smtp_auth(server, home, CAROL, PASSWORD) == OK
        for n in range(PER_ACCOUNT):  # two guessers, each below the per-IP limit
            assert smtp_auth(server, f"127.0.2.{10 + n % 2}", CAROL, "wrong") == FAILED
        assert smtp_auth(server, "127.0.2.20", CAROL, PASSWORD) == THROTTLED
        assert smtp_auth(server, "127.0.2.20", ALICE, PASSWORD) == OK
        assert smtp_auth(server, home, CAROL, PASSWORD) == OK
