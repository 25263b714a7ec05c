"""Submission to delivery through a real server process and real receiving peers."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import Callable

import aiosmtplib

from delivery.smtppeers import Peer
from serverproc import DOMAIN, PASSWORD, ServerProcess

USER = f"olga@{DOMAIN}"


async def first_inbox_message(server: ServerProcess, account: str) -> bytes:
    """Bounded poll of observable state: the report the queue manager delivers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        inbox = server.inbox(account)
        if inbox:
            return inbox[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived in {account}'s INBOX")


async def submit(server: ServerProcess, *rcpts: str, subject: str) -> str:
    host, port = server.addr("submission")
    errors, text = await aiosmtplib.send(
        f"Subject: {subject}\r\nFrom: {USER}\r\n\r\nbody of {subject}\r\n".encode(),
        sender=USER, recipients=list(rcpts), hostname=host, port=port, start_tls=True,
        validate_certs=False, username=USER, password=PASSWORD,
    )
    assert errors == {}
    return text.split()[-1]


async def test_submitted_mail_arrives_with_our_received_header(
    make_server: Callable[..., ServerProcess],
) -> None:
    """Authenticated submission to a routed domain reaches the peer, trace intact."""
    peer = Peer()
    port = await peer.start()
    server = make_server(routes=[{"domain": "partner.example", "to": f"127.0.0.1:{port}"}])
    server.add_user(USER)
    server.start()
    try:
        queue_id = await submit(server, "ann@partner.example", subject="outbound")
        [tx] = await peer.wait_messages(1, timeout=30)
        assert tx.sender == USER and tx.recipients == ["ann@partner.example"]
        msg = email.message_from_bytes(tx.data)
        assert f"with ESMTPSA id {queue_id}" in msg["Received"]
        assert msg["Subject"] == "outbound"
    finally:
        await asyncio.to_thread(server.stop)  # the peer lives on this loop: keep it running
        await peer.close()
    # The same queue ID links reception to delivery in the log.
    server.wait_for_log("smtp transaction", queue_id)
    server.wait_for_log("delivery queue_id=", queue_id, "outcome=sent")


async def test_refusing_peer_produces_ndr_in_sender_inbox(
    make_server: Callable[..., ServerProcess],
) -> None:
    """A remote 550 5.7.1 comes back as an RFC 3464 report quoting the reply."""
    peer = Peer(on_rcpt=lambda _: "550 5.7.1 Unable to relay")
    port = await peer.start()
    server = make_server(routes=[{"domain": "*.strict.example", "to": f"127.0.0.1:{port}"}])
    server.add_user(USER)
    server.start()
    try:
        await submit(server, "zed@mx.strict.example", subject="refused")
        report = email.message_from_bytes(await first_inbox_message(server, USER))
        assert report.get_content_type() == "multipart/report"
        status = next(p for p in report.walk()
                      if p.get_content_type() == "message/delivery-status")
        fields = "\n".join(str(block) for block in status.get_payload())
        assert "Diagnostic-Code: smtp; 550 5.7.1 Unable to relay" in fields
        assert "Action: failed" in fields
    finally:
        await asyncio.to_thread(server.stop)  # the peer lives on this loop: keep it running
        await peer.close()

