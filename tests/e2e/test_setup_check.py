"""`postwarden check` against a loopback DNS server and a running server: good and broken setups.

DNS answers come from ``tests/delivery/dnsfake.py`` (real DNS over UDP/TCP
on 127.0.0.1); the listeners, the certificate and the relay wire test are
the real server's. The broken setup is the good one with the usual
mistakes: no MX, a PTR naming another host, no SPF, an expired certificate
for another name, a listener nobody serves.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postwarden.admin.check_server import certificate
from postwarden.admin.checkline import Status
from postwarden.config import TLSConfig
from postwarden.delivery.dkimsign import load_keys
from serverproc import DOMAIN, HOSTNAME, ServerProcess, free_ports

sys.path.insert(0, str(Path(__file__).parent.parent / "delivery"))
from dnsfake import Records, ThreadedDNS

KINDS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http")
PTR = "1.0.0.127.in-addr.arpa"


def write_cert(cert: Path, key: Path, name: str, not_before: datetime.datetime,
               not_after: datetime.datetime, issuer: str | None = None) -> None:
    """A certificate for ``name``: self-signed, or signed by a throwaway CA named ``issuer``."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, issued_by = private, subject
    if issuer is not None:
        signer = ec.generate_private_key(ec.SECP256R1())
        issued_by = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(issued_by)
             .public_key(private.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
             .sign(signer, hashes.SHA256()))
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A running server on fixed loopback ports, trusting only 127.0.0.1, with a DKIM key."""
    ports = dict(zip(KINDS, free_ports(len(KINDS)), strict=True))
    made = make_server(listen={k: [f"127.0.0.1:{p}"] for k, p in ports.items()},
                       relay={"trusted_networks": ["127.0.0.1/32"]})
    now = datetime.datetime.now(datetime.UTC)
    write_cert(made.cert, made.root / "var/tls/key.pem", HOSTNAME,
               now - datetime.timedelta(days=1), now + datetime.timedelta(days=60),
               issuer="Test CA")
    made.start()
    yield made
    made.stop()


def good_records(server: ServerProcess) -> Records:
    made = server.cli("dkim", "generate", DOMAIN, "--algorithm", "ed25519-sha256")
    assert made.returncode == 0, made.stderr
    (key,) = load_keys(server.root / "var", DOMAIN)
    return {
        (HOSTNAME, "A"): ["127.0.0.1"],
        (HOSTNAME, "TXT"): ['"v=spf1 a -all"'],
        (PTR, "PTR"): [f"{HOSTNAME}."],
        (DOMAIN, "MX"): [f"10 {HOSTNAME}."],
        (DOMAIN, "TXT"): ['"v=spf1 mx -all"'],
        (f"{key.selector}._domainkey.{DOMAIN}", "TXT"): [
            " ".join(f'"{s}"' for s in key.txt_strings())],
        (f"_dmarc.{DOMAIN}", "TXT"): ['"v=DMARC1; p=reject"'],
    }


def run_check(config: Path, records: Records) -> tuple[int, list[str]]:
    dns = ThreadedDNS(records)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "postwarden", "-c", str(config), "check",
             "--dns", f"127.0.0.1:{dns.port}", "--timeout", "10"],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        dns.close()
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def fixes(lines: list[str]) -> dict[str, str]:
    """Each FAIL/WARN line's "STATUS  topic: detail" mapped to its fix."""
    return dict(line.split(" -- fix: ", 1) for line in lines if " -- fix: " in line)  # type: ignore[misc]


class TestGoodSetup:
    def test_every_line_is_ok_and_the_exit_code_is_zero(self, server: ServerProcess) -> None:
        """DNS, certificate, every listener and both relay tests pass."""
        code, lines = run_check(server.config_path, good_records(server))
        assert code == 0, "\n".join(lines)
        assert all(line.startswith("OK    ") for line in lines), "\n".join(lines)
        smtp = server.port("smtp")
        for expected in (
            f"OK    address {HOSTNAME}: 127.0.0.1",
            f"OK    reverse dns 127.0.0.1: PTR {HOSTNAME}, which resolves back"
            " (forward-confirmed)",
            f"OK    mx {DOMAIN}: {HOSTNAME}",
            f"OK    spf {DOMAIN}: passes for 127.0.0.1",
            f"OK    dmarc {DOMAIN}: p=reject",
            f"OK    certificate names: {HOSTNAME} is covered",
            "OK    certificate issuer: CN=Test CA",
            f"OK    spf {HOSTNAME}: passes for 127.0.0.1",
            f"OK    open relay (wire): 3 remote recipients from 127.0.0.2 to"
            f" 127.0.0.1:{smtp}: 550 5.7.1",
        ):
            assert expected in lines
        topics = {line[6:].split(": ", 1)[0] for line in lines}
        assert {f"listener {k} 127.0.0.1:{server.port(k)}" for k in KINDS} <= topics
        assert any(line.startswith(f"OK    dkim {DOMAIN}: ") for line in lines)
        assert any(line.startswith("OK    open relay (policy): 76 address forms") for line in lines)


class TestBrokenSetup:
    def test_each_mistake_is_a_fail_line_with_its_fix(self, server: ServerProcess) -> None:
        """No MX, a foreign PTR, no SPF, an expired wrong-name certificate, pop3 not served."""
        records = good_records(server)
        del records[(DOMAIN, "MX")], records[(DOMAIN, "TXT")]
        records[(PTR, "PTR")] = ["other.example.net."]
        tls = server.root / "var" / "tls"
        now = datetime.datetime.now(datetime.UTC)
        write_cert(tls / "old.pem", tls / "old.key", "wrong.example.net",
                   now - datetime.timedelta(days=90), now - datetime.timedelta(days=1))
        pop3, down = server.port("pop3"), free_ports(1)[0]
        broken = server.root / "broken.toml"
        broken.write_text(server.config_path.read_text(encoding="utf-8")
                          .replace("var/tls/cert.pem", "var/tls/old.pem")
                          .replace("var/tls/key.pem", "var/tls/old.key")
                          .replace(f'pop3 = ["127.0.0.1:{pop3}"]', f'pop3 = ["127.0.0.1:{down}"]'),
                          encoding="utf-8")

        code, lines = run_check(broken, records)
        assert code == 1
        found = fixes(lines)
        expired = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
        assert found[f"FAIL  mx {DOMAIN}: no MX record"] == f'publish "{DOMAIN}. MX 10 {HOSTNAME}."'
        assert found["FAIL  reverse dns 127.0.0.1: PTR is other.example.net, not"
                     f" {HOSTNAME}"].endswith(f"to set its PTR record to {HOSTNAME}")
        assert found[f"FAIL  spf {DOMAIN}: no SPF record"] == (
            f'publish "{DOMAIN}. TXT \\"v=spf1 mx -all\\""')
        assert "FAIL  certificate names: wrong.example.net, not mail.example.test" in found
        assert "WARN  certificate issuer: self-signed: servers sending to you accept it, but" \
               " mail clients warn their users" in found
        assert any(k.startswith(f"FAIL  certificate expiry: expired on {expired}")
                   for k in found)
        assert found[f"FAIL  listener pop3 127.0.0.1:{down}: cannot connect"
                     " (connection refused)"].startswith("start postwarden serve")
        assert f"OK    dmarc {DOMAIN}: p=reject" in lines  # the rest is still judged
        assert sum(line.startswith("FAIL") for line in lines) == 6, "\n".join(lines)


class TestRelaySelfTest:
    def test_a_server_running_with_wider_relay_rules_than_its_config_fails_the_wire_test(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """The config was narrowed but the server not reloaded: 127.0.0.2 still relays."""
        (smtp,) = free_ports(1)
        server = make_server(listen={k: [] for k in KINDS} | {"smtp": [f"127.0.0.1:{smtp}"]},
                             relay={"trusted_networks": ["127.0.0.0/8"]})
        server.start()
        try:
            server.config_path.write_text(server.config_path.read_text(encoding="utf-8").replace(
                '"127.0.0.0/8"', '"127.0.0.1/32"'), encoding="utf-8")
            code, lines = run_check(server.config_path, {})
        finally:
            server.stop()
        assert code == 1
        (wire,) = [line for line in lines if "open relay (wire)" in line]
        assert wire.startswith("FAIL  open relay (wire): RCPT TO:<relay-probe@relay-probe.invalid>"
                               " from 127.0.0.2 answered '250 2.1.5")
        assert any(line.startswith("OK    open relay (policy)") for line in lines)

    def test_a_trusted_network_holding_strangers_fails_the_policy_test(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """trusted_networks = 0.0.0.0/0 relays for everyone: one FAIL per stranger."""
        server = make_server(listen={k: [] for k in KINDS},
                             relay={"trusted_networks": ["0.0.0.0/0"]})
        code, lines = run_check(server.config_path, {})
        assert code == 1
        relayed = [line for line in lines if line.startswith("FAIL  open relay (policy)")]
        assert [line.split(" are relayed")[0] for line in relayed] == [
            f"FAIL  open relay (policy): 8 address forms from {ip}"
            for ip in ("192.0.2.1", "198.51.100.1", "203.0.113.1")]
        assert "(rule trusted_networks)" in relayed[0]


class TestCertificateLines:
    def test_a_certificate_expiring_within_two_weeks_is_a_warning(self, tmp_path: Path) -> None:
        """Renewal is due, not overdue: WARN, which does not fail the check."""
        now = datetime.datetime.now(datetime.UTC)
        write_cert(tmp_path / "c.pem", tmp_path / "k.pem", "*.example.test",
                   now - datetime.timedelta(days=80), now + datetime.timedelta(days=5, hours=1))
        names, issuer, expiry = certificate(TLSConfig(tmp_path / "c.pem", tmp_path / "k.pem"),
                                            HOSTNAME, now)
        assert names.render() == f"OK    certificate names: {HOSTNAME} is covered"
        assert issuer.status is Status.WARN  # made here without a CA
        assert expiry.render().startswith("WARN  certificate expiry: expires on ")
        assert ", in 5 days -- fix: renew it" in expiry.render()

    def test_a_key_that_does_not_match_is_one_fail_line(self, tmp_path: Path) -> None:
        """The pair is checked as serve checks it, naming the key."""
        now = datetime.datetime.now(datetime.UTC)
        for n in (1, 2):
            write_cert(tmp_path / f"c{n}.pem", tmp_path / f"k{n}.pem", HOSTNAME,
                       now, now + datetime.timedelta(days=90))
        (line,) = certificate(TLSConfig(tmp_path / "c1.pem", tmp_path / "k2.pem"), HOSTNAME, now)
        assert line.render().startswith(f"FAIL  certificate: tls.key: {tmp_path / 'k2.pem'}:"
                                        " does not match the certificate")
