"""The DNS half of ``postwarden check``: what other mail servers will look up about us.

Every question goes through ``AuthDNS`` (the ``[dns]`` nameservers, as the
server's own SPF/DKIM/DMARC checks use), and SPF is judged by the server's
own evaluator, so the check sees what a receiving server would see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from postwarden.admin.checkline import Line, fail, ok, warn
from postwarden.delivery import dkimsign
from postwarden.intake.authdns import AuthDNS, DNSTempError
from postwarden.intake.spf import check_host
from postwarden.policy.authchecks import Result, parse_dmarc

DNS_FIX = "check [dns] nameservers (or --dns) and that your zone's servers answer"


def _name(text: str) -> str:
    return text.lower().rstrip(".")


async def _guarded(topic: str, step: Callable[[], Awaitable[list[Line]]]) -> list[Line]:
    """A failed lookup is a line of its own, never the end of the whole check."""
    try:
        return await step()
    except DNSTempError as exc:
        return [fail(topic, f"DNS lookup failed ({exc})", DNS_FIX)]


async def host_addresses(dns: AuthDNS, hostname: str) -> tuple[Line, list[str]]:
    """The A/AAAA line and our addresses (what SPF and reverse DNS are checked for)."""
    topic = f"address {hostname}"
    try:
        found = await dns.a(hostname) + await dns.aaaa(hostname)
    except DNSTempError as exc:
        return fail(topic, f"DNS lookup failed ({exc})", DNS_FIX), []
    if not found:
        return fail(topic, "no A or AAAA record",
                    f'publish "{hostname}. A <this server\'s public IPv4 address>"'
                    " (and AAAA for IPv6)"), []
    return ok(topic, ", ".join(found)), found


async def mx(dns: AuthDNS, hostname: str, domain: str) -> list[Line]:
    topic = f"mx {domain}"
    fix = f'publish "{domain}. MX 10 {hostname}."'

    async def step() -> list[Line]:
        hosts = [_name(h) for h in await dns.mx(domain)]
        if not hosts:
            return [fail(topic, "no MX record", fix)]
        if hosts == [""]:
            return [fail(topic, "null MX: the domain says it takes no mail", fix)]
        if hostname not in hosts:
            return [fail(topic, f"points at {', '.join(hosts)}, not {hostname}", fix)]
        return [ok(topic, ", ".join(hosts))]

    return await _guarded(topic, step)


async def reverse(dns: AuthDNS, hostname: str, address: str) -> list[Line]:
    """Forward-confirmed reverse DNS: the PTR names the hostname, whose A/AAAA has ``address``."""
    topic = f"reverse dns {address}"
    fix = (f"ask whoever runs the network of {address} (your hosting provider) to set its"
           f" PTR record to {hostname}")

    async def step() -> list[Line]:
        names = [_name(n) for n in await dns.ptr(address)]
        if not names:
            return [fail(topic, "no PTR record", fix)]
        if hostname not in names:
            return [fail(topic, f"PTR is {', '.join(names)}, not {hostname}", fix)]
        if address not in await dns.a(hostname) + await dns.aaaa(hostname):
            return [fail(topic, f"PTR is {hostname}, but {hostname} does not resolve back",
                         f'publish "{hostname}. A {address}"')]
        return [ok(topic, f"PTR {hostname}, which resolves back (forward-confirmed)")]

    return await _guarded(topic, step)


async def spf(dns: AuthDNS, hostname: str, domain: str, addresses: Sequence[str]) -> list[Line]:
    topic = f"spf {domain}"
    publish = f'publish "{domain}. TXT \\"v=spf1 mx -all\\""'

    async def step() -> list[Line]:
        records = [t for t in await dns.txt(domain) if t.lower().startswith("v=spf1")]
        if not records:
            return [fail(topic, "no SPF record", publish)]
        if not addresses:
            return [warn(topic, f"{records[0]!r}: not tested (no address for {hostname})",
                         f"publish an A record for {hostname}")]
        lines = []
        for address in addresses:
            result, reason = await check_host(dns, address, domain, f"postmaster@{domain}",
                                              hostname)
            if result is not Result.PASS:
                mechanism = "ip6" if ":" in address else "ip4"
                lines.append(fail(topic, f"{result.value} for {address} ({reason})",
                                  f'add "{mechanism}:{address}" (or "mx") before the "all"'
                                  f" of {domain}'s SPF record"))
        return lines or [ok(topic, f"passes for {', '.join(addresses)}")]

    return await _guarded(topic, step)


async def helo_spf(dns: AuthDNS, hostname: str, addresses: Sequence[str]) -> list[Line]:
    """The hostname's own SPF: receivers judge bounces (``MAIL FROM:<>``) by the HELO name."""
    topic = f"spf {hostname} (HELO, for bounces)"

    async def step() -> list[Line]:
        if not any(t.lower().startswith("v=spf1") for t in await dns.txt(hostname)):
            return [warn(topic, "no SPF record: bounces and reports we send are not vouched"
                         " for", f'publish "{hostname}. TXT \\"v=spf1 a -all\\""')]
        return await spf(dns, hostname, hostname, addresses)

    return await _guarded(topic, step)


async def dkim(dns: AuthDNS, domain: str, data_dir: Path) -> list[Line]:
    """Each key in ``data_dir`` (``dkim show``) must be published as it is."""
    topic = f"dkim {domain}"
    keys = dkimsign.load_keys(data_dir, domain)
    if not keys:
        return [warn(topic, "no signing key: receivers cannot tell your mail is yours",
                     f"postwarden dkim generate {domain}, then publish the record it prints")]

    async def step() -> list[Line]:
        lines = []
        for key in keys:
            name = f"{key.selector}._domainkey.{domain}"
            published = [_tags(t).get("p", "") for t in await dns.txt(name)]
            if key.public in published:
                lines.append(ok(topic, f"{name} publishes the key in data_dir"))
            elif published:
                lines.append(fail(topic, f"{name} publishes another key than data_dir's",
                                  f"replace it by: {key.dns_record()}"))
            else:
                lines.append(fail(topic, f"{name} has no key record",
                                  f"publish: {key.dns_record()}"))
        return lines

    return await _guarded(topic, step)


async def dmarc(dns: AuthDNS, domain: str) -> list[Line]:
    topic = f"dmarc {domain}"
    publish = (f'publish "_dmarc.{domain}. TXT \\"v=DMARC1; p=quarantine;'
               f' rua=mailto:postmaster@{domain}\\""')

    async def step() -> list[Line]:
        texts = [t for t in await dns.txt(f"_dmarc.{domain}")
                 if t.replace(" ", "").upper().startswith("V=DMARC1")]
        if not texts:
            return [warn(topic, "no DMARC record: receivers apply no policy to forgeries",
                         publish)]
        if len(texts) > 1:
            return [fail(topic, f"{len(texts)} DMARC records (receivers ignore them all)",
                         "keep only one")]
        record = parse_dmarc(texts[0], domain)
        if record is None:
            return [fail(topic, f"cannot parse {texts[0]!r}", publish)]
        return [ok(topic, f"p={record.p}")]

    return await _guarded(topic, step)


def _tags(text: str) -> dict[str, str]:
    """``tag=value`` pairs of a DKIM key record, whitespace inside values dropped."""
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = "".join(value.split())
    return tags
