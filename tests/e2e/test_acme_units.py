"""The [acme] settings and the TLS-ALPN-01 responder, without a CA."""

from __future__ import annotations

import socket
import ssl
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
