"""Next-hop addresses: MX in preference order, A/AAAA fallback, null MX.

dnspython's async resolver is configured from ``[dns] nameservers`` (each
``host:port``) rather than the system's, so tests and split-horizon setups
see the same answers the operator configured. Every MX target is resolved
here too, not by the socket layer, for the same reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from postwarden.config import HostPort
from postwarden.intake.authdns import make_resolver
from postwarden.policy.routing import HopKind, NextHop


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try: ``name`` is what reports call the Remote-MTA."""

    name: str
    address: str
    port: int


class ResolveError(Exception):
    """No host to try; ``permanent`` failures bounce, the others retry."""

    def __init__(self, reply: str, permanent: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def dns_reason(exc: dns.exception.DNSException) -> str:
    """A short reason for the queue and the log: dnspython's own text lists every
    name server's answer and runs to hundreds of characters."""
    match exc:
        case dns.resolver.LifetimeTimeout():
            return "timed out"
        case dns.resolver.NoNameservers():
            return "no name server answered (SERVFAIL or refused)"
        case _:
            return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


class MXResolver:
    def __init__(self, nameservers: Sequence[HostPort], mx_port: int, timeout: float) -> None:
        self._resolver = make_resolver(nameservers, timeout)
        self._mx_port = mx_port

    async def hops(self, hop: NextHop) -> list[Hop]:
        """The hosts to try, in order; raises ResolveError when there are none."""
        match hop.kind:
            case HopKind.MX:
                return await self._mx_hops(hop.domain)
            case _:
                assert hop.relay is not None
                return await self._host_hops(hop.relay.host, hop.relay.port)

    async def _host_hops(self, host: str, port: int) -> list[Hop]:
        if _is_ip(host):
            return [Hop(host, host, port)]
        addresses = await self._addresses(host)
        if not addresses:
            raise ResolveError(f"451 4.4.4 No address for relay host {host}", permanent=False)
        return [Hop(host, a, port) for a in addresses]

    async def _mx_hops(self, domain: str) -> list[Hop]:
        try:
            answer = await self._resolver.resolve(domain, dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN:
            raise ResolveError(f"550 5.1.2 Domain {domain} does not exist", True) from None
        except dns.resolver.NoAnswer:
            answer = None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"451 4.4.3 DNS lookup of {domain} failed: {dns_reason(exc)}",
                               False) from None
        if answer is None:  # RFC 5321 §5.1: no MX, the domain itself is the host
            addresses = await self._addresses(domain)
            if not addresses:
                raise ResolveError(f"550 5.1.2 Domain {domain} has no mail host", True)
            return [Hop(domain, a, self._mx_port) for a in addresses]
        records = sorted(answer, key=lambda r: r.preference)
        names = [r.exchange.to_text(omit_final_dot=True) for r in records]
        if len(records) == 1 and names[0] in ("", "."):
            raise ResolveError(
                f"556 5.1.10 Domain {domain} accepts no mail (null MX)", permanent=True
            )
        hops: list[Hop] = []
        for name in dict.fromkeys(n for n in names if n not in ("", ".")):
            hops.extend(Hop(name, a, self._mx_port) for a in await self._addresses(name))
        if not hops:
            raise ResolveError(f"451 4.4.4 No address for any MX of {domain}", permanent=False)
        return hops

    async def _addresses(self, name: str) -> list[str]:
        """A then AAAA records; lookup failures count as no address."""
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await self._resolver.resolve(name, rdtype)
            except dns.exception.DNSException:
                continue
            found.extend(r.address for r in answer)
        return found
