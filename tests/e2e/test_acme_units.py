"""The [acme] settings and the TLS-ALPN-01 responder, without a CA."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from postwarden.config import ConfigError, from_dict
from postwarden.servers.tls import ACME_IDENTIFIER_OID, ACME_TLS_ALPN, AlpnResponder


@pytest.mark.parametrize(("acme", "message"), [
    ({"challenge": "dns-01"}, 'acme.challenge: expected "http-01" or "tls-alpn-01"'),
    ({"directory": "http://ca.test/dir"}, "acme.directory: expected an https:// URL"),
    ({"contact": "nobody"}, "acme.contact: expected an email address"),
    ({"renew_before_days": 0}, "acme.renew_before_days: must be at least 1"),
    ({"renew_days": 3}, "acme.renew_days: unknown key"),
])
def test_bad_acme_settings_name_the_key(acme: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_dict({"hostname": "mail.example.test", "acme": acme}, Path("/x/postwarden.toml"))


def test_acme_is_off_until_a_directory_is_given() -> None:
    cfg = from_dict({"hostname": "mail.example.test"}, Path("/x/postwarden.toml"))
    assert not cfg.acme.enabled and cfg.acme.challenge == "http-01"
    assert cfg.listen["acme_tls"] == ()
    cfg = from_dict({"hostname": "mail.example.test", "acme": {
        "directory": "https://ca.test/dir", "ca_bundle": "ca.pem"}}, Path("/x/postwarden.toml"))
    assert cfg.acme.enabled and cfg.acme.ca_bundle == Path("/x/ca.pem")


def handshake(responder: AlpnResponder, name: str, alpn: list[str]) -> ssl.SSLSocket:
    """A client handshake against the responder over a real loopback socket."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with responder.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.set_alpn_protocols(alpn)
    try:
        return client.wrap_socket(socket.create_connection(listener.getsockname(), timeout=10),
                                  server_hostname=name)
    finally:
        listener.close()


def test_the_responder_shows_the_challenge_certificate_for_a_pending_name_only() -> None:
    responder = AlpnResponder()
    responder.publish("Mail.Example.Test", "token.thumbprint")
    with handshake(responder, "mail.example.test", [ACME_TLS_ALPN]) as tls:
        assert tls.selected_alpn_protocol() == ACME_TLS_ALPN
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert ext.critical and len(ext.value.value) == 34  # OCTET STRING of a SHA-256
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example.test"]
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        handshake(responder, "other.example.test", [ACME_TLS_ALPN])
    responder.withdraw("mail.example.test")
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        handshake(responder, "mail.example.test", [ACME_TLS_ALPN])


STARTED = """
import asyncio, json, sys
from pathlib import Path
from postwarden.app import App
from postwarden.config import from_dict
from postwarden.servers.tls import write_self_signed

async def main() -> None:
    cfg = from_dict(json.loads(sys.argv[2]), Path(sys.argv[1]) / "postwarden.toml")
    write_self_signed(cfg.tls.cert, cfg.tls.key, cfg.hostname)
    app = App(cfg)
    await app.start()
    app.start_renewer()  # as App.run does
    if app.renewal is not None:
        app.renewal.cancel()  # before its first step: no order goes out
    print(json.dumps(sorted(m for m in ("acme", "josepy", "OpenSSL", "requests")
                            if m in sys.modules)))
    await app.stop()

asyncio.run(main())
"""


def libraries_after_start(tmp_path: Path, acme: dict[str, object]) -> list[str]:
    """Which ACME client libraries a started server (in a fresh interpreter) has imported."""
    listen = {kind: [] for kind in ("submission", "submissions", "pop3", "pop3s", "imap",
                                    "imaps", "http", "acme_tls")}
    raw = {"hostname": "mail.example.test", "listen": {**listen, "smtp": ["127.0.0.1:0"]},
           "acme": acme}
    done = subprocess.run([sys.executable, "-c", STARTED, str(tmp_path), json.dumps(raw)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


class TestTheACMEClientLoadsOnlyWhenOn:
    def test_a_server_without_acme_never_imports_its_libraries(self, tmp_path: Path) -> None:
        """No [acme]: no acme, josepy, pyOpenSSL or requests in the process (start-up time
        and memory every such server paid before)."""
        assert libraries_after_start(tmp_path, {}) == []

    def test_a_server_with_acme_has_its_client(self, tmp_path: Path) -> None:
        """[acme] on: the renewer is built, with the client's libraries."""
        loaded = libraries_after_start(tmp_path, {"directory": "https://127.0.0.1:1/dir"})
        assert {"acme", "josepy"} <= set(loaded)
