"""Dropping unread plaintext before a TLS upgrade, on a real asyncio StreamReader.

The sessions over real sockets (STARTTLS/STLS tests in test_smtp_server.py
and test_pop3_server.py) go through the same code; these pin down the cases
a socket test cannot reach on purpose: more buffered than one read takes,
more than the reader's limit, and a client that closed already.
"""

from __future__ import annotations

import asyncio

import pytest

from postwarden.servers.starttls import _discard_unread


@pytest.mark.parametrize("size", [0, 10, 64 * 1024 - 1, 300_000])
async def test_everything_buffered_is_dropped_and_later_input_is_kept(size: int) -> None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data((b"MAIL FROM:<injected@evil.example>\r\n" + b"n" * size)[:size])
    assert await _discard_unread(reader) == size
    reader.feed_data(b"EHLO after-tls.test\r\n")
    assert await reader.read(1000) == b"EHLO after-tls.test\r\n"


async def test_a_client_that_closed_cannot_be_upgraded() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"NOOP\r\n")
    reader.feed_eof()
    with pytest.raises(ConnectionResetError):
        await _discard_unread(reader)
