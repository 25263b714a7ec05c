"""A real ``postwarden serve`` with its imap and imaps listeners on loopback.

One server process serves a test module; each test takes its own fresh
account (``account`` fixture) so tests do not see each other's mail. Mail
arrives the way it does in production: over SMTP, through the intake.
"""

from __future__ import annotations

import imaplib
import itertools
import smtplib
import socket
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO

import pytest

from serverproc import DOMAIN, PASSWORD, ServerProcess

TIMEOUT = 10
_numbers = itertools.count(1)


class IMAPWorld:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.host, self.port = server.addr("imap")
        self.tls_port = server.port("imaps")

    def new_account(self) -> str:
        return self.server.add_user(f"user{next(_numbers)}@{DOMAIN}")

    def deliver(self, to: str, subject: str = "Hello", body: str = "Body text\n",
                sender: str = "someone@remote.example",
                date: str = "Mon, 30 Nov 2026 10:00:00 +0000", **headers: str) -> None:
        """One message over SMTP to a local account (as any MX would hand it over)."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = date
        for name, value in headers.items():
            message[name.replace("_", "-")] = value
        message.set_content(body)
        with smtplib.SMTP(*self.server.addr("smtp"), timeout=TIMEOUT) as smtp:
            smtp.send_message(message, from_addr=sender, to_addrs=[to])

    def login(self, account: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=TIMEOUT)
        client.login(account, PASSWORD)
        return client

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server.cert))
        context.check_hostname = False
        return context


def raw_login(address: tuple[str, int], account: str, source: str = "127.0.0.1"
              ) -> tuple[socket.socket, BinaryIO, bytes]:
    """A plain socket session after LOGIN: (socket, its reader, the LOGIN answer)."""
    sock = socket.create_connection(address, TIMEOUT, source_address=(source, 0))
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f'a LOGIN {account} "{PASSWORD}"\r\n'.encode())
    return sock, reader, reader.readline()


@pytest.fixture(scope="module")
def imap_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IMAPWorld]:
    root: Path = tmp_path_factory.mktemp("imap")
    server = ServerProcess(
        root,
        listen={"imap": ["127.0.0.1:0"], "imaps": ["127.0.0.1:0"]},
        relay={"pop_before_smtp_minutes": 10},
        imap={"idle_poll_ms": 100},
    ).start()
    try:
        yield IMAPWorld(server)
    finally:
        server.stop()
