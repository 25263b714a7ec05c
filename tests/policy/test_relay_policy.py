"""Relay control as a table: client facts and config in, (verdict, rule) out."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from postwarden.config import RelayConfig
from postwarden.mail import reply as R
from postwarden.mail.address import Address, parse_address
from postwarden.policy.relay import (
    ClientFacts,
    Destination,
    RecipientFacts,
    Verdict,
    decide_header_from,
    decide_recipient,
    decide_relay,
    decide_sender,
    normalise_ip,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network

REMOTE = RecipientFacts(parse_address("someone@remote.test"), False, False)
LOCAL_USER = RecipientFacts(parse_address("alice@example.test"), True, True)
LOCAL_UNKNOWN = RecipientFacts(parse_address("nobody@example.test"), True, False)

CONFIG = RelayConfig(
    authenticated=True,
    pop_before_smtp_minutes=10,
    trusted_networks=(net("10.0.0.0/8"), net("2001:db8:1::/48")),
    internal_addresses=(ip("192.168.50.1"), ip("2001:db8:ff::25")),
    denied_networks=(net("10.66.0.0/16"), net("2001:db8:1:dead::/64")),
)


def client(addr: str = "203.0.113.9", local: str = "198.51.100.1", **kw: Any) -> ClientFacts:
    return ClientFacts(ip(addr), ip(local), **kw)


class TestDecideRelay:
    @pytest.mark.parametrize(
        ("facts", "verdict", "rule"),
        [
            (client(), Verdict.REJECT, "no_relay_rule"),
            (client(auth_user="alice@example.test"), Verdict.ACCEPT, "authenticated"),
            (client("10.1.2.3"), Verdict.ACCEPT, "trusted_networks"),
            (client("2001:db8:1:2::7"), Verdict.ACCEPT, "trusted_networks"),
            (client("2001:db8:2::7"), Verdict.REJECT, "no_relay_rule"),
            (client(local="192.168.50.1"), Verdict.ACCEPT, "internal_addresses"),
            (client(local="2001:db8:ff::25"), Verdict.ACCEPT, "internal_addresses"),
            (client(local="192.168.50.2"), Verdict.REJECT, "no_relay_rule"),
            (client(seconds_since_pop_login=30.0), Verdict.ACCEPT, "pop_before_smtp"),
            (client("10.66.1.1"), Verdict.REJECT, "denied_networks"),
            (client("2001:db8:1:dead::1"), Verdict.REJECT, "denied_networks"),
            (client("::ffff:10.1.2.3"), Verdict.ACCEPT, "trusted_networks"),
            (client("::ffff:10.66.1.1", auth_user="a@b.test"), Verdict.REJECT, "denied_networks"),
        ],
    )
    def test_table_of_facts_gives_verdict_and_rule(
        self, facts: ClientFacts, verdict: Verdict, rule: str
    ) -> None:
        """Each client fact leads to one verdict, named by the rule that made it."""
        decision = decide_relay(facts, CONFIG)
        assert (decision.verdict, decision.rule) == (verdict, rule)
        assert decision.reasons, "every decision explains itself"
        assert decision.destination is Destination.REMOTE

    def test_denied_network_beats_authentication(self) -> None:
        """A client in denied_networks may never relay, even after AUTH."""
        decision = decide_relay(client("10.66.0.5", auth_user="alice@example.test"), CONFIG)
        assert decision.rule == "denied_networks"
        assert decision.reply == R.RELAY_DENIED

    def test_authentication_is_named_before_trusted_network(self) -> None:
        """A trusted client that also authenticated is explained by its login."""
        decision = decide_relay(client("10.1.2.3", auth_user="alice@example.test"), CONFIG)
        assert decision.rule == "authenticated"
        assert decision.reply == R.RECIPIENT_OK

    def test_authenticated_false_turns_off_auth_relaying(self) -> None:
        """With ``authenticated = false`` a login alone does not permit relaying."""
        cfg = dataclasses.replace(CONFIG, authenticated=False)
        decision = decide_relay(client(auth_user="alice@example.test"), cfg)
        assert (decision.verdict, decision.rule) == (Verdict.REJECT, "no_relay_rule")
        assert any("authenticated = false" in reason for reason in decision.reasons)

    def test_authenticated_false_leaves_other_rules_working(self) -> None:
        """Turning off auth relaying does not turn off trusted networks."""
        cfg = dataclasses.replace(CONFIG, authenticated=False)
        decision = decide_relay(client("10.1.2.3", auth_user="alice@example.test"), cfg)
        assert decision.rule == "trusted_networks"

    @pytest.mark.parametrize(
        ("seconds", "verdict"),
        [
            (0.0, Verdict.ACCEPT),
            (599.0, Verdict.ACCEPT),
            (600.0, Verdict.ACCEPT),
            (600.5, Verdict.REJECT),
            (86400.0, Verdict.REJECT),
            (-1.0, Verdict.REJECT),
            (None, Verdict.REJECT),
        ],
    )
    def test_pop_before_smtp_window_boundaries(
        self, seconds: float | None, verdict: Verdict
    ) -> None:
        """A login counts from 0 s to exactly the window; later or in the future it does not."""
        decision = decide_relay(client(seconds_since_pop_login=seconds), CONFIG)
        assert decision.verdict is verdict

    def test_pop_before_smtp_off_when_window_is_zero(self) -> None:
        """``pop_before_smtp_minutes = 0`` turns the rule off, even for a fresh login."""
        cfg = dataclasses.replace(CONFIG, pop_before_smtp_minutes=0)
        decision = decide_relay(client(seconds_since_pop_login=0.0), cfg)
        assert (decision.verdict, decision.rule) == (Verdict.REJECT, "no_relay_rule")

    def test_empty_config_relays_for_nobody_but_authenticated_users(self) -> None:
        """The defaults fail closed: only AUTH opens the relay."""
        cfg = RelayConfig()
        assert not decide_relay(client("127.0.0.1", "127.0.0.1"), cfg).accepted
        assert decide_relay(client(auth_user="a@example.test"), cfg).accepted

    def test_ipv6_client_never_matches_ipv4_network(self) -> None:
        """Networks of the other family are skipped, not compared."""
        cfg = RelayConfig(trusted_networks=(net("0.0.0.0/0"),))
        assert not decide_relay(client("2001:db8::1"), cfg).accepted
        assert decide_relay(client("::ffff:198.51.100.7"), cfg).accepted

    def test_internal_address_matches_ipv4_mapped_local_address(self) -> None:
        """A dual-stack socket's mapped local address is its IPv4 address."""
        assert decide_relay(client(local="::ffff:192.168.50.1"), CONFIG).rule == (
            "internal_addresses"
        )


class TestDecideRecipient:
    def test_accepts_existing_local_mailbox_from_anyone(self) -> None:
        """Mail for our own users needs no relay permission."""
        decision = decide_recipient(client(), LOCAL_USER, CONFIG)
        assert (decision.verdict, decision.rule) == (Verdict.ACCEPT, "local_recipient")
        assert decision.reply == R.RECIPIENT_OK
        assert decision.destination is Destination.LOCAL

    def test_refuses_unknown_local_mailbox_as_unknown_user(self) -> None:
        """A missing local mailbox is 550 5.1.1 at RCPT time, never accept-then-bounce."""
        decision = decide_recipient(client(auth_user="a@example.test"), LOCAL_UNKNOWN, CONFIG)
        assert (decision.verdict, decision.rule) == (Verdict.REJECT, "unknown_local_recipient")
        assert decision.reply == R.UNKNOWN_USER
        assert decision.destination is Destination.LOCAL

    def test_local_recipient_is_accepted_even_from_denied_network(self) -> None:
        """denied_networks limits relaying, not mail to our own users."""
        decision = decide_recipient(client("10.66.1.1"), LOCAL_USER, CONFIG)
        assert decision.accepted

    def test_refuses_unauthenticated_external_recipient(self) -> None:
        """A stranger gets 550 5.7.1 naming the recipient it may not relay to."""
        decision = decide_recipient(client(), REMOTE, CONFIG)
        assert decision.verdict is Verdict.REJECT
        assert (decision.reply.code, decision.reply.status) == (
            R.RELAY_DENIED.code,
            R.RELAY_DENIED.status,
        )
        assert decision.reply.text == "Unable to relay for <someone@remote.test>"

    def test_relay_refusal_text_keeps_the_senders_spelling(self) -> None:
        """The reply names the recipient as given, with its canonical domain."""
        rcpt = RecipientFacts(Address("Some.One", "remote.test"), False, False)
        decision = decide_recipient(client(), rcpt, CONFIG)
        assert "Unable to relay for <Some.One@remote.test>" in decision.reply.text

    def test_accepts_external_recipient_for_authenticated_client(self) -> None:
        """An authenticated client relays to the Internet."""
        decision = decide_recipient(client(auth_user="alice@example.test"), REMOTE, CONFIG)
        assert (decision.verdict, decision.rule) == (Verdict.ACCEPT, "authenticated")
        assert decision.reply == R.RECIPIENT_OK
        assert decision.destination is Destination.REMOTE

    def test_denied_reply_carries_no_configuration_details(self) -> None:
        """Why the relay was refused goes to the reasons, not to the stranger."""
        decision = decide_recipient(client("10.66.1.1"), REMOTE, CONFIG)
        assert decision.rule == "denied_networks"
        assert "10.66" not in decision.reply.text
        assert any("10.66.0.0/16" in reason for reason in decision.reasons)


class TestDecideSender:
    ALICE = "alice@example.test"
    OTHER = parse_address("boss@example.test")

    @pytest.mark.parametrize(
        ("auth_user", "sender", "owned", "refused"),
        [
            (ALICE, OTHER, False, True),
            (ALICE, OTHER, True, False),
            (ALICE, None, False, False),
            (None, OTHER, False, False),
        ],
    )
    def test_authenticated_user_sends_only_as_itself(
        self, auth_user: str | None, sender: Address | None, owned: bool, refused: bool
    ) -> None:
        """Only an authenticated user using an address it does not own is refused."""
        decision = decide_sender(auth_user, sender, owned, CONFIG)
        assert (decision is not None) is refused
        if decision is not None:
            assert decision.reply == R.SENDER_NOT_OWNED
            assert decision.rule == "sender_must_match_login"
            assert decision.verdict is Verdict.REJECT

    def test_check_is_off_when_configured_off(self) -> None:
        """``sender_must_match_login = false`` lets users send as anyone."""
        cfg = dataclasses.replace(CONFIG, sender_must_match_login=False)
        assert decide_sender(self.ALICE, self.OTHER, False, cfg) is None


class TestNullSenderOfALogin:
    ALICE = "alice@example.test"

    @pytest.mark.parametrize(
        ("facts", "rcpt", "cfg", "rule"),
        [
            (client(auth_user=ALICE), REMOTE, CONFIG, "null_sender_relay"),
            (client(auth_user=ALICE), LOCAL_USER, CONFIG, "local_recipient"),
            (client("10.1.2.3"), REMOTE, CONFIG, "trusted_networks"),  # no login: rule silent
            (client("10.1.2.3", auth_user=ALICE), REMOTE, CONFIG, "null_sender_relay"),
            (client(auth_user=ALICE), REMOTE,
             dataclasses.replace(CONFIG, sender_must_match_login=False), "authenticated"),
        ],
    )
    def test_null_sender_of_a_login_reaches_local_mailboxes_only(
        self, facts: ClientFacts, rcpt: RecipientFacts, cfg: RelayConfig, rule: str
    ) -> None:
        """MAIL FROM:<> from a logged-in user may not relay while the rule is on."""
        decision = decide_recipient(facts, rcpt, cfg, null_sender=True)
        assert decision.rule == rule
        if rule == "null_sender_relay":
            assert decision.reply == R.SENDER_NOT_OWNED


class TestDecideHeaderFrom:
    def test_unowned_from_is_refused_550(self) -> None:
        """A From: the login does not own gets 550 5.7.1, naming the address in the reasons."""
        decision = decide_header_from("alice@example.test", ["bob@example.test"], CONFIG)
        assert decision is not None and decision.reply == R.FROM_NOT_OWNED
        assert "bob@example.test" in decision.reasons[0]

    def test_nothing_unowned_or_no_login_or_rule_off_passes(self) -> None:
        """Only a login with an unowned From: and the rule on is refused."""
        off = dataclasses.replace(CONFIG, sender_must_match_login=False)
        assert decide_header_from("alice@example.test", [], CONFIG) is None
        assert decide_header_from(None, ["bob@example.test"], CONFIG) is None
        assert decide_header_from("alice@example.test", ["bob@example.test"], off) is None


class TestNormaliseIp:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
        ],
    )
    def test_ipv4_mapped_becomes_ipv4(self, given: str, expected: str) -> None:
        """Only IPv4-mapped IPv6 addresses change."""
        assert normalise_ip(ip(given)) == ip(expected)
