"""``serve`` on PostgreSQL, end to end: two server processes (nodes) on one database.

Each node has its own data directory (TLS files, nothing else) and the same
``[storage] dsn``; mail accepted over SMTP by one node is read over POP3
and IMAP on either, an IMAP IDLE on one node hears mail the other accepted
(NOTIFY/LISTEN), and a POP3 login on one node opens relaying on the other.
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
MESSAGE = b"From: a@remote.test\r\nSubject: via node one\r\n\r\nShared by every node.\r\n"

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
          ) -> tuple[ServerProcess, ServerProcess]:
    dsn = pg_cluster.schema()
    storage = {"backend": "postgresql", "dsn": dsn, "pool_size": 4}
    listen = {"imap": ["127.0.0.1:0"]}
    one = make_server(storage=storage, listen=listen,
                      relay={"pop_before_smtp_minutes": 10})
    two = make_server(storage=storage, listen=listen,
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
