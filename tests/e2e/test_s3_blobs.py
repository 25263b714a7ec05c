"""``serve`` on PostgreSQL with ``[storage] blobs = "s3"``: the bytes in a local S3 server.

The S3 server is moto's, in a process of its own on loopback; a test that
stops it gets its own, so the session's server stays up for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import poplib
import smtplib
import time
from collections.abc import Callable

import pytest
from imapclient import IMAPClient

from delivery.smtppeers import Peer
from pgcluster import PgCluster
from s3server import S3Server, running_s3
from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 10
MESSAGE = b"From: a@remote.test\r\nSubject: kept in s3\r\n\r\nBytes in a bucket.\r\n"
ALICE = f"alice@{DOMAIN}"

pytestmark = pytest.mark.slow


def s3_node(make_server: Callable[..., ServerProcess], pg_cluster: PgCluster,
            s3: S3Server, bucket: str, **settings: object) -> ServerProcess:
    node = make_server(storage={"backend": "postgresql", "dsn": pg_cluster.schema(),
                                "pool_size": 4, "blobs": "s3"},
                       s3={**s3.settings(bucket), "timeout_seconds": 2},
                       listen={"imap": ["127.0.0.1:0"]}, **settings)
    node.add_user(ALICE)
    return node.start()


def count(node: ServerProcess, table: str) -> int:
    with node.store.db.conn() as db:  # type: ignore[attr-defined]
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


class TestServeWithS3Blobs:
    def test_mail_accepted_over_smtp_is_read_over_pop3_and_imap(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster,
        s3_server: S3Server
    ) -> None:
        """The accepted bytes are one object named by their SHA-256; both protocols read it."""
        bucket = s3_server.bucket()
        node = s3_node(make_server, pg_cluster, s3_server, bucket)
        with smtplib.SMTP(*node.addr("smtp"), timeout=TIMEOUT) as smtp:
            smtp.sendmail("a@remote.test", [ALICE], MESSAGE)
        (key,) = s3_server.keys(bucket)
        stored = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert key == hashlib.sha256(stored).hexdigest() and stored.endswith(MESSAGE)
        pop = poplib.POP3(*node.addr("pop3"), timeout=TIMEOUT)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        _, lines, _ = pop.retr(1)
        received = b"\r\n".join(lines) + b"\r\n"
        assert received.endswith(MESSAGE)
        pop.quit()
        with IMAPClient(*node.addr("imap"), ssl=False, timeout=TIMEOUT) as imap:
            imap.login(ALICE, PASSWORD)
            imap.select_folder("INBOX", readonly=True)
            fetched = imap.fetch([1], ["BODY.PEEK[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert fetched[1][b"BODY[]"] == received
        assert fetched[1][b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: kept in s3\r\n\r\n"

    def test_s3_down_at_accept_is_451_and_commits_nothing(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """No completed PUT, no row and no 250: the client is told to try again later."""
        with running_s3() as s3:
            node = s3_node(make_server, pg_cluster, s3, s3.bucket())
            s3.stop()
            with (smtplib.SMTP(*node.addr("smtp"), timeout=TIMEOUT * 3) as smtp,
                  pytest.raises(smtplib.SMTPDataError) as refused):
                smtp.sendmail("a@remote.test", [ALICE], MESSAGE)
            assert refused.value.smtp_code == 451
            node.wait_for_log("s3 PUT at http://127.0.0.1")
            assert (count(node, "blobs"), count(node, "messages"),
                    count(node, "queue_messages")) == (0, 0, 0)
            assert "Traceback" not in "".join(node.output)  # an outage: one line, no trace

    async def test_s3_down_at_delivery_defers_and_keeps_the_message(
        self, make_server: Callable[..., ServerProcess], pg_cluster: PgCluster
    ) -> None:
        """The queue manager cannot read the bytes: the recipient is deferred in one log
        line ("try again later"), the entry stays queued, and no task fails."""
        peer = Peer(on_rcpt=lambda _: "451 4.3.0 not yet")
        port = await peer.start()
        try:
            with running_s3() as s3:
                node = s3_node(make_server, pg_cluster, s3, s3.bucket(),
                               routes=[{"domain": "partner.example", "to": f"127.0.0.1:{port}"}],
                               relay={"trusted_networks": ["127.0.0.0/8"]})
                await asyncio.to_thread(send, node, "ann@partner.example")
                await peer.wait_until(lambda: peer.connections >= 1, TIMEOUT)
                s3.stop()
                # Due now (the CLI would refuse to open a store whose S3 is down).
                assert node.store.queue.retry_now(None, time.time()) == 1  # type: ignore[attr-defined]
                await asyncio.to_thread(node.wait_for_log, "Message store unavailable")
        finally:
            await peer.close()
        assert count(node, "queue_messages") == 1
        assert "Traceback" not in "".join(node.output)


def send(node: ServerProcess, rcpt: str) -> None:
    with smtplib.SMTP(*node.addr("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@remote.test", [rcpt], MESSAGE)
