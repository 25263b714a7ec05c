"""SPF ``check_host()`` (RFC 7208), asynchronous, over injected lookups.

Hand-written because no maintained library fits: pyspf (last release 2020)
and checkdmarc's SPF code both do blocking DNS through their own resolver,
so they would need a thread per check, could not share our TTL cache and
``[dns]`` nameservers, and could not be held to one per-message budget and
deadline. Here every DNS question goes through ``SPFLookups`` (``AuthDNS`` in
the server, a table in tests) and the limits of §4.6.4 (DNS-querying terms,
void lookups, MX/PTR names) are counted per evaluation across includes.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Protocol

from postwarden.intake.authdns import DNSTempError
from postwarden.policy.authchecks import Result


class SPFLookups(Protocol):
    async def txt(self, name: str) -> list[str]: ...
    async def a(self, name: str) -> list[str]: ...
    async def aaaa(self, name: str) -> list[str]: ...
    async def mx(self, name: str) -> list[str]: ...
    async def ptr(self, ip: str) -> list[str]: ...


class _Stop(Exception):
    """Ends the evaluation with a result (permerror/temperror)."""

    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(slots=True)
class _Budget:
    lookups_left: int
    voids_left: int
    void_limit: int = 0

    def lookup(self, term: str) -> None:
        self.lookups_left -= 1
        if self.lookups_left < 0:
            raise _Stop(Result.PERMERROR, f"too many DNS lookups (at {term})")

    def void(self, name: str) -> None:
        self.voids_left -= 1
        if self.voids_left < 0:
            raise _Stop(Result.PERMERROR, f"more than {self.void_limit} void lookups (at {name})")


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: str  # "+", "-", "~", "?"; "" for modifiers
    name: str  # mechanism or modifier name, lower case
    arg: str  # domain-spec or ip, "" if absent
    cidr4: int | None = None  # a, mx: the prefix lengths they match with
    cidr6: int | None = None
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4/ip6: parsed once


_QUALIFIED = {"+": Result.PASS, "-": Result.FAIL, "~": Result.SOFTFAIL, "?": Result.NEUTRAL}
_MECHANISMS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
_MODIFIER = re.compile(r"([a-z][a-z0-9_.\-]*)=(.*)\Z", re.IGNORECASE | re.DOTALL)
_MECH = re.compile(r"([+\-~?]?)([a-z][a-z0-9_.\-]*)(?::(.*?))?((?:/\d*)?(?://\d*)?)\Z",
                   re.IGNORECASE | re.DOTALL)
_CIDR = re.compile(r"(?:/(0|[1-9]\d?))?(?://(0|[1-9]\d{0,2}))?")
_MACRO = re.compile(r"%(?:\{([slodiphvcrt])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def _parse(record: str) -> tuple[_Term, ...]:
    """Every term, or _Stop(permerror) on any syntax error (§4.6).

    Memoised (the last 1024 record texts): most mail comes with a few records,
    parsed once each rather than twice per message.
    """
    if not record.isascii():
        raise _Stop(Result.PERMERROR, "non-ASCII SPF record")
    terms: list[_Term] = []
    seen: set[str] = set()
    for word in record.split(" ")[1:]:
        if not word:
            continue
        if (m := _MODIFIER.match(word)) and m.group(1).lower() not in _MECHANISMS:
            name = m.group(1).lower()
            if name in ("redirect", "exp") and name in seen:
                raise _Stop(Result.PERMERROR, f"duplicate {name}= modifier")
            seen.add(name)
            if name in ("redirect", "exp"):
                _domain_spec(m.group(2), word)
            else:
                _check_macros(m.group(2))
            terms.append(_Term("", name, m.group(2)))
            continue
        terms.append(_mechanism(word))
    return tuple(terms)


def _mechanism(word: str) -> _Term:
    m = _MECH.match(word)
    if m is None or m.group(2).lower() not in _MECHANISMS:
        raise _Stop(Result.PERMERROR, f"bad term {word!r}")
    qualifier, name, arg, cidr = m.group(1) or "+", m.group(2).lower(), m.group(3), m.group(4)
    if name in ("ip4", "ip6"):
        bad_cidr = (name == "ip4" and "//" in cidr) or (name == "ip6" and cidr.count("/") > 1)
        if bad_cidr or not re.fullmatch(r"[0-9A-Fa-f.:]+", arg or ""):
            raise _Stop(Result.PERMERROR, f"bad address in {word!r}")
        try:
            net = ipaddress.ip_network(f"{arg}{cidr}", strict=False)
        except ValueError:
            raise _Stop(Result.PERMERROR, f"bad address in {word!r}") from None
        if (name == "ip4") != (net.version == 4) or re.search(r"/0\d", cidr):
            raise _Stop(Result.PERMERROR, f"bad address in {word!r}")
        return _Term(qualifier, name, arg, net=net)
    c = _CIDR.fullmatch(cidr or "")
    if c is None or (cidr and name not in ("a", "mx")):
        raise _Stop(Result.PERMERROR, f"bad prefix length in {word!r}")
    c4, c6 = (int(c.group(1)) if c.group(1) else None, int(c.group(2)) if c.group(2) else None)
    if (c4 is not None and c4 > 32) or (c6 is not None and c6 > 128):
        raise _Stop(Result.PERMERROR, f"bad prefix length in {word!r}")
    if (name in ("include", "exists") and arg is None) or (name == "all" and arg is not None):
        raise _Stop(Result.PERMERROR, f"bad term {word!r}")
    if arg is not None:
        _domain_spec(arg, word)
    return _Term(qualifier, name, arg or "", c4, c6)


def _domain_spec(spec: str, word: str) -> None:
    """RFC 7208 §7.1: visible ASCII macro-string ending in a macro or ``.toplabel``."""
    _check_macros(spec)
    if re.search(r"%\{[crt]", spec, re.IGNORECASE):  # §7.1: only in explanation text
        raise _Stop(Result.PERMERROR, f"macro only allowed in explanations in {word!r}")
    body = spec[:-1] if spec.endswith(".") else spec
    if not re.fullmatch(r"[\x21-\x7e]+", spec) or not body:
        raise _Stop(Result.PERMERROR, f"bad domain in {word!r}")
    if body.endswith("}"):
        return
    _, dot, top = body.rpartition(".")
    ok = bool(dot) and bool(re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", top, re.I))
    if not ok or top.isdigit():
        raise _Stop(Result.PERMERROR, f"bad domain in {word!r}")


def _check_macros(spec: str) -> None:
    for m in _MACRO.finditer(spec):
        if m.group(5) is not None and m.group(5) not in "%_-":
            raise _Stop(Result.PERMERROR, f"bad macro in {spec!r}")
    if "%" in _MACRO.sub("", spec):
        raise _Stop(Result.PERMERROR, f"bad macro in {spec!r}")


@dataclass(frozen=True, slots=True)
class _Ctx:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    dns: SPFLookups
    budget: _Budget = field(compare=False)


def _expand(spec: str, ctx: _Ctx, domain: str) -> str:
    local, _, sdomain = ctx.sender.rpartition("@")

    def one(m: re.Match[str]) -> str:
        if m.group(5) is not None:
            return {"%": "%", "_": " ", "-": "%20"}[m.group(5)]
        letter = m.group(1).lower()
        if letter in "crt":
            raise _Stop(Result.PERMERROR, f"macro %{{{letter}}} only allowed in exp=")
        ip = ctx.ip
        nibbles = ".".join(ip.exploded.replace(":", "")) if ip.version == 6 else str(ip)
        value = {"s": ctx.sender, "l": local or "postmaster", "o": sdomain, "d": domain,
                 "i": nibbles, "p": "unknown", "h": ctx.helo,
                 "v": "in-addr" if ip.version == 4 else "ip6"}[letter]
        parts = re.split("[" + re.escape(m.group(4) or ".") + "]", value)
        if m.group(3):
            parts.reverse()
        if m.group(2):
            keep = int(m.group(2))
            if keep == 0:
                raise _Stop(Result.PERMERROR, "macro digit 0")
            parts = parts[-keep:]
        return ".".join(parts)

    out = _MACRO.sub(one, spec).rstrip(".")
    while len(out) > 253 and "." in out:  # §7.3: drop labels from the left
        out = out.split(".", 1)[1]
    return out


def _valid_domain(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(labels) > 1 and all(0 < len(x) <= 63 for x in labels)


async def _records(ctx: _Ctx, domain: str) -> list[str]:
    try:
        txts = await ctx.dns.txt(domain)
    except DNSTempError as exc:
        raise _Stop(Result.TEMPERROR, str(exc)) from None
    return [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


async def _ask(ctx: _Ctx, kind: str, name: str) -> list[str]:
    try:
        match kind:
            case "a":
                return await (ctx.dns.a(name) if ctx.ip.version == 4 else ctx.dns.aaaa(name))
            case "mx":
                return await ctx.dns.mx(name)
            case _:
                return await ctx.dns.ptr(str(ctx.ip))
    except DNSTempError as exc:
        raise _Stop(Result.TEMPERROR, str(exc)) from None


def _in_net(ctx: _Ctx, addresses: list[str], t: _Term) -> bool:
    prefix = t.cidr4 if ctx.ip.version == 4 else t.cidr6
    if prefix is None:
        prefix = ctx.ip.max_prefixlen
    for text in addresses:
        net = ipaddress.ip_network(f"{text}/{prefix}", strict=False)
        if ctx.ip in net:
            return True
    return False


async def _matches(t: _Term, ctx: _Ctx, domain: str) -> bool:
    if t.net is not None:  # ip4, ip6: no DNS, no macro
        return ctx.ip.version == t.net.version and ctx.ip in t.net
    target = _expand(t.arg, ctx, domain) if t.arg else domain
    match t.name:
        case "all":
            return True
        case "include":
            ctx.budget.lookup(f"include:{target}")
            result, reason = await _check(ctx, target, nested=True)
            match result:
                case Result.PASS:
                    return True
                case Result.TEMPERROR:
                    raise _Stop(result, reason)
                case Result.NONE | Result.PERMERROR:
                    raise _Stop(Result.PERMERROR, f"include:{target}: {reason}")
                case _:
                    return False
        case "a" | "exists":
            ctx.budget.lookup(f"{t.name}:{target}")
            if t.name == "exists":
                try:
                    found = await ctx.dns.a(target)
                except DNSTempError as exc:
                    raise _Stop(Result.TEMPERROR, str(exc)) from None
            else:
                found = await _ask(ctx, "a", target)
            if not found:
                ctx.budget.void(target)
            return bool(found) if t.name == "exists" else _in_net(ctx, found, t)
        case "mx":
            ctx.budget.lookup(f"mx:{target}")
            hosts = await _ask(ctx, "mx", target)
            if not hosts:
                ctx.budget.void(target)
            if len(hosts) > 10:
                raise _Stop(Result.PERMERROR, f"mx:{target} has more than 10 MX names")
            for host in hosts:
                if _in_net(ctx, await _ask(ctx, "a", host), t):
                    return True
            return False
        case _:  # ptr (§5.5, discouraged but defined)
            ctx.budget.lookup(f"ptr:{target}")
            names = await _ask(ctx, "ptr", "")
            if not names:
                ctx.budget.void(str(ctx.ip))
            for name in names[:10]:
                if (name.lower() == target.lower() or name.lower().endswith("." + target.lower())) \
                        and ctx.ip in map(ipaddress.ip_address, await _ask(ctx, "a", name)):
                    return True
            return False


async def _check(ctx: _Ctx, domain: str, nested: bool = False) -> tuple[Result, str]:
    if not _valid_domain(domain):
        return Result.NONE, f"{domain!r} is not a domain name"
    records = await _records(ctx, domain)
    if not records:
        return Result.NONE, f"no SPF record at {domain}"
    if len(records) > 1:
        return Result.PERMERROR, f"{len(records)} SPF records at {domain}"
    terms = _parse(records[0])
    for t in terms:
        if t.qualifier and await _matches(t, ctx, domain):
            return _QUALIFIED[t.qualifier], f"{domain} matched {t.qualifier}{t.name}"
    for t in terms:
        if t.name == "redirect":
            target = _expand(t.arg, ctx, domain)
            ctx.budget.lookup(f"redirect={target}")
            result, reason = await _check(ctx, target, nested)
            if result is Result.NONE:
                return Result.PERMERROR, f"redirect={target}: {reason}"
            return result, reason
    return Result.NEUTRAL, f"{domain}: no term matched"


async def check_host(dns: SPFLookups, ip: str, domain: str, sender: str, helo: str, *,
                     lookup_limit: int = 10, void_limit: int = 2) -> tuple[Result, str]:
    """RFC 7208 §4: the result for ``ip`` sending as ``sender`` on behalf of ``domain``.

    ``sender`` is the MAIL FROM address, or ``postmaster@<helo>`` for the HELO
    check and the null sender (§2.4). Never raises: DNS trouble is temperror.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return Result.PERMERROR, f"bad client address {ip!r}"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    ctx = _Ctx(address, sender, helo, dns, _Budget(lookup_limit, void_limit, void_limit))
    try:
        return await _check(ctx, domain.lower().rstrip("."))
    except _Stop as stop:
        return stop.result, stop.reason
