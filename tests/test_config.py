"""Configuration: a valid file loads; every bad value is an error that names its key."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from postwarden.config import (
    ConfigError,
    HostPort,
    Route,
    load,
    parse_duration,
    parse_host_port,
    render_default,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postwarden.toml"
    path.write_text(text, encoding="utf-8")
    return path


def with_section_value(section: str, line: str) -> str:
    """The default config with ``line`` added to the start of ``[section]``."""
    text = render_default("mail.example.test", "example.test")
    header = f"[{section}]"
    assert header in text
    start = text.index(header)
    end = text.index("\n", start)
    key = line.split("=")[0].strip()
    # drop the default's own line for this key, so the new one is not a duplicate
    text = re.sub(rf"(?m)^{re.escape(key)}\s*=.*\n", "", text)
    return text[: end + 1] + line + "\n" + text[end + 1 :]


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    return str(info.value)


class TestLoadValidConfig:
    def test_default_config_loads_with_every_value(self, tmp_path: Path) -> None:
        """The file `init` writes loads as written, paths relative to its folder."""
        cfg = load(write(tmp_path, render_default("mail.example.test", "example.test",
                                                  demo=True)))
        assert cfg.hostname == "mail.example.test"
        assert cfg.data_dir == tmp_path.resolve() / "var"
        assert cfg.database.parent == cfg.data_dir
        assert cfg.tls.cert == tmp_path.resolve() / "var/tls/cert.pem"
        assert cfg.listen["smtp"] == (HostPort("127.0.0.1", 2525),)
        assert set(cfg.listen) == {
            "smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http",
            "acme_tls",
        }
        assert cfg.auth.plaintext_without_tls == "loopback"
        assert cfg.relay.authenticated is True
        assert cfg.relay.trusted_networks == ()
        assert cfg.limits.max_recipients == 100
        assert cfg.delivery.smarthost is None
        assert cfg.delivery.retry_intervals == (300, 600, 1800, 3600, 7200, 14400)
        assert cfg.delivery.max_queue_lifetime == 5 * 86400
        assert cfg.delivery.delay_warning_after == 4 * 3600
        assert cfg.dns.nameservers == ()
        assert cfg.routes == ()
        assert not cfg.acme.enabled and cfg.acme.ca_bundle is None

    def test_minimal_config_needs_only_a_hostname(self, tmp_path: Path) -> None:
        """Everything but the hostname has a default; listeners default to off."""
        cfg = load(write(tmp_path, 'hostname = "mx.example.test"\n'))
        assert cfg.hostname == "mx.example.test"
        assert all(addrs == () for addrs in cfg.listen.values())

    def test_relay_section_values_are_parsed(self, tmp_path: Path) -> None:
        """Networks and addresses become ipaddress values."""
        text = """
hostname = "mx.example.test"
[relay]
authenticated = false
pop_before_smtp_minutes = 15
trusted_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
internal_addresses = ["192.168.1.1", "::1"]
denied_networks = ["10.66.0.0/16"]
sender_must_match_login = false
"""
        relay = load(write(tmp_path, text)).relay
        assert relay.authenticated is False
        assert relay.pop_before_smtp_minutes == 15
        assert relay.trusted_networks == (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("192.0.2.7/32"),
        )
        assert relay.internal_addresses == (
            ipaddress.ip_address("192.168.1.1"),
            ipaddress.ip_address("::1"),
        )
        assert relay.denied_networks == (ipaddress.ip_network("10.66.0.0/16"),)
        assert relay.sender_must_match_login is False

    def test_mime_limits_reach_the_parser_bounds(self, tmp_path: Path) -> None:
        """[limits] mime_* keys become the MimeLimits the structure parser gets."""
        text = with_section_value("limits", "mime_max_parts = 7")
        limits = load(write(tmp_path, text)).limits.mime
        assert (limits.max_parts, limits.max_depth) == (7, 50)

    def test_delivery_dns_and_routes_are_parsed(self, tmp_path: Path) -> None:
        """host:port strings, IPv6 brackets, nameservers and the route table."""
        text = """
hostname = "mx.example.test"
[listen]
smtp = ["[::1]:2525", "0.0.0.0:25"]
[delivery]
smarthost = "relay.example.net:587"
retry_intervals = ["30s", "1m"]
lease_seconds = "2m"
active_window = 50
[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53"]
[[routes]]
domain = "Partner.Example."
to = "127.0.0.1:2526"
[[routes]]
domain = "*.example.org"
to = "[2001:db8::25]:25"
"""
        cfg = load(write(tmp_path, text))
        assert cfg.listen["smtp"] == (HostPort("::1", 2525), HostPort("0.0.0.0", 25))
        assert cfg.delivery.smarthost == HostPort("relay.example.net", 587)
        assert cfg.delivery.retry_intervals == (30, 60)
        assert (cfg.delivery.lease_seconds, cfg.delivery.active_window) == (120, 50)
        assert cfg.dns.nameservers == (HostPort("127.0.0.1", 5353), HostPort("192.0.2.53", 53))
        assert cfg.routes == (
            Route("partner.example", HostPort("127.0.0.1", 2526)),
            Route("*.example.org", HostPort("2001:db8::25", 25)),
        )
        assert str(cfg.routes[1].to) == "[2001:db8::25]:25"


class TestConfigErrorsNameTheKey:
    @pytest.mark.parametrize(
        ("section", "line", "key"),
        [
            ("relay", 'trusted_network = ["10.0.0.0/8"]', "relay.trusted_network"),
            ("limits", 'max_recipients = "ten"', "limits.max_recipients"),
            ("limits", "max_recipients = 0", "limits.max_recipients"),
            ("limits", "max_recipients = true", "limits.max_recipients"),
            ("relay", "authenticated = 1", "relay.authenticated"),
            ("relay", 'authenticated = "yes"', "relay.authenticated"),
            ("relay", "pop_before_smtp_minutes = -1", "relay.pop_before_smtp_minutes"),
            ("relay", 'trusted_networks = ["10.0.0.0/33"]', "relay.trusted_networks[0]"),
            ("relay", 'trusted_networks = ["not-a-net"]', "relay.trusted_networks[0]"),
            ("relay", "trusted_networks = [10]", "relay.trusted_networks[0]"),
            ("relay", 'trusted_networks = "10.0.0.0/8"', "relay.trusted_networks"),
            ("relay", 'denied_networks = ["ok/8"]', "relay.denied_networks[0]"),
            ("relay", 'internal_addresses = ["192.0.2.300"]', "relay.internal_addresses[0]"),
            ("relay", 'internal_addresses = ["10.0.0.0/8"]', "relay.internal_addresses[0]"),
            ("listen", 'smtp = ["127.0.0.1"]', "listen.smtp[0]"),
            ("listen", 'pop3 = ["127.0.0.1:2110", "localhost:pop"]', "listen.pop3[1]"),
            ("listen", 'imap = ["127.0.0.1:70000"]', "listen.imap[0]"),
            ("listen", 'imap = [":143"]', "listen.imap[0]"),
            ("listen", 'smpt = ["127.0.0.1:25"]', "listen.smpt"),
            ("delivery", 'smarthost = "relay.example.net"', "delivery.smarthost"),
            ("delivery", 'smarthost = "relay.example.net:smtp"', "delivery.smarthost"),
            ("delivery", 'max_queue_lifetime = "5 days"', "delivery.max_queue_lifetime"),
            ("delivery", "max_queue_lifetime = 5", "delivery.max_queue_lifetime"),
            ("delivery", 'delay_warning_after = "4w"', "delivery.delay_warning_after"),
            ("delivery", 'retry_intervals = ["5m", "soon"]', "delivery.retry_intervals[1]"),
            ("delivery", "retry_intervals = []", "delivery.retry_intervals"),
            ("delivery", "mx_port = 70000", "delivery.mx_port"),
            ("delivery", 'lease_seconds = "0s"', "delivery.lease_seconds"),
            ("delivery", "lease_seconds = 60", "delivery.lease_seconds"),
            ("delivery", "active_window = 0", "delivery.active_window"),
            ("auth", 'plaintext_without_tls = "sometimes"', "auth.plaintext_without_tls"),
            ("tls", "cert = 5", "tls.cert"),
            ("dns", 'nameservers = ["not-an-ip"]', "dns.nameservers[0]"),
            ("relay", 'trusted_networks = ["192.168.1.5/24"]', "relay.trusted_networks[0]"),
            ("log", 'format = "xml"', "log.format"),
            ("log", "file = 5", "log.file"),
            ("auth_checks", 'dmarc_reject = "junk"', "auth_checks.dmarc_reject"),
            ("auth_checks", 'dmarc_quarantine = "trash"', "auth_checks.dmarc_quarantine"),
            ("storage", "timeout_seconds = 0", "storage.timeout_seconds"),
            ("storage", 'timeout_seconds = "5s"', "storage.timeout_seconds"),
            ("storage", "blob_gc_interval_seconds = -1", "storage.blob_gc_interval_seconds"),
            ("storage", "pool_size = 1", "storage.pool_size"),
            ("service", "workers = 0", "service.workers"),
            ("service", "workers = 2.5", "service.workers"),
        ],
    )
    def test_bad_value_is_refused_naming_its_key(
        self, tmp_path: Path, section: str, line: str, key: str
    ) -> None:
        """The error starts with the full key name, then says what is wrong."""
        message = load_error(tmp_path, with_section_value(section, line))
        assert message.startswith(f"{key}:"), message
        assert len(message) > len(key) + 2

    def test_network_with_host_bits_says_what_to_write(self, tmp_path: Path) -> None:
        """192.168.1.5/24 is either the /24 or one host: the message offers both."""
        message = load_error(tmp_path, with_section_value(
            "relay", 'denied_networks = ["10.0.0.0/8", "192.168.1.5/24"]'))
        assert message == ("relay.denied_networks[1]: '192.168.1.5/24' has host bits set;"
                           " write '192.168.1.0/24' for the network or a /32 for one host")

    def test_unknown_top_level_key_is_refused(self, tmp_path: Path) -> None:
        """A typo at the top level never silently falls back to a default."""
        # before the first table header, so the key is at the top level
        text = 'hostnme = "x"\n' + render_default("mail.example.test", "example.test")
        assert load_error(tmp_path, text) == "hostnme: unknown key"

    def test_unknown_section_is_refused(self, tmp_path: Path) -> None:
        """A whole unknown table is an unknown key too."""
        text = render_default("mail.example.test", "example.test") + "\n[relais]\nx = 1\n"
        assert load_error(tmp_path, text).startswith("relais:")

    def test_section_that_is_not_a_table_is_refused(self, tmp_path: Path) -> None:
        """``relay = 1`` names the section."""
        assert load_error(tmp_path, 'hostname = "h"\nrelay = 1\n').startswith("relay:")

    def test_missing_hostname_is_refused(self, tmp_path: Path) -> None:
        """The hostname is the one required key."""
        assert load_error(tmp_path, 'data_dir = "var"\n').startswith("hostname:")

    @pytest.mark.parametrize(
        ("route", "key"),
        [
            ('domain = "partner.example"', "routes[0].to"),
            ('to = "127.0.0.1:25"', "routes[0].domain"),
            ('domain = "p.example"\nto = "127.0.0.1"', "routes[0].to"),
            ('domain = "p.example"\nto = "127.0.0.1:25"\nvia = "x"', "routes[0].via"),
        ],
    )
    def test_bad_route_names_the_route_and_key(
        self, tmp_path: Path, route: str, key: str
    ) -> None:
        """Each [[routes]] entry needs a domain and a host:port ``to``."""
        text = f'hostname = "h"\n[[routes]]\n{route}\n'
        assert load_error(tmp_path, text).startswith(f"{key}:")

    def test_not_toml_names_the_file(self, tmp_path: Path) -> None:
        """A file that is not TOML is reported with its path, not a traceback."""
        path = write(tmp_path, "hostname = \n[[[\n")
        with pytest.raises(ConfigError, match="not valid TOML") as info:
            load(path)
        assert str(path) in str(info.value)

    def test_missing_file_says_how_to_create_one(self, tmp_path: Path) -> None:
        """A missing config points at `postwarden init`."""
        with pytest.raises(ConfigError, match="no such config file") as info:
            load(tmp_path / "absent.toml")
        assert "postwarden init" in str(info.value)

    def test_unreadable_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A directory or undecodable bytes where the file should be is reported, not raised."""
        with pytest.raises(ConfigError, match="cannot read"):
            load(tmp_path)
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'hostname = "caf\xe9"\n')
        with pytest.raises(ConfigError, match="cannot read"):
            load(path)


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30s", 30), ("5m", 300), ("1h", 3600), ("4h", 14400), ("5d", 432000), (" 2m ", 120)],
    )
    def test_parses_number_and_unit(self, text: str, seconds: int) -> None:
        """Durations are an integer and one of s, m, h, d."""
        assert parse_duration(text, "k") == seconds

    @pytest.mark.parametrize(
        "text", ["", "5", "m", "1.5h", "-5m", "5 m", "5M", "1w", "5mm", "0s", "0d"]
    )
    def test_refuses_anything_else_naming_the_key(self, text: str) -> None:
        """The key given by the caller is in the message."""
        with pytest.raises(ConfigError, match=r"^delivery\.x:"):
            parse_duration(text, "delivery.x")


    @pytest.mark.parametrize("key", ["max_queue_lifetime", "delay_warning_after"])
    def test_an_empty_duration_key_is_an_error_not_the_default(
        self, tmp_path: Path, key: str
    ) -> None:
        """A present but empty value is a mistake to report, never silently the default."""
        text = f'hostname = "mx.example.test"\n[delivery]\n{key} = ""\n'
        assert load_error(tmp_path, text).startswith(f"delivery.{key}:")


class TestHostPort:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("127.0.0.1:25", HostPort("127.0.0.1", 25)),
            ("mx.example.test:2525", HostPort("mx.example.test", 2525)),
            ("[::1]:587", HostPort("::1", 587)),
            ("0.0.0.0:0", HostPort("0.0.0.0", 0)),
        ],
    )
    def test_parses_host_and_port(self, text: str, expected: HostPort) -> None:
        """IPv6 hosts come in brackets and leave without them."""
        assert parse_host_port(text, "k") == expected

    @pytest.mark.parametrize("text", ["host", "host:", ":25", "host:65536", "host:-1", "[]:25"])
    def test_refuses_bad_host_port(self, text: str) -> None:
        """A missing host or a port outside 0-65535 is refused."""
        with pytest.raises(ConfigError, match=r"^listen\.smtp\[0\]:"):
            parse_host_port(text, "listen.smtp[0]")


class TestRouteMatches:
    EXACT = Route("partner.example", HostPort("127.0.0.1", 2526))
    WILD = Route("*.example.org", HostPort("127.0.0.1", 2527))

    @pytest.mark.parametrize(
        ("route", "domain", "matches"),
        [
            (EXACT, "partner.example", True),
            (EXACT, "sub.partner.example", False),
            (EXACT, "otherpartner.example", False),
            (WILD, "a.example.org", True),
            (WILD, "deep.a.example.org", True),
            (WILD, "example.org", False),
            (WILD, "badexample.org", False),
            (WILD, "example.org.evil.test", False),
        ],
    )
    def test_exact_and_subdomain_patterns(self, route: Route, domain: str, matches: bool) -> None:
        """``*.example.org`` is for subdomains only (SPEC §2), never the bare domain."""
        assert route.matches(domain) is matches
