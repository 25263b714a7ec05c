"""``serve`` on PostgreSQL, end to end: two server processes (nodes) on one database.

Each node has its own data directory (TLS files, nothing else) and the same
``[storage] dsn``; mail accepted over SMTP by one node is read over POP3
and IMAP on either, an IMAP IDLE on one node hears mail the other accepted
(NOTIFY/LISTEN), a POP3 login on one node opens relaying on the other, and
failed logins on one node count on the other (a guesser cannot spread).
"""

from __future__ import annotations

import poplib
import smtplib
import socket
from collections.abc import Callable

import pytest
from imapclient import IMAPClient

from pgcluster import PgCluster
from serverproc import DOMAIN, PASSWORD, ServerProcess
from servers.pop3_fixtures import RawClient

TIMEOUT = 10
CLIENT_IP = "127.0.0.6"
GUESSER_IP = "127.0.0.7"
GUESSES = 3  # [limits] auth_failures_per_ip: one wrong password per protocol
MESSAGE = b"From: a@remote.test\r\nSubject: via node one\r\n\r\nShared by every node.\r\n"

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
          ) -> tuple[ServerProcess, ServerProcess]:
    dsn = pg_cluster.schema()
    storage = {"backend": "postgresql", "dsn": dsn, "pool_size": 4}
    listen = {"imap": ["127.0.0.1:0"]}
    limits = {"auth_failures_per_ip": GUESSES}
    one = make_server(storage=storage, listen=listen, limits=limits,
                      relay={"pop_before_smtp_minutes": 10})
    two = make_server(storage=storage, listen=listen, limits=limits,
                      relay={"pop_before_smtp_minutes": 10})
    one.add_user(f"alice@{DOMAIN}")
    return one.start(), two.start()


def send(server: ServerProcess, to: str, source: str = "127.0.0.1") -> None:
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT,
                      source_address=(source, 0)) as smtp:
        smtp.sendmail("a@remote.test", [to], MESSAGE)


class TestTwoNodes:
    def test_mail_accepted_by_one_node_is_read_on_the_other(
        self, nodes: tuple[ServerProcess, ServerProcess]
    ) -> None:
        """SMTP on node one; POP3 and IMAP on node two see the same message and UID."""
        one, two = nodes
        send(one, f"alice@{DOMAIN}")
        pop = poplib.POP3(*two.addr("pop3"), timeout=TIMEOUT)
        pop.user(f"alice@{DOMAIN}")
        pop.pass_(PASSWORD)
        _, lines, _ = pop.retr(1)
        received = b"\r\n".join(lines) + b"\r\n"
        assert received.startswith(b"Return-Path: <a@remote.test>\r\nDelivered-To: alice@")
        assert received.endswith(MESSAGE)
        pop.quit()
        with IMAPClient(*two.addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
            imap.login(f"alice@{DOMAIN}", PASSWORD)
            imap.select_folder("INBOX")
            fetched = imap.fetch([1], ["BODY.PEEK[]", "FLAGS"])  # UID 1
        ((uid, data),) = fetched.items()
        assert (uid, data[b"BODY[]"]) == (1, received)
        assert b"\\Seen" in data[b"FLAGS"]  # POP3 RETR on node two set it

    def test_idle_on_one_node_hears_mail_accepted_by_the_other(
        self, nodes: tuple[ServerProcess, ServerProcess]
    ) -> None:
        """IMAP IDLE on node two wakes for a delivery through node one."""
        one, two = nodes
        with IMAPClient(*two.addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
            imap.login(f"alice@{DOMAIN}", PASSWORD)
            imap.select_folder("INBOX")
            imap.idle()
            send(one, f"alice@{DOMAIN}")
            heard: list[tuple[int, bytes]] = []
            for _ in range(20):  # bounded: each check waits up to 0.5 s
                heard += imap.idle_check(timeout=0.5)
                if any(b"EXISTS" in item for item in heard):
                    break
            imap.idle_done()
        assert (1, b"EXISTS") in heard

    def test_a_pop3_login_on_one_node_opens_relaying_on_the_other(
        self, nodes: tuple[ServerProcess, ServerProcess]
    ) -> None:
        """POP-before-SMTP records live in the database, shared by every node."""
        one, two = nodes
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(two, "someone@external.example", CLIENT_IP)
        sock = socket.create_connection(one.addr("pop3"), timeout=TIMEOUT,
                                        source_address=(CLIENT_IP, 0))
        client = RawClient(sock)
        assert client.command(f"USER alice@{DOMAIN}".encode()).startswith(b"+OK")
        assert client.command(f"PASS {PASSWORD}".encode()).startswith(b"+OK")
        assert client.command(b"QUIT").startswith(b"+OK")
        client.close()
        send(two, "someone@external.example", CLIENT_IP)  # accepted for relay now

    def test_failed_logins_on_one_node_lock_the_guesser_out_of_the_other(
        self, nodes: tuple[ServerProcess, ServerProcess]
    ) -> None:
        """A wrong password over POP3, IMAP and SMTP AUTH on node one: on node two even
        the right one is refused from that address (and still taken from another)."""
        one, two = nodes
        user = f"alice@{DOMAIN}".encode()
        assert pop3_login(one, GUESSER_IP, user, b"wrong").startswith(b"-ERR [AUTH]")
        imap = connect(one, "imap", GUESSER_IP)  # imaplib cannot choose its source address
        assert b"NO [AUTHENTICATIONFAILED]" in imap.command(b"a LOGIN " + user + b" wrong")
        imap.close()
        assert smtp_login(one, user.decode(), "wrong") == 535

        throttled = pop3_login(two, GUESSER_IP, user, PASSWORD.encode())
        assert throttled.startswith(b"-ERR [SYS/TEMP] Too many failed logins")
        assert smtp_login(two, user.decode(), PASSWORD) == 454
        # Another address is not punished for the guesser's failures.
        assert pop3_login(two, CLIENT_IP, user, PASSWORD.encode()).startswith(b"+OK")


def smtp_login(server: ServerProcess, user: str, password: str) -> int:
    """AUTH PLAIN from the guesser's address (one try: smtplib would go on to LOGIN)."""
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT,
                      source_address=(GUESSER_IP, 0)) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = user, password
        try:
            code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as refused:
            code = refused.smtp_code
        return code


def connect(server: ServerProcess, kind: str, source: str) -> RawClient:
    sock = socket.create_connection(server.addr(kind), timeout=TIMEOUT,
                                    source_address=(source, 0))
    return RawClient(sock)


def pop3_login(server: ServerProcess, source: str, user: bytes, password: bytes) -> bytes:
    """USER and PASS from ``source``: the reply to PASS."""
    client = connect(server, "pop3", source)
    assert client.command(b"USER " + user).startswith(b"+OK")
    reply = client.command(b"PASS " + password)
    client.command(b"QUIT")
    client.close()
    return reply
