"""DNS for sender authentication: the ``[dns]`` nameservers, a TTL cache, timeouts.

Built like ``delivery.resolver`` (dnspython's async resolver, configured
from ``[dns] nameservers``), but returning plain values and telling "no such
data" (empty list: a void lookup for SPF) from "could not ask" (``DNSTempError``,
which the checks turn into temperror and the server into a 451).

Answers are kept for their TTL in ``AnswerCache``, shared by all sessions: a
dict in front of the resolver, because a hit in dnspython's own cache still
builds a query name and a resolution (~50 µs), several times per message.
Negative answers are kept for the SOA minimum that comes with them (RFC 2308),
and not at all without one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import dns.asyncresolver
import dns.exception
import dns.message
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


class AnswerCache:
    """(name, type) -> rdata until the answer expires; at most ``size`` entries.

    When full, expired entries go first, then the oldest half: a flood of
    distinct names cannot grow it, and it never stops caching.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: dict[tuple[str, int], tuple[float, list[object]]] = {}

    def get(self, key: tuple[str, int], now: float) -> list[object] | None:
        hit = self._answers.get(key)
        if hit is None or hit[0] <= now:
            return None
        return hit[1]

    def put(self, key: tuple[str, int], until: float, rdata: list[object]) -> None:
        if len(self._answers) >= self.size:
            now = time.monotonic()
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
            if len(self._answers) >= self.size:
                keep = list(self._answers.items())[len(self._answers) // 2:]
                self._answers = dict(keep)
        self._answers[key] = (until, rdata)


def _negative_ttl(exc: dns.resolver.NXDOMAIN | dns.resolver.NoAnswer) -> float:
    """The SOA minimum of a negative answer (RFC 2308 §5), 0 without one."""
    responses: list[dns.message.Message] = list(exc.kwargs.get("responses", {}).values())
    if (response := exc.kwargs.get("response")) is not None:
        responses.append(response)
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


def _key(name: str, rdtype: dns.rdatatype.RdataType) -> tuple[str, int]:
    return name.lower().rstrip("."), int(rdtype)


class AuthDNS:
    def __init__(self, nameservers: Sequence[HostPort], timeout: float,
                 cache_size: int = 10000) -> None:
        self._resolver = make_resolver(nameservers, timeout)
        self._resolver.cache = None  # ours is in front; dnspython's would be a second copy
        self._cache = AnswerCache(cache_size)

    def has_txt(self, names: Iterable[str]) -> bool:
        """Whether every name's TXT answer is at hand (asking would cost no round trip)."""
        now = time.monotonic()
        return all(self._cache.get(_key(name, dns.rdatatype.TXT), now) is not None
                   for name in names)

    async def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[object]:
        key = _key(name, rdtype)
        now = time.monotonic()
        if (cached := self._cache.get(key, now)) is not None:
            return cached
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            if (ttl := _negative_ttl(exc)) > 0:
                self._cache.put(key, now + ttl, [])
            return []
        except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
            if isinstance(exc, dns.name.LabelTooLong | dns.name.NameTooLong | dns.name.EmptyLabel):
                return []  # a name that cannot exist has no data
            raise DNSTempError(f"{name}/{rdtype.name}: {type(exc).__name__}") from None
        rdata = list(answer)
        if answer.rrset is not None:
            self._cache.put(key, now + answer.rrset.ttl, rdata)
        return rdata

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
