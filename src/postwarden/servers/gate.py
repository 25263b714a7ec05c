"""The door of every listener: accept, PROXY header, connection limits, then TLS.

``asyncio.start_server(ssl=...)`` runs the TLS handshake before our code
sees the connection, so limits applied in the handler came too late: 6,000
silent connections to pop3s were all accepted, each holding a TLS object
(issue 8, defect 3). Here the listening socket is ours: each accepted socket
is checked against the limits first (refused ones are closed at once), and
only an admitted one is handed to asyncio with ``connect_accepted_socket``,
which runs the handshake under ``handshake_timeout_seconds``.

A connection from a ``[listen] proxy_from`` network must start with a PROXY
header (HAProxy's spec: a receiver configured for it never guesses); the
limits, and everything after, then see the client it names. From anywhere
else a PROXY line is just a bad command to the protocol handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from postwarden.config import HostPort, IPAddress, Network
from postwarden.log import kv
from postwarden.metrics import Metrics
from postwarden.policy.relay import normalise_ip
from postwarden.protocol.proxy import ProxiedAddress, ProxyError, ProxyHeaderParser, ProxyLocal
from postwarden.servers import connlog
from postwarden.servers.common import ConnectionLimiter, Peer, peer_of_socket

log = logging.getLogger("postwarden")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
BACKLOG = 511
# asyncio stops reading a socket once twice this is buffered and unread: with
# the machines' own bounds, it caps what one connection can make us hold.
STREAM_LIMIT = 64 * 1024
ACCEPT_ERROR_PAUSE = 0.1  # out of file descriptors: let sessions end before accepting again


@dataclass(frozen=True, slots=True)
class Door:
    """What one listener admits and how: its service budget, TLS, and reply when full."""

    kind: str  # a key of [listen]
    service: str  # the budget it counts against
    busy: bytes  # sent to a refused plaintext client (a TLS client just sees the close)
    tls: ssl.SSLContext | None  # implicit TLS: handshake after admission
    handshake_timeout: float


def _where(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _client(peer: Peer) -> str:
    return _where(peer.client_ip, peer.client_port)


def bind(address: HostPort, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, as start_server binds;
    ``reuse_port`` lets twins (``twin``) share each port."""
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, where in dict.fromkeys(infos):
            sockets.append(_listening(family, where, reuse_port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def twin(sock: socket.socket) -> socket.socket:
    """Another listening socket on ``sock``'s address (bound with ``reuse_port``): the
    kernel spreads new connections over the twins (``serve --workers``)."""
    return _listening(sock.family, sock.getsockname(), reuse_port=True)


def _listening(family: int, where: tuple[Any, ...], reuse_port: bool) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say they are TCP, and accepted sockets inherit it; with Nagle a reply written in
    # two parts waited for the client's delayed ACK (an IMAP STORE took 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(where)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Gate:
    """Admits connections for every listener of one server process."""

    def __init__(self, limiter: ConnectionLimiter, shutdown: asyncio.Event,
                 proxy_from: tuple[Network, ...] = (), metrics: Metrics | None = None) -> None:
        self.limiter = limiter
        self.metrics = metrics or Metrics()
        self.shutdown = shutdown
        self.proxy_from = proxy_from  # who may tell us, with a PROXY header, who the client is
        self.sessions: set[asyncio.Task[None]] = set()
        self._accepting: list[asyncio.Task[None]] = []

    def listen(self, sock: socket.socket, door: Door, handler: Handler) -> None:
        self._accepting.append(asyncio.ensure_future(self._accept(sock, door, handler)))

    def close(self) -> None:
        """Stop accepting (each listening socket closes as its task ends); sessions go on."""
        for task in self._accepting:
            task.cancel()

    async def _accept(self, listener: socket.socket, door: Door, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    sock, _ = await loop.sock_accept(listener)
                except OSError as exc:  # EMFILE, ENFILE, ECONNABORTED: keep listening
                    log.warning(kv("accept-error", listener=door.kind,
                                   error=exc.strerror or exc))
                    await asyncio.sleep(ACCEPT_ERROR_PAUSE)
                    continue
                self._admit(sock, door, handler)
        finally:
            listener.close()

    def _admit(self, sock: socket.socket, door: Door, handler: Handler) -> None:
        """Synchronous, right after accept: a refused socket costs nothing more."""
        try:
            peer = peer_of_socket(sock)
        except OSError:  # the client is already gone
            sock.close()
            return
        proxied = any(peer.client_ip in net for net in self.proxy_from)
        if not proxied and not self._acquire(sock, peer, door):
            return
        task = asyncio.ensure_future(self._session(sock, peer, door, handler, proxied))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    def _acquire(self, sock: socket.socket, peer: Peer, door: Door) -> bool:
        """Take a slot for the client, or tell it the server is busy and close."""
        if not self.shutdown.is_set() and self.limiter.try_acquire(door.service,
                                                                   str(peer.client_ip)):
            return True
        self.metrics.connection_refused(door.kind, door.service)
        if door.tls is None:
            with contextlib.suppress(OSError):
                sock.send(door.busy)
        sock.close()
        return False

    async def _session(self, sock: socket.socket, peer: Peer, door: Door, handler: Handler,
                       proxied: bool) -> None:
        if proxied:
            real = await self._proxy_header(sock, peer, door)
            if real is None or not self._acquire(sock, real, door):
                return
            peer = real
        ip = str(peer.client_ip)
        writer: asyncio.StreamWriter | None = None
        self.metrics.connection_opened(door.kind, door.service)
        tally = connlog.start(door.kind, _client(peer))
        began = time.monotonic()
        log.info(kv("connect", listener=door.kind, client=tally.client,
                    local=_where(peer.local_ip, peer.local_port)))
        try:
            reader, writer = await self._streams(sock, door, peer)
            if writer is None:
                return
            connlog.tls_started(writer)  # implicit TLS: the handshake is done
            await handler(reader, writer, peer)
        except Exception:
            log.exception(kv("session-crash", listener=door.kind, ip=ip))
        finally:
            self.limiter.release(door.service, ip)
            self.metrics.connection_closed(door.service)
            connlog.closed(tally, sock, time.monotonic() - began)
            if writer is not None:
                writer.close()
            else:
                sock.close()

    async def _proxy_header(self, sock: socket.socket, peer: Peer, door: Door) -> Peer | None:
        """The real client from a PROXY header (None, socket closed, if there is none).

        Read straight from the socket, never past the header's end, so the
        bytes after it (a TLS ClientHello, say) are still there for the next layer.
        """
        loop = asyncio.get_running_loop()
        parser = ProxyHeaderParser()
        try:
            async with asyncio.timeout(door.handshake_timeout):
                while need := parser.need():  # bounded: the parser's need ends at its limits
                    data = await loop.sock_recv(sock, need)
                    if not data:
                        break
                    parser.feed(data)
        except (TimeoutError, OSError):
            pass
        real: Peer | None = None
        reason = "no complete header in time"
        match parser.result:
            case ProxiedAddress(source, source_port, destination, destination_port):
                real = Peer(normalise_ip(source), source_port, normalise_ip(destination),
                            destination_port)
            case ProxyLocal():
                real = peer
            case ProxyError(reason=why):
                reason = why
        if real is None:
            log.info(kv("proxy refused", listener=door.kind, via=peer.client_ip, reason=reason))
            sock.close()
            return None
        log.info(kv("proxy", listener=door.kind, ip=real.client_ip, via=peer.client_ip))
        return real

    async def _streams(self, sock: socket.socket, door: Door, peer: Peer,
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter | None]:
        """The socket as streams; for implicit TLS, after a handshake within the deadline.

        The protocol gets a connected callback, as start_server's do: that
        is how ``StreamWriter.start_tls`` (STARTTLS, STLS) knows it is the
        server side of the handshake.
        """
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        connected: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        protocol = asyncio.StreamReaderProtocol(
            reader, lambda _, writer: connected.set_result(writer), loop=loop)
        try:
            await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=door.tls,
                ssl_handshake_timeout=door.handshake_timeout if door.tls else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info(kv("tls handshake-failed", listener=door.kind, ip=peer.client_ip,
                        error=str(exc)[:120]))
            return reader, None
        return reader, await connected
