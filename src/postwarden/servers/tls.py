"""TLS: server contexts with modern defaults, the live pair every listener uses, the
TLS-ALPN-01 challenge responder (RFC 8737), and the self-signed certificate of `init`."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postwarden.config import ConfigError, TLSConfig

ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 §6.2
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier


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


class LiveTLS:
    """The one context every TLS listener and STARTTLS holds; ``swap`` changes the pair.

    Listeners keep ``context`` for their whole life. It has no certificate of
    its own: its SNI callback (called for every ClientHello, with or without
    SNI) hands each new handshake the current pair's context, so a swap
    reaches the next handshake on every port at once, while sessions already
    up keep the TLS connection they negotiated. Loading a new pair into one
    shared context instead would keep an old certificate of another key type
    beside the new one.
    """

    def __init__(self, pair: TLSConfig) -> None:
        self.current = load_server_context(pair)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.sni_callback = self._pick

    def swap(self, pair: TLSConfig) -> None:
        """Serve ``pair`` from the next handshake on; a bad pair raises ConfigError, keeping
        the current one."""
        self.current = load_server_context(pair)

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None,
              ctx: ssl.SSLContext) -> None:
        conn.context = self.current


class AlpnResponder:
    """Answers TLS-ALPN-01 validation (RFC 8737) on the ``[listen] acme_tls`` listener.

    A listener of its own and not an ALPN branch on 465/993: Python's SNI
    callback runs before ALPN is chosen and cannot see the client's ALPN list,
    so a mail listener could not tell a validator from a mail client asking
    for the same name. Only names with a challenge pending are answered (with
    the challenge certificate and ``acme-tls/1``); any other handshake fails.
    """

    def __init__(self) -> None:
        self.pending: dict[str, ssl.SSLContext] = {}
        self.context = _alpn_context()
        self.context.sni_callback = self._pick

    def publish(self, domain: str, key_authorization: str) -> None:
        self.pending[domain.lower()] = challenge_context(domain.lower(), key_authorization)

    def withdraw(self, domain: str) -> None:
        self.pending.pop(domain.lower(), None)

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None,
              ctx: ssl.SSLContext) -> int | None:
        chosen = self.pending.get((name or "").lower())
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        conn.context = chosen
        return None


def _alpn_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    return ctx


def challenge_context(domain: str, key_authorization: str) -> ssl.SSLContext:
    """A context serving the RFC 8737 §3 certificate for ``domain``: self-signed, the
    name as its only SAN, and the SHA-256 of the key authorization in a critical
    acmeIdentifier extension. The acme library dropped its TLS-ALPN-01 helper
    (pyOpenSSL-based); this is the few lines it took, with cryptography."""
    private = ec.generate_private_key(ec.SECP256R1())
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key_authorization.encode("ascii"))
    octets = digest.finalize()
    der = bytes([0x04, len(octets)]) + octets  # DER OCTET STRING of the 32-octet hash
    certificate = _self_signed(private, domain, [x509.DNSName(domain)], 7,
                               x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, der))
    ctx = _alpn_context()
    # load_cert_chain reads only files: a private temporary folder, gone once loaded.
    with tempfile.TemporaryDirectory(prefix="postwarden-alpn-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(_pkcs8(private))
        ctx.load_cert_chain(cert, key)
    return ctx


def _self_signed(private: ec.EllipticCurvePrivateKey, common_name: str,
                 names: list[x509.GeneralName], days: int,
                 critical: x509.ExtensionType) -> x509.Certificate:
    """Signed by its own key, valid from five minutes ago (clock skew) for ``days``."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(critical, critical=True)
        .sign(private, hashes.SHA256())
    )


def _pkcs8(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def write_self_signed(cert: Path, key: Path, hostname: str, days: int = 825) -> None:
    """An ECDSA P-256 certificate for ``hostname`` (and localhost, 127.0.0.1)."""
    private = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = _self_signed(private, hostname, names, days,
                               x509.BasicConstraints(ca=True, path_length=None))
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_pkcs8(private))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
