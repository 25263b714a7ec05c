"""One log line when a connection opens, one when TLS starts, one when it closes.

The gate writes ``connect`` and ``disconnect`` for every listener, so SMTP,
POP3 and IMAP sessions read alike. The close line carries what the
protocol handler counted in the connection's ``Tally`` (reached through a
context variable: each session is its own task, so the handlers need no
new parameter) and the octets the kernel counted on the socket.

Octets come from Linux's ``TCP_INFO`` (``tcpi_bytes_received`` and
``tcpi_bytes_acked``, in the kernel since 4.2): one ``getsockopt`` at close
counts TLS records and STARTTLS alike, where counting in Python would need
a hook at every read and write of three servers. They are wire octets,
TLS framing included; elsewhere than Linux they are logged as ``-``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import struct
from dataclasses import dataclass

from postwarden.log import kv

log = logging.getLogger("postwarden")

# struct tcp_info (linux/tcp.h): u64 tcpi_bytes_acked at 120, tcpi_bytes_received at 128.
_TCP_INFO_BYTES = struct.Struct("=QQ")
_TCP_INFO_BYTES_OFFSET = 120
_TCP_INFO_SIZE = _TCP_INFO_BYTES_OFFSET + _TCP_INFO_BYTES.size


@dataclass(slots=True)
class Tally:
    """What one connection did, counted by its handler; logged when it closes."""

    listener: str = "-"
    client: str = "-"  # "ip:port" as the logs show it
    commands: int = 0  # command (and SASL) lines read
    messages: int = 0  # SMTP: accepted; POP3: retrieved; IMAP: appended
    wire: tuple[int, int] | None = None  # (in, out) octets, taken before the socket closes


_current: contextvars.ContextVar[Tally] = contextvars.ContextVar("connection_tally")


def start(listener: str, client: str) -> Tally:
    """The gate, as a session's task starts: the tally its handler adds to."""
    tally = Tally(listener, client)
    _current.set(tally)
    return tally


def current() -> Tally:
    """This session's tally (a loose one for a handler run outside the gate, as in tests)."""
    tally = _current.get(None)
    if tally is None:
        tally = Tally()
        _current.set(tally)
    return tally


def tls_started(writer: asyncio.StreamWriter) -> None:
    """The TLS line: version and cipher, after an implicit handshake or STARTTLS/STLS."""
    tls = writer.get_extra_info("ssl_object")
    if tls is None:
        return
    tally = current()
    cipher = tls.cipher()
    log.info(kv("tls", listener=tally.listener, client=tally.client, version=tls.version(),
                cipher=cipher[0] if cipher else None))


def closing(writer: asyncio.StreamWriter) -> None:
    """A handler about to close its socket (and wait for that): take the octet counts now."""
    current().wire = octets(writer.get_extra_info("socket"))


def octets(sock: socket.socket | None) -> tuple[int, int] | None:
    """(in, out) octets of a TCP socket so far, from the kernel; None if it cannot tell
    (not TCP, not Linux, or the socket already closed)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    sent, received = _TCP_INFO_BYTES.unpack_from(info, _TCP_INFO_BYTES_OFFSET)
    return received, sent


def closed(tally: Tally, sock: socket.socket, seconds: float) -> None:
    """The close line; the socket is asked for octets unless the handler already was."""
    wire = tally.wire or octets(sock)
    log.info(kv("disconnect", listener=tally.listener, client=tally.client,
                commands=tally.commands, messages=tally.messages,
                octets_in=wire[0] if wire else None, octets_out=wire[1] if wire else None,
                seconds=f"{seconds:.3f}"))
