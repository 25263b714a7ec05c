"""The gate's accepted connections: sent at once, without waiting on Nagle."""

from __future__ import annotations

import asyncio
import socket

from postwarden.config import HostPort
from postwarden.servers.common import ConnectionLimiter, Peer
from postwarden.servers.gate import Door, Gate, bind

TIMEOUT = 10


async def test_an_accepted_connection_has_tcp_nodelay() -> None:
    """asyncio turns Nagle off only on sockets made with proto IPPROTO_TCP; the
    listeners were made with proto 0, so a reply written in two parts (IMAP's
    untagged FETCH, then the tagged OK) waited for the client's delayed ACK,
    about 40 ms a STORE over loopback."""
    listener = bind(HostPort("127.0.0.1", 0))[0]
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: Peer) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    gate = Gate(ConnectionLimiter(10, 10, {}), asyncio.Event())
    gate.listen(listener, Door("imap", "imap", b"", None, TIMEOUT), handler)
    _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
    try:
        assert await asyncio.wait_for(nodelay, TIMEOUT) != 0
    finally:
        writer.close()
        gate.close()
