"""``postwarden check``: the setup checker, one line per check, each problem with its fix.

What a new admin gets wrong is mostly outside the server: DNS (MX, address,
reverse DNS, SPF, DKIM, DMARC), the certificate, a listener that did not
come up, and relay rules wider than meant. Each is tested the way the rest
of the world will test it, and the relay test asks the server's own policy
and then the server itself over SMTP.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Sequence

from postwarden.admin import check_dns, check_relay, check_server
from postwarden.admin.check_server import ip_or_none
from postwarden.admin.checkline import Line, Status, fail
from postwarden.config import Config, HostPort
from postwarden.intake.authdns import AuthDNS
from postwarden.intake.recipients import RecipientPolicy
from postwarden.storage.factory import AsyncStore, async_boundary, closing, open_store

DEFAULT_TIMEOUT = 5.0  # seconds per DNS question and per listener


def run(cfg: Config, nameservers: Sequence[HostPort], timeout: float) -> list[Line]:
    """Every check's lines, in the order an admin fixes them."""
    store = async_boundary(open_store(cfg))
    return asyncio.run(closing(store, _run(
        cfg, store, AuthDNS(nameservers or cfg.dns.nameservers, timeout), timeout)))


def exit_code(lines: Sequence[Line]) -> int:
    return 1 if any(line.status is Status.FAIL for line in lines) else 0


async def _run(cfg: Config, store: AsyncStore, dns: AuthDNS, timeout: float) -> list[Line]:
    """Independent checks run side by side (an unreachable DNS costs one timeout, not
    one per question); the lines keep their order."""
    hostname = cfg.hostname.lower().rstrip(".")
    domains = await store.list_domains()
    line, addresses = await check_dns.host_addresses(dns, hostname)
    steps: list[Awaitable[list[Line]]] = [check_dns.reverse(dns, hostname, a) for a in addresses]
    if hostname not in domains:
        steps.append(check_dns.helo_spf(dns, hostname, addresses))
    for domain in domains:
        steps += [check_dns.mx(dns, hostname, domain),
                  check_dns.spf(dns, hostname, domain, addresses),
                  check_dns.dkim(dns, domain, cfg.data_dir), check_dns.dmarc(dns, domain)]
    steps.append(check_server.listeners(cfg.listen, timeout))
    found = await asyncio.gather(*steps)
    lines = [line, *(one for group in found[:-1] for one in group)]
    if not domains:
        lines.append(fail("domains", "no local domain", "postwarden domain add DOMAIN"))
    lines += check_server.certificate(cfg.tls, hostname, datetime.datetime.now(datetime.UTC))
    lines += found[-1]
    domain = domains[0] if domains else hostname
    recipients = RecipientPolicy(store, cfg.relay, hostname)
    lines += await check_relay.policy(cfg, recipients, domain, _local_ips(cfg, addresses))
    lines.append(await check_relay.wire(cfg, domain, timeout))
    return lines


def _local_ips(cfg: Config, addresses: Sequence[str]) -> list[str]:
    """The addresses strangers reach us on: the hostname's and the SMTP listeners' own."""
    found = dict.fromkeys(addresses)
    for place in cfg.listen.get("smtp", ()):
        address = ip_or_none(place.host)
        if address is not None and not address.is_unspecified:
            found[str(address)] = None
    return list(found) or ["127.0.0.1"]
