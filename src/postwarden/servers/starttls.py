"""Dropping what a client sent in plaintext before a TLS upgrade, via public API only.

At STARTTLS (SMTP) and STLS (POP3) every octet the client sent before our
"go ahead" is plaintext that must not be obeyed once TLS is up: an attacker
on the path may have injected commands behind the client's (CVE-2011-0411).
The machines drop what they hold; this drops what asyncio's ``StreamReader``
holds and the session has not read yet.

``StreamReader`` has no public "discard"; it does have ``feed_data``, the call
its protocol uses to hand it input. So: put a marker no client can guess (16
random octets) behind the unread input, then read up to the marker. Both run
without awaiting the network, so nothing can arrive in between, and the caller
must send its go-ahead and start the TLS handover without yielding either.
"""

from __future__ import annotations

import asyncio
import os

# Each LimitOverrunError step drops at least the reader's limit (64 KiB), and the
# reader holds at most a few hundred KiB before asyncio stops reading the socket.
MAX_STEPS = 1000


async def drop_plaintext(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Drop every octet buffered in ``reader`` and stop reading the socket until
    the TLS layer takes it over; returns how many octets were dropped.

    Raises ConnectionResetError if the client already closed its side (no
    input may follow EOF, and there is nothing left to upgrade).
    """
    dropped = await _discard_unread(reader)
    # After the discard, which may resume reading: from here the ClientHello
    # stays in the socket for the TLS layer even if the handover has to wait.
    transport = writer.transport
    if isinstance(transport, asyncio.ReadTransport):
        transport.pause_reading()
    return dropped


async def _discard_unread(reader: asyncio.StreamReader) -> int:
    marker = os.urandom(16)
    try:
        reader.feed_data(marker)
    except AssertionError:  # asyncio asserts nothing is fed after EOF
        raise ConnectionResetError("client closed before the TLS handshake") from None
    dropped = 0
    for _ in range(MAX_STEPS):
        try:
            return dropped + len(await reader.readuntil(marker)) - len(marker)
        except asyncio.LimitOverrunError as exc:  # more than the limit before the marker
            dropped += len(await reader.readexactly(exc.consumed))
    raise RuntimeError("unread input did not end")  # unreachable: the buffer is finite
