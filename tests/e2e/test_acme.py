"""ACME end to end on loopback: Pebble (Let's Encrypt's test CA, the Debian package)
issues and renews the hostname's certificate, really validating HTTP-01 and
TLS-ALPN-01 against postwarden's own listeners; clients then see it on 465,
993 and STARTTLS, and sessions opened before a renewal go on.

Pebble resolves the hostname through the loopback DNS server of the MX tests.
Its ACME API's own certificate is one we make (``write_self_signed``), trusted
through ``[acme] ca_bundle``. ``PEBBLE_VA_NOSLEEP`` drops its random
validation delays, ``PEBBLE_WFE_NONCEREJECT=0`` its random bad nonces and
``PEBBLE_AUTHZREUSE=0`` its reuse of earlier validations, so each order is
validated again. Its certificates live five years: a ``renew_before_days``
beyond that makes the next look renew.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from postwarden.servers.tls import write_self_signed
from serverproc import HOSTNAME, PASSWORD, ServerProcess, free_ports

sys.path.insert(0, str(Path(__file__).parent.parent / "delivery"))
from dnsfake import ThreadedDNS

PEBBLE = shutil.which("pebble")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PEBBLE is None, reason="pebble not installed (.ci/run adds it)")]
START_TIMEOUT = 20
LIFETIME_BEYOND = 100_000  # days: more than any Pebble certificate lives


def free_port() -> int:
    return free_ports(1)[0]


class Pebble:
    """A Pebble process on loopback whose validations reach ``http_port``/``tls_port``."""

    def __init__(self, root: Path, dns_port: int, http_port: int, tls_port: int) -> None:
        root.mkdir()
        self.ca = root / "api-cert.pem"
        write_self_signed(self.ca, root / "api-key.pem", "localhost", days=2)
        self.port, self.management = free_port(), free_port()
        config = root / "pebble.json"
        config.write_text(f"""{{"pebble": {{
            "listenAddress": "127.0.0.1:{self.port}",
            "managementListenAddress": "127.0.0.1:{self.management}",
            "certificate": "{self.ca}", "privateKey": "{root / 'api-key.pem'}",
            "httpPort": {http_port}, "tlsPort": {tls_port},
            "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}""",
                          encoding="utf-8")
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               "PEBBLE_AUTHZREUSE": "0"}
        assert PEBBLE is not None
        self.proc = subprocess.Popen(
            [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.output: list[str] = []
        timer = threading.Timer(START_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "Listening on" in line:
                    break
            else:
                raise RuntimeError("pebble did not start: " + "".join(self.output))
        finally:
            timer.cancel()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> str:
        """The CA Pebble issues under (made anew at each start)."""
        reply = requests.get(f"https://127.0.0.1:{self.management}/roots/0",
                             verify=str(self.ca), timeout=10)
        reply.raise_for_status()
        return reply.text

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def dns() -> Iterator[ThreadedDNS]:
    server = ThreadedDNS({(HOSTNAME, "A"): ["127.0.0.1"]})
    yield server
    server.close()


@pytest.fixture
def ports() -> dict[str, int]:
    return {"http": free_port(), "acme_tls": free_port()}


@pytest.fixture
def pebble(tmp_path: Path, dns: ThreadedDNS, ports: dict[str, int]) -> Iterator[Pebble]:
    ca = Pebble(tmp_path / "pebble", dns.port, ports["http"], ports["acme_tls"])
    yield ca
    ca.stop()


def acme_server(root: Path, pebble: Pebble, ports: dict[str, int], **acme: object,
                ) -> ServerProcess:
    root.mkdir()
    return ServerProcess(
        root,
        listen={"http": [f"127.0.0.1:{ports['http']}"],
                "acme_tls": [f"127.0.0.1:{ports['acme_tls']}"],
                "imaps": ["127.0.0.1:0"]},
        acme={"directory": pebble.directory, "contact": "postmaster@example.test",
              "ca_bundle": str(pebble.ca), "retry_seconds": 1, "retry_max_seconds": 2,
              "timeout_seconds": 30, **acme},
    )


def trusting(root_pem: str, *, check_name: bool = True) -> ssl.SSLContext:
    """A client that accepts only Pebble's root, and checks the name unless told (clients
    that dial 127.0.0.1 check the chain only)."""
    ctx = ssl.create_default_context(cadata=root_pem)
    ctx.check_hostname = check_name
    return ctx


def serial_on(addr: tuple[str, int], ctx: ssl.SSLContext) -> str:
    """The serial of the certificate a new implicit-TLS connection is shown."""
    with socket.create_connection(addr, timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"])


def serial_of(sock: socket.socket | None) -> str:
    assert isinstance(sock, ssl.SSLSocket)
    cert = sock.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"])


def reconfigure(server: ServerProcess, **changes: object) -> None:
    text = server.config_path.read_text(encoding="utf-8")
    for key, value in changes.items():
        start = text.index(f"\n{key} = ", text.index("[acme]"))
        end = text.index("\n", start + 1)
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        text = text[:start] + f"\n{key} = {rendered}" + text[end:]
    server.config_path.write_text(text, encoding="utf-8")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)


def test_pebble_issues_by_http01_and_renews_by_tls_alpn01_without_dropping_sessions(
        tmp_path: Path, pebble: Pebble, ports: dict[str, int]) -> None:
    server = acme_server(tmp_path / "server", pebble, ports, challenge="http-01",
                         renew_before_days=30)
    user = server.add_user("ann@example.test")
    server.start()
    try:
        first = server.wait_for_log("acme-issued")
        assert any("status=200" in ln for ln in server.output if " http " in ln)  # HTTP-01
        root = pebble.root_pem()
        ctx, chain_only = trusting(root), trusting(root, check_name=False)
        serial = serial_on(server.addr("submissions"), ctx)
        assert f"serial={serial}" in first
        assert serial_on(server.addr("imaps"), ctx) == serial

        # Sessions opened on the first certificate...
        smtp = smtplib.SMTP_SSL(*server.addr("submissions"), context=chain_only, timeout=30)
        assert smtp.ehlo("client.test")[0] == 250
        imap = imaplib.IMAP4_SSL(*server.addr("imaps"), ssl_context=chain_only, timeout=30)
        imap.login(user, PASSWORD)

        # ...then a renewal, validated over TLS-ALPN-01 this time.
        reconfigure(server, challenge="tls-alpn-01", renew_before_days=LIFETIME_BEYOND)
        renewed = server.wait_for_log_count(2, "acme-issued")[-1]
        assert "challenge=tls-alpn-01" in server.wait_for_log("acme-renewing",
                                                              "tls-alpn-01")
        new = serial_on(server.addr("submissions"), ctx)
        assert new != serial and f"serial={new}" in renewed
        assert serial_on(server.addr("imaps"), ctx) == new
        assert serial_on(server.addr("pop3s"), ctx) == new
        for kind in ("smtp", "submission"):  # STARTTLS on 25 and 587
            with smtplib.SMTP(*server.addr(kind), timeout=30) as starttls:
                starttls.starttls(context=chain_only)
                assert serial_of(starttls.sock) == new
        pop3 = poplib.POP3(*server.addr("pop3"), timeout=30)  # STLS on 110
        pop3.stls(context=chain_only)
        assert serial_of(pop3.sock) == new
        pop3.quit()

        # The old sessions go on, still on the first certificate.
        assert smtp.noop()[0] == 250
        assert serial_of(smtp.sock) == serial
        assert imap.select("INBOX")[0] == "OK"
        assert serial_of(imap.sock) == serial
        imap.logout()
        smtp.quit()
    finally:
        server.stop()
    assert not [ln for ln in server.output if "Traceback" in ln]


def test_a_restart_serves_the_stored_certificate_without_a_new_order(
        tmp_path: Path, pebble: Pebble, ports: dict[str, int]) -> None:
    server = acme_server(tmp_path / "server", pebble, ports)
    server.start()
    issued = server.wait_for_log("acme-issued")
    server.stop()
    key = tmp_path / "server/var/acme/account-key.json"
    assert key.stat().st_mode & 0o077 == 0  # owner-only, like the stored pair
    assert (tmp_path / "server/var/acme/cert.pem").stat().st_mode & 0o077 == 0
    before = len(server.output)
    server.start()
    try:
        serial = serial_on(server.addr("submissions"), trusting(pebble.root_pem()))
        assert f"serial={serial}" in issued
        stale = requests.get(f"http://127.0.0.1:{ports['http']}/.well-known/acme-challenge/x",
                             timeout=10)
        assert stale.status_code == 404  # answered only while its validation is pending
    finally:
        server.stop()
    assert not [ln for ln in server.output[before:] if "acme-renewing" in ln]


def test_an_unreachable_ca_is_logged_and_retried_while_mail_goes_on(
        tmp_path: Path, pebble: Pebble, ports: dict[str, int]) -> None:
    server = acme_server(tmp_path / "server", pebble, ports,
                         directory=f"https://127.0.0.1:{free_port()}/dir")
    server.start()
    try:
        failures = server.wait_for_log_count(2, "acme-failed")
        assert all("cannot reach the CA" in ln and "retry_in=" in ln for ln in failures)
        with smtplib.SMTP(*server.addr("submission"), timeout=30) as client:
            assert client.ehlo("client.test")[0] == 250
            client.starttls()  # the self-signed pair of [tls], kept
        # Put right by SIGHUP: the next look issues.
        reconfigure(server, directory=pebble.directory)
        server.wait_for_log("acme-issued")
    finally:
        server.stop()


def test_acme_turned_on_by_sighup_issues(
        tmp_path: Path, pebble: Pebble, ports: dict[str, int]) -> None:
    """Started without [acme] (so without its client), then given a directory: the
    renewer starts there and then, and the certificate is issued and served."""
    server = acme_server(tmp_path / "server", pebble, ports, directory="")
    server.start()
    try:
        with smtplib.SMTP(*server.addr("submission"), timeout=30) as client:
            assert client.ehlo("client.test")[0] == 250
        assert not [ln for ln in server.output if "acme-" in ln]
        reconfigure(server, directory=pebble.directory)
        issued = server.wait_for_log("acme-issued")
        assert f"serial={serial_on(server.addr('imaps'), trusting(pebble.root_pem()))}" in issued
    finally:
        server.stop()
    assert not [ln for ln in server.output if "Traceback" in ln]


def test_a_failed_validation_names_the_reason_in_one_line(
        tmp_path: Path, pebble: Pebble, ports: dict[str, int]) -> None:
    server = acme_server(tmp_path / "server", pebble, ports, challenge="tls-alpn-01")
    # Pebble validates on the port it was told; nothing of ours listens there.
    server_text = server.config_path.read_text(encoding="utf-8")
    server.config_path.write_text(server_text.replace(
        f'acme_tls = ["127.0.0.1:{ports["acme_tls"]}"]', "acme_tls = []"), encoding="utf-8")
    server.start()
    try:
        line = server.wait_for_log("acme-failed")
        assert "validation failed" in line and line.count("\n") == 1
        with smtplib.SMTP(*server.addr("submission"), timeout=30) as client:
            assert client.noop()[0] == 250
    finally:
        server.stop()

