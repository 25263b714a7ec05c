"""The open-relay self-test of ``postwarden check``.

First the policy, asked as the SMTP server asks it (``RecipientPolicy``, as
``relay check`` does) for a stranger's address and every way an address
has been used to sneak mail through a relay: each must be refused or stay
local. Then the wire: a real SMTP session from a loopback address that is
no trusted network, which must get ``550 5.7.1`` for a remote recipient.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence

from postwarden.admin.check_server import connect_error, ip_or_none, reachable_host
from postwarden.admin.checkline import Line, fail, ok, warn
from postwarden.config import Config, IPAddress
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail import reply as R
from postwarden.mail.address import AddressError, parse_path
from postwarden.policy.relay import Destination

PROBE = "relay-probe"
REMOTE = "relay-probe.invalid"  # a domain that is nobody's (RFC 2606)
# Documentation addresses (RFC 5737, RFC 3849): strangers to any real configuration.
STRANGERS = ("192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1")
# Loopback sources for the wire test: the first outside trusted_networks plays the stranger.
WIRE_SOURCES = ("127.0.0.2", "127.0.1.2", "127.1.0.2", "127.255.255.2")
RELAY_FIX = ("the server relays for strangers: remove the rule named in `postwarden relay"
             " check --client {ip} ADDRESS` (a too wide trusted_networks or internal_addresses)")


class MailRefused(Exception):
    """The probe's MAIL FROM was refused: no RCPT could be tried."""


def address_forms(local_domain: str, hostname: str, our_ip: str) -> list[tuple[str, str]]:
    """(what, RCPT path) for each form that routes, or once routed, mail elsewhere."""
    d, h, r, p = local_domain, hostname, REMOTE, PROBE
    literal = f"[IPv6:{our_ip}]" if ":" in our_ip else f"[{our_ip}]"
    return [
        ("remote", f"{p}@{r}"),
        ("uppercase", f"{p.upper()}@{r.upper()}"),
        ("trailing dot", f"{p}@{r}."),
        ("percent hack", f"{p}%{r}@{d}"),
        ("percent hack, uppercase", f"{p}%{r.upper()}@{d.upper()}"),
        ("percent hack, trailing dot", f"{p}%{r}@{d}."),
        ("percent hack at the hostname", f"{p}%{r}@{h}"),
        ("double percent hack", f"{p}%{r}%{d}@{d}"),
        ("bang path", f"{r}!{p}@{d}"),
        ("bang path without domain", f"{r}!{p}"),
        ("source route", f"@{d}:{p}@{r}"),
        ("source route, two hops", f"@{h},@{d}:{p}@{r}"),
        ("quoted @", f'"{p}@{r}"@{d}'),
        ("quoted @, trailing dot", f'"{p}@{r}"@{d}.'),
        ("quoted percent hack", f'"{p}%{r}"@{d}'),
        ("IPv4 literal", f"{p}@[192.0.2.99]"),
        ("IPv6 literal", f"{p}@[IPv6:2001:db8::99]"),
        ("our own address literal", f"{p}@{literal}"),
        ("percent hack to a literal", f'"{p}%[192.0.2.99]"@{d}'),
    ]


def stranger(cfg: Config, candidates: Sequence[str]) -> IPAddress | None:
    """The first candidate in neither trusted_networks nor denied_networks."""
    nets = (*cfg.relay.trusted_networks, *cfg.relay.denied_networks)
    for text in candidates:
        ip = ipaddress.ip_address(text)
        if not any(ip.version == n.version and ip in n for n in nets):
            return ip
    return None


async def policy(cfg: Config, recipients: RecipientPolicy, domain: str,
                 local_ips: Sequence[str]) -> list[Line]:
    """Every form, from each stranger, to each address we answer on: refused or local.

    Strangers in denied_networks are left out (refused for another reason);
    one in trusted_networks is relayed, which is the finding: no real
    network trusts documentation addresses unless it trusts everyone.
    """
    topic = "open relay (policy)"
    denied = cfg.relay.denied_networks
    clients = [ip for ip in map(ipaddress.ip_address, STRANGERS)
               if not any(ip.version == n.version and ip in n for n in denied)]
    lines = []
    asked = 0
    for client in clients:
        relayed: list[str] = []
        for local in local_ips:
            facts = await recipients.client_facts(client, ipaddress.ip_address(local),
                                                  tls=False, auth_user=None, now=time.time())
            for what, path in address_forms(domain, cfg.hostname, local):
                asked += 1
                try:
                    address = parse_path(f"<{path}>", smtputf8=True).address
                except AddressError:
                    continue  # refused with 501 before any policy
                assert address is not None  # None only for <> where allowed
                decision = await recipients.check_recipient(facts, address)
                if decision.accepted and decision.destination is Destination.REMOTE:
                    relayed.append(f"{what} <{path}> to {local} (rule {decision.rule})")
        if relayed:
            lines.append(fail(topic, f"{len(relayed)} address forms from {client} are"
                              f" relayed, e.g. {relayed[0]}", RELAY_FIX.format(ip=client)))
    if not clients:
        return [warn(topic, "not run: every documentation address is in denied_networks",
                     "none needed")]
    return lines or [ok(topic, f"{asked} address forms from strangers"
                        f" {', '.join(map(str, clients))} refused or kept local")]


async def wire(cfg: Config, domain: str, timeout: float) -> Line:
    """A real session from a loopback stranger to the first SMTP listener."""
    topic = "open relay (wire)"
    places = [p for p in cfg.listen.get("smtp", ()) if p.port != 0]
    if not places:
        return warn(topic, "no smtp listener with a port to test", "configure [listen] smtp")
    target = next((p for p in places if ":" not in p.host), places[0])
    host = reachable_host(target.host)
    sources: Sequence[str] = ("::1",) if ":" in host else WIRE_SOURCES
    source = stranger(cfg, sources)
    if source is None:
        return warn(topic, f"skipped: every loopback source ({', '.join(sources)}) is in"
                    " trusted_networks, so the server would rightly relay for it",
                    "none needed if trusted_networks is only loopback; the policy line"
                    " covers strangers")
    if ip_or_none(host) in cfg.relay.internal_addresses:
        return warn(topic, f"skipped: {host} is in internal_addresses (everyone connecting"
                    " to it may relay)", "none needed if that address is internal only")
    try:
        async with asyncio.timeout(timeout):
            replies = await _session(host, target.port, str(source), (
                f"{PROBE}@{REMOTE}", f"{PROBE.upper()}@{REMOTE.upper()}.",
                f"@{domain}:{PROBE}@{REMOTE}"))
    except MailRefused as exc:
        return warn(topic, f"not run: MAIL FROM from {source} got {str(exc)[:60]!r}",
                    "see the server's log for why it refuses the probe's sender")
    except TimeoutError:
        return warn(topic, f"not run: no reply from {target} within {timeout:g}s",
                    "see the listener lines")
    except OSError as exc:
        return warn(topic, f"not run: cannot connect to {target} from {source}"
                    f" ({connect_error(exc)})", "see the listener lines")
    expected = f"{R.RELAY_DENIED.code} {R.RELAY_DENIED.status}"
    for path, reply in replies:
        if not reply.startswith(expected):
            return fail(topic, f"RCPT TO:<{path}> from {source} answered {reply[:60]!r},"
                        f" not {expected}", RELAY_FIX.format(ip=source))
    return ok(topic, f"{len(replies)} remote recipients from {source} to {target}:"
              f" {expected}")


async def _session(host: str, port: int, source: str,
                   paths: Sequence[str]) -> list[tuple[str, str]]:
    """Each path's RCPT reply; a refused MAIL FROM stands for every path's."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))

    async def reply() -> str:
        line = b""
        for _ in range(100):  # a multi-line reply has a bounded number of lines
            line = await reader.readline()
            if line[3:4] != b"-":
                break
        return line.decode("utf-8", "replace").strip()

    async def command(text: str) -> str:
        writer.write(text.encode() + b"\r\n")
        return await reply()

    try:
        await reply()
        await command(f"EHLO {REMOTE}")
        mail = await command(f"MAIL FROM:<{PROBE}@{REMOTE}>")
        if not mail.startswith("250"):
            raise MailRefused(mail)
        found = [(path, await command(f"RCPT TO:<{path}>")) for path in paths]
        await command("QUIT")
        return found
    finally:
        writer.close()
