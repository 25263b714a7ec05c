"""The pure sender-authentication decision: facts in, verdict out."""

from __future__ import annotations

import dataclasses

import pytest

from postwarden.config import AuthChecksConfig
from postwarden.policy.authchecks import (
    Action,
    AuthFacts,
    DKIMOutcome,
    DMARCLookup,
    Result,
    SPFOutcome,
    decide,
    parse_dmarc,
)

CFG = AuthChecksConfig()


def facts(spf: Result = Result.FAIL, dkim: tuple[DKIMOutcome, ...] = (),
          p: str = "reject", **kw: object) -> AuthFacts:
    record = parse_dmarc(f"v=DMARC1; p={p}", "ex.test")
    base = AuthFacts(
        client_ip="192.0.2.1", helo="h.test", mail_from="a@ex.test", trusted="",
        from_domain="ex.test", from_org="ex.test", from_is_local=False,
        mail_from_is_local=False,
        spf_mailfrom=SPFOutcome(spf, "ex.test", "ex.test", "why"),
        spf_helo=SPFOutcome(Result.NONE, "h.test", "h.test"),
        dkim=dkim, arc=Result.NONE, dmarc=DMARCLookup(Result.PASS, record),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_trusted_client_is_accepted_whatever_the_facts() -> None:
    v = decide(facts(trusted="authenticated as a@ex.test"), CFG, "mx.test")
    assert (v.action, v.rule) == (Action.ACCEPT, "trusted")


def test_dmarc_reject_can_be_turned_into_quarantine() -> None:
    assert decide(facts(), CFG, "mx.test").action is Action.REJECT
    cfg = dataclasses.replace(CFG, dmarc_reject="quarantine")
    assert decide(facts(), cfg, "mx.test").action is Action.QUARANTINE


def test_dmarc_quarantine_goes_to_junk_unless_configured_for_inbox() -> None:
    v = decide(facts(p="quarantine"), CFG, "mx.test")
    assert (v.action, v.rule) == (Action.QUARANTINE, "dmarc_quarantine")
    cfg = dataclasses.replace(CFG, dmarc_quarantine="inbox")
    v = decide(facts(p="quarantine"), cfg, "mx.test")
    assert v.action is Action.ACCEPT and 'dmarc_quarantine = "inbox"' in " ".join(v.reasons)


@pytest.mark.parametrize(("spf", "dkim_domain", "mail_from", "proof"), [
    (Result.PASS, "", "a@ex.test", "spf"),
    (Result.FAIL, "mail.ex.test", "a@ex.test", "dkim"),  # relaxed: same organisational domain
    (Result.SOFTFAIL, "other.test", "a@ex.test", "none"),  # a pass, but not for the sender
    (Result.NONE, "", "a@ex.test", "none"),
    (Result.FAIL, "", "", ""),  # the null sender gets no reports anyway
])
def test_sender_proof_is_spf_or_dkim_aligned_with_the_mail_from_domain(
        spf: Result, dkim_domain: str, mail_from: str, proof: str) -> None:
    org = dkim_domain.removeprefix("mail.")
    dkim = (DKIMOutcome(Result.PASS, dkim_domain, "s", org),) if dkim_domain else ()
    v = decide(facts(spf=spf, dkim=dkim, p="none", mail_from=mail_from), CFG, "mx.test")
    assert v.sender_proof == proof


def test_dns_trouble_never_passes() -> None:
    v = decide(facts(spf=Result.TEMPERROR), CFG, "mx.test")
    assert (v.action, v.reply and v.reply.code) == (Action.TEMPFAIL, 451)
    v = decide(facts(dmarc=DMARCLookup(Result.TEMPERROR, None, "timeout")), CFG, "mx.test")
    assert v.action is Action.TEMPFAIL
    temp = DKIMOutcome(Result.TEMPERROR, "ex.test", "s", "ex.test")
    assert decide(facts(dkim=(temp,)), CFG, "mx.test").action is Action.TEMPFAIL


def test_spf_fail_is_header_only_unless_configured() -> None:
    no_dmarc = DMARCLookup(Result.NONE, None)
    assert decide(facts(dmarc=no_dmarc), CFG, "mx.test").action is Action.ACCEPT
    cfg = dataclasses.replace(CFG, spf_fail="reject")
    v = decide(facts(dmarc=no_dmarc), cfg, "mx.test")
    assert (v.action, v.reply and v.reply.status) == (Action.REJECT, "5.7.23")


def test_spoofing_needs_a_pass_for_the_local_domain_itself() -> None:
    other = DKIMOutcome(Result.PASS, "other.test", "s", "other.test")
    v = decide(facts(mail_from_is_local=True, dkim=(other,)), CFG, "mx.test")
    assert (v.action, v.rule) == (Action.REJECT, "spoofing_protection")
    ours = DKIMOutcome(Result.PASS, "ex.test", "s", "ex.test")
    v = decide(facts(mail_from_is_local=True, dkim=(ours,)), CFG, "mx.test")
    assert v.action is Action.ACCEPT
    off = dataclasses.replace(CFG, spoofing_protection=False)
    p_none = facts(mail_from_is_local=True, p="none")
    assert decide(p_none, off, "mx.test").action is Action.ACCEPT


@pytest.mark.parametrize(("text", "expected"), [
    ("v=DMARC1; p=reject", ("reject", "reject", "r", "r")),
    ("v=DMARC1;p=none;sp=quarantine;adkim=s;aspf=s", ("none", "quarantine", "s", "s")),
    ("v=DMARC1; p=bogus; rua=mailto:x@y", ("none", "none", "r", "r")),
    ("v=DMARC1; p=bogus", None),
    ("v=DMARC2; p=reject", None),
    ("p=reject; v=DMARC1", None),
    ("v=DMARC1", None),
    ("", None),
])
def test_parse_dmarc(text: str, expected: tuple[str, str, str, str] | None) -> None:
    rec = parse_dmarc(text, "ex.test")
    assert (None if rec is None else (rec.p, rec.sp, rec.adkim, rec.aspf)) == expected


def test_header_is_one_field_with_our_authserv_id() -> None:
    dkim = (DKIMOutcome(Result.PASS, "ex.test", "sel", "ex.test"),)
    h = decide(facts(dkim=dkim), CFG, "mx.test").header
    assert h.startswith("Authentication-Results: mx.test;\r\n\t")
    assert h.endswith("\r\n") and h.count("Authentication-Results") == 1
    assert "dkim=pass header.d=ex.test header.s=sel" in h
    assert "dmarc=pass policy.dmarc=reject header.from=ex.test" in h
