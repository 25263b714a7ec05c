"""Facts about recipients and senders from the directory, then the pure policy.

This is the one function the SMTP server and ``postwarden relay check`` both
call, so the CLI's explanation is exactly what the server would do. Facts
are gathered asynchronously, through the store's async boundary, so the
event loop never waits on the directory; the decisions stay pure.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from postwarden.config import IPAddress, RelayConfig
from postwarden.log import kv
from postwarden.mail.address import Address, AddressError, parse_address
from postwarden.policy.relay import (
    ClientFacts,
    Decision,
    RecipientFacts,
    decide_header_from,
    decide_recipient,
    decide_relay,
    decide_sender,
    normalise_ip,
)
from postwarden.policy.srs import Srs
from postwarden.storage.boundary import AsyncDirectory

MAX_ALIAS_DEPTH = 10
log = logging.getLogger("postwarden.recipients")


def catch_all_key(domain: str) -> str:
    """The alias name that takes every unknown address of a local domain."""
    return f"@{domain}"


class AliasLoop(Exception):
    """Alias expansion revisited an address or went too deep."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where one envelope recipient's copies go after alias expansion."""

    local_accounts: tuple[str, ...]
    remote: tuple[Address, ...]


class RecipientPolicy:
    def __init__(self, directory: AsyncDirectory, relay: RelayConfig, hostname: str,
                 srs: Srs | None = None) -> None:
        self.directory = directory
        self.relay = relay
        self.srs = srs  # bounces to our SRS addresses go back to the original senders
        # The server's own name is a local domain (Postfix's mydestination):
        # mail to postmaster there is ours, anything else there is unknown,
        # never relayed back to ourselves.
        self.hostname = parse_address(f"postmaster@{hostname}").domain

    async def client_facts(
        self, client_ip: IPAddress, local_ip: IPAddress, *, tls: bool, auth_user: str | None,
        now: float,
    ) -> ClientFacts:
        """The client's facts, with its last POP3/IMAP login read from the store."""
        client_ip = normalise_ip(client_ip)
        last = (
            await self.directory.last_login(str(client_ip))
            if self.relay.pop_before_smtp_minutes > 0 else None
        )
        return ClientFacts(
            client_ip, normalise_ip(local_ip), tls=tls, auth_user=auth_user,
            seconds_since_pop_login=None if last is None else now - last,
        )

    async def canonical(self, address: Address) -> Address:
        """``<postmaster>`` without a domain, or at our hostname when that is not a
        domain of its own, is postmaster at the first local domain."""
        if address.domain and not await self._hostname_postmaster(address):
            return address
        domains = await self.directory.list_domains()
        return Address("postmaster", domains[0] if domains else "localhost")

    async def is_local(self, address: Address) -> bool:
        """A domain of ours: a configured one or the server's own hostname."""
        return not address.is_literal and (
            address.domain == self.hostname
            or await self.directory.is_local_domain(address.domain)
        )

    async def _hostname_postmaster(self, address: Address) -> bool:
        return (address.domain == self.hostname and address.local.lower() == "postmaster"
                and not await self.directory.is_local_domain(self.hostname))

    async def recipient_facts(self, address: Address) -> RecipientFacts:
        # <postmaster> (and postmaster@hostname) is always ours (RFC 5321 §4.5.1)
        if not address.domain or await self._hostname_postmaster(address):
            return RecipientFacts(address, True, True)
        if self.srs is not None and self.srs.owns(address.local, address.domain):
            back = self.srs.reverse(address.local, address.domain, time.time())
            # forged or expired: an unknown user
            return RecipientFacts(address, True, back is not None,
                                  unproven_srs=back is not None and not back.proven)
        local = await self.is_local(address)
        exists = local and (
            await self.directory.account_exists(address.key)
            or await self._alias_targets(address) is not None
        )
        return RecipientFacts(address, local, exists)

    async def _alias_targets(self, address: Address) -> tuple[str, ...] | None:
        """The address's alias, else its domain's catch-all alias (``@domain``)."""
        targets = await self.directory.alias_targets(address.key)
        if targets is None:
            targets = await self.directory.alias_targets(catch_all_key(address.domain))
        return targets

    def vouches_for_sender(self, client: ClientFacts) -> bool:
        """Whether the client's envelope senders are believed: it authenticated or may relay."""
        return client.auth_user is not None or decide_relay(client, self.relay).accepted

    async def check_recipient(self, client: ClientFacts, address: Address, *,
                              null_sender: bool = False) -> Decision:
        facts = await self.recipient_facts(address)
        decision = decide_recipient(client, facts, self.relay, null_sender=null_sender)
        if facts.unproven_srs:
            log.info(kv("srs refused", ip=client.client_ip, rcpt=address,
                        reason=decision.reasons[0]))
        return decision

    async def owns(self, user: str, sender: Address) -> bool:
        """The user's own address, or an alias that leads (maybe via others) to the user."""
        if sender.key == user:
            return True
        if await self.directory.alias_targets(sender.key) is None:
            return False
        try:
            return user in (await self.resolve(sender)).local_accounts
        except (AliasLoop, AddressError):
            return False

    async def check_sender(
        self, auth_user: str | None, sender: Address | None
    ) -> Decision | None:
        owned = (sender is not None and auth_user is not None
                 and await self.owns(auth_user, sender))
        return decide_sender(auth_user, sender, owned, self.relay)

    async def check_header_from(self, auth_user: str | None,
                                from_fields: Sequence[str]) -> Decision | None:
        """Every mailbox in the ``From:`` fields must be the user's (sender_must_match_login).

        A field that yields no parsable address counts as not owned: a
        display name alone must not pass for the user.
        """
        if auth_user is None or not self.relay.sender_must_match_login:
            return None
        unowned: list[str] = []
        for field in from_fields:
            pairs = email.utils.getaddresses([field])
            specs = [spec for _, spec in pairs if spec]
            if not specs:
                unowned.append(field.strip()[:200])
            for spec in specs:
                try:
                    owned = await self.owns(auth_user, parse_address(spec))
                except AddressError:
                    owned = False
                if not owned:
                    unowned.append(spec[:200])
        return decide_header_from(auth_user, unowned, self.relay)

    async def resolve(self, address: Address) -> Resolved:
        """Expand aliases (recursively, loops detected) into accounts and remote addresses."""
        accounts: list[str] = []
        remote: list[Address] = []
        await self._expand(await self.canonical(address), (), accounts, remote)
        return Resolved(tuple(dict.fromkeys(accounts)), tuple(dict.fromkeys(remote)))

    async def _expand(
        self, address: Address, path: tuple[str, ...], accounts: list[str], remote: list[Address]
    ) -> None:
        key = address.key
        if key in path or len(path) > MAX_ALIAS_DEPTH:
            raise AliasLoop(" -> ".join((*path, key)))
        if self.srs is not None and self.srs.owns(address.local, address.domain):
            back = self.srs.reverse(address.local, address.domain, time.time())
            if back is not None and back.proven:  # else refused at RCPT, or expired since
                remote.append(parse_address(back.address))
            return
        if not await self.is_local(address):
            remote.append(address)
            return
        if await self.directory.account_exists(key):
            accounts.append(key)
            return
        targets = await self._alias_targets(address)
        if targets is None:
            return  # vanished since RCPT; nothing to deliver for it
        for target in targets:
            await self._expand(
                await self.canonical(parse_address(target)), (*path, key), accounts, remote)
