"""The openspf RFC 7208 test suite (``rfc7208-tests.yml``) against our check_host().

The suite is third-party data and is not shipped here: point
``SPF_SUITE_YAML`` at a copy (pyspf's source distribution has it under
``test/``) and install PyYAML to run it; otherwise every case is skipped with
that reason. Its zone data is served by a table (``SuiteZone``) with the
suite driver's conventions: type SPF records count as TXT when a name has no
TXT entry, ``TIMEOUT`` makes a lookup of a type with no record time out.
Cases about the ``exp=`` explanation text are judged on the result only.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from postwarden.intake.authdns import DNSTempError
from postwarden.intake.spf import check_host

SUITE = os.environ.get("SPF_SUITE_YAML", "")
# Cases we knowingly answer differently, each with why.
KNOWN: dict[str, str] = {
    "p-macro-multiple": "%{p} expands to 'unknown': validating the client's name costs"
                        " extra lookups per message, and RFC 7208 §7.3 says not to use it",
}


def _load() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    if not SUITE or not Path(SUITE).is_file():
        return []
    yaml = pytest.importorskip("yaml")
    cases = []
    with open(SUITE, encoding="utf-8") as f:
        for scenario in yaml.safe_load_all(f):
            for name, case in scenario["tests"].items():
                cases.append((name, case, scenario.get("zonedata") or {}))
    return cases


CASES = _load()


class SuiteZone:
    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        self.zone = {k.lower().rstrip("."): v for k, v in zonedata.items()}

    def _get(self, name: str, rdtype: str) -> list[Any]:
        entries = self.zone.get(name.lower().rstrip("."))
        for _ in range(8):  # CNAME chains, as a resolver follows them (bounded)
            alias = [e["CNAME"] for e in entries or () if isinstance(e, dict) and "CNAME" in e]
            if not alias or rdtype == "CNAME":
                break
            entries = self.zone.get(str(alias[0]).lower().rstrip("."))
        if entries is None:
            return []
        found: list[Any] = []
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for e in entries:
            if not isinstance(e, dict):
                continue
            for kind, value in e.items():
                wanted = kind == rdtype or (rdtype == "TXT" and kind == "SPF" and not has_txt)
                if wanted and value != "NONE":
                    found.append(value)
        if not found and "TIMEOUT" in entries:
            raise DNSTempError(f"{name}/{rdtype}: Timeout")
        return found

    async def txt(self, name: str) -> list[str]:
        return ["".join(v) if isinstance(v, list) else str(v) for v in self._get(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._get(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self._get(name, "AAAA")]

    async def mx(self, name: str) -> list[str]:
        return [str(v[1]) for v in self._get(name, "MX")]

    async def ptr(self, ip: str) -> list[str]:
        return [str(v) for v in self._get(ipaddress.ip_address(ip).reverse_pointer, "PTR")]


@pytest.mark.skipif(not CASES, reason="SPF_SUITE_YAML (openspf rfc7208-tests.yml) not given")
@pytest.mark.parametrize(("name", "case", "zonedata"), CASES or [("none", {}, {})],
                         ids=[c[0] for c in CASES] or ["none"])
async def test_rfc7208_suite(name: str, case: dict[str, Any], zonedata: dict[str, Any]) -> None:
    if name in KNOWN:
        pytest.skip(KNOWN[name])
    helo, mailfrom = str(case["helo"]), str(case.get("mailfrom") or "")
    if mailfrom:
        domain = mailfrom.rpartition("@")[2]
        sender = mailfrom
    else:
        domain, sender = helo, f"postmaster@{helo}"
    result, reason = await check_host(SuiteZone(zonedata), str(case["host"]), domain, sender,
                                      helo)
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert result.value in expected, f"{name}: {result.value} ({reason}), expected {expected}"
