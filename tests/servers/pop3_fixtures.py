"""A real POP3 server (plain and pop3s listeners) in a thread with its own loop.

poplib is blocking, so the server runs on an event loop in a background
thread and the test talks to it from the test thread. ``wait_idle`` waits
for every connection's handler to finish (a condition variable, no sleeps),
so a test can drop a connection and know the server has noticed.
"""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postwarden.config import Config, from_dict
from postwarden.policy.throttle import AuthThrottle
from postwarden.servers.common import Authenticator
from postwarden.servers.pop3 import POP3Server
from postwarden.servers.services import MailboxServices
from postwarden.servers.tls import server_context, write_self_signed
from postwarden.storage.interfaces import Acceptance
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from serverproc import password_hash

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
USER = "alice@example.test"
OTHER = "bob@example.test"
PASSWORD = "correct horse battery"
AUTH_LIMIT = 3
TIMEOUT = 10


def make_config(root: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "hostname": HOSTNAME,
        "data_dir": "var",
        "tls": {"cert": "var/tls/cert.pem", "key": "var/tls/key.pem"},
        "limits": {"auth_failures_per_ip": AUTH_LIMIT},
        "relay": {"pop_before_smtp_minutes": 10},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return from_dict(raw, root / "postwarden.toml")


class ServerThread:
    """POP3Server instances for pop3 and pop3s on 127.0.0.1, port 0."""

    def __init__(self, services: MailboxServices) -> None:
        self.services = services
        self._active = 0
        self._idle = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        ports = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(TIMEOUT)
        self.port, self.tls_port = ports

    def _tracked(self, server: POP3Server) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with self._idle:
                self._active += 1
            try:
                await server.handle(reader, writer)
            except asyncio.CancelledError:
                pass  # stop() cancels sessions still open; that is the end we asked for
            finally:
                with self._idle:
                    self._active -= 1
                    self._idle.notify_all()
        return handle

    async def _start(self) -> tuple[int, int]:
        plain = POP3Server(self.services, implicit_tls=False)
        implicit = POP3Server(self.services, implicit_tls=True)
        self.servers = [
            await asyncio.start_server(self._tracked(plain), "127.0.0.1", 0),
            await asyncio.start_server(self._tracked(implicit), "127.0.0.1", 0,
                                       ssl=self.services.tls),
        ]
        return tuple(s.sockets[0].getsockname()[1] for s in self.servers)  # type: ignore[return-value]

    def wait_idle(self) -> None:
        """Block until every accepted connection's handler has returned."""
        with self._idle:
            assert self._idle.wait_for(lambda: self._active == 0, TIMEOUT)

    async def _stop(self) -> None:
        for server in self.servers:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class POP3Harness:
    """A data directory with two users and a certificate, and a server on it."""

    def __init__(self, root: Path, **sections: dict[str, Any]) -> None:
        self.root = root
        self.cfg = make_config(root, **sections)
        write_self_signed(self.cfg.tls.cert, self.cfg.tls.key, HOSTNAME)
        self.store = SqliteStore(self.cfg.data_dir)
        self.store.directory.add_domain(DOMAIN)
        for user in (USER, OTHER):
            self.store.directory.add_account(user, password_hash(PASSWORD))
            self.store.mailboxes.ensure_mailboxes(user)
        self.server: ServerThread | None = None
        self.aio: AsyncSqliteStore | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def tls_port(self) -> int:
        assert self.server is not None
        return self.server.tls_port

    def start(self) -> None:
        """A fresh store object and fresh server instances on the same data directory."""
        store = SqliteStore(self.cfg.data_dir)
        limits = self.cfg.limits
        self.aio = aio = AsyncSqliteStore(store)
        auth = Authenticator(aio, AuthThrottle(
            limits.auth_failures_per_ip, limits.auth_failure_window_seconds))
        tls = server_context(self.cfg.tls.cert, self.cfg.tls.key)
        self.server = ServerThread(MailboxServices(self.cfg, aio, aio, auth, tls, store.changes))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.aio is not None:
            self.aio.close()
            self.aio = None

    def wait_idle(self) -> None:
        assert self.server is not None
        self.server.wait_idle()

    def deliver(self, message: bytes, *accounts: str) -> None:
        """Put a message into INBOX the way the intake does."""
        name = uuid.uuid4().hex
        writer = self.store.blobs.new_blob(name)
        writer.write(message)
        blob = writer.commit()
        self.store.delivery.commit_acceptances(
            [Acceptance(name, blob, "sender@remote.example", accounts or (USER,), ())]
        )

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the generated self-signed certificate."""
        ctx = ssl.create_default_context(cafile=str(self.cfg.tls.cert))
        return ctx

    def pop3(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.port, timeout=TIMEOUT)

    def pop3s(self) -> poplib.POP3_SSL:
        return poplib.POP3_SSL("127.0.0.1", self.tls_port, context=self.client_context(),
                               timeout=TIMEOUT)

    def login(self, user: str = USER) -> poplib.POP3:
        client = self.pop3()
        client.user(user)
        client.pass_(PASSWORD)
        return client

    def raw(self, source: str = "127.0.0.1") -> RawClient:
        return RawClient(socket.create_connection(
            ("127.0.0.1", self.port), timeout=TIMEOUT, source_address=(source, 0)))


class RawClient:
    """Speak POP3 by hand: write any bytes, read reply lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, data: bytes) -> bytes:
        self.send(data + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line reply"
            lines.append(line)
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def pop3(tmp_path: Path) -> Iterator[POP3Harness]:
    harness = POP3Harness(tmp_path)
    harness.start()
    yield harness
    harness.stop()
    harness.store.close()
