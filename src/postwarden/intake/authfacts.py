"""The async half of sender authentication: gather DNS answers and signature results.

Everything that needs the network or the CPU happens here and ends in a
frozen ``AuthFacts`` for ``policy.authchecks.decide``. DKIM (``dkimcheck``:
dkimpy's parsing, OpenSSL's arithmetic) and ARC (dkimpy) use a synchronous
DNS hook: so the key records are fetched first (async, through ``AuthDNS``
and its cache) and the verification then runs against that table, never
waiting on the network: on the event loop for a small message, in a worker
thread for a large one. SPF for MAIL FROM and HELO (``envelope_facts``) can
start before DATA. The organisational domain
comes from the Public Suffix List snapshot shipped in ``publicsuffixlist``
(no fetch at run time).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dkim
from publicsuffixlist import PublicSuffixList

from postwarden.config import AuthChecksConfig
from postwarden.intake import dkimcheck
from postwarden.intake.authdns import AuthDNS, DNSTempError
from postwarden.intake.headers import from_fields
from postwarden.intake.spf import SPFLookups, check_host
from postwarden.mail.addresslist import parse_address_list
from postwarden.policy.authchecks import (
    AuthFacts,
    DKIMOutcome,
    DMARCLookup,
    Result,
    SPFOutcome,
    parse_dmarc,
)

_PSL = PublicSuffixList()
_SIGNATURE = re.compile(rb"^(dkim-signature|arc-seal|arc-message-signature)[ \t]*:"
                        rb"([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.MULTILINE | re.IGNORECASE)
_WANTED = frozenset({"d", "s", "a"})  # the tags a Signature keeps


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registrable domain by the PSL, or the name itself (memoised:
    the same few domains send most mail)."""
    domain = domain.lower().rstrip(".")
    return _PSL.privatesuffix(domain) or domain if domain else ""


@dataclass(frozen=True, slots=True)
class Signature:
    kind: str  # "dkim-signature" | "arc-seal" | "arc-message-signature"
    domain: str
    selector: str
    algorithm: str  # a=, lower-cased


def signatures(header_section: bytes) -> list[Signature]:
    """The d=, s= and a= of each signature field (the first of each, whitespace removed);
    unparsable ones get "" (still reported)."""
    found = []
    for m in _SIGNATURE.finditer(header_section):
        tags: dict[str, str] = {}
        for part in m.group(2).decode("utf-8", "replace").split(";"):
            name, eq, value = part.partition("=")
            if eq and (tag := name.strip().lower()) in _WANTED and tag not in tags:
                tags[tag] = "".join(value.split())
        found.append(Signature(m.group(1).decode().lower(), tags.get("d", "").lower(),
                               tags.get("s", ""), tags.get("a", "").lower()))
    return found


def _key_name(sig: Signature) -> str:
    return f"{sig.selector}._domainkey.{sig.domain}"


async def _fetch_keys(dns: SPFLookups, sigs: list[Signature]) -> dict[str, list[str] | None]:
    """TXT answers by name; None marks a lookup that failed (temperror)."""
    keys: dict[str, list[str] | None] = {}
    for sig in sigs:
        name = _key_name(sig)
        if name in keys or not sig.domain or not sig.selector:
            continue
        try:
            keys[name] = await dns.txt(name)
        except DNSTempError:
            keys[name] = None
    return keys


def _dnsfunc(keys: dict[str, list[str] | None]) -> Callable[..., bytes | None]:
    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        answer = keys.get(text.rstrip(".").lower())
        if answer is None and text.rstrip(".").lower() in keys:
            raise dkim.DnsTimeoutError(f"lookup of {text} failed")
        return answer[0].encode() if answer else None
    return lookup


def _verify(message: bytes, sigs: list[Signature], keys: dict[str, list[str] | None],
            limit: int) -> tuple[list[DKIMOutcome], Result]:
    """Runs in a thread: every DKIM signature (up to ``limit``), then the ARC chain."""
    dnsfunc = _dnsfunc({k.lower(): v for k, v in keys.items()})
    outcomes: list[DKIMOutcome] = []
    dkim_sigs = [s for s in sigs if s.kind == "dkim-signature"]
    try:
        parsed: dkimcheck.Message | None = dkimcheck.parse(message)
    except dkim.MessageFormatError as exc:
        # A header line RFC 5322 has no syntax for (no colon): no signature can be
        # checked, and no retry will change that (permerror, not a 451).
        parsed, unparsable = None, str(exc)[:200]
    except IndexError:  # dkimpy's parser, on a first line that continues no field
        parsed, unparsable = None, "a folded line before the first header field"
    for i, sig in enumerate(dkim_sigs[:limit]):
        org = org_domain(sig.domain) if sig.domain else ""
        if sig.algorithm == "rsa-sha1":  # dkimpy would still pass it
            outcomes.append(DKIMOutcome(Result.POLICY, sig.domain, sig.selector, org,
                                        "rsa-sha1 is not accepted (RFC 8301)"))
            continue
        if parsed is None:
            outcomes.append(DKIMOutcome(Result.PERMERROR, sig.domain, sig.selector, org,
                                        unparsable))
            continue
        if keys.get(_key_name(sig), []) is None:
            outcomes.append(DKIMOutcome(Result.TEMPERROR, sig.domain, sig.selector, org,
                                        "key lookup failed"))
            continue
        try:
            why = dkimcheck.failure(parsed, i, dnsfunc)
            result, reason = (Result.PASS, "") if why is None else (Result.FAIL, why)
        except dkim.DnsTimeoutError as exc:
            result, reason = Result.TEMPERROR, str(exc)
        except dkim.DKIMException as exc:
            result, reason = Result.PERMERROR if sig.domain else Result.NEUTRAL, str(exc)[:200]
        except Exception as exc:  # dkimpy on hostile input: never a crash, never a pass
            result, reason = Result.PERMERROR, f"{type(exc).__name__}"
        outcomes.append(DKIMOutcome(result, sig.domain, sig.selector, org, reason))
    arc = Result.NONE
    if any(s.kind == "arc-seal" for s in sigs):
        try:
            cv, _results, _comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
            arc = {b"pass": Result.PASS, b"none": Result.NONE}.get(cv, Result.FAIL)
        except dkim.DnsTimeoutError:
            arc = Result.TEMPERROR
        except Exception:
            arc = Result.PERMERROR
    return outcomes, arc


def _from_domain(header_section: bytes) -> tuple[str, str]:
    """The single RFC5322.From domain, or "" and why not (RFC 7489 §6.6.1)."""
    fields = from_fields(header_section)
    if not fields:
        return "", "no From field"
    if len(fields) > 1:
        return "", "several From fields"
    return _from_field_domain(fields[0])


@functools.lru_cache(maxsize=1024)
def _from_field_domain(field: str) -> tuple[str, str]:
    """The domain one From field names, memoised by its text (a sender's is the same in
    each of its messages)."""
    hosts = {a.host.lower().rstrip(".") for a in parse_address_list(field)
             if a.mailbox is not None and a.host}
    if len(hosts) != 1:
        return "", f"From names {len(hosts)} domains"
    return hosts.pop(), ""


# A domain's DMARC record parsed once per text (the last 1024 texts).
_dmarc_record = functools.lru_cache(maxsize=1024)(parse_dmarc)


async def _dmarc(dns: SPFLookups, domain: str, org: str) -> DMARCLookup:
    for name in dict.fromkeys((domain, org)):
        try:
            texts = await dns.txt(f"_dmarc.{name}")
        except DNSTempError as exc:
            return DMARCLookup(Result.TEMPERROR, None, f"DMARC lookup failed: {exc}")
        records = [r for r in (_dmarc_record(t, name) for t in texts) if r is not None]
        if len(records) == 1:
            return DMARCLookup(Result.PASS, records[0])
        if len(records) > 1:
            return DMARCLookup(Result.PERMERROR, None, f"several DMARC records at _dmarc.{name}")
    return DMARCLookup(Result.NONE, None, f"no DMARC record for {domain}")


def _cached(dns: AuthDNS, *names: str) -> bool:
    """Whether the first TXT answers some steps need are all at hand: then they need no
    round trips to overlap, and run one after the other on this task (side by side,
    each would cost a task and a few turns of the loop: ~15 µs a message)."""
    return dns.has_txt(n for n in names if n)


@dataclass(frozen=True, slots=True)
class EnvelopeFacts:
    """What MAIL FROM and HELO alone decide: known before DATA, so gathered meanwhile."""

    spf_mailfrom: SPFOutcome
    spf_helo: SPFOutcome
    mail_from_is_local: bool


async def envelope_facts(dns: AuthDNS, cfg: AuthChecksConfig, *, client_ip: str,
                         helo: str, mail_from: str,
                         is_local: Callable[[str], Awaitable[bool]]) -> EnvelopeFacts:
    """SPF for MAIL FROM and HELO, side by side (their DNS round trips overlap)."""
    helo_domain = helo.lower().rstrip(".")
    mf_domain = mail_from.rpartition("@")[2].lower() if "@" in mail_from else ""
    limits = {"lookup_limit": cfg.spf_lookup_limit, "void_limit": cfg.spf_void_limit}
    helo_check = check_host(dns, client_ip, helo_domain, f"postmaster@{helo_domain}", helo,
                            **limits)
    if mf_domain and _cached(dns, helo_domain, mf_domain):
        spf_helo = await helo_check
        spf_mf = await check_host(dns, client_ip, mf_domain, mail_from, helo, **limits)
        local = await is_local(mf_domain)
    elif mf_domain:
        spf_helo, spf_mf, local = await asyncio.gather(
            helo_check, check_host(dns, client_ip, mf_domain, mail_from, helo, **limits),
            is_local(mf_domain))
    else:  # null sender: the HELO identity stands in (RFC 7208 §2.4)
        spf_helo = spf_mf = await helo_check
        local = False
    spf_domain = mf_domain or helo_domain
    return EnvelopeFacts(
        SPFOutcome(spf_mf[0], spf_domain, org_domain(spf_domain), spf_mf[1]),
        SPFOutcome(spf_helo[0], helo_domain, org_domain(helo_domain), spf_helo[1]),
        local)


async def gather(dns: AuthDNS, cfg: AuthChecksConfig, *, client_ip: str, helo: str,
                 mail_from: str, message: bytes, trusted: str,
                 is_local: Callable[[str], Awaitable[bool]],
                 envelope: Awaitable[EnvelopeFacts] | None = None) -> AuthFacts:
    """All facts about one message; raises TimeoutError past ``check_timeout_seconds``.

    ``envelope``: ``envelope_facts`` for this MAIL FROM and HELO, started
    earlier (at RCPT); gathered here when not given.
    """
    if envelope is None:
        envelope = envelope_facts(dns, cfg, client_ip=client_ip, helo=helo,
                                  mail_from=mail_from, is_local=is_local)
    async with asyncio.timeout(cfg.check_timeout_seconds):
        return await _gather(dns, cfg, envelope, client_ip, helo, mail_from, message, trusted,
                             is_local)


async def _dkim(dns: SPFLookups, cfg: AuthChecksConfig, message: bytes,
                sigs: list[Signature]) -> tuple[list[DKIMOutcome], Result]:
    """Verify the signatures: keys fetched first (async), then the CPU work.

    A message up to ``inline_verify_max_bytes`` is verified on the event loop
    (well under a millisecond: less than a hop to a worker thread costs);
    a larger one in a thread.
    """
    if not sigs:
        return [], Result.NONE
    keys = await _fetch_keys(dns, sigs)
    if len(message) <= cfg.inline_verify_max_bytes:
        return _verify(message, sigs, keys, cfg.max_signatures)
    return await asyncio.to_thread(_verify, message, sigs, keys, cfg.max_signatures)


async def _no_dmarc(reason: str) -> DMARCLookup:
    return DMARCLookup(Result.NONE, None, reason)


async def _gather(dns: AuthDNS, cfg: AuthChecksConfig, envelope: Awaitable[EnvelopeFacts],
                  client_ip: str, helo: str, mail_from: str, message: bytes, trusted: str,
                  is_local: Callable[[str], Awaitable[bool]]) -> AuthFacts:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    from_domain, from_problem = _from_domain(head)
    from_org = org_domain(from_domain) if from_domain else ""
    sigs = signatures(head)
    dkim_step = _dkim(dns, cfg, message, sigs)
    dmarc_step = _dmarc(dns, from_domain, from_org) if from_domain else _no_dmarc(from_problem)
    keys = (_key_name(s) for s in sigs if s.domain and s.selector)
    if _cached(dns, *keys, f"_dmarc.{from_domain}" if from_domain else ""):
        try:
            env = await envelope
            (dkims, arc), dmarc = await dkim_step, await dmarc_step
        finally:  # after an error, the steps not reached are dropped, not left unawaited
            dkim_step.close()
            dmarc_step.close()
    else:
        env, (dkims, arc), dmarc = await asyncio.gather(envelope, dkim_step, dmarc_step)
    mf_domain = env.spf_mailfrom.domain if "@" in mail_from else ""
    if not from_domain:
        from_is_local = False
    elif from_domain == mf_domain:  # the usual case: one directory question, not two
        from_is_local = env.mail_from_is_local
    else:
        from_is_local = await is_local(from_domain)
    return AuthFacts(
        client_ip=client_ip, helo=helo, mail_from=mail_from, trusted=trusted,
        from_domain=from_domain, from_org=from_org, from_is_local=from_is_local,
        mail_from_is_local=env.mail_from_is_local, spf_mailfrom=env.spf_mailfrom,
        spf_helo=env.spf_helo, dkim=tuple(dkims), arc=arc, dmarc=dmarc,
        from_problem=from_problem,
    )
