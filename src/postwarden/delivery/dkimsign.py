"""DKIM keys under ``data_dir`` and signatures for outbound mail (RFC 6376, RFC 8463).

A key is one file, ``data_dir/dkim/<domain>/<selector>.json`` (mode 0600),
holding its algorithm, creation time and private key (PEM for RSA, the
base64 seed for Ed25519). ``cryptography`` makes the keys and the signatures
(OpenSSL: an RSA-2048 signature costs a fraction of a millisecond, where
dkimpy's pure-Python RSA holds the GIL for ~6 ms); dkimpy's parser, relaxed
canonicalisation, header selection and folding build what is signed, so only
the assembly of the ``DKIM-Signature`` field (RFC 6376 §3.5, §3.7) is ours.
Parsed keys are cached by their files' names, sizes and mtimes: a key that
``dkim generate`` adds in another process is seen at the next message.

Rotation: several selectors of one algorithm may live at once. The one that
signs is the newest that is at least ``rotation_delay`` old (time for its DNS
record to be published and cached); while none is that old, the oldest one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim.canonicalization import CanonicalizationPolicy

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


PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_FIELD_NAME = b"DKIM-Signature"
_B64_LINE = 64  # characters of b= per folded line


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key file's contents with its private key parsed, once per file version."""

    key: DkimKey
    private: PrivateKey


def parse_private(key: DkimKey) -> PrivateKey:
    """The private key object; ValueError for a damaged key file."""
    if key.algorithm == "ed25519-sha256":
        return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(key.private))
    try:
        loaded = serialization.load_pem_private_key(key.private, password=None)
    except TypeError as exc:  # an encrypted key: we keep none such
        raise ValueError(f"{key.selector}: {exc}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{key.selector}: not an RSA key")
    return loaded


def _signature_field(headers: list[tuple[bytes, bytes]], body_hash: bytes,
                     fields: Sequence[bytes], signer: SigningKey, now: int) -> bytes:
    """One ``DKIM-Signature`` field, relaxed/relaxed, CRLF-ended.

    The field is written with an empty ``b=`` and hashed after the signed
    header fields, as a verifier will rebuild it (RFC 6376 §3.7); then the
    signature is folded in behind ``b=``, which verifiers strip before hashing.
    """
    key = signer.key
    tags = (b"v=1; a=" + key.algorithm.encode("ascii") + b"; c=relaxed/relaxed; d="
            + key.domain.encode("ascii") + b"; s=" + key.selector.encode("ascii")
            + b"; t=" + str(now).encode("ascii") + b"; h=" + b" : ".join(fields)
            + b"; bh=" + body_hash + b"; b=")
    value: bytes = dkim.fold(tags, namelen=len(_FIELD_NAME))
    [(_, canonical)] = _RELAXED.canonicalize_headers([(_FIELD_NAME, b" " + value)])
    signed = b"".join(n + b":" + v for n, v in dkim.select_headers(headers, list(fields)))
    data = signed + _FIELD_NAME.lower() + b":" + canonical.rstrip()
    match signer.private:
        case rsa.RSAPrivateKey() as private:
            raw = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        case ed25519.Ed25519PrivateKey() as private:  # RFC 8463: Ed25519 over the SHA-256
            raw = private.sign(hashlib.sha256(data).digest())
    b64 = base64.b64encode(raw)
    folded = b"".join(b"\r\n\t " + b64[i:i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))
    return _FIELD_NAME + b": " + value + folded + b"\r\n"


def sign(message: bytes, keys: Sequence[SigningKey], now: float | None = None) -> bytes:
    """``DKIM-Signature`` fields to put in front of ``message``, one per key (CRLF-ended).

    CPU work: call it off the event loop. Raises ``dkim.DKIMException`` for a
    message dkimpy cannot parse.
    """
    fields = signed_fields(message)
    parsed, body = dkim.rfc822_parse(message)
    headers = _RELAXED.canonicalize_headers(parsed)
    body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    stamp = int(time.time() if now is None else now)
    return b"".join(_signature_field(headers, body_hash, fields, k, stamp) for k in keys)


class Signer:
    """Signs a message with its author domain's active keys, read from ``data_dir``.

    Each message lists the domain's key folder (a few stat calls) and reuses
    the parsed keys while no file was added, removed or changed, so ``dkim
    generate`` or ``dkim remove`` in another process applies without a restart
    and without reading and parsing the keys for every message.
    """

    def __init__(self, data_dir: Path, rotation_delay: float) -> None:
        self._data_dir = data_dir
        self._delay = rotation_delay
        self._cache: dict[str, tuple[tuple[tuple[str, int, int], ...], list[SigningKey]]] = {}
        self._lock = threading.Lock()  # signing runs in worker threads

    def keys(self, domain: str) -> list[SigningKey]:
        """The domain's keys, parsed; from the cache while the files are unchanged."""
        folder = key_dir(self._data_dir, domain)
        try:
            with os.scandir(folder) as entries:
                version = tuple(sorted(
                    (e.name, st.st_mtime_ns, st.st_size) for e in entries
                    if e.name.endswith(".json") and (st := e.stat())))
        except (FileNotFoundError, NotADirectoryError):
            version = ()
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None and cached[0] == version:
            return cached[1]
        keys = [SigningKey(k, parse_private(k)) for k in load_keys(self._data_dir, domain)]
        with self._lock:
            self._cache[domain] = (version, keys)
        return keys

    def signature(self, message: bytes) -> tuple[bytes, str]:
        """(fields to prepend, the selectors used); empty when the author domain has no key."""
        domain = author_domain(message)
        if domain is None:
            return b"", ""
        loaded = self.keys(domain)
        chosen = active_keys([k.key for k in loaded], time.time(), self._delay)
        signers = [k for k in loaded if k.key in chosen]
        used = ",".join(f"{k.key.selector}._domainkey.{domain}" for k in signers)
        return (sign(message, signers) if signers else b""), used
