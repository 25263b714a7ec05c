"""The outbound SMTP connection against scripted servers on loopback: replies, good and bad."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from postwarden.delivery.smtpclient import (
    LINE_LIMIT,
    MAX_REPLY_LINES,
    Reply,
    SMTPClientError,
    SMTPConnection,
    dot_stuff,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> int:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await script(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(client, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def greeting_then(data: bytes, *, hold: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if hold:
            await reader.read()  # keep the connection open until the client goes

    return script


async def test_multi_line_reply_is_one_reply(serve: Callable[[Script], Awaitable[int]]) -> None:
    """Continuation lines belong to one reply; its text reads as one line."""
    port = await serve(greeting_then(b"220-mx.test hello\r\n220-more\r\n220 ready\r\n"))
    conn, greeting = await SMTPConnection.connect("127.0.0.1", port, 5, 5)
    assert greeting == Reply(220, ("mx.test hello", "more", "ready"))
    assert greeting.text == "220 mx.test hello more ready"
    conn.abort()


async def test_ehlo_remembers_extensions(serve: Callable[[Script], Awaitable[int]]) -> None:
    """Keywords are case-folded, with their parameters."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test\r\n")
        assert (await reader.readline()).startswith(b"EHLO us.test")
        writer.write(b"250-mx.test\r\n250-SIZE 1000\r\n250-Pipelining\r\n250 DSN\r\n")
        await reader.read()

    port = await serve(script)
    conn, _ = await SMTPConnection.connect("127.0.0.1", port, 5, 5)
    assert (await conn.ehlo("us.test")).code == 250
    assert conn.extensions == {"size": "1000", "pipelining": "", "dsn": ""}
    conn.abort()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"hello there\r\n", "not an SMTP reply"),
        (b"220+odd\r\n", "not an SMTP reply"),
        ("²²⁰ digits, but not ASCII ones\r\n".encode(), "not an SMTP reply"),
        (b"220-only half of a reply\r\n", "closed"),
        (b"220 " + b"x" * (LINE_LIMIT + 10), "too long"),
        (b"220-x\r\n" * (MAX_REPLY_LINES + 1), "too many lines"),
    ],
)
async def test_garbage_is_a_connection_error_not_a_crash(
    serve: Callable[[Script], Awaitable[int]], data: bytes, words: str
) -> None:
    """Whatever a peer sends, the answer is SMTPClientError, which defers the recipients."""
    port = await serve(greeting_then(data, hold=words != "closed"))
    with pytest.raises(SMTPClientError, match=words):
        await SMTPConnection.connect("127.0.0.1", port, 5, 5)


async def test_a_silent_peer_times_out(serve: Callable[[Script], Awaitable[int]]) -> None:
    """No greeting at all: the read is bounded by the command timeout."""
    port = await serve(greeting_then(b"", hold=True))
    with pytest.raises(TimeoutError):
        await SMTPConnection.connect("127.0.0.1", port, 5, 0.05)


async def test_pipelined_group_reads_every_reply_in_order(
    serve: Callable[[Script], Awaitable[int]],
) -> None:
    """Three commands in one write, three replies that arrive in one packet."""
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test\r\n")
        for _ in range(3):
            received.append(await reader.readline())
        writer.write(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n")
        await reader.read()

    port = await serve(script)
    conn, _ = await SMTPConnection.connect("127.0.0.1", port, 5, 5)
    replies = await conn.exchange([b"MAIL FROM:<a@b.test>", b"RCPT TO:<c@d.test>", b"DATA"],
                                  pipelining=True)
    assert [r.code for r in replies] == [250, 550, 354]
    assert replies[1].text == "550 5.1.1 no such user"
    assert received == [b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n", b"DATA\r\n"]
    conn.abort()


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".starts\r\n.\r\nmid.dle\r\n", b"..starts\r\n..\r\nmid.dle\r\n.\r\n"),
        (b"no final line end", b"no final line end\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    """RFC 5321 §4.5.2: a leading dot is doubled; the message ends with CRLF.CRLF."""
    assert dot_stuff(data) == wire


async def test_a_command_with_a_line_break_is_never_sent(
    serve: Callable[[Script], Awaitable[int]],
) -> None:
    """The last guard against command smuggling: nothing is written, the caller learns why."""
    received: list[bytes] = []
    done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test\r\n")
        try:
            received.append(await reader.read())
        except ConnectionError:
            received.append(b"")
        done.set()

    port = await serve(script)
    conn, _ = await SMTPConnection.connect("127.0.0.1", port, 5, 5)
    with pytest.raises(SMTPClientError, match="line break"):
        await conn.exchange([b"RCPT TO:<a@b.test>\r\nRCPT TO:<evil@x>"], pipelining=True)
    conn.abort()
    await asyncio.wait_for(done.wait(), 10)
    assert received == [b""]
