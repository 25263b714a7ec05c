"""Relay control: who may send mail to which recipient, and why.

Pure: frozen facts in, a ``Decision`` out; no I/O, no logging, no clock.
Rules are small functions in an ordered chain; the first definite answer
wins and the chain ends in a refusal (fail closed). The server and
``postwarden relay check`` call the same ``decide_recipient``, so the
explanation printed by the CLI is the truth the server acts on.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postwarden.config import IPAddress, RelayConfig
from postwarden.mail import reply as R
from postwarden.mail.address import Address
from postwarden.mail.reply import Reply


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"


class Destination(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class ClientFacts:
    """What we know about the SMTP client when a recipient is decided."""

    client_ip: IPAddress
    local_ip: IPAddress
    tls: bool = False
    auth_user: str | None = None
    seconds_since_pop_login: float | None = None


@dataclass(frozen=True, slots=True)
class RecipientFacts:
    """What the directory says about one parsed recipient address."""

    address: Address
    domain_is_local: bool  # postmaster without a domain counts as local
    mailbox_exists: bool  # an account or an alias with this exact key
    # One of our SRS addresses whose original sender nothing vouched for (policy.srs)
    unproven_srs: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reply: Reply
    rule: str
    reasons: tuple[str, ...]
    destination: Destination

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


def normalise_ip(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is the IPv4 client it stands for."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(ip: IPAddress, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    ip = normalise_ip(ip)
    for net in networks:
        if ip.version == net.version and ip in net:
            return str(net)
    return ""


Rule = Callable[[ClientFacts, RelayConfig], "Decision | None"]


def _accept(rule: str, *reasons: str) -> Decision:
    return Decision(Verdict.ACCEPT, R.RECIPIENT_OK, rule, reasons, Destination.REMOTE)


def _reject(rule: str, *reasons: str) -> Decision:
    return Decision(Verdict.REJECT, R.RELAY_DENIED, rule, reasons, Destination.REMOTE)


def _denied_network(c: ClientFacts, cfg: RelayConfig) -> Decision | None:
    net = _in(c.client_ip, cfg.denied_networks)
    if net:
        return _reject("denied_networks", f"client {c.client_ip} is in denied network {net}")
    return None


def _authenticated(c: ClientFacts, cfg: RelayConfig) -> Decision | None:
    if cfg.authenticated and c.auth_user:
        return _accept("authenticated", f"client authenticated as {c.auth_user}")
    return None


def _pop_before_smtp(c: ClientFacts, cfg: RelayConfig) -> Decision | None:
    window = cfg.pop_before_smtp_minutes * 60
    since = c.seconds_since_pop_login
    if window > 0 and since is not None and 0 <= since <= window:
        return _accept(
            "pop_before_smtp",
            f"client {c.client_ip} logged in over POP3/IMAP {int(since)}s ago"
            f" (window {cfg.pop_before_smtp_minutes} min)",
        )
    return None


def _trusted_network(c: ClientFacts, cfg: RelayConfig) -> Decision | None:
    net = _in(c.client_ip, cfg.trusted_networks)
    if net:
        return _accept("trusted_networks", f"client {c.client_ip} is in trusted network {net}")
    return None


def _internal_address(c: ClientFacts, cfg: RelayConfig) -> Decision | None:
    local = normalise_ip(c.local_ip)
    if local in {normalise_ip(a) for a in cfg.internal_addresses}:
        return _accept("internal_addresses", f"client connected to internal address {local}")
    return None


def _no_rule(c: ClientFacts, cfg: RelayConfig) -> Decision:
    why = [f"client {c.client_ip} is not authenticated" if not c.auth_user else
           "authenticated relaying is turned off ([relay] authenticated = false)"]
    if cfg.pop_before_smtp_minutes > 0:
        why.append("no POP3/IMAP login from this address within the window")
    why.append("not in trusted_networks, not connected to an internal address")
    return _reject("no_relay_rule", *why)


RELAY_RULES: tuple[Rule, ...] = (
    _denied_network,
    _authenticated,
    _pop_before_smtp,
    _trusted_network,
    _internal_address,
)


def decide_relay(client: ClientFacts, cfg: RelayConfig) -> Decision:
    """May this client send to a domain that is not ours? First answer wins."""
    for rule in RELAY_RULES:
        decision = rule(client, cfg)
        if decision is not None:
            return decision
    return _no_rule(client, cfg)


def decide_recipient(client: ClientFacts, rcpt: RecipientFacts, cfg: RelayConfig, *,
                     null_sender: bool = False) -> Decision:
    """The RCPT TO decision: local recipients are verified, others need a relay rule.

    Locality is decided on the parsed domain only: ``%``, ``!``, quoted
    ``@`` and source routes never reach this point as a domain. With
    ``sender_must_match_login``, a logged-in user's ``MAIL FROM:<>`` reaches
    local mailboxes only: the null sender is nobody's, so relaying with it
    would send mail as no one the login answers for.
    """
    if rcpt.domain_is_local:
        if rcpt.unproven_srs:
            return Decision(
                Verdict.REJECT, R.SRS_UNPROVEN, "srs_unproven_sender",
                (f"{rcpt.address.key} is our SRS address for a sender that neither SPF nor"
                 " aligned DKIM vouched for when we forwarded its mail: nothing goes back"
                 " to it (no backscatter to forged senders)",), Destination.REMOTE,
            )
        if rcpt.mailbox_exists:
            return Decision(
                Verdict.ACCEPT, R.RECIPIENT_OK, "local_recipient",
                (f"{rcpt.address.key} is a local mailbox or alias",), Destination.LOCAL,
            )
        return Decision(
            Verdict.REJECT, R.UNKNOWN_USER, "unknown_local_recipient",
            (f"{rcpt.address.domain} is a local domain but {rcpt.address.key} does not exist",),
            Destination.LOCAL,
        )
    decision = decide_relay(client, cfg)
    if decision.accepted and null_sender and cfg.sender_must_match_login and client.auth_user:
        return Decision(
            Verdict.REJECT, R.SENDER_NOT_OWNED, "null_sender_relay",
            (f"{client.auth_user} is logged in and sends from <>, which may reach only"
             " local mailboxes (sender_must_match_login)",), Destination.REMOTE,
        )
    if decision.accepted:
        return decision
    text = f"Unable to relay for <{rcpt.address}>"
    return dataclasses.replace(decision, reply=decision.reply.with_text(text))


def decide_sender(auth_user: str | None, sender: Address | None, owned: bool,
                  cfg: RelayConfig) -> Decision | None:
    """``sender_must_match_login``: an authenticated user sends only as itself.

    Returns None when the sender is fine, else the refusal.
    """
    if not cfg.sender_must_match_login or auth_user is None or sender is None or owned:
        return None
    return Decision(
        Verdict.REJECT, R.SENDER_NOT_OWNED, "sender_must_match_login",
        (f"{auth_user} does not own the sender address {sender.key}",), Destination.REMOTE,
    )


def decide_header_from(auth_user: str | None, unowned: Sequence[str],
                       cfg: RelayConfig) -> Decision | None:
    """``sender_must_match_login`` for the ``From:`` header, once it has been read.

    ``unowned`` lists the From addresses the user does not own (the caller
    asks the directory); None when the message may go.
    """
    if not cfg.sender_must_match_login or auth_user is None or not unowned:
        return None
    return Decision(
        Verdict.REJECT, R.FROM_NOT_OWNED, "sender_must_match_login",
        tuple(f"{auth_user} does not own the From: address {a}" for a in unowned),
        Destination.REMOTE,
    )
