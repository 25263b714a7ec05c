"""Session against scripted SMTP servers: refusals at every step, and odd but legal peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from postwarden.delivery.outbound import (
    HostUnavailable,
    Outcome,
    OutMessage,
    OutRecipient,
    Session,
)
from postwarden.delivery.resolver import Hop

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


@dataclass
class Scripted:
    """Replies by verb; every command line received is kept."""

    greeting: str = "220 peer.test ESMTP"
    replies: dict[str, str] = field(default_factory=dict)
    extensions: tuple[str, ...] = ("PIPELINING",)
    received: list[str] = field(default_factory=list)

    def reply(self, verb: str) -> str:
        defaults = {"MAIL": "250 2.1.0 ok", "RCPT": "250 2.1.5 ok", "DATA": "354 go",
                    ".": "250 2.0.0 queued", "RSET": "250 2.0.0 ok", "QUIT": "221 bye",
                    "STARTTLS": "454 4.7.0 TLS not available"}
        return self.replies.get(verb, defaults.get(verb, "500 5.5.1 what?"))

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{self.greeting}\r\n".encode())
        while line := await reader.readline():
            command = line.decode().rstrip("\r\n")
            self.received.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if "EHLO" in self.replies:
                    writer.write(f"{self.replies['EHLO']}\r\n".encode())
                    continue
                lines = ["peer.test", *self.extensions]
                writer.write("".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n"
                                     for i, x in enumerate(lines)).encode())
                continue
            answer = self.reply(verb)
            writer.write(f"{answer}\r\n".encode())
            if verb == "DATA" and answer.startswith("354"):
                size = 0  # the data ends at the first line that is a lone dot
                while (data_line := await reader.readline()) not in (b".\r\n", b""):
                    size += len(data_line)
                self.received.append(f"<{size} bytes>")
                writer.write(f"{self.reply('.')}\r\n".encode())
            if verb == "QUIT":
                break
        writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Scripted], Awaitable[Hop]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Scripted) -> Hop:
        server = await asyncio.start_server(script.session, "127.0.0.1", 0)
        servers.append(server)
        return Hop("peer.test", "127.0.0.1", int(server.sockets[0].getsockname()[1]))

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def out(*recipients: str) -> OutMessage:
    return OutMessage("a@local.test", tuple(OutRecipient(r, (), None) for r in recipients),
                      MESSAGE, None, None, False)


async def open_session(hop: Hop) -> Session:
    return await Session.open([hop], "us.test", 5, 5)


@pytest.mark.parametrize(
    ("script", "reply"),
    [
        (Scripted(greeting="554 5.7.1 go away"), "554 5.7.1 go away"),
        (Scripted(replies={"EHLO": "421 4.3.2 too busy"}), "421 4.3.2 too busy"),
    ],
)
async def test_a_refusing_host_is_unavailable_with_its_words(
    peer: Callable[[Scripted], Awaitable[Hop]], script: Scripted, reply: str
) -> None:
    """A refused greeting or EHLO: the next MX is tried, and the reply is kept for reports."""
    hop = await peer(script)
    with pytest.raises(HostUnavailable) as refused:
        await open_session(hop)
    assert (refused.value.reply, refused.value.remote_mta) == (reply, "peer.test")


async def test_refused_starttls_goes_on_in_plain_text(
    peer: Callable[[Scripted], Awaitable[Hop]],
) -> None:
    """Opportunistic TLS: a 454 to STARTTLS is not a reason to keep the mail."""
    script = Scripted(extensions=("PIPELINING", "STARTTLS"))
    session = await open_session(await peer(script))
    assert not session.tls
    [result] = await session.send(out("bob@remote.test"))
    assert result.outcome is Outcome.SENT
    await session.close()
    assert script.received[:2] == ["EHLO us.test", "STARTTLS"]


async def test_refused_sender_is_every_recipients_answer(
    peer: Callable[[Scripted], Awaitable[Hop]],
) -> None:
    """550 to MAIL fails each recipient with that reply; RSET keeps the session usable."""
    script = Scripted(replies={"MAIL": "550 5.7.1 sender rejected", "DATA": "503 5.5.1 no"})
    session = await open_session(await peer(script))
    results = await session.send(out("bob@remote.test", "carol@remote.test"))
    assert [(r.outcome, r.reply) for r in results] == [
        (Outcome.FAILED, "550 5.7.1 sender rejected")] * 2
    assert not session.broken and script.received[-1] == "RSET"
    await session.close()


async def test_refused_data_is_the_answer_for_accepted_recipients(
    peer: Callable[[Scripted], Awaitable[Hop]],
) -> None:
    """A 451 to DATA defers the recipients RCPT had accepted."""
    script = Scripted(replies={"DATA": "451 4.3.0 try later"})
    session = await open_session(await peer(script))
    [result] = await session.send(out("bob@remote.test"))
    assert (result.outcome, result.reply) == (Outcome.DEFERRED, "451 4.3.0 try later")
    await session.close()


async def test_data_accepted_with_nobody_to_deliver_to_is_ended_empty(
    peer: Callable[[Scripted], Awaitable[Hop]],
) -> None:
    """A peer that says 354 after refusing every RCPT gets only the end-of-data dot."""
    script = Scripted(replies={"RCPT": "550 5.1.1 no such user", ".": "554 5.5.1 no valid rcpt"})
    session = await open_session(await peer(script))
    [result] = await session.send(out("bob@remote.test"))
    assert (result.outcome, result.reply) == (Outcome.FAILED, "550 5.1.1 no such user")
    assert "<0 bytes>" in script.received  # nothing but the ending dot
    await session.close()


async def test_a_peer_that_hangs_up_during_ehlo_is_unavailable(
    peer: Callable[[Scripted], Awaitable[Hop]],
) -> None:
    """A connection lost before the session starts leaves the recipients waiting (4.4.2)."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test\r\n")
        await reader.readline()
        writer.close()

    script = Scripted()
    script.session = hang_up  # type: ignore[method-assign]
    with pytest.raises(HostUnavailable) as lost:
        await open_session(await peer(script))
    assert lost.value.reply.startswith("451 4.4.2 Connection with peer.test lost")
