"""The seed scenario: a POP3 login lets that client IP relay, for a while.

A client on 127.0.0.4 without SMTP AUTH is refused an external recipient; it
logs in over POP3; within ``pop_before_smtp_minutes`` the same attempt is
accepted; once the recorded login is older than the window it is refused
again. The window is left by moving the recorded time back in the store,
never by sleeping. Two forms: against the relay policy function the SMTP
server calls (``TestPolicy``), and over a real SMTP session to a real server
process (``TestRealSMTP``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.policy.relay import Decision
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from servers.pop3_fixtures import PASSWORD, USER, POP3Harness, RawClient, pop3

__all__ = ["pop3"]  # the fixture, imported explicitly

CLIENT_IP = "127.0.0.4"
EXTERNAL = "someone@external.example"
WINDOW_MINUTES = 10


def pop3_login(host: str, port: int) -> None:
    """A real POP3 login from CLIENT_IP (poplib cannot bind a source address)."""
    sock = socket.create_connection((host, port), timeout=10, source_address=(CLIENT_IP, 0))
    client = RawClient(sock)
    assert client.greeting.startswith(b"+OK")
    assert client.command(b"USER " + USER.encode()).startswith(b"+OK")
    assert client.command(b"PASS " + PASSWORD.encode()).startswith(b"+OK")
    assert client.command(b"QUIT").startswith(b"+OK")
    client.close()


def leave_window(database: Path) -> None:
    """Make CLIENT_IP's last login older than the window (record_login keeps the max)."""
    with sqlite3.connect(database) as db:
        db.execute("UPDATE login_records SET at = at - ? WHERE ip = ?",
                   ((WINDOW_MINUTES + 1) * 60, CLIENT_IP))
    db.close()


class TestPolicy:
    def _decide(self, harness: POP3Harness) -> Decision:
        """What the SMTP server decides at RCPT for CLIENT_IP, without SMTP AUTH."""
        store = AsyncSqliteStore(harness.store)
        policy = RecipientPolicy(store, harness.cfg.relay, harness.cfg.hostname)
        client, local = ipaddress.ip_address(CLIENT_IP), ipaddress.ip_address("127.0.0.1")

        async def decide() -> Decision:
            facts = await policy.client_facts(client, local, tls=False, auth_user=None,
                                              now=time.time())
            return await policy.check_recipient(facts, parse_address(EXTERNAL))

        try:
            return asyncio.run(decide())
        finally:
            store.close()

    def test_pop3_login_opens_the_window_and_it_closes(self, pop3: POP3Harness) -> None:
        """Refused, POP3 login, accepted by rule pop_before_smtp, refused after the window."""
        assert pop3.cfg.relay.pop_before_smtp_minutes == WINDOW_MINUTES
        before = self._decide(pop3)
        assert not before.accepted
        assert (before.reply.code, before.reply.status) == (550, "5.7.1")
        pop3_login("127.0.0.1", pop3.port)
        within = self._decide(pop3)
        assert within.accepted and within.rule == "pop_before_smtp"
        leave_window(pop3.cfg.database)
        after = self._decide(pop3)
        assert not after.accepted and after.reply.code == 550


@pytest.mark.slow
class TestRealSMTP:
    def _rcpt(self, server: Any) -> tuple[int, bytes]:
        host, port = server.addr("smtp")
        with smtplib.SMTP(host, port, source_address=(CLIENT_IP, 0), timeout=10) as smtp:
            smtp.ehlo("client.example")
            code, _ = smtp.mail("sender@external.example")
            assert code == 250
            return smtp.rcpt(EXTERNAL)

    def test_seed_scenario_over_smtp(self, make_server: Any) -> None:
        """550 5.7.1, then POP3 login, then 250, then 550 again once the window has passed."""
        server = make_server(relay={"pop_before_smtp_minutes": WINDOW_MINUTES})
        server.add_user(USER)
        server.start()
        code, text = self._rcpt(server)
        assert code == 550 and text.startswith(b"5.7.1")
        pop3_login(*server.addr("pop3"))
        code, _ = self._rcpt(server)
        assert code == 250
        leave_window(server.root / "var" / "postwarden.sqlite3")
        code, text = self._rcpt(server)
        assert code == 550 and text.startswith(b"5.7.1")
