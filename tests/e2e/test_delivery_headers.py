"""Local delivery's Return-Path and Delivered-To, as POP3 and IMAP clients see them.

One SMTP transaction to two local accounts stores one file; each mailbox
copy starts with its own two header lines, held by the store. Every way of
reading a copy (RETR, TOP, LIST, FETCH of the whole, of its header, of a
part with a partial range, RFC822.SIZE, SEARCH HEADER) must see the same
message.
"""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import re
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from delivery.smtppeers import Peer
from serverproc import DOMAIN, PASSWORD, ServerProcess

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SENDER = "sender@remote.test"
PART_ONE = b"Part one body text, long enough for a partial.\r\n"
MESSAGE = (b"Return-Path: <forged@evil.test>\r\n"  # the client's own: removed at intake
           b"From: sender@remote.test\r\nSubject: two parts\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\n" + PART_ONE
           + b"--XX\r\nContent-Type: text/plain\r\n\r\nPart two.\r\n--XX--\r\n")
TIMEOUT = 30


def delivery_lines(account: str) -> bytes:
    return f"Return-Path: <{SENDER}>\r\nDelivered-To: {account}\r\n".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("delivery-headers")
    srv = ServerProcess(root, listen={"imap": ["127.0.0.1:0"]})
    srv.add_user(ALICE)
    srv.add_user(BOB)
    srv.start()
    with smtplib.SMTP(*srv.addr("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail(SENDER, [ALICE, BOB], MESSAGE)
    yield srv
    srv.stop()


def pop3(server: ServerProcess, account: str) -> poplib.POP3:
    client = poplib.POP3(*server.addr("pop3"), timeout=TIMEOUT)
    client.user(account)
    client.pass_(PASSWORD)
    return client


def imap(server: ServerProcess, account: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
    client.login(account, PASSWORD)
    client.select("INBOX", readonly=True)
    return client


def fetched(client: imaplib.IMAP4, item: str) -> bytes:
    """The one section FETCH answered, as a literal or (short ones) a quoted string."""
    status, data = client.fetch("1", f"({item})")
    assert status == "OK", data
    if isinstance(data[0], tuple):
        return data[0][1]
    quoted = re.fullmatch(rb'1 \(\S+ "(.*)"\)', data[0] or b"")
    assert quoted is not None, data
    return quoted.group(1)


@pytest.mark.parametrize("account", [ALICE, BOB])
def test_pop3_retr_top_and_list_see_the_copys_own_lines(server: ServerProcess,
                                                        account: str) -> None:
    """RETR starts with this copy's Return-Path and Delivered-To, the forged one gone;
    LIST and RETR's octet count equal the bytes sent; TOP shows them in the header."""
    client = pop3(server, account)
    try:
        listed = int(client.list(1).split()[2])
        response, lines, _ = client.retr(1)
        top = client.top(1, 0)[1]
    finally:
        client.quit()
    message = b"\r\n".join(lines) + b"\r\n"
    assert message.startswith(delivery_lines(account) + b"Received: from ")
    assert message.count(b"Return-Path:") == 1 and b"forged@evil.test" not in message
    assert message.endswith(MESSAGE[MESSAGE.index(b"From: "):])
    assert listed == len(message) == int(response.split()[1])
    assert b"\r\n".join(top[:2]) + b"\r\n" == delivery_lines(account)


@pytest.mark.parametrize("account", [ALICE, BOB])
def test_imap_sections_sizes_and_offsets_agree(server: ServerProcess, account: str) -> None:
    """BODY[] is what POP3 sends; RFC822.SIZE its length; HEADER, TEXT, HEADER.FIELDS and
    a partial of part 1 are cut from that same message, past the copy's own lines."""
    client = pop3(server, account)
    try:
        message = b"\r\n".join(client.retr(1)[1]) + b"\r\n"
    finally:
        client.quit()
    end_of_header = message.index(b"\r\n\r\n") + 4
    c = imap(server, account)
    try:
        assert fetched(c, "BODY.PEEK[]") == message
        status, data = c.fetch("1", "(RFC822.SIZE)")
        size = re.search(rb"RFC822\.SIZE (\d+)", data[0] or b"")
        assert status == "OK"
        assert size is not None and int(size.group(1)) == len(message)
        assert fetched(c, "BODY.PEEK[HEADER]") == message[:end_of_header]
        assert fetched(c, "BODY.PEEK[TEXT]") == message[end_of_header:]
        assert fetched(c, "BODY.PEEK[HEADER.FIELDS (DELIVERED-TO RETURN-PATH)]") == (
            delivery_lines(account) + b"\r\n")
        assert fetched(c, "BODY.PEEK[1]<0.10>") == PART_ONE[:10]
        assert fetched(c, "BODY.PEEK[1]") == PART_ONE[:-2]  # the CRLF before "--XX" is not its
        assert fetched(c, "BINARY.PEEK[2]") == b"Part two."
        other = BOB if account == ALICE else ALICE
        assert c.search(None, "HEADER", "Delivered-To", account) == ("OK", [b"1"])
        assert c.search(None, "HEADER", "Delivered-To", other) == ("OK", [b""])
        assert c.search(None, "LARGER", str(len(message) - 1)) == ("OK", [b"1"])
        assert c.search(None, "LARGER", str(len(message))) == ("OK", [b""])
    finally:
        c.logout()


def test_imap_append_gets_no_delivery_lines(server: ServerProcess) -> None:
    """An APPENDed message is stored as the client gave it."""
    c = imap(server, ALICE)
    try:
        data = b"From: alice@example.test\r\nSubject: draft\r\n\r\nnot delivered\r\n"
        assert c.append("Drafts", None, None, data)[0] == "OK"
        c.select("Drafts", readonly=True)
        assert fetched(c, "BODY.PEEK[]") == data
    finally:
        c.logout()


async def test_the_copy_leaving_through_the_queue_has_neither(
        make_server: Callable[..., ServerProcess]) -> None:
    """One message to a local account and a routed remote one: only the mailbox copy
    gets Return-Path and Delivered-To; the relayed one leaves without the forged one too."""
    peer = Peer()
    port = await peer.start()
    server = make_server(routes=[{"domain": "partner.example", "to": f"127.0.0.1:{port}"}],
                         relay={"trusted_networks": ["127.0.0.0/8"]})
    server.add_user(ALICE)
    server.start()
    try:
        def send() -> None:
            with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
                smtp.sendmail(SENDER, [ALICE, "ann@partner.example"], MESSAGE)

        await asyncio.to_thread(send)
        [relayed] = await peer.wait_messages(1, timeout=TIMEOUT)

        def retr() -> bytes:
            client = pop3(server, ALICE)
            try:
                return b"\r\n".join(client.retr(1)[1]) + b"\r\n"
            finally:
                client.quit()

        local = await asyncio.to_thread(retr)
    finally:
        await asyncio.to_thread(server.stop)  # the peer lives on this loop: keep it running
        await peer.close()
    assert local.startswith(delivery_lines(ALICE))
    assert b"Return-Path:" not in relayed.data and b"Delivered-To:" not in relayed.data
    assert relayed.data.endswith(local[len(delivery_lines(ALICE)):])
