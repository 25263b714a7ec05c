"""SPF check_host() (RFC 7208) over a table of DNS answers.

``Zone`` stands in for ``AuthDNS``: the evaluator's lookups are injected, so
limits, loops and malformed records are tested without a network; the
end-to-end path over real DNS sockets is in tests/e2e/test_sender_auth.py.
"""

from __future__ import annotations

import pytest

from postwarden.intake.authdns import DNSTempError
from postwarden.intake.spf import check_host
from postwarden.policy.authchecks import Result

TIMEOUT = "TIMEOUT"


class Zone:
    def __init__(self, records: dict[tuple[str, str], list[str] | str]) -> None:
        self.records = {(n.lower(), t): v for (n, t), v in records.items()}
        self.asked: list[tuple[str, str]] = []

    def _get(self, name: str, rdtype: str) -> list[str]:
        self.asked.append((name.lower(), rdtype))
        value = self.records.get((name.lower(), rdtype), [])
        if value == TIMEOUT:
            raise DNSTempError(f"{name}/{rdtype}: Timeout")
        assert isinstance(value, list)
        return value

    async def txt(self, name: str) -> list[str]:
        return self._get(name, "TXT")

    async def a(self, name: str) -> list[str]:
        return self._get(name, "A")

    async def aaaa(self, name: str) -> list[str]:
        return self._get(name, "AAAA")

    async def mx(self, name: str) -> list[str]:
        return self._get(name, "MX")

    async def ptr(self, ip: str) -> list[str]:
        return self._get(ip, "PTR")


async def spf(zone: Zone, ip: str = "192.0.2.10", domain: str = "ex.test") -> Result:
    result, _reason = await check_host(zone, ip, domain, f"user@{domain}", "helo.test")
    return result


def txt(domain: str, record: str) -> dict[tuple[str, str], list[str] | str]:
    return {(domain, "TXT"): [record]}


@pytest.mark.parametrize(("record", "expected"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", Result.PASS),
    ("v=spf1 ip4:198.51.100.1 -all", Result.FAIL),
    ("v=spf1 ip4:198.51.100.1 ~all", Result.SOFTFAIL),
    ("v=spf1 ip4:198.51.100.1 ?all", Result.NEUTRAL),
    ("v=spf1 ip4:198.51.100.1", Result.NEUTRAL),
    ("v=spf1 -ip4:192.0.2.10 +all", Result.FAIL),
    ("v=spf1 ip6:2001:db8::/32 -all", Result.FAIL),
    ("V=SPF1 IP4:192.0.2.10 -ALL", Result.PASS),
    ("v=spf10 +all", Result.NONE),  # not an SPF record at all
])
async def test_basic_results(record: str, expected: Result) -> None:
    assert await spf(Zone(txt("ex.test", record))) is expected


@pytest.mark.parametrize("record", [
    "v=spf1 ip4:300.1.1.1 -all",
    "v=spf1 ip4:192.0.2.0/33 -all",
    "v=spf1 ip6:192.0.2.1 -all",
    "v=spf1 frobnicate -all",
    "v=spf1 include -all",
    "v=spf1 all:foo",
    "v=spf1 redirect=a.test redirect=b.test",
    "v=spf1 a:%{z}.test -all",
    "v=spf1 a:%{c}.test -all",  # c is for exp= only
    "v=spf1 -all ip4:nonsense",  # a syntax error after the match still counts
])
async def test_malformed_records_are_permerror(record: str) -> None:
    assert await spf(Zone(txt("ex.test", record))) is Result.PERMERROR


async def test_two_records_are_permerror_and_none_is_none() -> None:
    zone = Zone({("ex.test", "TXT"): ["v=spf1 -all", "v=spf1 +all"]})
    assert await spf(zone) is Result.PERMERROR
    assert await spf(Zone({})) is Result.NONE
    assert await spf(Zone({}), domain="nodot") is Result.NONE
    assert await spf(Zone({}), domain="a" * 64 + ".test") is Result.NONE


async def test_include_pass_and_fail_and_missing() -> None:
    zone = Zone({**txt("ex.test", "v=spf1 include:in.test -all"),
                 **txt("in.test", "v=spf1 ip4:192.0.2.10 -all")})
    assert await spf(zone) is Result.PASS
    assert await spf(zone, ip="198.51.100.7") is Result.FAIL
    assert await spf(Zone(txt("ex.test", "v=spf1 include:gone.test -all"))) is Result.PERMERROR


async def test_include_loop_ends_in_permerror_within_the_budget() -> None:
    zone = Zone({**txt("ex.test", "v=spf1 include:loop.test -all"),
                 **txt("loop.test", "v=spf1 include:ex.test -all")})
    assert await spf(zone) is Result.PERMERROR
    assert len([q for q in zone.asked if q[1] == "TXT"]) <= 11


async def test_more_than_ten_dns_terms_is_permerror() -> None:
    terms = " ".join(f"a:h{i}.test" for i in range(11))
    zone = Zone({**txt("ex.test", f"v=spf1 {terms} ip4:192.0.2.10 -all"),
                 **{(f"h{i}.test", "A"): ["198.51.100.1"] for i in range(11)}})
    assert await spf(zone) is Result.PERMERROR
    ten = " ".join(f"a:h{i}.test" for i in range(10))
    zone.records[("ex.test", "TXT")] = [f"v=spf1 {ten} ip4:192.0.2.10 -all"]
    assert await spf(zone) is Result.PASS


async def test_third_void_lookup_is_permerror() -> None:
    zone = Zone(txt("ex.test", "v=spf1 a:v1.test a:v2.test a:v3.test -all"))
    assert await spf(zone) is Result.PERMERROR
    zone.records[("ex.test", "TXT")] = ["v=spf1 a:v1.test a:v2.test -all"]
    assert await spf(zone) is Result.FAIL


async def test_dns_timeouts_are_temperror() -> None:
    assert await spf(Zone({("ex.test", "TXT"): TIMEOUT})) is Result.TEMPERROR
    zone = Zone({**txt("ex.test", "v=spf1 include:slow.test -all"),
                 ("slow.test", "TXT"): TIMEOUT})
    assert await spf(zone) is Result.TEMPERROR
    zone = Zone({**txt("ex.test", "v=spf1 mx -all"), ("ex.test", "MX"): TIMEOUT})
    assert await spf(zone) is Result.TEMPERROR


async def test_a_mx_ptr_exists_and_cidr() -> None:
    zone = Zone({**txt("ex.test", "v=spf1 a/24 -all"), ("ex.test", "A"): ["192.0.2.200"]})
    assert await spf(zone) is Result.PASS
    zone = Zone({**txt("ex.test", "v=spf1 mx -all"), ("ex.test", "MX"): ["mx.ex.test"],
                 ("mx.ex.test", "A"): ["192.0.2.10"]})
    assert await spf(zone) is Result.PASS
    zone = Zone({**txt("ex.test", "v=spf1 ptr -all"), ("192.0.2.10", "PTR"): ["h.ex.test"],
                 ("h.ex.test", "A"): ["192.0.2.10"]})
    assert await spf(zone) is Result.PASS
    zone = Zone({**txt("ex.test", "v=spf1 exists:%{ir}.%{v}.x.%{d} -all"),
                 ("10.2.0.192.in-addr.x.ex.test", "A"): ["127.0.0.2"]})
    assert await spf(zone) is Result.PASS
    zone = Zone({**txt("ex.test", "v=spf1 a -all"), ("ex.test", "AAAA"): ["2001:db8::1"]})
    assert await spf(zone, ip="2001:db8::1") is Result.PASS


async def test_redirect_is_followed_and_a_missing_target_is_permerror() -> None:
    zone = Zone({**txt("ex.test", "v=spf1 redirect=r.test"),
                 **txt("r.test", "v=spf1 ip4:192.0.2.10 -all")})
    assert await spf(zone) is Result.PASS
    assert await spf(Zone(txt("ex.test", "v=spf1 redirect=none.test"))) is Result.PERMERROR


async def test_macro_local_part_and_reversal() -> None:
    zone = Zone({**txt("ex.test", "v=spf1 exists:%{l1r-}.u.%{d2} -all"),
                 ("a.u.ex.test", "A"): ["127.0.0.2"]})  # RFC 7208 §7.4: strong-bad -> strong
    result, _ = await check_host(zone, "192.0.2.10", "ex.test", "a-b@ex.test", "h.test")
    assert result is Result.PASS
