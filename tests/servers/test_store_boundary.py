"""The event loop never waits on the store.

A real server (the whole ``App``, on the test's event loop) on a store whose
directory (or mailbox) calls can be held at a gate: one client's RCPT is
stuck in the store, and 20 new clients must still get their banners before
that call completes. A store call made on the event loop would hold the loop
itself: nothing would move until the gate gave up (it is bounded, so such a
build fails rather than hangs), and by then the held call would have
completed. POP3 and IMAP are held the same way, and the held calls must run
on the async boundary's own threads (``store-*``), not on a thread of their
own (``asyncio.to_thread``'s are named ``asyncio_N``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from postwarden.app import App
from postwarden.config import from_dict
from postwarden.policy.passwords import hash_password
from postwarden.servers.tls import write_self_signed
from postwarden.storage.sqlite import SqliteStore

USER = "user@example.test"
UNKNOWN = "nobody@example.test"
SESSIONS = 20
GATE_LIMIT = 20  # seconds a held call waits at most: a broken build fails, never hangs
TIMEOUT = 10


class Gate:
    """Stands in front of a store part: every call waits until the gate is open."""

    def __init__(self, part: Any) -> None:
        self._part = part
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()
        self.waiting = 0
        self.completed = 0  # calls that waited at the closed gate and then finished
        self.threads: list[str] = []  # where each held call ran

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait_for_a_held_call(self, count: int = 1) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.waiting >= count, TIMEOUT)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._part, name)

        def gated(*args: Any, **kwargs: Any) -> Any:
            if self._open.is_set():
                return method(*args, **kwargs)
            with self._changed:
                self.waiting += 1
                self.threads.append(threading.current_thread().name)
                self._changed.notify_all()
            self._open.wait(GATE_LIMIT)
            try:
                return method(*args, **kwargs)
            finally:
                with self._changed:
                    self.completed += 1

        return gated


def banner(addr: tuple[str, int]) -> bytes:
    with socket.create_connection(addr, timeout=TIMEOUT) as sock:
        return sock.recv(512)


class StuckClient:
    """A client whose RCPT waits on the store: connect, EHLO, MAIL, then RCPT."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=GATE_LIMIT + TIMEOUT)
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        while (line := self.line())[3:4] == b"-":
            pass
        return line

    def start(self) -> None:
        """Up to a first RCPT, answered (it also warms the server's domain cache)."""
        assert self.reply().startswith(b"220")
        for command in (b"EHLO client.test", b"MAIL FROM:<a@remote.test>",
                        f"RCPT TO:<{USER}>".encode()):
            self.sock.sendall(command + b"\r\n")
            assert self.reply().startswith(b"250")

    def rcpt(self) -> None:
        """An unknown user: no answer the server remembers, so the store is asked."""
        self.sock.sendall(f"RCPT TO:<{UNKNOWN}>\r\n".encode())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


async def gated_app(tmp_path: Path, listeners: tuple[str, ...], part: str
                    ) -> AsyncIterator[tuple[App, Gate]]:
    """An App listening on ``listeners``, every call to store part ``part`` gated."""
    listen = {kind: ["127.0.0.1:0"] if kind in listeners else []
              for kind in ("smtp", "submission", "submissions", "pop3", "pop3s", "imap",
                           "imaps")}
    cfg = from_dict({
        "hostname": "mail.example.test", "data_dir": "var", "listen": listen,
        "limits": {"max_connections_per_ip": 100},
    }, tmp_path / "postwarden.toml")
    write_self_signed(cfg.tls.cert, cfg.tls.key, cfg.hostname)  # serving needs a TLS pair
    store = SqliteStore(cfg.data_dir)
    store.directory.add_domain("example.test")
    store.directory.add_account(USER, hash_password("pw"))
    gate = Gate(getattr(store, part))
    setattr(store, part, gate)  # every call to that part passes the gate
    server = App(cfg, store=store)
    await server.start()
    yield server, gate
    gate.open()
    await server.stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[App, Gate]]:
    async for pair in gated_app(tmp_path, ("smtp",), "directory"):
        yield pair


@pytest.fixture
async def mail_app(tmp_path: Path) -> AsyncIterator[tuple[App, Gate]]:
    async for pair in gated_app(tmp_path, ("pop3", "imap"), "mailboxes"):
        yield pair


class TestSlowStore:
    async def test_banners_arrive_while_a_store_call_is_held(
        self, app: tuple[App, Gate]
    ) -> None:
        """20 sessions get 220 while one RCPT waits in the store; then the RCPT is answered."""
        server, gate = app
        addr = next((h, p) for kind, h, p in server.bound if kind == "smtp")
        stuck = await asyncio.to_thread(StuckClient, addr)
        try:
            await asyncio.to_thread(stuck.start)
            gate.close()
            await asyncio.to_thread(stuck.rcpt)
            await asyncio.to_thread(gate.wait_for_a_held_call)
            banners = await asyncio.gather(
                *(asyncio.to_thread(banner, addr) for _ in range(SESSIONS)))
            assert gate.completed == 0  # the held call is still held
            assert all(b.startswith(b"220 ") for b in banners), banners
            gate.open()
            assert (await asyncio.to_thread(stuck.reply)).startswith(b"550 5.1.1")
        finally:
            gate.open()
            stuck.close()


class LineClient:
    """POP3 or IMAP by hand: send a line, read lines."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=GATE_LIMIT + TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def until(self, prefix: bytes) -> bytes:
        """Lines up to the first that starts with ``prefix`` (bounded by the socket timeout)."""
        while (line := self.file.readline()) and not line.startswith(prefix):
            pass
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def greeting(addr: tuple[str, int]) -> bytes:
    client = LineClient(addr)
    client.close()
    return client.greeting


class TestSlowMailboxStore:
    async def test_pop3_and_imap_greet_while_their_store_calls_are_held(
        self, mail_app: tuple[App, Gate]
    ) -> None:
        """A POP3 login and an IMAP SELECT wait in the store on the boundary's threads;
        20 new POP3/IMAP clients are greeted meanwhile; both commands complete on release."""
        server, gate = mail_app
        pop3 = next((h, p) for kind, h, p in server.bound if kind == "pop3")
        imap = next((h, p) for kind, h, p in server.bound if kind == "imap")
        imap_client = await asyncio.to_thread(LineClient, imap)
        pop3_client = await asyncio.to_thread(LineClient, pop3)
        try:
            imap_client.send(f"a LOGIN {USER} pw")
            assert (await asyncio.to_thread(imap_client.until, b"a ")).startswith(b"a OK")
            pop3_client.send(f"USER {USER}")
            assert (await asyncio.to_thread(pop3_client.until, b"+OK")).startswith(b"+OK")
            gate.close()
            imap_client.send("b SELECT INBOX")
            await asyncio.to_thread(gate.wait_for_a_held_call)
            pop3_client.send("PASS pw")  # takes the maildrop lock: a store write
            await asyncio.to_thread(gate.wait_for_a_held_call, 2)
            greetings = await asyncio.gather(
                *(asyncio.to_thread(greeting, addr)
                  for addr in [pop3, imap] * (SESSIONS // 2)))
            assert gate.completed == 0  # both calls are still held
            assert sum(g.startswith(b"+OK ") for g in greetings) == SESSIONS // 2, greetings
            assert sum(g.startswith(b"* OK ") for g in greetings) == SESSIONS // 2, greetings
            assert all(name.startswith("store-") for name in gate.threads), gate.threads
            gate.open()
            assert (await asyncio.to_thread(imap_client.until, b"b ")).startswith(b"b OK")
            assert (await asyncio.to_thread(pop3_client.until, b"")).startswith(b"+OK")
        finally:
            gate.open()
            imap_client.close()
            pop3_client.close()
