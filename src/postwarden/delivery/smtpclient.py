"""A small SMTP client connection: replies, EHLO keywords, STARTTLS, pipelined groups.

Hand-written because aiosmtplib, otherwise the obvious choice, cannot
pipeline (RFC 2920): its protocol parses one reply per read and documents
that writing several commands before reading loses replies. Without
pipelining every MAIL, RCPT and DATA costs a network round trip, which over
real links dominates the time per message. This module only moves bytes and
parses replies; what the replies mean for each recipient is ``outbound``'s job.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

MAX_REPLY_LINES = 100  # a multi-line reply longer than this is not a reply
LINE_LIMIT = 8192  # RFC 5321 allows 512 octets per reply line; be generous, not endless


class SMTPClientError(Exception):
    """The connection broke or the peer spoke something that is not SMTP."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """One line, e.g. ``550 5.7.1 Unable to relay``: for logs and reports."""
        return f"{self.code} {' '.join(line for line in self.lines if line)}".strip()


def dot_stuff(data: bytes) -> bytes:
    """The DATA wire form of a CRLF message: leading dots doubled, ``.`` line appended."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class SMTPConnection:
    """One TCP (later TLS) connection to an SMTP server, every wait bounded by ``timeout``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}  # EHLO keyword (lower case) -> its parameters

    @classmethod
    async def connect(
        cls, host: str, port: int, connect_timeout: float, timeout: float
    ) -> tuple[SMTPConnection, Reply]:
        """Open the connection and read the greeting."""
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=LINE_LIMIT)
        conn = cls(reader, writer, timeout)
        try:
            return conn, await conn.read_reply()
        except BaseException:
            conn.abort()
            raise

    async def read_reply(self) -> Reply:
        lines: list[str] = []
        async with asyncio.timeout(self.timeout):
            while len(lines) < MAX_REPLY_LINES:
                try:
                    raw = await self._reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    raise SMTPClientError("connection closed by the peer") from None
                except asyncio.LimitOverrunError:
                    raise SMTPClientError("reply line too long") from None
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                code, sep = line[:3], line[3:4]
                if not (code.isascii() and code.isdigit()) or sep not in ("", " ", "-"):
                    raise SMTPClientError(f"not an SMTP reply: {line[:80]!r}")
                lines.append(line[4:])
                if sep != "-":
                    return Reply(int(code), tuple(lines))
        raise SMTPClientError("reply with too many lines")

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        async with asyncio.timeout(self.timeout):
            await self._writer.drain()

    async def exchange(self, commands: list[bytes], pipelining: bool) -> list[Reply]:
        """Send commands (CRLF added) and read one reply each.

        With ``pipelining`` the group goes out in one write and the replies are
        read afterwards, in order (RFC 2920); otherwise one round trip each.
        """
        if any(b"\r" in c or b"\n" in c for c in commands):
            # Callers encode what they pass on; a line break here would be a
            # second command smuggled to the peer.
            raise SMTPClientError("refusing to send a command with a line break in it")
        if pipelining:
            await self.write(b"".join(c + b"\r\n" for c in commands))
            return [await self.read_reply() for _ in commands]
        replies = []
        for command in commands:
            await self.write(command + b"\r\n")
            replies.append(await self.read_reply())
        return replies

    async def ehlo(self, name: str) -> Reply:
        """EHLO, remembering the extensions a 250 reply lists."""
        [reply] = await self.exchange([f"EHLO {name}".encode("ascii")], pipelining=False)
        if reply.code == 250:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.lower()] = params
        return reply

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        async with asyncio.timeout(self.timeout):
            await self._writer.start_tls(context, server_hostname=server_hostname)
        self.extensions = {}  # forgotten: only the EHLO after TLS counts (RFC 3207 §4.2)

    @property
    def is_tls(self) -> bool:
        return self._writer.get_extra_info("ssl_object") is not None

    async def quit(self) -> None:
        try:
            await self.exchange([b"QUIT"], pipelining=False)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection without a word."""
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()
