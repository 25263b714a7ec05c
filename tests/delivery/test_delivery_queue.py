"""The queue manager against real DNS and SMTP peers on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from deliveryworld import SENDER, World, delivery_status, make_config, message
from dnsfake import DNSServer
from smtppeers import Peer, Transaction

from postwarden.servers.tls import write_self_signed
from postwarden.storage.interfaces import RecipientState

RELAY_REFUSED = "550 5.7.1 Unable to relay"
TRY_LATER = "451 4.3.0 Try again later"

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def dns_records() -> dict[tuple[str, str], list[str]]:
    return {
        ("one.test", "MX"): ["10 mail.one.test."],
        ("mail.one.test", "A"): ["127.0.0.2"],
        ("two.test", "MX"): ["20 backup.two.test.", "10 primary.two.test."],
        ("primary.two.test", "A"): ["127.0.0.4"],  # nothing listens there
        ("backup.two.test", "A"): ["127.0.0.3"],
        ("nomx.test", "A"): ["127.0.0.3"],
        ("null.test", "MX"): ["0 ."],
        ("partner.test", "MX"): ["10 mail.one.test."],
        ("sub.routed.test", "MX"): ["10 mail.one.test."],
    }


@pytest.fixture
async def dns(dns_records: dict[tuple[str, str], list[str]]) -> AsyncIterator[DNSServer]:
    server = DNSServer(dns_records)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        await peer.close()


@pytest.fixture
async def mx_port(peers: list[Peer]) -> int:
    """One port for every MX peer (they differ by loopback address, like real MXs)."""
    probe = Peer("probe")
    port = await probe.start("127.0.0.2")
    await probe.close()
    return port


@pytest.fixture
def start_peer(peers: list[Peer]) -> Callable[..., Awaitable[Peer]]:
    async def start(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Peer:
        peer = Peer(**kwargs)
        await peer.start(host, port)
        peers.append(peer)
        return peer

    return start


@pytest.fixture
async def make_world(
    tmp_path: Path, dns: DNSServer, mx_port: int
) -> AsyncIterator[MakeWorld]:
    made: list[World] = []

    async def make(intake_max_received: int | None = None, start: bool = True,
                   **sections: Any) -> World:
        delivery = {"mx_port": mx_port, **sections.pop("delivery", {})}
        cfg = make_config(
            tmp_path, delivery=delivery, dns={"nameservers": [f"127.0.0.1:{dns.port}"]},
            **sections,
        )
        world = World(tmp_path, cfg, intake_max_received=intake_max_received)
        made.append(world)
        return await world.start() if start else world

    yield make
    for world in made:
        await world.stop()


def _status(world: World) -> tuple[list[email.message.Message], list[email.message.Message]]:
    """The one report in the INBOX and its delivery-status groups."""
    inbox = world.inbox()
    assert len(inbox) == 1
    return inbox, delivery_status(inbox[0])


async def bounce_of(world: World, rcpt: str, **submit: Any) -> email.message.Message:
    """Submit, wait until the queue lets the message go, return the report's recipient group."""
    accepted = await world.submit(rcpt, **submit)
    await world.until(lambda: world.queued(accepted.queue_id) is None)
    _, groups = _status(world)
    return groups[1]


def attempts(world: World, queue_id: str, n: int) -> Callable[[], bool]:
    """A check: the message's first recipient has had ``n`` attempts recorded."""

    def check() -> bool:
        msg = world.queued(queue_id)
        return msg is not None and msg.recipients[0].attempts >= n

    return check


class TestRoutingOnTheWire:
    async def test_delivers_by_mx_with_our_received_header(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """Mail to a remote domain leaves via its MX, our Received header first."""
        peer = await start_peer("127.0.0.2", mx_port)
        world = await make_world()
        accepted = await world.submit("bob@one.test")
        [tx] = await peer.wait_messages(1)
        assert tx.sender == SENDER
        assert tx.recipients == ["bob@one.test"]
        first = tx.data.split(b"\r\n", 1)[0]
        assert first.startswith(b"Received: from client.local.test ([192.0.2.7])")
        assert f"by mx.local.test (postwarden) with ESMTPSA id {accepted.queue_id}".encode() \
            in tx.data
        await world.until(lambda: world.queued(accepted.queue_id) is None)

    async def test_falls_back_to_the_next_mx_when_the_first_is_down(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """The preferred MX refuses connections, so the backup MX gets the mail."""
        backup = await start_peer("127.0.0.3", mx_port)
        world = await make_world()
        await world.submit("bob@two.test")
        [tx] = await backup.wait_messages(1)
        assert tx.recipients == ["bob@two.test"]

    async def test_uses_the_a_record_when_there_is_no_mx(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """No MX record: the domain's own address is the mail host (RFC 5321 §5.1)."""
        peer = await start_peer("127.0.0.3", mx_port)
        world = await make_world()
        await world.submit("bob@nomx.test")
        await peer.wait_messages(1)

    async def test_route_and_wildcard_route_override_mx(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """[[routes]] entries, exact and *.domain, win over the MX records."""
        mx = await start_peer("127.0.0.2", mx_port)
        routed = await start_peer()
        world = await make_world(routes=[
            {"domain": "partner.test", "to": f"127.0.0.1:{routed.port}"},
            {"domain": "*.routed.test", "to": f"127.0.0.1:{routed.port}"},
        ])
        await world.submit("bob@partner.test", "carol@sub.routed.test")
        [tx] = await routed.wait_messages(1)
        assert sorted(tx.recipients) == ["bob@partner.test", "carol@sub.routed.test"]
        assert mx.messages == []

    async def test_smarthost_overrides_mx(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """With a smarthost, every remote recipient goes there in one transaction."""
        mx = await start_peer("127.0.0.2", mx_port)
        smarthost = await start_peer()
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{smarthost.port}"})
        await world.submit("bob@one.test", "dave@nomx.test")
        [tx] = await smarthost.wait_messages(1)
        assert sorted(tx.recipients) == ["bob@one.test", "dave@nomx.test"]
        assert mx.messages == []

    async def test_address_literal_goes_to_that_address(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """user@[127.0.0.3] is delivered to 127.0.0.3 at mx_port, without DNS."""
        peer = await start_peer("127.0.0.3", mx_port)
        world = await make_world()
        await world.submit("bob@[127.0.0.3]")
        [tx] = await peer.wait_messages(1)
        assert tx.recipients == ["bob@[127.0.0.3]"]

    async def test_null_mx_fails_permanently_with_a_report(self, make_world: MakeWorld) -> None:
        """A domain publishing null MX (RFC 7505) bounces at once."""
        world = await make_world()
        accepted = await world.submit("bob@null.test")
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        _, groups = _status(world)
        assert groups[1]["Action"] == "failed"
        assert groups[1]["Status"] == "5.1.10"

    async def test_reuses_one_connection_for_several_messages(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """Messages for one host travel over one session."""
        peer = await start_peer()
        world = await make_world(
            delivery={"smarthost": f"127.0.0.1:{peer.port}", "max_per_destination": 1},
            start=False,
        )
        for i in range(5):  # all queued before the manager runs: one batch, one host
            await world.submit("bob@one.test", data=message(f"m{i}"))
        await world.start()
        await peer.wait_messages(5)
        assert peer.connections < 5


class TestSmtpFeatures:
    async def test_passes_dsn_parameters_to_a_dsn_peer(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """NOTIFY, ORCPT, RET and ENVID go onward when the peer offers DSN."""
        peer = await start_peer(extensions=("DSN", "SIZE 1000000", "8BITMIME"))
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        await world.submit(
            "bob@one.test", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;bob@one.test",
            ret="HDRS", envid="env42",
        )
        [tx] = await peer.wait_messages(1)
        assert {"RET=HDRS", "ENVID=env42"} <= set(tx.mail_params)
        assert tx.rcpt_params == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@one.test"]]
        assert any(p.startswith("SIZE=") for p in tx.mail_params)

    async def test_dsn_values_are_passed_on_as_xtext_never_as_raw_text(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A decoded ORCPT/ENVID with a line break cannot smuggle a command to the next hop."""
        peer = await start_peer(extensions=("DSN", "PIPELINING"))
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        await world.submit("bob@one.test", orcpt="rfc822;bob@one.test\r\nRCPT TO:<evil@x>",
                           envid="a b+c=")
        [tx] = await peer.wait_messages(1)
        assert tx.recipients == ["bob@one.test"]
        assert tx.rcpt_params == [["ORCPT=rfc822;bob@one.test+0D+0ARCPT+20TO:<evil@x>"]]
        assert "ENVID=a+20b+2Bc+3D" in tx.mail_params

    async def test_uses_starttls_when_offered(
        self, tmp_path: Path, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """Opportunistic TLS with a self-signed certificate still encrypts."""
        cert, key = tmp_path / "peer.pem", tmp_path / "peer.key"
        write_self_signed(cert, key, "peer.test")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        peer = await start_peer(tls=ctx)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        await world.submit("bob@one.test")
        [tx] = await peer.wait_messages(1)
        assert tx.tls

    async def test_smtputf8_message_to_a_peer_without_it_bounces(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A message that needs SMTPUTF8 fails permanently, saying why."""
        peer = await start_peer()
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        rcpt = await bounce_of(world, "jörg@one.test", smtputf8=True)
        assert peer.messages == []
        assert rcpt["Status"] == "5.6.7"
        assert "SMTPUTF8" in rcpt["Diagnostic-Code"]

    async def test_pipelines_mail_rcpt_and_data_in_one_group(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """With PIPELINING offered, MAIL, every RCPT and DATA leave before any reply is read:
        this peer answers them only once DATA has arrived (RFC 2920)."""
        peer = await start_peer(extensions=("PIPELINING",), hold_replies_until_data=True,
                                on_rcpt=lambda r: RELAY_REFUSED if r.startswith("bad") else None)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test", "bad@one.test", "carol@one.test")
        [tx] = await peer.wait_messages(1)
        assert tx.recipients == ["bob@one.test", "carol@one.test"]
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        _, groups = _status(world)  # the refused one is reported, with the peer's words
        assert groups[1]["Final-Recipient"] == "rfc822; bad@one.test"
        assert groups[1]["Diagnostic-Code"] == f"smtp; {RELAY_REFUSED}"

    async def test_8bit_body_is_declared_and_7bit_is_not(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """BODY=8BITMIME goes with 8-bit data to a peer that offers it, and only then."""
        peer = await start_peer(extensions=("8BITMIME", "SIZE 1000000"))
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"}, start=False)
        await world.submit("bob@one.test", data=message("plain", body="Hello.\r\n"))
        await world.submit("bob@one.test", data=message("eight", body="Grüße.\r\n"))
        await world.start()
        sent = await peer.wait_messages(2)
        params = {not tx.data.isascii(): tx.mail_params for tx in sent}
        assert "BODY=8BITMIME" in params[True]
        assert "BODY=8BITMIME" not in params[False]

    async def test_smtputf8_message_to_a_peer_with_it_says_so(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """An internationalised recipient travels with the SMTPUTF8 parameter."""
        peer = await start_peer(extensions=("SMTPUTF8", "8BITMIME"))
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        await world.submit("jörg@one.test", smtputf8=True)
        [tx] = await peer.wait_messages(1)
        assert "SMTPUTF8" in tx.mail_params
        assert tx.recipients == ["jörg@one.test"]

    async def test_message_over_the_peer_size_limit_fails_before_data(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A peer's SIZE limit is respected: no transfer, a 5.3.4 report instead."""
        peer = await start_peer(extensions=("SIZE 100",))
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        rcpt = await bounce_of(world, "bob@one.test")
        assert peer.data_started == 0 and peer.messages == []
        assert rcpt["Status"] == "5.3.4"
        assert "100 bytes" in rcpt["Diagnostic-Code"]

    async def test_session_carries_on_after_a_refused_transaction(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A transaction refused at RCPT is reset; the next message uses the same session."""
        peer = await start_peer(on_rcpt=lambda r: RELAY_REFUSED if r.startswith("bad") else None)
        world = await make_world(
            delivery={"smarthost": f"127.0.0.1:{peer.port}", "max_per_destination": 1},
            start=False,
        )
        await world.submit("bad@one.test", data=message("refused"))
        await world.submit("bob@one.test", data=message("accepted"))
        await world.start()
        [tx] = await peer.wait_messages(1)
        assert tx.recipients == ["bob@one.test"]
        assert peer.connections == 1
        await world.until(lambda: len(world.inbox()) == 1)  # the NDR for bad@


class TestFailures:
    async def test_relay_refusal_produces_an_ndr_quoting_the_remote_reply(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]], mx_port: int
    ) -> None:
        """550 5.7.1 at RCPT: the local sender gets an RFC 3464 report with that reply."""
        await start_peer("127.0.0.2", mx_port, on_rcpt=lambda _: RELAY_REFUSED)
        world = await make_world()
        accepted = await world.submit("bob@one.test", orcpt="rfc822;bob@one.test")
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        [report], groups = _status(world)
        assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mx.local.test>"
        assert report["Auto-Submitted"] == "auto-replied"
        assert groups[0]["Reporting-MTA"] == "dns; mx.local.test"
        assert groups[0]["Arrival-Date"]
        rcpt = groups[1]
        assert rcpt["Final-Recipient"] == "rfc822; bob@one.test"
        assert rcpt["Original-Recipient"] == "rfc822;bob@one.test"
        assert rcpt["Action"] == "failed"
        assert rcpt["Status"] == "5.7.1"
        assert rcpt["Remote-MTA"] == "dns; mail.one.test"
        assert rcpt["Diagnostic-Code"] == f"smtp; {RELAY_REFUSED}"
        returned = report.get_payload(2)
        assert returned.get_content_type() == "message/rfc822"
        assert returned.get_payload(0)["Subject"] == "hello"

    async def test_ret_hdrs_returns_only_the_headers(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """RET=HDRS: the report carries text/rfc822-headers, not the body."""
        peer = await start_peer(on_rcpt=lambda _: RELAY_REFUSED)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit(
            "bob@one.test", ret="HDRS", data=message(body="secret body\r\n")
        )
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        [report], _ = _status(world)
        part = report.get_payload(2)
        assert part.get_content_type() == "text/rfc822-headers"
        assert b"secret body" not in report.as_bytes()

    async def test_temporary_failures_retry_then_succeed(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """451 twice, then accepted: delivered once, no report."""
        refusals = [TRY_LATER, TRY_LATER]

        async def flaky(_: Transaction) -> str | None:
            return refusals.pop() if refusals else None

        peer = await start_peer(on_data=flaky)
        world = await make_world(
            delivery={"smarthost": f"127.0.0.1:{peer.port}", "retry_intervals": ["1s"]},
        )
        accepted = await world.submit("bob@one.test")
        await peer.wait_messages(1)
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        assert peer.data_started == 3
        assert world.inbox() == []

    async def test_connection_dropped_in_data_is_retried(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A peer that hangs up mid-DATA leaves the recipient queued for later."""
        peer = await start_peer(drop_in_data=True)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test")

        await world.until(attempts(world, accepted.queue_id, 1))
        msg = world.queued(accepted.queue_id)
        assert msg is not None
        rcpt = msg.recipients[0]
        assert rcpt.state is RecipientState.PENDING
        assert rcpt.last_error is not None and rcpt.last_error.startswith("451 4.4.2")
        assert world.inbox() == []

    async def test_expiry_produces_an_ndr(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """Still failing temporarily after max_queue_lifetime: failed, with the last reply."""
        peer = await start_peer(on_rcpt=lambda _: TRY_LATER)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test")
        await world.until(attempts(world, accepted.queue_id, 1))
        assert world.inbox() == []
        world.age(accepted.queue_id, 6 * 86400)
        world.store.queue.retry_now(accepted.queue_id, 0)
        world.manager.wake()  # type: ignore[union-attr]
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        _, groups = _status(world)
        assert groups[1]["Action"] == "failed"
        assert groups[1]["Status"] == "5.4.7"
        assert groups[1]["Diagnostic-Code"] == f"smtp; {TRY_LATER}"

    async def test_forced_retries_keep_the_schedule(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """`queue retry` twice while the peer still says 451: the next scheduled
        attempt stays where the first failure put it (it moved 58 s -> 29 min)."""
        peer = await start_peer(on_rcpt=lambda _: TRY_LATER)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}",
                                           "retry_intervals": ["5m", "10m", "30m"]})
        accepted = await world.submit("bob@one.test")
        await world.until(attempts(world, accepted.queue_id, 1))
        scheduled = _next(world, accepted.queue_id)
        for forced in (2, 3):
            world.store.queue.retry_now(accepted.queue_id, time.time())
            world.manager.wake()  # type: ignore[union-attr]
            await world.until(attempts(world, accepted.queue_id, forced))
            assert _next(world, accepted.queue_id) == scheduled

    async def test_delay_notice_is_sent_once(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """After delay_warning_after, one 'delayed' report; later attempts send none."""
        peer = await start_peer(on_rcpt=lambda _: TRY_LATER)
        world = await make_world(
            delivery={"smarthost": f"127.0.0.1:{peer.port}", "delay_warning_after": "1s"},
        )
        accepted = await world.submit("bob@one.test")
        world.age(accepted.queue_id, 10)
        await world.until(attempts(world, accepted.queue_id, 1))
        world.store.queue.retry_now(accepted.queue_id, 0)
        world.manager.wake()  # type: ignore[union-attr]
        await world.until(attempts(world, accepted.queue_id, 2))
        inbox = world.inbox()
        assert len(inbox) == 1
        groups = delivery_status(inbox[0])
        assert groups[1]["Action"] == "delayed"
        assert groups[1]["Will-Retry-Until"]
        assert inbox[0].get_payload(2).get_content_type() == "text/rfc822-headers"

    async def test_null_sender_never_gets_a_report(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """A bounce of a bounce is dropped: nothing queued, nothing in any INBOX."""
        peer = await start_peer(on_rcpt=lambda _: RELAY_REFUSED)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test", sender=None)
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        assert world.store.queue.queued_ids() == []
        assert world.inbox() == []

    async def test_notify_never_suppresses_the_report(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """NOTIFY=NEVER: the failure is recorded and no report is sent."""
        peer = await start_peer(on_rcpt=lambda _: RELAY_REFUSED)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test", notify=("NEVER",))
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        assert world.inbox() == []

    async def test_notify_success_to_a_peer_without_dsn_reports_relayed(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """NOTIFY=SUCCESS and the peer cannot report: we say 'relayed' (RFC 3461 §4.2)."""
        peer = await start_peer()
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test", notify=("SUCCESS",))
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        await world.until(lambda: len(world.inbox()) == 1)
        groups = delivery_status(world.inbox()[0])
        assert groups[1]["Action"] == "relayed"
        assert groups[1]["Status"] == "2.0.0"

    async def test_mail_loop_fails_permanently(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """More Received headers than max_received_headers: bounced, never sent on."""
        peer = await start_peer()
        world = await make_world(
            intake_max_received=100,
            delivery={"smarthost": f"127.0.0.1:{peer.port}", "max_received_headers": 5},
        )
        hops = "".join(f"Received: from h{i}.test by h{i + 1}.test; today\r\n" for i in range(5))
        accepted = await world.submit("bob@one.test", data=(hops.encode() + message()))
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        assert peer.messages == []
        _, groups = _status(world)
        assert groups[1]["Status"] == "5.4.6"

    async def test_partial_failure_reports_only_the_failed_recipient(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """One transaction, one recipient refused: the other is delivered."""
        peer = await start_peer(
            on_rcpt=lambda rcpt: RELAY_REFUSED if rcpt.startswith("bad") else None
        )
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("good@one.test", "bad@one.test")
        [tx] = await peer.wait_messages(1)
        assert tx.recipients == ["good@one.test"]
        await world.until(lambda: world.queued(accepted.queue_id) is None)
        _, groups = _status(world)
        assert len(groups) == 2
        assert groups[1]["Final-Recipient"] == "rfc822; bad@one.test"


def _next(world: World, queue_id: str) -> float:
    msg = world.queued(queue_id)
    assert msg is not None
    return msg.recipients[0].next_attempt


def test_email_parses_reports_with_compat32() -> None:
    """Guard: the stdlib parser used above splits delivery-status groups."""
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n"
        b"Final-Recipient: rfc822; b@c\r\nAction: failed\r\n\r\n--b--\r\n"
    )
    groups = delivery_status(email.message_from_bytes(raw, policy=email.policy.compat32))
    assert groups[1]["Action"] == "failed"


class TestShutdown:
    async def _held_world(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> tuple[World, Peer, asyncio.Event, str]:
        release = asyncio.Event()

        async def hold(_: Transaction) -> str | None:
            await release.wait()
            return None

        peer = await start_peer(on_data=hold)
        world = await make_world(delivery={"smarthost": f"127.0.0.1:{peer.port}"})
        accepted = await world.submit("bob@one.test")
        await peer.wait_until(lambda: peer.data_started == 1)
        return world, peer, release, accepted.queue_id

    async def test_in_flight_delivery_finishes_within_grace(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """stop() waits for the delivery in flight and records its 250."""
        world, peer, release, queue_id = await self._held_world(make_world, start_peer)
        assert world.manager is not None
        stopping = asyncio.ensure_future(world.manager.stop(grace=10))
        release.set()
        await stopping
        assert len(peer.messages) == 1
        assert world.queued(queue_id) is None

    async def test_delivery_cut_off_by_grace_stays_queued(
        self, make_world: MakeWorld, start_peer: Callable[..., Awaitable[Peer]]
    ) -> None:
        """Past the grace period the attempt is cancelled, unrecorded: still pending."""
        world, _, release, queue_id = await self._held_world(make_world, start_peer)
        assert world.manager is not None
        await world.manager.stop(grace=0.2)
        release.set()
        msg = world.queued(queue_id)
        assert msg is not None
        assert msg.recipients[0].state is RecipientState.PENDING
        assert msg.recipients[0].attempts == 0
