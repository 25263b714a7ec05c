"""The TOML configuration of SPEC §2, validated once into frozen dataclasses.

Every error names the key and the reason (``listen.smtp[0]: expected
"host:port"``); unknown keys are errors too, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from postwarden.mail.mime import MimeLimits

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PATH = "postwarden.toml"
LISTENER_KINDS = (
    "smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http", "acme_tls",
)
# Loopback demo ports (`init --demo-user`, as `make run` uses)...
DEFAULT_LISTEN = {
    "smtp": ["127.0.0.1:2525"],
    "submission": ["127.0.0.1:2587"],
    "submissions": ["127.0.0.1:2465"],
    "pop3": ["127.0.0.1:2110"],
    "pop3s": ["127.0.0.1:2995"],
    "imap": ["127.0.0.1:2143"],
    "imaps": ["127.0.0.1:2993"],
    "http": ["127.0.0.1:8025"],  # metrics, health, client autoconfig: keep it on loopback
    "acme_tls": [],  # TLS-ALPN-01 validation ([acme] challenge = "tls-alpn-01"): port 443
}
# ...and the standard ports on every address, what a real server needs.
_PRODUCTION_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "pop3": 110,
                     "pop3s": 995, "imap": 143, "imaps": 993}
PRODUCTION_LISTEN = {k: [f"0.0.0.0:{p}", f"[::]:{p}"] for k, p in _PRODUCTION_PORTS.items()}
PRODUCTION_LISTEN["http"] = DEFAULT_LISTEN["http"]  # plain HTTP, no login: loopback there too
PRODUCTION_LISTEN["acme_tls"] = []
ACME_CHALLENGES = ("http-01", "tls-alpn-01")
_DURATION = re.compile(r"(\d+)([smhd])\Z")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A problem with the configuration; the message names the key."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """``[acme]``: certificates for the hostname from an ACME CA (RFC 8555); off when
    ``directory`` is empty."""

    directory: str = ""  # the CA's directory URL
    contact: str = ""  # an email address for the CA's account notices
    challenge: str = "http-01"  # "http-01" ([listen] http on port 80) | "tls-alpn-01" (acme_tls)
    renew_before_days: int = 30  # renew when the certificate expires sooner than this
    ca_bundle: Path | None = None  # PEM CAs trusted for the directory's HTTPS; None: the system's
    check_interval_seconds: int = 43200  # how often expiry is looked at, and at least between
    retry_seconds: int = 60  # first wait after a failed attempt, doubled after each failure
    retry_max_seconds: int = 21600  # up to this
    timeout_seconds: int = 120  # one whole issuance: validation and finalization

    @property
    def enabled(self) -> bool:
        return bool(self.directory)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    plaintext_without_tls: str = "loopback"  # "never" | "loopback" | "always"
    received_header_shows_login: bool = False  # name the login in our Received header


@dataclass(frozen=True, slots=True)
class RelayConfig:
    authenticated: bool = True
    pop_before_smtp_minutes: int = 0
    trusted_networks: tuple[Network, ...] = ()
    internal_addresses: tuple[IPAddress, ...] = ()
    denied_networks: tuple[Network, ...] = ()
    sender_must_match_login: bool = True


@dataclass(frozen=True, slots=True)
class AuthChecksConfig:
    """``[auth_checks]``: SPF/DKIM/DMARC/ARC on mail from unauthenticated clients."""

    enabled: bool = True
    spoofing_protection: bool = True  # outsiders may not claim our domains unvouched
    dmarc_reject: str = "reject"  # "reject" | "quarantine": what a failing p=reject gets
    dmarc_quarantine: str = "junk"  # "junk" | "inbox": where a failing p=quarantine goes
    spf_fail: str = "header"  # "header" | "reject": what an SPF -all fail gets
    dns_timeout_seconds: int = 5  # per lookup
    check_timeout_seconds: int = 20  # all lookups of one message together
    spf_lookup_limit: int = 10  # RFC 7208 §4.6.4
    spf_void_limit: int = 2
    max_signatures: int = 10  # DKIM signatures verified per message; the rest are ignored
    inline_verify_max_bytes: int = 65536  # larger messages are DKIM-verified in a thread
    dns_cache_size: int = 10000  # DNS answers kept (each for its TTL)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: int = 26214400
    max_recipients: int = 100
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    max_connections_smtp: int = 400
    max_connections_submission: int = 200
    max_connections_pop3: int = 200
    max_connections_imap: int = 200
    max_connections_http: int = 20
    handshake_timeout_seconds: int = 10
    auth_failures_per_ip: int = 10
    auth_failures_per_account: int = 30
    auth_failure_window_seconds: int = 900
    auth_workers: int = 1
    auth_queue_timeout_seconds: int = 5
    auth_flood_failures_per_minute: int = 60
    auth_failure_delay_seconds: int = 2
    auth_cache_entries: int = 10000  # verified logins remembered (no argon2 on a repeat login)
    max_bad_commands: int = 10
    rcpt_error_soft_limit: int = 10  # refused RCPTs per session before replies slow down
    rcpt_error_hard_limit: int = 20  # refused RCPTs per session before 421
    rcpt_error_delay_ms: int = 1000  # added to each RCPT reply past the soft limit
    command_timeout_seconds: int = 300  # for a whole command line, not one read
    data_timeout_seconds: int = 600  # per read in a message body, and its grace
    max_header_size: int = 102400  # octets of one message's header section
    data_min_rate: int = 500  # octets/s a message body must keep up, past data_timeout_seconds
    shutdown_grace_seconds: int = 30
    maildrop_lock_seconds: int = 3600  # a POP3 lock left by a dead server runs out after this
    mime_max_parts: int = 1000  # MIME parts parsed per message; the rest is opaque
    mime_max_depth: int = 50  # nested multiparts / attached messages parsed
    mime_max_header_bytes: int = 65536  # header octets kept per part
    mime_max_total_header_bytes: int = 1048576  # header octets kept per message
    http_timeout_seconds: int = 10  # a whole HTTP request, from connect to its last byte
    http_max_header_size: int = 8192  # request line plus headers
    http_max_body_size: int = 16384  # an Autodiscover POST is well under 1 KiB

    @property
    def mime(self) -> MimeLimits:
        """The bounds for the MIME structure parser."""
        return MimeLimits(
            max_parts=self.mime_max_parts,
            max_depth=self.mime_max_depth,
            max_header_bytes=self.mime_max_header_bytes,
            max_total_header_bytes=self.mime_max_total_header_bytes,
        )


@dataclass(frozen=True, slots=True)
class IMAPConfig:
    """``[imap]``: sizes the IMAP machine holds, and how long sessions may sit idle."""

    max_line_length: int = 65536  # one command line
    max_literal_size: int = 65536  # a literal other than APPEND's message
    max_command_size: int = 262144  # a whole command, lines and literals
    max_append_size: int = 26214400  # APPEND's message (advertised as APPENDLIMIT)
    preauth_seconds: int = 60  # from the greeting (or a line) to a complete line, not logged in
    autologout_seconds: int = 1800  # a logged-in session silent this long gets BYE (RFC 9051)
    # The longest IDLE: RFC 9051 §5.4's timer (at least 30 minutes) applies to an
    # idling client too; RFC 2177's clients renew every 29 minutes, inside it.
    idle_seconds: int = 1800
    idle_poll_ms: int = 30000  # IDLE also checks the mailbox this often (a lost change hint)
    max_sessions_per_user: int = 50  # logged-in sessions of one user, both listeners
    max_sessions_per_ip: int = 100  # logged-in sessions from one client address


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    smarthost: HostPort | None = None
    mx_port: int = 25
    retry_intervals: tuple[int, ...] = (300, 600, 1800, 3600, 7200, 14400)
    max_queue_lifetime: int = 5 * 86400
    delay_warning_after: int = 4 * 3600
    max_concurrent: int = 20
    max_per_destination: int = 4
    connect_timeout: int = 30
    command_timeout: int = 300
    max_received_headers: int = 50
    # Messages in delivery at once: bounds memory and the cost of a refill.
    active_window: int = 1000
    # How long a claim on queued messages lasts unless extended: the time
    # another process waits before taking over the work of one that died.
    lease_seconds: int = 300
    # How long a new DKIM key waits (for its DNS record to be published and
    # cached) before it replaces the older key of its algorithm in signing.
    dkim_rotation_delay: int = 2 * 86400
    # Sender rewriting for mail an alias forwards off-site: on/off, the domain
    # of the rewritten addresses ("" = hostname), and how long a bounce to one
    # is still taken back.
    srs: bool = True
    srs_domain: str = ""
    srs_max_age: int = 21 * 86400


@dataclass(frozen=True, slots=True)
class DNSConfig:
    nameservers: tuple[HostPort, ...] = ()


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = "sqlite"  # "sqlite" | "postgresql"
    dsn: str = ""  # postgresql://user@host:port/db (PostgreSQL only)
    blobs: str = "files"  # message bytes: "files" in data_dir/messages (SQLite), "database" (PG)
    blob_grace_seconds: int = 86400  # a released message file is deleted after this
    index_batch: int = 200  # messages parsed and indexed per idle step
    password_file: Path | None = None  # PostgreSQL password, the file's first line
    pool_size: int = 10  # PostgreSQL connections per process at most
    timeout_seconds: int = 5  # PostgreSQL: longest wait for a connection before "try later"
    blob_gc_interval_seconds: int = 3600  # the collector's period; its first run is one period in


@dataclass(frozen=True, slots=True)
class S3Config:
    """The bucket of ``[storage] blobs = "s3"`` and how to sign requests (``[s3]``).

    Keys left empty come from the environment the way every AWS client reads
    them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).
    """

    endpoint: str = ""  # http(s)://host:port of any S3-compatible store
    bucket: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = ""
    secret_key_file: Path | None = None  # the secret key, the file's first line
    prefix: str = ""  # object names start with this ("" = the bucket's root)
    timeout_seconds: int = 10  # to connect, and per read of a reply
    max_connections: int = 10  # parallel uploads of one group commit; the client's pool


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = "text"  # "text" | "json"
    file: Path | None = None  # None: stderr
    syslog: bool = False  # also send each line to syslog/journald, facility mail
    syslog_socket: str = "/dev/log"  # the local syslog datagram socket


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """``[service]``: whom ``serve`` runs as once its ports are bound ("" = stay as started)."""

    user: str = ""
    group: str = ""  # "" = the user's primary group
    workers: int = 1  # serve's processes sharing the listeners and the store (--workers)


@dataclass(frozen=True, slots=True)
class Route:
    domain: str  # "partner.example" or "*.example.org"
    to: HostPort

    def matches(self, domain: str) -> bool:
        if self.domain.startswith("*."):
            return domain.endswith(self.domain[1:])
        return domain == self.domain


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    hostname: str
    data_dir: Path
    listen: dict[str, tuple[HostPort, ...]]
    tls: TLSConfig
    proxy_from: tuple[Network, ...] = ()  # [listen] proxy_from: who may send a PROXY header
    auth: AuthConfig = field(default_factory=AuthConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    auth_checks: AuthChecksConfig = field(default_factory=AuthChecksConfig)
    routes: tuple[Route, ...] = ()
    storage: StorageConfig = field(default_factory=StorageConfig)
    s3: S3Config = field(default_factory=S3Config)
    log: LogConfig = field(default_factory=LogConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)

    @property
    def database(self) -> Path:
        return self.data_dir / "postwarden.sqlite3"


# --- small typed readers -------------------------------------------------


class _Table:
    """A TOML table that remembers which keys were read, to report the rest."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'config'}: expected a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type[T], default: T) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}, got {value!r}")
        return value  # type: ignore[no-any-return]

    def get_list(self, name: str, parse: Callable[[str, str], T], default: list[T]) -> list[T]:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(name)}: expected a list, got {value!r}")
        out = []
        for i, item in enumerate(value):
            where = f"{self.key(name)}[{i}]"
            if not isinstance(item, str):
                raise ConfigError(f"{where}: expected a string, got {item!r}")
            out.append(parse(item, where))
        return out

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", str: "a string"}.get(kind, kind.__name__)


def parse_host_port(text: str, where: str) -> HostPort:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f'{where}: expected "host:port", got {text!r}')
    return HostPort(host, int(port))


def parse_duration(text: str, where: str) -> int:
    """Seconds in ``"30s"``/``"5m"``/``"4h"``/``"5d"``; zero is refused (it would spin)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ConfigError(
            f'{where}: expected a duration like "30s", "5m", "4h", "5d", got {text!r}'
        )
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds == 0:
        raise ConfigError(f"{where}: must be longer than zero, got {text!r}")
    return seconds


def _network(text: str, where: str) -> Network:
    """A CIDR; host bits set (``192.168.1.5/24``) are refused: which was meant is unclear."""
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.ip_network(text, strict=False)
            raise ConfigError(f"{where}: {text!r} has host bits set; write {str(net)!r}"
                              f" for the network or a /{net.max_prefixlen} for one host"
                              ) from None
        raise ConfigError(f"{where}: not a network in CIDR form: {text!r}") from None


def _ip(text: str, where: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: not an IP address: {text!r}") from None


def _positive(table: _Table, name: str, default: int, minimum: int = 1) -> int:
    value = table.get(name, int, default)
    if value < minimum:
        raise ConfigError(f"{table.key(name)}: must be at least {minimum}")
    return value


def _duration_key(table: _Table, name: str, default: int) -> int:
    value = table.get(name, str, "")
    return parse_duration(value, table.key(name)) if name in table.data else default


# --- sections ---------------------------------------------------------------


def _listen(t: _Table) -> tuple[dict[str, tuple[HostPort, ...]], tuple[Network, ...]]:
    listen = {k: tuple(t.get_list(k, parse_host_port, [])) for k in LISTENER_KINDS}
    proxy_from = tuple(t.get_list("proxy_from", _network, []))
    t.finish()
    return listen, proxy_from


def _auth(t: _Table) -> AuthConfig:
    mode = t.get("plaintext_without_tls", str, "loopback")
    if mode not in ("never", "loopback", "always"):
        raise ConfigError(
            f'{t.key("plaintext_without_tls")}: expected "never", "loopback" or "always"'
        )
    shows_login = t.get("received_header_shows_login", bool, False)
    t.finish()
    return AuthConfig(mode, shows_login)


def _relay(t: _Table) -> RelayConfig:
    relay = RelayConfig(
        authenticated=t.get("authenticated", bool, True),
        pop_before_smtp_minutes=_positive(t, "pop_before_smtp_minutes", 0, minimum=0),
        trusted_networks=tuple(t.get_list("trusted_networks", _network, [])),
        internal_addresses=tuple(t.get_list("internal_addresses", _ip, [])),
        denied_networks=tuple(t.get_list("denied_networks", _network, [])),
        sender_must_match_login=t.get("sender_must_match_login", bool, True),
    )
    t.finish()
    return relay


def _limits(t: _Table) -> LimitsConfig:
    d = LimitsConfig()
    limits = LimitsConfig(
        **{name: _positive(t, name, getattr(d, name)) for name in LimitsConfig.__slots__}
    )
    t.finish()
    return limits


def _imap(t: _Table) -> IMAPConfig:
    d = IMAPConfig()
    imap = IMAPConfig(
        **{name: _positive(t, name, getattr(d, name)) for name in IMAPConfig.__slots__}
    )
    t.finish()
    if imap.max_line_length < 8192:
        raise ConfigError(f"{t.key('max_line_length')}: at least 8192 (RFC 7162 §4)")
    return imap


def _delivery(t: _Table) -> DeliveryConfig:
    d = DeliveryConfig()
    smarthost = t.get("smarthost", str, "")
    intervals = t.get_list("retry_intervals", parse_duration, list(d.retry_intervals))
    if not intervals:
        raise ConfigError(f"{t.key('retry_intervals')}: must not be empty")
    delivery = DeliveryConfig(
        smarthost=parse_host_port(smarthost, t.key("smarthost")) if smarthost else None,
        mx_port=_positive(t, "mx_port", d.mx_port),
        retry_intervals=tuple(intervals),
        max_queue_lifetime=_duration_key(t, "max_queue_lifetime", d.max_queue_lifetime),
        delay_warning_after=_duration_key(t, "delay_warning_after", d.delay_warning_after),
        max_concurrent=_positive(t, "max_concurrent", d.max_concurrent),
        max_per_destination=_positive(t, "max_per_destination", d.max_per_destination),
        connect_timeout=_positive(t, "connect_timeout", d.connect_timeout),
        command_timeout=_positive(t, "command_timeout", d.command_timeout),
        max_received_headers=_positive(t, "max_received_headers", d.max_received_headers),
        active_window=_positive(t, "active_window", d.active_window),
        lease_seconds=_duration_key(t, "lease_seconds", d.lease_seconds),
        dkim_rotation_delay=_duration_key(t, "dkim_rotation_delay", d.dkim_rotation_delay),
        srs=t.get("srs", bool, d.srs),
        srs_domain=t.get("srs_domain", str, d.srs_domain),
        srs_max_age=_duration_key(t, "srs_max_age", d.srs_max_age),
    )
    if delivery.lease_seconds < 1:
        raise ConfigError(f"{t.key('lease_seconds')}: must be at least one second")
    if delivery.mx_port > 65535:
        raise ConfigError(f"{t.key('mx_port')}: must be a port number")
    t.finish()
    return delivery


def _routes(raw: Any) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ConfigError("routes: expected [[routes]] tables")
    routes = []
    for i, item in enumerate(raw):
        t = _Table(item, f"routes[{i}]")
        domain = t.get("domain", str, "").lower().rstrip(".")
        to = t.get("to", str, "")
        if not domain:
            raise ConfigError(f"{t.key('domain')}: required")
        if not to:
            raise ConfigError(f"{t.key('to')}: required")
        routes.append(Route(domain, parse_host_port(to, t.key("to"))))
        t.finish()
    return tuple(routes)


def load(path: str | Path) -> Config:
    """Read and validate the config file; raises ConfigError with a clear message."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (run `postwarden init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, path)


def from_dict(raw: dict[str, Any], path: Path) -> Config:
    base = path.resolve().parent
    top = _Table(raw, "")
    hostname = top.get("hostname", str, "")
    if not hostname:
        raise ConfigError("hostname: required")
    data_dir = base / top.get("data_dir", str, "var")
    names = ("listen", "tls", "auth", "relay", "limits", "delivery", "dns", "storage", "s3",
             "imap", "log", "auth_checks", "service", "acme")
    sections = {name: top.get(name, dict, {}) for name in names}
    routes = _routes(top.get("routes", list, []))
    top.finish()
    tls_t = _Table(sections["tls"], "tls")
    tls = TLSConfig(
        cert=base / tls_t.get("cert", str, str(data_dir / "tls" / "cert.pem")),
        key=base / tls_t.get("key", str, str(data_dir / "tls" / "key.pem")),
    )
    tls_t.finish()
    dns_t = _Table(sections["dns"], "dns")
    dns = DNSConfig(tuple(dns_t.get_list("nameservers", _nameserver, [])))
    dns_t.finish()
    listen, proxy_from = _listen(_Table(sections["listen"], "listen"))
    storage = _storage(_Table(sections["storage"], "storage"), base)
    return Config(
        path=path,
        hostname=hostname,
        data_dir=data_dir,
        listen=listen,
        proxy_from=proxy_from,
        tls=tls,
        auth=_auth(_Table(sections["auth"], "auth")),
        relay=_relay(_Table(sections["relay"], "relay")),
        limits=_limits(_Table(sections["limits"], "limits")),
        delivery=_delivery(_Table(sections["delivery"], "delivery")),
        dns=dns,
        routes=routes,
        storage=storage,
        s3=_s3(_Table(sections["s3"], "s3"), base, storage.blobs == "s3"),
        imap=_imap(_Table(sections["imap"], "imap")),
        log=_log(_Table(sections["log"], "log"), base),
        auth_checks=_auth_checks(_Table(sections["auth_checks"], "auth_checks")),
        service=_service(_Table(sections["service"], "service")),
        acme=_acme(_Table(sections["acme"], "acme"), base),
    )


def _service(t: _Table) -> ServiceConfig:
    user, group = t.get("user", str, ""), t.get("group", str, "")
    workers = _positive(t, "workers", 1)
    t.finish()
    if group and not user:
        raise ConfigError("service.group: set service.user too (a group alone changes nothing)")
    return ServiceConfig(user, group, workers)


def _log(t: _Table, base: Path) -> LogConfig:
    fmt = t.get("format", str, "text")
    if fmt not in ("text", "json"):
        raise ConfigError(f'{t.key("format")}: expected "text" or "json", got {fmt!r}')
    file = t.get("file", str, "")
    syslog = t.get("syslog", bool, False)
    socket = t.get("syslog_socket", str, "/dev/log")
    t.finish()
    if not socket:
        raise ConfigError(f"{t.key('syslog_socket')}: must not be empty")
    return LogConfig(fmt, base / file if file else None, syslog, socket)


def _acme(t: _Table, base: Path) -> AcmeConfig:
    d = AcmeConfig()
    bundle = t.get("ca_bundle", str, "")
    cfg = AcmeConfig(
        directory=t.get("directory", str, d.directory),
        contact=t.get("contact", str, d.contact),
        challenge=t.get("challenge", str, d.challenge),
        renew_before_days=_positive(t, "renew_before_days", d.renew_before_days),
        ca_bundle=base / bundle if bundle else None,
        check_interval_seconds=_positive(t, "check_interval_seconds", d.check_interval_seconds),
        retry_seconds=_positive(t, "retry_seconds", d.retry_seconds),
        retry_max_seconds=_positive(t, "retry_max_seconds", d.retry_max_seconds),
        timeout_seconds=_positive(t, "timeout_seconds", d.timeout_seconds),
    )
    t.finish()
    if cfg.challenge not in ACME_CHALLENGES:
        raise ConfigError(f'acme.challenge: expected "http-01" or "tls-alpn-01",'
                          f" got {cfg.challenge!r}")
    if cfg.directory and not cfg.directory.startswith("https://"):  # RFC 8555 §6.1
        raise ConfigError(f"acme.directory: expected an https:// URL, got {cfg.directory!r}")
    if cfg.contact and "@" not in cfg.contact:
        raise ConfigError(f"acme.contact: expected an email address, got {cfg.contact!r}")
    return cfg


def _auth_checks(t: _Table) -> AuthChecksConfig:
    d = AuthChecksConfig()
    cfg = AuthChecksConfig(
        enabled=t.get("enabled", bool, d.enabled),
        spoofing_protection=t.get("spoofing_protection", bool, d.spoofing_protection),
        dmarc_reject=t.get("dmarc_reject", str, d.dmarc_reject),
        dmarc_quarantine=t.get("dmarc_quarantine", str, d.dmarc_quarantine),
        spf_fail=t.get("spf_fail", str, d.spf_fail),
        dns_timeout_seconds=_positive(t, "dns_timeout_seconds", d.dns_timeout_seconds),
        check_timeout_seconds=_positive(t, "check_timeout_seconds", d.check_timeout_seconds),
        spf_lookup_limit=_positive(t, "spf_lookup_limit", d.spf_lookup_limit),
        spf_void_limit=_positive(t, "spf_void_limit", d.spf_void_limit, minimum=0),
        max_signatures=_positive(t, "max_signatures", d.max_signatures),
        inline_verify_max_bytes=_positive(t, "inline_verify_max_bytes",
                                          d.inline_verify_max_bytes, minimum=0),
        dns_cache_size=_positive(t, "dns_cache_size", d.dns_cache_size),
    )
    t.finish()
    if cfg.dmarc_reject not in ("reject", "quarantine"):
        raise ConfigError('auth_checks.dmarc_reject: "reject" or "quarantine"')
    if cfg.dmarc_quarantine not in ("junk", "inbox"):
        raise ConfigError('auth_checks.dmarc_quarantine: "junk" or "inbox"')
    if cfg.spf_fail not in ("header", "reject"):
        raise ConfigError('auth_checks.spf_fail: "header" or "reject"')
    return cfg


BLOB_PLACES = {"sqlite": ("files",), "postgresql": ("database", "s3")}  # the first: default


def _storage(t: _Table, base: Path) -> StorageConfig:
    d = StorageConfig()
    backend = t.get("backend", str, d.backend)
    if backend not in BLOB_PLACES:
        raise ConfigError(f'storage.backend: expected "sqlite" or "postgresql", got {backend!r}')
    places = BLOB_PLACES[backend]
    blobs = t.get("blobs", str, places[0])
    if blobs not in places:
        raise ConfigError(f"storage.blobs: {blobs!r} is not available with {backend}"
                          f" ({', '.join(places)})")
    dsn = t.get("dsn", str, d.dsn)
    password_file = t.get("password_file", str, "")
    cfg = StorageConfig(backend, dsn, blobs,
                        t.get("blob_grace_seconds", int, d.blob_grace_seconds),
                        t.get("index_batch", int, d.index_batch),
                        base / password_file if password_file else None,
                        _positive(t, "pool_size", d.pool_size, minimum=2),
                        _positive(t, "timeout_seconds", d.timeout_seconds),
                        _positive(t, "blob_gc_interval_seconds", d.blob_gc_interval_seconds))
    t.finish()
    if cfg.blob_grace_seconds < 60 or cfg.index_batch < 1:
        raise ConfigError("storage: blob_grace_seconds must be >= 60 and index_batch >= 1")
    if backend == "postgresql" and not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError('storage.dsn: backend "postgresql" needs dsn = "postgresql://..."')
    if backend != "postgresql" and (dsn or password_file):
        raise ConfigError("storage: dsn and password_file are for backend = \"postgresql\"")
    return cfg


def _s3(t: _Table, base: Path, used: bool) -> S3Config:
    d = S3Config()
    secret_key_file = t.get("secret_key_file", str, "")
    cfg = S3Config(
        endpoint=t.get("endpoint", str, d.endpoint),
        bucket=t.get("bucket", str, d.bucket),
        region=t.get("region", str, d.region),
        access_key=t.get("access_key", str, d.access_key),
        secret_key=t.get("secret_key", str, d.secret_key),
        secret_key_file=base / secret_key_file if secret_key_file else None,
        prefix=t.get("prefix", str, d.prefix),
        timeout_seconds=_positive(t, "timeout_seconds", d.timeout_seconds),
        max_connections=_positive(t, "max_connections", d.max_connections),
    )
    t.finish()
    if cfg.secret_key and cfg.secret_key_file:
        raise ConfigError("s3: secret_key and secret_key_file: set one of them")
    if used:  # else kept for `migrate --blobs s3`, which checks it then
        check_s3(cfg)
    return cfg


def check_s3(cfg: S3Config) -> None:
    """An ``[s3]`` table that is to be used names an endpoint and a bucket."""
    if not cfg.endpoint.startswith(("http://", "https://")):
        raise ConfigError('s3.endpoint: S3 blobs need endpoint = "https://host:port"')
    if not cfg.bucket:
        raise ConfigError("s3.bucket: S3 blobs need a bucket")


def _nameserver(text: str, where: str) -> HostPort:
    if text.count(":") == 1 or text.startswith("["):
        return parse_host_port(text, where)
    _ip(text, where)
    return HostPort(text, 53)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_default(hostname: str, domain: str, *, demo: bool = False) -> str:
    """The config file `init` writes: every key present, with its default.

    Production listeners unless ``demo``: the loopback demo ports need no privileges.
    """
    ports = DEFAULT_LISTEN if demo else PRODUCTION_LISTEN
    listen = "\n".join(f"{k:<11} = {_toml_list(vs)}" for k, vs in ports.items())
    return f"""# postwarden configuration. Paths are relative to this file's folder.
hostname = "{hostname}"
data_dir = "var"
# local domain at init: {domain}  (manage with `postwarden domain add|list|remove`)

[listen]            # each a list of "host:port"; an empty list turns the listener off
{listen}
proxy_from  = []    # CIDRs of load balancers that send a PROXY protocol v1/v2 header first

[tls]
cert = "var/tls/cert.pem"
key  = "var/tls/key.pem"

[auth]
plaintext_without_tls = "loopback"   # "never" | "loopback" | "always"

[relay]             # who may send mail to domains that are not ours
authenticated = true
pop_before_smtp_minutes = 0
trusted_networks = []
internal_addresses = []
denied_networks = []
sender_must_match_login = true

[limits]
max_message_size = 26214400
max_recipients = 100
max_connections = 1000
max_connections_per_ip = 20
max_connections_smtp = 400          # a budget per service: a flood on one port
max_connections_submission = 200    # never takes the others' slots
max_connections_pop3 = 200
max_connections_imap = 200
max_connections_http = 20
handshake_timeout_seconds = 10      # PROXY header and implicit-TLS handshake
http_timeout_seconds = 10           # the metrics/autoconfig listener: one whole request
http_max_header_size = 8192
http_max_body_size = 16384
auth_failures_per_ip = 10
auth_failures_per_account = 30

[delivery]
smarthost = ""
mx_port = 25
retry_intervals = ["5m", "10m", "30m", "1h", "2h", "4h"]
max_queue_lifetime = "5d"
delay_warning_after = "4h"

[dns]
nameservers = []

[auth_checks]       # SPF, DKIM, DMARC, ARC on mail from unauthenticated clients
enabled = true
spoofing_protection = true   # outsiders claiming our domains unvouched: 550 5.7.1
dmarc_reject = "reject"      # "reject" | "quarantine" (to Junk) for a failing p=reject
dmarc_quarantine = "junk"    # "junk" | "inbox" for a failing p=quarantine
spf_fail = "header"          # "header" | "reject" for an SPF fail
dns_timeout_seconds = 5
check_timeout_seconds = 20
spf_lookup_limit = 10
spf_void_limit = 2
max_signatures = 10
inline_verify_max_bytes = 65536  # DKIM-verified on the event loop up to this size
dns_cache_size = 10000       # DNS answers kept, each for its TTL

[storage]
backend = "sqlite"
blobs = "files"
blob_grace_seconds = 86400   # released message files are deleted this long after
index_batch = 200            # messages parsed and indexed per idle step

[imap]
max_line_length = 65536      # one command line (at least 8192)
max_literal_size = 65536     # a literal other than APPEND's message
max_command_size = 262144    # a whole command, lines and literals
max_append_size = 26214400   # APPEND's message (APPENDLIMIT)
preauth_seconds = 60         # a client not logged in: each whole line, then BYE
autologout_seconds = 1800    # a silent logged-in session gets BYE
idle_seconds = 1800          # the longest IDLE
idle_poll_ms = 30000         # IDLE also checks the mailbox this often
max_sessions_per_user = 50
max_sessions_per_ip = 100

[log]
format = "text"              # "text" | "json" (one object per line)
file = ""                    # "" = stderr; else appended to (relative to this file)
syslog = false               # also to syslog/journald (facility mail)
syslog_socket = "/dev/log"

[service]           # `serve` binds its ports, then runs as this user ("" = as started)
user = ""
group = ""                   # "" = the user's primary group
workers = 1                  # processes sharing the listeners and the store (serve --workers)

[acme]              # certificates for the hostname from an ACME CA; off while directory is ""
directory = ""               # e.g. "https://acme-v02.api.letsencrypt.org/directory"
contact = ""                 # an email address for the CA's notices
challenge = "http-01"        # "http-01": [listen] http on port 80 | "tls-alpn-01": acme_tls on 443
renew_before_days = 30
ca_bundle = ""               # PEM CAs for the directory's HTTPS; "" = the system's
check_interval_seconds = 43200
retry_seconds = 60           # after a failure, doubled each time up to retry_max_seconds
retry_max_seconds = 21600
timeout_seconds = 120
"""
