"""The local half of ``postwarden check``: the certificate and every configured listener."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID

from postwarden.admin.checkline import Line, fail, ok, warn
from postwarden.config import ConfigError, HostPort, IPAddress, TLSConfig
from postwarden.servers.tls import load_server_context

CERT_WARN_DAYS = 14  # renew before: a WARN inside this many days, FAIL once expired
TLS_KINDS = frozenset({"submissions", "pop3s", "imaps"})
GREETINGS = {"smtp": b"220", "submission": b"220", "submissions": b"220", "pop3": b"+OK",
             "pop3s": b"+OK", "imap": b"* OK", "imaps": b"* OK", "http": b"HTTP/1.1 200"}
CERT_FIX = "point tls.cert and tls.key at a certificate for {host} from a CA (or ACME)"


def certificate(tls: TLSConfig, hostname: str, now: datetime.datetime) -> list[Line]:
    """The pair loads, its names cover ``hostname``, and it is valid for a while yet."""
    try:
        load_server_context(tls)
        cert = x509.load_pem_x509_certificates(tls.cert.read_bytes())[0]
    except ConfigError as exc:
        return [fail("certificate", str(exc), CERT_FIX.format(host=hostname))]
    names = _names(cert)
    lines = []
    if any(_covers(name, hostname) for name in names):
        lines.append(ok("certificate names", f"{hostname} is covered"))
    else:
        lines.append(fail("certificate names", f"{', '.join(names) or 'no name'},"
                          f" not {hostname}", CERT_FIX.format(host=hostname)))
    if cert.issuer == cert.subject:
        lines.append(warn("certificate issuer", "self-signed: servers sending to you accept"
                          " it, but mail clients warn their users", CERT_FIX.format(host=hostname)))
    else:
        lines.append(ok("certificate issuer", cert.issuer.rfc4514_string()[:80]))
    until = cert.not_valid_after_utc
    days = (until - now).total_seconds() / 86400
    when = until.strftime("%Y-%m-%d %H:%M UTC")
    renew = f"renew it ({tls.cert}) and reload the server (SIGHUP)"
    if cert.not_valid_before_utc > now:
        lines.append(fail("certificate expiry", "not valid before "
                          + cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC"), renew))
    elif days < 0:
        lines.append(fail("certificate expiry", f"expired on {when}", renew))
    elif days < CERT_WARN_DAYS:
        lines.append(warn("certificate expiry", f"expires on {when}, in {int(days)} days",
                          renew))
    else:
        lines.append(ok("certificate expiry", f"valid until {when} ({int(days)} days)"))
    return lines


def _names(cert: x509.Certificate) -> list[str]:
    """DNS names of the subjectAltName; the common name only when there is none (RFC 6125)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in
                cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _covers(name: str, hostname: str) -> bool:
    """Exact, or a wildcard standing for one whole left-most label."""
    if name.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == name[2:]
    return name == hostname


async def listeners(listen: dict[str, tuple[HostPort, ...]], timeout: float) -> list[Line]:
    """Connect to each configured listener and read its greeting."""
    return list(await asyncio.gather(*(_listener(kind, where, timeout)
                                       for kind, places in listen.items() for where in places)))


def connect_error(exc: OSError) -> str:
    """asyncio's "Connect call failed (...)" says less than the error's own name."""
    match exc:
        case ConnectionRefusedError():
            return "connection refused"
        case _:
            return os.strerror(exc.errno) if exc.errno else str(exc)


def ip_or_none(host: str) -> IPAddress | None:
    """A listener's host as an address; None for a name (``localhost:25`` is allowed)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def reachable_host(host: str) -> str:
    """A wildcard address is reached through loopback, of the same family."""
    address = ip_or_none(host)
    if address is not None and address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


async def _listener(kind: str, where: HostPort, timeout: float) -> Line:
    topic = f"listener {kind} {where}"
    if where.port == 0:
        return warn(topic, "port 0 (chosen at start) cannot be checked", "configure a port")
    context = None
    if kind in TLS_KINDS:
        context = ssl.create_default_context()
        context.check_hostname = False  # the certificate lines above judge the names
        context.verify_mode = ssl.CERT_NONE
    host = reachable_host(where.host)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, where.port, ssl=context)
            try:
                if kind == "http":
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: check\r\nConnection: close"
                                 b"\r\n\r\n")
                greeting = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return fail(topic, f"no greeting within {timeout:g}s",
                    "see the server's log; is something else on that port?")
    except ssl.SSLError as exc:
        return fail(topic, f"TLS handshake failed ({exc.reason or exc})",
                    "see the certificate lines and the server's log")
    except OSError as exc:
        return fail(topic, f"cannot connect ({connect_error(exc)})",
                    f"start postwarden serve, or see its log for why {where} is not served")
    text = greeting.decode("utf-8", "replace").strip()
    if not greeting.startswith(GREETINGS[kind]):
        return fail(topic, f"answered {text[:80]!r}",
                    f"is another program on {where}? it must be postwarden's {kind}")
    return ok(topic, text[:80])
