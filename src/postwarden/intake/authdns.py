"""DNS for sender authentication: the ``[dns]`` nameservers, a TTL cache, timeouts.

Built like ``delivery.resolver`` (dnspython's async resolver, configured
from ``[dns] nameservers``), but returning plain values and telling "no such
data" (empty list: a void lookup for SPF) from "could not ask" (``DNSTempError``,
which the checks turn into temperror and the server into a 451). dnspython's
``LRUCache`` keeps each answer for its TTL, shared by all sessions.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from postwarden.config import HostPort


class DNSTempError(Exception):
    """The question got no usable answer (timeout, SERVFAIL, refused)."""


def make_resolver(nameservers: Sequence[HostPort], timeout: float) -> dns.asyncresolver.Resolver:
    """``[dns] nameservers`` (or the system's when empty), ``timeout`` per question, a TTL cache."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers
        ]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    resolver.cache = dns.resolver.LRUCache()
    return resolver


class AuthDNS:
    def __init__(self, nameservers: Sequence[HostPort], timeout: float) -> None:
        self._resolver = make_resolver(nameservers, timeout)

    async def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[object]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
            if isinstance(exc, dns.name.LabelTooLong | dns.name.NameTooLong | dns.name.EmptyLabel):
                return []  # a name that cannot exist has no data
            raise DNSTempError(f"{name}/{rdtype.name}: {type(exc).__name__}") from None
        return list(answer)

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 §3.3)."""
        return [b"".join(r.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
                for r in await self._ask(name, dns.rdatatype.TXT)]

    async def a(self, name: str) -> list[str]:
        return [r.address for r in await self._ask(name, dns.rdatatype.A)]  # type: ignore[attr-defined]

    async def aaaa(self, name: str) -> list[str]:
        return [r.address for r in await self._ask(name, dns.rdatatype.AAAA)]  # type: ignore[attr-defined]

    async def mx(self, name: str) -> list[str]:
        return [r.exchange.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
                for r in await self._ask(name, dns.rdatatype.MX)]

    async def ptr(self, ip: str) -> list[str]:
        name = dns.reversename.from_address(ip).to_text()
        return [r.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
                for r in await self._ask(name, dns.rdatatype.PTR)]
