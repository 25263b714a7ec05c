"""The database going away under a running node, and coming back.

The test's own PostgreSQL is stopped (a fast shutdown: every session is
ended, new connections are refused) while a ``serve`` node runs on it. Each
protocol must answer "try again later" within ``[storage] timeout_seconds``
(two here; the client timeouts bound the wait), never acknowledge what it
could not commit, and log no traceback; once PostgreSQL is back, the same
node, not restarted, serves again (a bounded poll: the connection pool
reconnects with its own back-off).
"""

from __future__ import annotations

import poplib
import smtplib
import time
from collections.abc import Callable

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from pgcluster import PgCluster
from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 20  # client side: well above [storage] timeout_seconds
ALICE = f"alice@{DOMAIN}"
RECOVERY_ROUNDS = 120  # at 0.5 s each: the pool's reconnect back-off is far shorter
MESSAGE = b"From: a@remote.test\r\nSubject: outage\r\n\r\nbody\r\n"

pytestmark = pytest.mark.slow


@pytest.fixture
def node(make_server: Callable[..., ServerProcess], own_pg_cluster: PgCluster) -> ServerProcess:
    storage = {"backend": "postgresql", "dsn": own_pg_cluster.database(), "pool_size": 4,
               "timeout_seconds": 2}
    server = make_server(storage=storage, listen={"imap": ["127.0.0.1:0"]})
    server.add_user(ALICE)
    return server.start()


def try_to_send(server: ServerProcess) -> tuple[int, bytes]:
    """MAIL, RCPT and DATA: the first refusal, else the reply to the end of DATA."""
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        for step in (lambda: smtp.mail("a@remote.test"), lambda: smtp.rcpt(ALICE)):
            code, text = step()
            if code != 250:
                return code, text
        return smtp.data(MESSAGE)


def pop3_login(server: ServerProcess) -> bytes:
    pop = poplib.POP3(*server.addr("pop3"), timeout=TIMEOUT)
    try:
        pop.user(ALICE)
        return pop.pass_(PASSWORD)
    finally:
        pop.close()


class TestDatabaseOutage:
    def test_every_protocol_says_try_later_and_the_node_recovers(
        self, node: ServerProcess, own_pg_cluster: PgCluster
    ) -> None:
        """451 4.3.0, NO [UNAVAILABLE] and -ERR [SYS/TEMP] while it is down; served after."""
        assert try_to_send(node)[0] == 250
        session = IMAPClient(*node.addr("imap"), ssl=False, timeout=TIMEOUT)
        session.login(ALICE, PASSWORD)
        session.select_folder("INBOX")
        resyncing = IMAPClient(*node.addr("imap"), ssl=False, timeout=TIMEOUT)
        resyncing.login(ALICE, PASSWORD)
        resyncing.enable("QRESYNC")
        resyncing.select_folder("INBOX")

        own_pg_cluster.halt()
        code, text = try_to_send(node)
        assert (code, text[:5]) == (451, b"4.3.0")  # at RCPT or at the end of DATA, never 250
        with pytest.raises(IMAPClientError, match=r"\[UNAVAILABLE\]"):
            session.select_folder("INBOX")  # a session that was open: it goes on
        with pytest.raises(IMAPClientError, match=r"\[UNAVAILABLE\]"):  # a snapshot read first
            resyncing.fetch("1:*", ["FLAGS"], modifiers=["CHANGEDSINCE 1", "VANISHED"])
        resyncing.logout()
        with IMAPClient(*node.addr("imap"), ssl=False, timeout=TIMEOUT) as fresh, \
                pytest.raises(LoginError, match=r"\[UNAVAILABLE\]"):
            fresh.login(ALICE, PASSWORD)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            pop3_login(node)

        own_pg_cluster.resume()
        for _ in range(RECOVERY_ROUNDS):  # bounded: until the pool has reconnected
            if try_to_send(node)[0] == 250:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the node did not recover after the database came back")
        assert pop3_login(node).startswith(b"+OK")
        assert session.select_folder("INBOX")[b"EXISTS"] == 2  # the same session, again
        session.logout()
        assert len(node.inbox(ALICE)) == 2  # both acknowledged, nothing of the refused one
        assert node.proc is not None and node.proc.poll() is None  # never restarted
        assert "Traceback" not in "".join(node.output), "".join(node.output)
