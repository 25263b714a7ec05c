"""Where mail for a remote domain goes: the reroute table, the smarthost, or MX.

Pure: the configured tables and a domain in, a ``NextHop`` decision out. The
resolver turns the decision into addresses; keeping the choice here means
``[[routes]]`` precedence (first match wins, before the smarthost) is decided
in exactly one place and can be tested without DNS.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from postwarden.config import HostPort, Route


class HopKind(enum.Enum):
    ROUTE = "route"  # a [[routes]] entry named the host
    SMARTHOST = "smarthost"  # [delivery] smarthost
    LITERAL = "literal"  # user@[192.0.2.1]: that address, at mx_port
    MX = "mx"  # look the domain up in DNS


@dataclass(frozen=True, slots=True)
class NextHop:
    """The routing decision for one domain; ``key`` groups recipients that share it."""

    kind: HopKind
    domain: str
    relay: HostPort | None  # set for ROUTE, SMARTHOST and LITERAL

    @property
    def key(self) -> str:
        """Recipients with the same key can share one connection and one transaction."""
        return f"{self.kind.value}:{self.relay}" if self.relay else f"mx:{self.domain}"


def literal_host(domain: str) -> str | None:
    """The IP inside an address-literal domain (``[IPv6:...]`` too), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    return inner[5:] if inner.lower().startswith("ipv6:") else inner


def next_hop(
    domain: str, routes: Sequence[Route], smarthost: HostPort | None, mx_port: int
) -> NextHop:
    """The reroute table first (first match wins), then the smarthost, else DNS."""
    domain = domain.lower().rstrip(".")
    literal = literal_host(domain)
    if literal is None:
        for route in routes:
            if route.matches(domain):
                return NextHop(HopKind.ROUTE, domain, route.to)
    if smarthost is not None:
        return NextHop(HopKind.SMARTHOST, domain, smarthost)
    if literal is not None:
        return NextHop(HopKind.LITERAL, domain, HostPort(literal, mx_port))
    return NextHop(HopKind.MX, domain, None)
