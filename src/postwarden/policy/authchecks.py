"""Inbound sender authentication: frozen facts in, a verdict with reasons out.

Pure, like the relay decision: the SPF results, DKIM/ARC results and the
DMARC record were gathered beforehand (``intake.authfacts``); this module
only aligns them (RFC 7489 §3.1), applies the operator's ``[auth_checks]``
policy and writes the ``Authentication-Results`` field (RFC 8601). The
server and ``postwarden auth check`` call the same ``decide``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from postwarden.config import AuthChecksConfig
from postwarden.mail.reply import Reply

SPOOFED = Reply(550, "5.7.1", "Sender claims a local domain but is not authenticated")
DMARC_REJECTED = Reply(550, "5.7.1", "Rejected by the sender domain's DMARC policy")
SPF_REJECTED = Reply(550, "5.7.23", "SPF validation failed")
DNS_TEMPFAIL = Reply(451, "4.7.5", "Sender authentication DNS lookup failed, try again later")
CHECK_TEMPFAIL = Reply(451, "4.7.0", "Sender authentication failed, try again later")


class Result(enum.Enum):
    """SPF (RFC 7208 §2.6) and DKIM/ARC/DMARC result words (RFC 8601 §2.7)."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"


class Action(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # accepted; local copies go to the Junk mailbox
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class SPFOutcome:
    """One SPF check_host() result for ``domain`` (MAIL FROM or HELO identity)."""

    result: Result
    domain: str
    org: str  # organisational domain of ``domain``
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DKIMOutcome:
    result: Result
    domain: str  # d=
    selector: str  # s=
    org: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    """The tags of a DMARC record that decide (RFC 7489 §6.3); pct is honoured as 100."""

    p: str
    sp: str
    adkim: str  # "r" | "s"
    aspf: str
    found_at: str  # the name it was read from (From domain or its organisational domain)


@dataclass(frozen=True, slots=True)
class DMARCLookup:
    result: Result  # NONE (no record), PASS (record found), TEMPERROR, PERMERROR
    record: DMARCRecord | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuthFacts:
    """Everything the decision needs, gathered by the async step."""

    client_ip: str
    helo: str
    mail_from: str  # "" for the null sender
    trusted: str  # why the client is trusted ("authenticated as x"), "" if not
    from_domain: str  # the single RFC5322.From domain, "" if absent or several
    from_org: str
    from_is_local: bool
    mail_from_is_local: bool
    spf_mailfrom: SPFOutcome
    spf_helo: SPFOutcome
    dkim: tuple[DKIMOutcome, ...]
    arc: Result
    dmarc: DMARCLookup
    from_problem: str = ""  # why from_domain is empty


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    action: Action
    reply: Reply | None  # the refusal; None when the message goes on
    rule: str
    reasons: tuple[str, ...]
    dmarc: Result
    header: str  # the Authentication-Results field, CRLF-terminated
    # What vouches for the envelope sender, so that reports may go to it:
    # "spf", "dkim" (a pass aligned with its domain), "none"; "" if unknown.
    sender_proof: str = ""


_DMARC_TAG = re.compile(r"^\s*([a-zA-Z]+)\s*=\s*(.*?)\s*$")


def parse_dmarc(text: str, found_at: str) -> DMARCRecord | None:
    """A DMARC TXT record, or None when it is not one (RFC 7489 §6.4)."""
    parts = text.split(";")
    if parts[0].strip() != "v=DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        if m := _DMARC_TAG.match(part):
            tags.setdefault(m.group(1).lower(), m.group(2).lower())
    p = tags.get("p", "")
    if p not in ("none", "quarantine", "reject"):
        # §6.6.3: a record with an invalid p= but a valid rua= counts as none.
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", p)
    if sp not in ("none", "quarantine", "reject"):
        sp = p
    adkim = "s" if tags.get("adkim") == "s" else "r"
    aspf = "s" if tags.get("aspf") == "s" else "r"
    return DMARCRecord(p, sp, adkim, aspf, found_at)


def _aligned(domain: str, org: str, facts: AuthFacts, mode: str) -> bool:
    if mode == "s":
        return domain == facts.from_domain
    return bool(org) and org == facts.from_org


def _dmarc(facts: AuthFacts) -> tuple[Result, str, list[str]]:
    """The DMARC result, the policy word that applies, and why."""
    look = facts.dmarc
    if not facts.from_domain:
        return Result.PERMERROR if facts.from_problem else Result.NONE, "", [facts.from_problem]
    if look.result is not Result.PASS or look.record is None:
        return look.result, "", [look.reason or f"no DMARC record for {facts.from_domain}"]
    rec = look.record
    policy = rec.p if rec.found_at == facts.from_domain else rec.sp
    spf = facts.spf_mailfrom if facts.mail_from else facts.spf_helo
    why: list[str] = []
    frm = facts.from_domain
    if spf.result is Result.PASS and _aligned(spf.domain, spf.org, facts, rec.aspf):
        return Result.PASS, policy, [f"SPF pass for {spf.domain} aligns with From {frm}"]
    for d in facts.dkim:
        if d.result is Result.PASS and _aligned(d.domain, d.org, facts, rec.adkim):
            return Result.PASS, policy, [f"DKIM pass d={d.domain} aligns with From {frm}"]
    pending = spf.result is Result.TEMPERROR or any(
        d.result is Result.TEMPERROR for d in facts.dkim)
    if pending:
        return Result.TEMPERROR, policy, ["an SPF or DKIM lookup failed; DMARC cannot conclude"]
    why.append(f"no SPF or DKIM pass aligned with From {facts.from_domain}"
               f" (adkim={rec.adkim} aspf={rec.aspf})")
    why.append(f"policy p={policy} from record at _dmarc.{rec.found_at}")
    return Result.FAIL, policy, why


def _vouched_for(domain: str, facts: AuthFacts) -> bool:
    """An SPF or DKIM pass for ``domain`` itself (spoofing protection)."""
    if facts.spf_mailfrom.result is Result.PASS and facts.spf_mailfrom.domain == domain:
        return True
    return any(d.result is Result.PASS and d.domain == domain for d in facts.dkim)


def sender_proof(facts: AuthFacts) -> str:
    """What vouches for the MAIL FROM domain: SPF, or DKIM aligned with it (relaxed).

    Only such a sender may get our reports (no backscatter to forgeries);
    the null sender gets none anyway.
    """
    if not facts.mail_from:
        return ""
    spf = facts.spf_mailfrom
    if spf.result is Result.PASS:
        return "spf"
    if any(d.result is Result.PASS and d.org and d.org == spf.org for d in facts.dkim):
        return "dkim"
    return "none"


def decide(facts: AuthFacts, cfg: AuthChecksConfig, authserv_id: str) -> AuthVerdict:
    """The verdict on one message from an unauthenticated client.

    Order: trusted clients pass; spoofed local domains are refused; DMARC
    failures follow the domain's policy; SPF fail is refused only if the
    operator asks; a DNS error that could change the answer is a 451, never
    a pass.
    """
    dmarc, policy, dmarc_why = _dmarc(facts)
    header = authentication_results(authserv_id, facts, dmarc, policy)

    def verdict(action: Action, reply: Reply | None, rule: str, *why: str) -> AuthVerdict:
        return AuthVerdict(action, reply, rule, tuple(w for w in why if w), dmarc, header,
                           sender_proof(facts))

    if facts.trusted:
        return verdict(Action.ACCEPT, None, "trusted", facts.trusted)
    if cfg.spoofing_protection:
        for domain, local in ((_domain(facts.mail_from), facts.mail_from_is_local),
                              (facts.from_domain, facts.from_is_local)):
            if not local or _vouched_for(domain, facts):
                continue
            if facts.spf_mailfrom.result is Result.TEMPERROR or any(
                    d.result is Result.TEMPERROR and d.domain == domain for d in facts.dkim):
                return verdict(Action.TEMPFAIL, DNS_TEMPFAIL, "dns_error",
                               f"{domain} is local; a lookup that could vouch for it failed")
            return verdict(Action.REJECT, SPOOFED, "spoofing_protection",
                           f"{domain} is a local domain, the client {facts.client_ip} is not"
                           " authenticated and no SPF or DKIM pass vouches for it")
    if facts.dmarc.result is Result.TEMPERROR or dmarc is Result.TEMPERROR:
        return verdict(Action.TEMPFAIL, DNS_TEMPFAIL, "dns_error", *dmarc_why)
    if dmarc is Result.FAIL:
        match policy:
            case "reject" if cfg.dmarc_reject == "reject":
                return verdict(Action.REJECT, DMARC_REJECTED, "dmarc_reject", *dmarc_why)
            case "reject":
                return verdict(Action.QUARANTINE, None, "dmarc_quarantine", *dmarc_why,
                               'dmarc_reject = "quarantine": delivered to Junk')
            case "quarantine" if cfg.dmarc_quarantine == "junk":
                return verdict(Action.QUARANTINE, None, "dmarc_quarantine", *dmarc_why,
                               "delivered to Junk")
            case "quarantine":
                dmarc_why.append('dmarc_quarantine = "inbox": delivered to INBOX')
    spf = facts.spf_mailfrom
    if spf.result is Result.TEMPERROR and dmarc is not Result.PASS:
        return verdict(Action.TEMPFAIL, DNS_TEMPFAIL, "dns_error",
                       f"SPF for {spf.domain}: {spf.reason}")
    if spf.result is Result.FAIL and cfg.spf_fail == "reject" and dmarc is not Result.PASS:
        return verdict(Action.REJECT, SPF_REJECTED, "spf_fail",
                       f"SPF fail for {spf.domain}: {spf.reason}")
    return verdict(Action.ACCEPT, None, "checked", f"dmarc={dmarc.value}", *dmarc_why,
                   f"spf={spf.result.value} for {spf.domain or '(none)'}")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


_TOKEN = re.compile(r"[A-Za-z0-9._@+\-]+")


def _value(text: str) -> str:
    """A property value as RFC 8601 allows: a token, else a quoted-string."""
    if text and _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authentication_results(authserv_id: str, facts: AuthFacts, dmarc: Result,
                           policy: str) -> str:
    """One ``Authentication-Results`` field, folded one method a line."""
    parts: list[str] = []
    mf = facts.spf_mailfrom
    if facts.mail_from:
        parts.append(f"spf={mf.result.value} smtp.mailfrom={_value(facts.mail_from)}")
    parts.append(f"spf={facts.spf_helo.result.value} smtp.helo={_value(facts.helo or '.')}")
    for d in facts.dkim:
        parts.append(f"dkim={d.result.value} header.d={_value(d.domain)}"
                     f" header.s={_value(d.selector)}")
    if not facts.dkim:
        parts.append("dkim=none")
    parts.append(f"arc={facts.arc.value}")
    pol = f" policy.dmarc={policy}" if policy else ""
    parts.append(f"dmarc={dmarc.value}{pol} header.from={_value(facts.from_domain or '.')}")
    return f"Authentication-Results: {authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"


def timed_out(seconds: int) -> AuthVerdict:
    """The checks did not finish in time: try again later, never a silent pass."""
    return AuthVerdict(Action.TEMPFAIL, DNS_TEMPFAIL, "dns_timeout",
                       (f"sender checks took longer than {seconds}s",), Result.TEMPERROR, "")


def check_failed() -> AuthVerdict:
    """The checks themselves failed (logged with a traceback): try again later."""
    return AuthVerdict(Action.TEMPFAIL, CHECK_TEMPFAIL, "check_error",
                       ("sender checks failed; see the log",), Result.TEMPERROR, "")
