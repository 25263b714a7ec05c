"""SRS over real sockets: forwarded mail leaves with an SRS sender, bounces to it come back.

A real server process; an alias forwards to a peer on loopback; the original
sender's domain is another peer. The bounce is sent to the server's MX port
like any remote host's would be. With [auth_checks] on (a loopback DNS
server publishing the senders' SPF), a bounce goes back only to a sender
that SPF or aligned DKIM vouched for when its mail came in. The next hop that checks SPF is a second
postwarden process with [auth_checks] on and a loopback DNS server: an
independent SPF check of what we send, not our evaluator called by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiosmtplib
import pytest

from delivery.dnsfake import ThreadedDNS
from delivery.smtppeers import Peer
from postwarden.cli import add_local_domain
from postwarden.delivery import dkimsign
from postwarden.policy.srs import Reversed, Srs
from serverproc import DOMAIN, HOSTNAME, PASSWORD, ServerProcess

SENDER = "Joe@sender.example"


@dataclass
class Site:
    server: ServerProcess
    forward_to: Peer  # fine.example: where the alias forwards
    sender_home: Peer  # sender.example: where bounces to the original sender arrive


@contextlib.asynccontextmanager
async def running_site(make_server: Callable[..., ServerProcess], homes: tuple[str, ...],
                       **overrides: object) -> AsyncIterator[Site]:
    """A started server whose alias fwd@ forwards to someone@fine.example (a peer); mail
    to the senders' domains (``homes``) goes to a second peer; alice is a local user."""
    peers = [Peer("fine.example"), Peer("sender.example")]
    ports = [await p.start() for p in peers]
    server = make_server(
        routes=[{"domain": "fine.example", "to": f"127.0.0.1:{ports[0]}"},
                *({"domain": d, "to": f"127.0.0.1:{ports[1]}"} for d in homes)],
        **overrides)
    server.store.directory.add_alias(f"fwd@{DOMAIN}", ["someone@fine.example"])
    server.add_user(f"alice@{DOMAIN}")
    server.start()
    try:
        yield Site(server, *peers)
    finally:
        await asyncio.to_thread(server.stop)
        for peer in peers:
            await peer.close()


@pytest.fixture
async def site(make_server: Callable[..., ServerProcess]) -> AsyncIterator[Site]:
    async with running_site(make_server, ("sender.example",)) as running:
        yield running


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
        # checks off: nothing is known against the sender, so it counts as proven (as before)
        assert Srs(key, HOSTNAME, 21).reverse(local, domain, time.time()) == Reversed(SENDER, True)
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


BOUNCE = b"From: MAILER-DAEMON@fine.example\r\nSubject: undeliverable\r\n\r\nsorry\r\n"


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> dkimsign.SigningKey:
    """An Ed25519 key for dkim.example, a domain with no SPF record."""
    key = dkimsign.generate(tmp_path_factory.mktemp("dkim"), "dkim.example", None,
                            "ed25519-sha256", time.time())
    return dkimsign.SigningKey(key, dkimsign.parse_private(key))


@pytest.fixture
async def checked_site(make_server: Callable[..., ServerProcess],
                       dkim_key: dkimsign.SigningKey) -> AsyncIterator[Site]:
    """As ``site``, with [auth_checks] on: SPF lets 127.0.0.1 send for sender.example,
    not for forged.example; nospf.example and dkim.example publish no SPF, dkim.example
    a DKIM key (and nobody has DMARC)."""
    key = dkim_key.key
    dns = ThreadedDNS({
        ("sender.example", "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
        ("forged.example", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],
        (f"{key.selector}._domainkey.dkim.example", "TXT"):
            [" ".join(f'"{t}"' for t in key.txt_strings())],
    })
    homes = ("sender.example", "forged.example", "nospf.example", "dkim.example")
    try:
        async with running_site(make_server, homes, dns={"nameservers": [f"127.0.0.1:{dns.port}"]},
                                auth_checks={"enabled": True, "dns_timeout_seconds": 3}) as running:
            yield running
    finally:
        dns.close()


async def forwarded_sender(site: Site, sender: str,
                           sign: dkimsign.SigningKey | None = None) -> str:
    """Send a stranger's message from ``sender`` (signed with ``sign``) to the forwarding
    alias; the envelope sender the next hop saw."""
    data = f"From: <{sender}>\r\nSubject: hi\r\n\r\nforward me\r\n".encode()
    if sign is not None:
        data = dkimsign.sign(data, [sign]) + data
    await mx_send(site, sender, f"fwd@{DOMAIN}", data)
    [forwarded] = await site.forward_to.wait_messages(1)
    return forwarded.sender


@pytest.mark.slow
class TestBouncesOnlyToProvenSenders:
    async def test_an_spf_passing_senders_bounce_reaches_it(self, checked_site: Site) -> None:
        srs_sender = await forwarded_sender(checked_site, SENDER)
        local, _, domain = srs_sender.rpartition("@")
        key = (checked_site.server.root / "var" / "srs.key").read_bytes()
        assert Srs(key, HOSTNAME, 21).reverse(local, domain, time.time()) == Reversed(SENDER, True)
        await mx_send(checked_site, "", srs_sender, BOUNCE)
        [bounce] = await checked_site.sender_home.wait_messages(1)
        assert bounce.sender == "" and bounce.recipients == [SENDER]

    async def test_an_aligned_dkim_signature_proves_the_sender_too(
            self, checked_site: Site, dkim_key: dkimsign.SigningKey) -> None:
        """No SPF record, but a DKIM pass for the MAIL FROM domain: the bounce is forwarded."""
        srs_sender = await forwarded_sender(checked_site, "Joe@dkim.example", dkim_key)
        assert "proof=dkim" in checked_site.server.wait_for_log("auth verdict", "dkim.example")
        await mx_send(checked_site, "", srs_sender, BOUNCE)
        [bounce] = await checked_site.sender_home.wait_messages(1)
        assert bounce.recipients == ["Joe@dkim.example"]

    @pytest.mark.parametrize("sender", ["Joe@forged.example", "Joe@nospf.example"])
    async def test_an_unproven_senders_bounce_is_refused_at_rcpt(
            self, checked_site: Site, sender: str) -> None:
        """SPF fail or none, no DKIM: the SRS address is valid, but says "unproven";
        the bounce gets 550 5.7.1 and the reason is logged; nothing goes to the sender."""
        srs_sender = await forwarded_sender(checked_site, sender)
        local, _, domain = srs_sender.rpartition("@")
        key = (checked_site.server.root / "var" / "srs.key").read_bytes()
        assert Srs(key, HOSTNAME, 21).reverse(local, domain, time.time()) == Reversed(
            sender, False)
        host, port = checked_site.server.addr("smtp")
        async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(srs_sender)
        assert refused.value.code == 550 and refused.value.message.startswith("5.7.1 ")
        assert "original sender" in refused.value.message
        line = checked_site.server.wait_for_log("srs refused", "neither SPF nor aligned DKIM")
        assert srs_sender.lower() in line.lower()
        assert checked_site.sender_home.messages == []

    async def test_an_authenticated_senders_bounce_reaches_it(self, checked_site: Site) -> None:
        """A logged-in user's mail needs no SRS (its sender is ours and vouched for): the
        next hop sees the user's address, and a bounce to it is delivered."""
        user = f"alice@{DOMAIN}"
        host, port = checked_site.server.addr("smtp")
        async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
            await client.login(user, PASSWORD)
            await client.sendmail(user, [f"fwd@{DOMAIN}"],
                                  f"From: <{user}>\r\nSubject: mine\r\n\r\nhi\r\n".encode())
        [forwarded] = await checked_site.forward_to.wait_messages(1)
        assert forwarded.sender == user
        await mx_send(checked_site, "", user, BOUNCE)
        deadline = time.monotonic() + 30
        while not checked_site.server.inbox(user):
            assert time.monotonic() < deadline, "the bounce did not reach the user"
            await asyncio.sleep(0.05)
        assert b"Subject: undeliverable" in checked_site.server.inbox(user)[0]


NEXT_HOP = "mx.fine.example"


@pytest.fixture
async def two_hops(make_server: Callable[..., ServerProcess]) -> AsyncIterator[
        tuple[ServerProcess, ServerProcess]]:
    """Our server forwards fwd@ to someone@fine.example, whose MX is a second postwarden
    with [auth_checks] on; its DNS (loopback) publishes SPF for our hostname (the SRS
    domain) and for sender.example, neither of which lets 127.0.0.1 send for the other."""
    dns = ThreadedDNS({
        (HOSTNAME, "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],  # the forwarder: us
        ("sender.example", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],  # the original sender
    })
    hop = make_server(dns={"nameservers": [f"127.0.0.1:{dns.port}"]},
                      auth_checks={"enabled": True, "dns_timeout_seconds": 3})
    hop.config_path.write_text(hop.config_path.read_text(encoding="utf-8").replace(
        f'hostname = "{HOSTNAME}"', f'hostname = "{NEXT_HOP}"', 1), encoding="utf-8")
    add_local_domain(hop.store.directory, "fine.example")
    hop.add_user("someone@fine.example")
    hop.start()
    host, port = hop.addr("smtp")
    ours = make_server(routes=[{"domain": "fine.example", "to": f"{host}:{port}"}])
    ours.store.directory.add_alias(f"fwd@{DOMAIN}", ["someone@fine.example"])
    ours.start()
    try:
        yield ours, hop
    finally:
        await asyncio.to_thread(ours.stop)
        await asyncio.to_thread(hop.stop)
        dns.close()


@pytest.mark.slow
async def test_forwarded_mail_passes_spf_at_a_next_hop_that_checks_it(
        two_hops: tuple[ServerProcess, ServerProcess]) -> None:
    """The second postwarden checks SPF for the SRS sender (our domain): spf=pass; the
    original sender's own SPF would have failed there (its record names another host)."""
    ours, hop = two_hops
    host, port = ours.addr("smtp")
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
        await client.sendmail(SENDER, [f"fwd@{DOMAIN}"],
                              b"From: <Joe@sender.example>\r\nSubject: via srs\r\n\r\nhi\r\n")
    deadline = time.monotonic() + 30
    while not (inbox := hop.inbox("someone@fine.example")):
        assert time.monotonic() < deadline, "the forwarded message did not arrive"
        await asyncio.sleep(0.05)
    head = inbox[0].split(b"\r\n\r\n", 1)[0].decode().replace("\r\n\t", " ")
    [results] = [f for f in head.split("\r\n") if f.startswith("Authentication-Results:")]
    assert results.startswith(f"Authentication-Results: {NEXT_HOP};")
    assert re.search(rf'spf=pass smtp\.mailfrom="SRS0=[^" ]+@{re.escape(HOSTNAME)}";', results)
    verdict = hop.wait_for_log("auth verdict", "SRS0=")
    assert "action=accept" in verdict
