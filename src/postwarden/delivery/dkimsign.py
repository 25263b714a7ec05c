"""DKIM keys under ``data_dir`` and signatures for outbound mail (RFC 6376, RFC 8463).

A key is one file, ``data_dir/dkim/<domain>/<selector>.json`` (mode 0600),
holding its algorithm, creation time and private key in the form dkimpy
takes (PEM for RSA, the base64 seed for Ed25519). ``cryptography`` makes the
keys; dkimpy canonicalises and signs, so no DKIM arithmetic is hand-written.

Rotation: several selectors of one algorithm may live at once. The one that
signs is the newest that is at least ``rotation_delay`` old (time for its DNS
record to be published and cached); while none is that old, the oldest one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postwarden.intake.headers import field_names, from_fields
from postwarden.mail.address import AddressError, normalise_domain
from postwarden.mail.addresslist import parse_address_list

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
RSA_BITS = 2048
# Signed once per occurrence; From is signed once more than it occurs, so a
# From added on the way breaks the signature (RFC 6376 §8.15 oversigning).
SIGNED_FIELDS = (
    b"subject", b"date", b"to", b"cc", b"message-id", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"reply-to", b"in-reply-to", b"references",
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class DkimError(Exception):
    """Bad input to key management: one line for the CLI."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    created: float
    private: bytes  # PEM (RSA) or base64 of the 32-byte seed (Ed25519), as dkimpy takes it

    @property
    def public(self) -> str:
        """The base64 ``p=`` value of the key record."""
        if self.algorithm == "ed25519-sha256":
            seed = base64.b64decode(self.private)
            raw = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            key = serialization.load_pem_private_key(self.private, password=None)
            raw = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    def txt_strings(self) -> list[str]:
        """The key record's text in strings of at most 255 octets (one TXT record)."""
        kind = "ed25519" if self.algorithm == "ed25519-sha256" else "rsa"
        text = f"v=DKIM1; k={kind}; p={self.public}"
        return [text[i:i + 255] for i in range(0, len(text), 255)]

    def dns_record(self) -> str:
        """A zone-file line for the key record, as ``dkim generate`` and ``dkim show`` print."""
        strings = " ".join(f'"{s}"' for s in self.txt_strings())
        return f"{self.selector}._domainkey.{self.domain}. IN TXT ( {strings} )"


def key_dir(data_dir: Path, domain: str) -> Path:
    return data_dir / "dkim" / domain


def load_keys(data_dir: Path, domain: str) -> list[DkimKey]:
    """Every key of a domain, oldest first; a domain without keys has none."""
    folder = key_dir(data_dir, domain)
    if not folder.is_dir():
        return []
    keys = []
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text(encoding="ascii"))
        keys.append(DkimKey(domain, path.stem, raw["algorithm"], float(raw["created"]),
                            raw["private"].encode("ascii")))
    return sorted(keys, key=lambda k: (k.created, k.selector))


def default_selector(taken: Sequence[str], algorithm: str, now: float) -> str:
    """``pw`` + the date + ``r`` (RSA) or ``e`` (Ed25519), with a number when taken."""
    base = f"pw{time.strftime('%Y%m%d', time.gmtime(now))}{algorithm[0]}"
    n = 1
    while (name := base if n == 1 else f"{base}{n}") in taken:
        n += 1
    return name


def generate(data_dir: Path, domain: str, selector: str | None, algorithm: str,
             now: float) -> DkimKey:
    """Make a new key file (never overwriting one) and return the key."""
    if algorithm not in ALGORITHMS:
        raise DkimError(f"bad algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")
    taken = [k.selector for k in load_keys(data_dir, domain)]
    if selector is None:
        selector = default_selector(taken, algorithm, now)
    selector = selector.lower()
    if _SELECTOR.fullmatch(selector) is None:
        raise DkimError(f"bad selector {selector!r}: letters, digits, '-' and '.' only")
    if selector in taken:
        raise DkimError(f"selector {selector} already exists for {domain}")
    if algorithm == "ed25519-sha256":
        private = base64.b64encode(ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
    key = DkimKey(domain, selector, algorithm, now, private)
    folder = key_dir(data_dir, domain)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"algorithm": algorithm, "created": now,
                       "private": private.decode("ascii")}, indent=1)
    fd = os.open(folder / f"{selector}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(body + "\n")
    return key


def remove(data_dir: Path, domain: str, selector: str) -> bool:
    """Delete a key file; False when there is no such selector."""
    path = key_dir(data_dir, domain) / f"{selector}.json"
    if _SELECTOR.fullmatch(selector) is None or not path.exists():
        return False
    path.unlink()
    return True


def active_keys(keys: Sequence[DkimKey], now: float, rotation_delay: float) -> list[DkimKey]:
    """The signing key of each algorithm (see the module docstring for the rule)."""
    chosen = []
    for algorithm in ALGORITHMS:
        mine = sorted((k for k in keys if k.algorithm == algorithm), key=lambda k: k.created)
        ripe = [k for k in mine if now - k.created >= rotation_delay]
        if ripe:
            chosen.append(ripe[-1])
        elif mine:
            chosen.append(mine[0])
    return chosen


def author_domain(message: bytes) -> str | None:
    """The domain (A-label) of the single From mailbox; None when there is no such one."""
    match = _HEADER_END.search(message)
    froms = from_fields(message if match is None else message[: match.end()])
    if len(froms) != 1:
        return None
    hosts = [a.host for a in parse_address_list(froms[0]) if a.host]
    if len(hosts) != 1:
        return None
    try:
        return normalise_domain(hosts[0])
    except AddressError:
        return None


def signed_fields(message: bytes) -> list[bytes]:
    """The ``h=`` list: From oversigned, the others as often as they occur."""
    match = _HEADER_END.search(message)
    names = field_names(message if match is None else message[: match.end()])
    fields = [b"from"] * (names.count(b"from") + 1)
    for name in SIGNED_FIELDS:
        fields += [name] * names.count(name)
    return fields


def sign(message: bytes, keys: Sequence[DkimKey]) -> bytes:
    """``DKIM-Signature`` fields to put in front of ``message``, one per key (CRLF-ended).

    CPU work: call it off the event loop. Raises ``dkim.DKIMException`` for a
    message dkimpy cannot parse.
    """
    fields = signed_fields(message)
    out = []
    for key in keys:
        out.append(dkim.sign(
            message, key.selector.encode("ascii"), key.domain.encode("ascii"), key.private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm.encode("ascii"), include_headers=fields,
        ))
    return b"".join(out)


class Signer:
    """Signs a message with its author domain's active keys, reading them from ``data_dir``.

    Keys are read per message, so ``dkim generate`` in another process takes
    effect without a restart; the key files are small next to the signing work.
    """

    def __init__(self, data_dir: Path, rotation_delay: float) -> None:
        self._data_dir = data_dir
        self._delay = rotation_delay

    def signature(self, message: bytes) -> tuple[bytes, str]:
        """(fields to prepend, the selectors used); empty when the author domain has no key."""
        domain = author_domain(message)
        if domain is None:
            return b"", ""
        keys = active_keys(load_keys(self._data_dir, domain), time.time(), self._delay)
        used = ",".join(f"{k.selector}._domainkey.{domain}" for k in keys)
        return (sign(message, keys) if keys else b""), used
