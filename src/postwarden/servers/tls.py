"""TLS: server contexts with modern defaults, and the self-signed certificate of `init`."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postwarden.config import ConfigError, TLSConfig


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ only, the library's secure cipher defaults (RFC 8996, RFC 9325)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def load_server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The context for every TLS listener, or a ConfigError naming the key and the path.

    Checked at start so that a missing, unreadable or mismatched pair stops
    the server instead of silently leaving 465, 995 and STARTTLS off.
    """
    for name, path in (("tls.cert", tls.cert), ("tls.key", tls.key)):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{name}: {path}: no such file (`postwarden init` makes a"
                              " self-signed pair)") from None
        except OSError as exc:
            raise ConfigError(f"{name}: {path}: cannot read: {exc.strerror or exc}") from None
        if name == "tls.cert":
            try:
                x509.load_pem_x509_certificates(data)
            except ValueError:
                raise ConfigError(f"tls.cert: {path}: not a PEM certificate") from None
    try:
        return server_context(tls.cert, tls.key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"tls.key: {tls.key}: does not match the certificate"
                              f" {tls.cert}") from None
        raise ConfigError(f"tls.key: {tls.key}: not a usable PEM private key for"
                          f" {tls.cert} ({exc.reason or exc})") from None


def write_self_signed(cert: Path, key: Path, hostname: str, days: int = 825) -> None:
    """An ECDSA P-256 certificate for ``hostname`` (and localhost, 127.0.0.1)."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(hostname),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
