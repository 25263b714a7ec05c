"""What start-up and the listeners need of ACME without its client: which certificate
pair to serve, and the challenge answers pending while a CA validates.

Apart from ``servers.acme`` so that a server without ``[acme]`` never imports the
acme, josepy, pyOpenSSL and requests libraries (about 50 ms of start-up and
a fifth of the process's memory at rest); ``app`` imports that module only
when ``[acme]`` is on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from postwarden.config import Config, TLSConfig
from postwarden.servers.tls import AlpnResponder


class Challenges:
    """What the listeners answer while a validation is pending (set from the ACME thread,
    read by the event loop: single dict operations)."""

    def __init__(self) -> None:
        self.http: dict[str, str] = {}  # token -> key authorization
        self.alpn = AlpnResponder()

    def http01(self, token: str) -> str | None:
        """The key authorization to answer for ``token``, if one is pending."""
        return self.http.get(token)


@dataclass(frozen=True, slots=True)
class Issued:
    pair: TLSConfig
    serial: str  # hex in whole octets, as `openssl x509 -serial` prints it
    not_after: datetime.datetime


def stored_pair(data_dir: Path) -> TLSConfig:
    """One PEM file with the key and the full chain: replaced in one rename, never a
    certificate beside a key it does not match."""
    path = data_dir / "acme" / "cert.pem"
    return TLSConfig(cert=path, key=path)


def certificate_pair(cfg: Config) -> TLSConfig:
    """The pair to serve: the ACME certificate once there is one, else ``[tls]``."""
    pair = stored_pair(cfg.data_dir)
    return pair if cfg.acme.enabled and pair.cert.exists() else cfg.tls
