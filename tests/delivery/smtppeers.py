"""Real receiving SMTP servers on loopback, with scripted behaviour.

Raw asyncio rather than aiosmtpd so a peer can drop the connection in the
middle of DATA, hold a reply until the test releases it, offer or withhold
any extension, and record the exact MAIL/RCPT parameters it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Transaction:
    sender: str
    mail_params: list[str]
    recipients: list[str] = field(default_factory=list)
    rcpt_params: list[list[str]] = field(default_factory=list)
    data: bytes = b""
    tls: bool = False
    helo: str = ""  # the name the client greeted with


ReplyHook = Callable[[Transaction], Awaitable[str | None]]


async def _accept(_: Transaction) -> str | None:
    return None


def _path(arg: str) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=1`` -> ("a@b", ["SIZE=1"])."""
    rest = arg.split(":", 1)[1].strip()
    end = rest.index(">")
    return rest[1:end], rest[end + 1 :].split()


class Peer:
    """One SMTP server. Hooks return a reply line to refuse, or None to accept."""

    def __init__(
        self,
        name: str = "peer.test",
        *,
        extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000"),
        on_rcpt: Callable[[str], str | None] = lambda _: None,
        on_data: ReplyHook = _accept,
        drop_in_data: bool = False,
        tls: ssl.SSLContext | None = None,
        hold_replies_until_data: bool = False,
    ) -> None:
        self.name = name
        self.extensions = extensions
        self.on_rcpt = on_rcpt
        self.on_data = on_data
        self.drop_in_data = drop_in_data
        self.tls = tls
        # Answer MAIL/RCPT only once DATA has arrived: only a pipelining client gets through.
        self.hold_replies_until_data = hold_replies_until_data
        self.messages: list[Transaction] = []
        self.connections = 0
        self.data_started = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._client, host, port)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _note(self) -> None:
        self._changed.set()

    async def wait_until(self, check: Callable[[], bool], timeout: float = 15) -> None:
        """Wait (bounded) until ``check()`` holds, woken by each peer event."""
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def wait_messages(self, n: int, timeout: float = 15) -> list[Transaction]:
        await self.wait_until(lambda: len(self.messages) >= n, timeout)
        return self.messages

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._note()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await self._session(reader, writer)
        writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[str] = []

        def say(line: str) -> None:
            held.append(line)
            if self.hold_replies_until_data and verb in ("MAIL", "RCPT"):
                return  # goes out together with the reply to DATA
            writer.write("".join(f"{out}\r\n" for out in held).encode())
            held.clear()

        verb = helo = ""
        say(f"220 {self.name} ESMTP test peer")
        tx: Transaction | None = None
        tls = False
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = text.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                helo = text.partition(" ")[2].strip()
                offered = [*self.extensions, *(["STARTTLS"] if self.tls and not tls else [])]
                lines = [self.name, *offered]
                for i, item in enumerate(lines):
                    say(f"250{'-' if i < len(lines) - 1 else ' '}{item}")
            elif verb == "STARTTLS" and self.tls is not None and not tls:
                say("220 2.0.0 Ready to start TLS")
                await writer.drain()
                await writer.start_tls(self.tls)
                tls, tx = True, None
            elif verb == "MAIL":
                sender, params = _path(text)
                tx = Transaction(sender, params, tls=tls, helo=helo)
                say("250 2.1.0 Ok")
            elif verb == "RCPT" and tx is not None:
                rcpt, params = _path(text)
                refusal = self.on_rcpt(rcpt)
                if refusal:
                    say(refusal)
                else:
                    tx.recipients.append(rcpt)
                    tx.rcpt_params.append(params)
                    say("250 2.1.5 Ok")
            elif verb == "DATA" and tx is not None and tx.recipients:
                say("354 End data with <CR><LF>.<CR><LF>")
                await writer.drain()
                self.data_started += 1
                self._note()
                if self.drop_in_data:
                    await reader.readline()
                    return
                tx.data = await self._read_data(reader)
                reply = await self.on_data(tx)
                if reply is None:
                    self.messages.append(tx)
                    reply = "250 2.0.0 Ok: queued"
                say(reply)
                tx = None
                self._note()
            elif verb == "RSET":
                tx = None
                say("250 2.0.0 Ok")
            elif verb == "NOOP":
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                say("503 5.5.1 Bad sequence of commands")
            await writer.drain()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) != b".\r\n":
            if not line:
                raise ConnectionError("client went away in DATA")
            lines.append(line[1:] if line.startswith(b".") else line)
        return b"".join(lines)


_MESSAGE_ID = re.compile(rb"^Message-ID: <(m\d+)@example\.test>", re.MULTILINE)


class Sink(Peer):
    """A fast receiving server that answers nothing until ``open`` is set; it tells
    the messages apart by their ``Message-ID: <m<n>@example.test>``."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        super().__init__("sink.test", on_data=self._hold)

    async def _hold(self, _: Transaction) -> None:
        await self.open.wait()

    def copies(self) -> Counter[str]:
        return Counter(message_id(tx) for tx in self.messages)


def message_id(tx: Transaction) -> str:
    found = _MESSAGE_ID.search(tx.data)
    assert found is not None, tx.data[:200]
    return found.group(1).decode()


@contextlib.asynccontextmanager
async def running_sink() -> AsyncIterator[Sink]:
    """A started sink, opened (its held sessions let go) and closed at the end."""
    peer = Sink()
    await peer.start()
    try:
        yield peer
    finally:
        peer.open.set()
        await peer.close()
