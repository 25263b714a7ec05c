"""Pure pieces of delivery: the routing decision, report composition, the resolver."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections.abc import AsyncIterator

import pytest
from deliveryworld import delivery_status
from dnsfake import DNSServer

from postwarden.config import HostPort, Route
from postwarden.delivery import queuecli
from postwarden.delivery.manager import received_count
from postwarden.delivery.notify import within_origin
from postwarden.delivery.reports import (
    Action,
    RecipientReport,
    ReportInput,
    compose_report,
    permanent_status,
    status_of,
)
from postwarden.delivery.resolver import Hop, MXResolver, ResolveError
from postwarden.policy.retry import next_retry, retry_delay
from postwarden.policy.routing import HopKind, next_hop
from postwarden.storage.interfaces import QueuedMessage, QueueRecipient, RecipientState

ROUTES = (
    Route("partner.test", HostPort("127.0.0.1", 2526)),
    Route("*.example.org", HostPort("10.0.0.1", 25)),
)
SMART = HostPort("relay.test", 587)


class TestRouting:
    @pytest.mark.parametrize(
        ("domain", "smarthost", "kind", "relay"),
        [
            ("partner.test", None, HopKind.ROUTE, ROUTES[0].to),
            ("PARTNER.test.", SMART, HopKind.ROUTE, ROUTES[0].to),
            ("a.example.org", SMART, HopKind.ROUTE, ROUTES[1].to),
            ("example.org", None, HopKind.MX, None),
            ("other.test", SMART, HopKind.SMARTHOST, SMART),
            ("other.test", None, HopKind.MX, None),
            ("[192.0.2.1]", None, HopKind.LITERAL, HostPort("192.0.2.1", 25)),
            ("[IPv6:2001:db8::1]", None, HopKind.LITERAL, HostPort("2001:db8::1", 25)),
            ("[192.0.2.1]", SMART, HopKind.SMARTHOST, SMART),
        ],
    )
    def test_routes_then_smarthost_then_literal_or_mx(
        self, domain: str, smarthost: HostPort | None, kind: HopKind, relay: HostPort | None
    ) -> None:
        """The reroute table wins, then the smarthost, then the address itself or DNS."""
        hop = next_hop(domain, ROUTES, smarthost, 25)
        assert (hop.kind, hop.relay) == (kind, relay)

    def test_recipients_of_one_relay_share_a_key(self) -> None:
        """Two domains routed to one host group into one transaction."""
        assert next_hop("a.test", (), SMART, 25).key == next_hop("b.test", (), SMART, 25).key
        assert next_hop("a.test", (), None, 25).key != next_hop("b.test", (), None, 25).key


class TestRetrySchedule:
    def test_last_interval_repeats(self) -> None:
        """Attempts past the table reuse its last interval."""
        assert [retry_delay(n, (5, 10, 30)) for n in (1, 2, 3, 4, 9)] == [5, 10, 30, 30, 30]

    def test_schedule_counts_from_arrival_so_forced_attempts_keep_it(self) -> None:
        """Arrival + 5, + 10, + 30, then every 30: a failure at any time in between
        (a `queue retry`) leaves the next attempt where the schedule put it."""
        intervals = (5, 10, 30)
        times = (0, 1, 4.9, 5, 14, 15, 44, 45, 46, 100)
        assert [next_retry(1000, 1000 + t, intervals) - 1000 for t in times] == [
            5, 5, 5, 15, 15, 45, 45, 75, 75, 105]


class TestReports:
    INFO = ReportInput(
        "mx.local.test", "alice@local.test", "env1", None, 1_700_000_000.0,
        b"Subject: hi\r\nFrom: alice@local.test\r\n\r\nbody line\r\n",
    )

    def _report(self, action: Action, ret: str | None = None) -> email.message.Message:
        rcpt = RecipientReport(
            "bob@one.test", "rfc822;bob@one.test", action, "5.7.1",
            "550 5.7.1 Unable to relay\nsecond line", "mail.one.test", 1_700_000_100.0,
        )
        raw = compose_report(
            dataclasses.replace(self.INFO, ret=ret), action, [rcpt],
            now=1_700_000_200.0, boundary="b0", message_id="<r@x>",
        )
        return email.message_from_bytes(raw, policy=email.policy.compat32)

    def test_failure_report_is_machine_readable(self) -> None:
        """Per-message and per-recipient fields parse with the stdlib email package."""
        report = self._report(Action.FAILED)
        assert report["To"] == "<alice@local.test>"
        groups = delivery_status(report)
        assert groups[0]["Original-Envelope-Id"] == "env1"
        assert groups[1]["Diagnostic-Code"] == "smtp; 550 5.7.1 Unable to relay second line"
        assert groups[1]["Last-Attempt-Date"]
        original = report.get_payload(2)
        assert original.get_content_type() == "message/rfc822"
        assert original.get_payload(0).get_payload() == "body line\r\n"

    def test_ret_hdrs_and_delay_notices_carry_headers_only(self) -> None:
        """The body goes back only for failures without RET=HDRS."""
        for report in (self._report(Action.FAILED, "HDRS"), self._report(Action.DELAYED)):
            assert report.get_payload(2).get_content_type() == "text/rfc822-headers"
            assert b"body line" not in report.as_bytes()

    @pytest.mark.parametrize(
        ("reply", "status"),
        [
            ("550 5.7.1 Unable to relay", "5.7.1"),
            ("451 4.3.0 later", "4.3.0"),
            ("550 no enhanced code", "5.0.0"),
            ("550 4.1.1 mismatched class", "5.0.0"),
            ("garbage", "4.0.0"),
        ],
    )
    def test_status_comes_from_the_reply(self, reply: str, status: str) -> None:
        """The enhanced code when it agrees with the reply code, else the class."""
        assert status_of(reply) == status

    def test_permanent_status(self) -> None:
        assert permanent_status("4.4.1") == "5.4.1"
        assert permanent_status("5.1.1") == "5.1.1"


class TestWithinOrigin:
    @staticmethod
    def queued(trusted: bool, *notifies: tuple[str, ...]) -> QueuedMessage:
        rcpts = tuple(
            QueueRecipient(i, "q", f"r{i}@remote.test", None, n, RecipientState.PENDING, 0, 0.0,
                           None, None)
            for i, n in enumerate(notifies)
        )
        return QueuedMessage("q", "q", 1, "s@remote.test", 0.0, None, "FULL", False, False,
                             rcpts, trusted_origin=trusted)

    def test_a_vouched_for_message_keeps_its_options(self) -> None:
        """Authenticated or relay clients get RET and NOTIFY as they asked."""
        msg = self.queued(True, ("SUCCESS",), ("SUCCESS", "FAILURE"))
        assert within_origin(msg) == msg

    def test_a_strangers_message_gets_headers_only_and_no_success(self) -> None:
        """RET becomes HDRS; SUCCESS is dropped, and NOTIFY=SUCCESS alone becomes NEVER."""
        msg = within_origin(self.queued(False, ("SUCCESS",), ("SUCCESS", "FAILURE"), ()))
        assert msg.ret == "HDRS"
        assert [r.notify for r in msg.recipients] == [("NEVER",), ("FAILURE",), ()]


class TestQueueShow:
    @pytest.mark.parametrize(
        ("owner", "until", "shown"),
        [
            ("mx1/42/ab", 2000.0, "in delivery: by mx1/42/ab until 1970-01-01 00:33:20 UTC"),
            ("mx1/42/ab", 900.0, "in delivery: no"),  # ran out: anyone may take it
            (None, 0.0, "in delivery: no"),
        ],
    )
    def test_a_held_lease_is_shown_with_its_holder(
        self, owner: str | None, until: float, shown: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`queue show` says which queue manager is delivering it, while its lease runs."""
        msg = QueuedMessage("q", "q", 1, "s@remote.test", 0.0, None, None, False, False, (),
                            lease_owner=owner, lease_until=until)
        queuecli._show(msg, now=1000.0)
        assert shown in capsys.readouterr().out.splitlines()


def test_received_count_looks_at_headers_only() -> None:
    """A Received line quoted in the body is not a hop."""
    msg = b"Received: a\r\nreceived : b\r\nSubject: x\r\n\r\nReceived: body\r\n"
    assert received_count(msg) == 2


@pytest.fixture
async def dns() -> AsyncIterator[DNSServer]:
    server = DNSServer({
        ("a.test", "MX"): ["20 mx2.a.test.", "10 mx1.a.test."],
        ("mx1.a.test", "A"): ["127.0.0.10"],
        ("mx1.a.test", "AAAA"): ["::1"],
        ("mx2.a.test", "A"): ["127.0.0.20"],
        ("plain.test", "A"): ["127.0.0.30"],
        ("null.test", "MX"): ["0 ."],
        ("dangling.test", "MX"): ["10 nowhere.test."],
        ("empty.test", "TXT"): ['"v=spf1 -all"'],
        ("broken.test", "SERVFAIL"): [],
    })
    await server.start()
    yield server
    await server.close()


class TestResolver:
    def _resolver(self, dns: DNSServer) -> MXResolver:
        return MXResolver((HostPort("127.0.0.1", dns.port),), 2525, timeout=5)

    async def test_mx_hosts_in_preference_order(self, dns: DNSServer) -> None:
        """Lower preference first; every address of a host before the next host."""
        hops = await self._resolver(dns).hops(next_hop("a.test", (), None, 2525))
        assert hops == [
            Hop("mx1.a.test", "127.0.0.10", 2525),
            Hop("mx1.a.test", "::1", 2525),
            Hop("mx2.a.test", "127.0.0.20", 2525),
        ]

    async def test_a_record_when_no_mx(self, dns: DNSServer) -> None:
        hops = await self._resolver(dns).hops(next_hop("plain.test", (), None, 2525))
        assert hops == [Hop("plain.test", "127.0.0.30", 2525)]

    @pytest.mark.parametrize(
        ("domain", "permanent", "status"),
        [
            ("null.test", True, "556 5.1.10"),
            ("missing.test", True, "550 5.1.2"),
            ("empty.test", True, "550 5.1.2"),
            ("dangling.test", False, "451 4.4.4"),
        ],
    )
    async def test_unroutable_domains(
        self, dns: DNSServer, domain: str, permanent: bool, status: str
    ) -> None:
        """Null MX and nonexistent domains bounce; an MX without address waits."""
        with pytest.raises(ResolveError) as info:
            await self._resolver(dns).hops(next_hop(domain, (), None, 2525))
        assert info.value.permanent is permanent
        assert info.value.reply.startswith(status)

    async def test_dns_failure_is_one_short_line(self, dns: DNSServer) -> None:
        """A failing lookup is a temporary error with a short reason, not dnspython's
        report of every name server (which ran to 900 characters in the queue)."""
        with pytest.raises(ResolveError) as info:
            await self._resolver(dns).hops(next_hop("broken.test", (), None, 2525))
        assert info.value.permanent is False
        assert info.value.reply == (
            "451 4.4.3 DNS lookup of broken.test failed:"
            " no name server answered (SERVFAIL or refused)")

    async def test_route_host_names_resolve_through_the_configured_dns(
        self, dns: DNSServer
    ) -> None:
        hop = next_hop("x.test", (Route("x.test", HostPort("plain.test", 2600)),), None, 25)
        assert await self._resolver(dns).hops(hop) == [Hop("plain.test", "127.0.0.30", 2600)]
