"""Backscatter through forwarding aliases: reports to senders nobody vouched for.

A stranger may write any victim's address in MAIL FROM and send to one of our
aliases that forwards off-site. Reports about such a message carry its
headers only (whatever RET says) and no success notice goes out for it; an
authenticated sender keeps RET=FULL and NOTIFY=SUCCESS. With sender checks
on, a stranger whose domain passed neither SPF nor aligned DKIM gets no
report at all. Real server process,
real receiving peers on loopback, the reports delivered over SMTP.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiosmtplib
import pytest

from delivery.dnsfake import ThreadedDNS
from delivery.smtppeers import Peer
from serverproc import DOMAIN, PASSWORD, ServerProcess

VICTIM = "victim@elsewhere.example"
ALICE = f"alice@{DOMAIN}"
SECRET = "SECRET-BODY-LINE that only the recipients should see"
REFUSED = "550 5.1.1 No such user here"


def letter(sender: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <list@{DOMAIN}>\r\nSubject: forwarded\r\n"
            f"Message-ID: <bs-{time.monotonic_ns()}@test>\r\n\r\n{SECRET}\r\n").encode()


@dataclass
class Site:
    server: ServerProcess
    gone: Peer  # partner.example: refuses every recipient with 550
    fine: Peer  # fine.example: accepts, no DSN (so we would report "relayed")
    dsn: Peer  # dsnpeer.example: accepts and offers DSN (we pass RET/NOTIFY on)
    victim: Peer  # elsewhere.example: where reports to the victim arrive
    vouched: Peer | None = None  # vouched.example: a sender whose SPF passes


@pytest.fixture
async def site(make_server: Callable[..., ServerProcess]) -> AsyncIterator[Site]:
    peers = [
        Peer("partner.example", on_rcpt=lambda _: REFUSED),
        Peer("fine.example"),
        Peer("dsnpeer.example", extensions=("PIPELINING", "8BITMIME", "DSN")),
        Peer("elsewhere.example"),
    ]
    ports = [await p.start() for p in peers]
    domains = ("partner.example", "fine.example", "dsnpeer.example", "elsewhere.example")
    server = make_server(routes=[{"domain": d, "to": f"127.0.0.1:{port}"}
                                 for d, port in zip(domains, ports, strict=True)])
    server.add_user(ALICE)
    server.store.directory.add_alias(f"fwd-gone@{DOMAIN}", ["x@partner.example"])
    server.store.directory.add_alias(f"fwd-fine@{DOMAIN}", ["y@fine.example"])
    server.store.directory.add_alias(f"fwd-dsn@{DOMAIN}", ["z@dsnpeer.example"])
    server.start()
    try:
        yield Site(server, *peers)
    finally:
        await asyncio.to_thread(server.stop)  # the peers live on this loop: keep them running
        for peer in peers:
            await peer.close()


async def send(site: Site, sender: str, rcpts: dict[str, str], *, login: bool) -> None:
    """One transaction with per-recipient NOTIFY; RET=FULL always asked for."""
    host, port = site.server.addr("submission" if login else "smtp")
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=login, validate_certs=False)
    async with client:
        if login:
            await client.login(ALICE, PASSWORD)
        await client.mail(sender, options=["RET=FULL"])
        for rcpt, notify in rcpts.items():
            await client.rcpt(rcpt, options=[f"NOTIFY={notify}"])
        await client.data(letter(sender))


async def queue_drained(server: ServerProcess) -> None:
    """Bounded poll: every message and every report has left the queue."""
    deadline = time.monotonic() + 30
    while server.store.queue.queued_ids():
        assert time.monotonic() < deadline, "the queue did not drain"
        await asyncio.sleep(0.05)


def parts(report: bytes) -> dict[str, email.message.Message]:
    msg = email.message_from_bytes(report)
    assert msg.get_content_type() == "multipart/report"
    return {p.get_content_type(): p for p in msg.walk()}


def action_of(report: bytes) -> str:
    status = parts(report)["message/delivery-status"].get_payload()
    assert isinstance(status, list)
    return str(status[1]["Action"])


class TestReportsToAStranger:
    async def test_failure_report_carries_headers_only_and_no_success_notice(
        self, site: Site
    ) -> None:
        """RET=FULL from an unauthenticated client: the NDR quotes headers, no 'relayed' notice."""
        await send(site, VICTIM, {f"fwd-gone@{DOMAIN}": "FAILURE,SUCCESS",
                                  f"fwd-fine@{DOMAIN}": "SUCCESS"}, login=False)
        await site.fine.wait_messages(1, timeout=30)
        await site.victim.wait_messages(1, timeout=30)
        await queue_drained(site.server)
        [report] = site.victim.messages
        assert report.sender == "" and report.recipients == [VICTIM]
        assert action_of(report.data) == "failed"
        found = parts(report.data)
        assert "text/rfc822-headers" in found and "message/rfc822" not in found
        assert b"Subject: forwarded" in report.data
        assert SECRET.encode() not in report.data

    async def test_next_hop_is_asked_for_headers_only_and_no_success(self, site: Site) -> None:
        """A DSN-capable next hop gets RET=HDRS and NOTIFY without SUCCESS for a stranger."""
        await send(site, VICTIM, {f"fwd-dsn@{DOMAIN}": "SUCCESS"}, login=False)
        [tx] = await site.dsn.wait_messages(1, timeout=30)
        assert "RET=HDRS" in tx.mail_params and "RET=FULL" not in tx.mail_params
        assert tx.rcpt_params[0][0] == "NOTIFY=NEVER"
        await queue_drained(site.server)
        assert site.victim.messages == []


class TestReportsToAnAuthenticatedSender:
    async def test_failure_report_returns_the_message_and_success_is_reported(
        self, site: Site
    ) -> None:
        """Alice logged in: RET=FULL is honoured and NOTIFY=SUCCESS gets its 'relayed' notice."""
        await send(site, ALICE, {"x@partner.example": "FAILURE",
                                 "y@fine.example": "SUCCESS"}, login=True)
        deadline = time.monotonic() + 30
        while len(inbox := site.server.inbox(ALICE)) < 2:
            assert time.monotonic() < deadline, "the two reports did not arrive"
            await asyncio.sleep(0.05)
        by_action = {action_of(r): r for r in inbox}
        assert set(by_action) == {"failed", "relayed"}
        failed = parts(by_action["failed"])
        assert "message/rfc822" in failed and "text/rfc822-headers" not in failed
        assert SECRET.encode() in by_action["failed"]

    async def test_next_hop_gets_ret_full_and_notify_success(self, site: Site) -> None:
        """The DSN options of a vouched-for sender pass on to the next hop unchanged."""
        await send(site, ALICE, {"z@dsnpeer.example": "SUCCESS"}, login=True)
        [tx] = await site.dsn.wait_messages(1, timeout=30)
        assert "RET=FULL" in tx.mail_params
        assert tx.rcpt_params[0][0] == "NOTIFY=SUCCESS"


SPF_FAILS = "v=spf1 ip4:192.0.2.1 -all"  # the test client is 127.0.0.1
SPF_PASSES = "v=spf1 ip4:127.0.0.0/8 -all"
VOUCHED = "someone@vouched.example"


@pytest.fixture
async def checked_site(make_server: Callable[..., ServerProcess]) -> AsyncIterator[Site]:
    """As ``site``, with [auth_checks] on and a loopback DNS server publishing SPF records:
    elsewhere.example (the victim's domain) fails for our test client, vouched.example passes."""
    peers = [
        Peer("partner.example", on_rcpt=lambda _: REFUSED),
        Peer("fine.example"),
        Peer("dsnpeer.example", extensions=("PIPELINING", "8BITMIME", "DSN")),
        Peer("elsewhere.example"),
        Peer("vouched.example"),
    ]
    ports = [await p.start() for p in peers]
    domains = ("partner.example", "fine.example", "dsnpeer.example", "elsewhere.example",
               "vouched.example")
    dns = ThreadedDNS({("elsewhere.example", "TXT"): [f'"{SPF_FAILS}"'],
                       ("vouched.example", "TXT"): [f'"{SPF_PASSES}"']})
    server = make_server(routes=[{"domain": d, "to": f"127.0.0.1:{port}"}
                                 for d, port in zip(domains, ports, strict=True)],
                         dns={"nameservers": [f"127.0.0.1:{dns.port}"]},
                         auth_checks={"enabled": True, "dns_timeout_seconds": 3})
    server.store.directory.add_alias(f"fwd-gone@{DOMAIN}", ["x@partner.example"])
    server.store.directory.add_alias(f"fwd-dsn@{DOMAIN}", ["z@dsnpeer.example"])
    server.start()
    try:
        yield Site(server, peers[0], peers[1], peers[2], peers[3], vouched=peers[4])
    finally:
        await asyncio.to_thread(server.stop)
        for peer in peers:
            await peer.close()
        dns.close()


class TestReportsOnlyToAuthenticatedSenders:
    async def test_no_report_to_a_sender_that_failed_spf(self, checked_site: Site) -> None:
        """The forwarded copy is refused; the victim, whose SPF failed, gets no NDR (logged)."""
        site = checked_site
        await send(site, VICTIM, {f"fwd-gone@{DOMAIN}": "FAILURE"}, login=False)
        line = await asyncio.to_thread(site.server.wait_for_log, "report-suppressed",
                                       f"to={VICTIM}")
        assert "neither SPF nor DKIM" in line
        await queue_drained(site.server)
        assert site.victim.messages == []
        verdict = site.server.wait_for_log("auth verdict", f"sender=<{VICTIM}>")
        assert "proof=none" in verdict

    async def test_a_sender_whose_spf_passed_gets_its_report(self, checked_site: Site) -> None:
        """Same path from a domain whose SPF passes: the NDR (headers only) reaches it."""
        site = checked_site
        assert site.vouched is not None
        await send(site, VOUCHED, {f"fwd-gone@{DOMAIN}": "FAILURE"}, login=False)
        [report] = await site.vouched.wait_messages(1, timeout=30)
        assert report.sender == "" and report.recipients == [VOUCHED]
        assert action_of(report.data) == "failed"
        assert "text/rfc822-headers" in parts(report.data)

    async def test_the_next_hop_is_asked_for_no_report_either(self, checked_site: Site) -> None:
        """A DSN-capable next hop gets NOTIFY=NEVER for the unvouched sender's message."""
        site = checked_site
        await send(site, VICTIM, {f"fwd-dsn@{DOMAIN}": "FAILURE,DELAY"}, login=False)
        [tx] = await site.dsn.wait_messages(1, timeout=30)
        assert tx.rcpt_params[0][0] == "NOTIFY=NEVER"
