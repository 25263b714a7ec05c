"""SRS over real sockets: forwarded mail leaves with an SRS sender, bounces to it come back.

A real server process; an alias forwards to a peer on loopback; the original
sender's domain is another peer. The bounce is sent to the server's MX port
like any remote host's would be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiosmtplib
import pytest

from delivery.smtppeers import Peer
from postwarden.policy.srs import Srs
from serverproc import DOMAIN, HOSTNAME, ServerProcess

SENDER = "Joe@sender.example"


@dataclass
class Site:
    server: ServerProcess
    forward_to: Peer  # fine.example: where the alias forwards
    sender_home: Peer  # sender.example: where bounces to the original sender arrive


@pytest.fixture
async def site(make_server: Callable[..., ServerProcess]) -> AsyncIterator[Site]:
    peers = [Peer("fine.example"), Peer("sender.example")]
    ports = [await p.start() for p in peers]
    server = make_server(routes=[{"domain": d, "to": f"127.0.0.1:{port}"}
                                 for d, port in zip(("fine.example", "sender.example"), ports,
                                                    strict=True)])
    server.store.directory.add_alias(f"fwd@{DOMAIN}", ["someone@fine.example"])
    server.start()
    try:
        yield Site(server, *peers)
    finally:
        await asyncio.to_thread(server.stop)
        for peer in peers:
            await peer.close()


async def mx_send(site: Site, sender: str, rcpt: str, body: bytes) -> None:
    host, port = site.server.addr("smtp")
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
        await client.sendmail(sender, [rcpt], body)


@pytest.mark.slow
class TestSrs:
    async def test_forwarded_mail_gets_srs_and_its_bounce_reaches_the_sender(
        self, site: Site
    ) -> None:
        """The next hop sees SRS0@our hostname; a bounce to it is sent on to the original."""
        await mx_send(site, SENDER, f"fwd@{DOMAIN}",
                      b"From: <Joe@sender.example>\r\nSubject: hi\r\n\r\nforward me\r\n")
        [forwarded] = await site.forward_to.wait_messages(1)
        srs_sender = forwarded.sender
        assert srs_sender.startswith("SRS0=") and srs_sender.endswith(f"@{HOSTNAME}")
        local, _, domain = srs_sender.rpartition("@")
        key = (site.server.root / "var" / "srs.key").read_bytes()
        assert Srs(key, HOSTNAME, 21).reverse(local, domain, time.time()) == SENDER
        bounce_text = b"From: MAILER-DAEMON@fine.example\r\nSubject: undeliverable\r\n\r\nsorry\r\n"
        await mx_send(site, "", srs_sender, bounce_text)
        [bounce] = await site.sender_home.wait_messages(1)
        assert bounce.sender == "" and bounce.recipients == [SENDER]
        assert b"undeliverable" in bounce.data

    async def test_forged_srs_address_is_refused_at_rcpt(self, site: Site) -> None:
        """A made-up SRS address in our domain: 550 5.1.1, and nothing is sent anywhere."""
        host, port = site.server.addr("smtp")
        async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(f"SRS0=aaaaaa=aa=victim.example=them@{HOSTNAME}")
            assert refused.value.code == 550 and "5.1.1" in refused.value.message
        assert site.server.store.queue.queued_ids() == []
