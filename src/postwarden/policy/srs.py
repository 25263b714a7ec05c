"""Sender Rewriting Scheme (SRS) for mail an alias forwards to another host.

A stranger's message that an alias sends on leaves with an envelope sender in
our domain (``SRS0=hash=stamp=their.domain=them@srs_domain``), so SPF at the
next hop checks our servers, not the original sender's. A bounce to that
address comes back to us and goes on to the original sender. The hash is an
HMAC under a key in ``data_dir``, so nobody can make us forward to an address
of their choosing, and the day stamp makes old addresses expire. Forwarding
an address another host already rewrote gives the shorter SRS1 form, which
points back at that host.

The hash also says whether anything vouched for the original sender when we
forwarded its mail (SPF, or DKIM aligned with its domain): an unproven
sender's addresses are hashed under a key derived from the SRS key, so the
address keeps the standard SRS0/SRS1 form and a forger can neither tell nor
flip the bit. A bounce to an unproven sender's address is refused at RCPT:
reports go only to senders something vouched for (no backscatter through us
to a forged sender). Addresses made before the bit existed carry the plain
key's hash and stay "proven", as they were treated.

Hand-written (about sixty lines): the one SRS package on PyPI (pysrs) has had
no release since 2018. The hash is base32 (SRS addresses pass through hosts
that change the case of local parts) and computed over the lower-cased parts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from postwarden.config import Config

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_DAYS = len(_ALPHABET) ** 2  # the stamp is two base32 digits: days modulo 1024
_HASH_CHARS = 6  # 30 bits: a forger's guess is forwarded once in a billion
_TAGS = ("srs0=", "srs1=")
_UNPROVEN = b"postwarden srs: the original sender was not proven"


def load_key(path: Path) -> bytes:
    """The SRS key, made (32 random bytes, mode 0600) on first use; every process shares it.

    Written to a private name and linked into place, so a process starting at
    the same moment never reads a half-written key: one link wins, both read it.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class Reversed:
    """Where a bounce to one of our SRS addresses would go."""

    address: str
    proven: bool  # something vouched for that sender when we forwarded its mail


@dataclass(frozen=True, slots=True)
class Srs:
    key: bytes
    domain: str  # the domain of our SRS addresses (lower case)
    max_age_days: int

    def _hash(self, proven: bool, *parts: str) -> str:
        key = self.key if proven else hmac.new(self.key, _UNPROVEN, hashlib.sha256).digest()
        text = "\0".join(p.lower() for p in parts).encode("utf-8", "surrogateescape")
        mac = hmac.new(key, text, hashlib.sha256).digest()
        return base64.b32encode(mac).decode("ascii")[:_HASH_CHARS].lower()

    def _proven(self, given: str, *parts: str) -> bool | None:
        """Whether ``given`` is the proven or the unproven sender's hash; None: neither."""
        for proven in (True, False):
            if hmac.compare_digest(given.lower(), self._hash(proven, *parts)):
                return proven
        return None

    @staticmethod
    def _stamp(now: float) -> str:
        day = int(now // 86400) % _DAYS
        return _ALPHABET[day // 32] + _ALPHABET[day % 32]

    def owns(self, local: str, domain: str) -> bool:
        """An address in SRS form in our SRS domain (valid or not)."""
        return domain.lower() == self.domain and local[:5].lower() in _TAGS

    def forward(self, sender: str, now: float, *, proven: bool) -> str:
        """The envelope sender for forwarding mail from ``sender`` off-site; ``proven``:
        SPF or aligned DKIM vouched for it (else bounces to the address are refused)."""
        local, _, domain = sender.rpartition("@")
        if not local or not domain or domain.lower() == self.domain:
            return sender
        tag = local[:5].lower()
        if tag in _TAGS:  # rewritten before by another host: point back at that host
            if tag == "srs0=":
                first, opaque = domain, local[5:]
            else:
                first, _, opaque = local[5:].partition("=")[2].partition("==")
            return f"SRS1={self._hash(proven, first, opaque)}={first}=={opaque}@{self.domain}"
        stamp = self._stamp(now)
        mac = self._hash(proven, stamp, domain, local)
        return f"SRS0={mac}={stamp}={domain}={local}@{self.domain}"

    def reverse(self, local: str, domain: str, now: float) -> Reversed | None:
        """Where a bounce to an SRS address goes; None when it is forged, expired or not SRS."""
        if not self.owns(local, domain):
            return None
        tag, rest = local[:5].lower(), local[5:]
        if tag == "srs1=":
            given, _, inner = rest.partition("=")
            first, sep, opaque = inner.partition("==")
            if not sep or not first or (proven := self._proven(given, first, opaque)) is None:
                return None
            return Reversed(f"SRS0={opaque}@{first}", proven)
        parts = rest.split("=", 3)
        if len(parts) != 4 or not all(parts):
            return None
        given, stamp, odomain, olocal = parts
        if (proven := self._proven(given, stamp, odomain, olocal)) is None:
            return None
        stamp = stamp.lower()
        if len(stamp) != 2 or any(c not in _ALPHABET for c in stamp):
            return None
        day = _ALPHABET.index(stamp[0]) * 32 + _ALPHABET.index(stamp[1])
        if (int(now // 86400) - day) % _DAYS > self.max_age_days:
            return None
        return Reversed(f"{olocal}@{odomain}", proven)


def from_config(cfg: Config) -> Srs | None:
    """The server's SRS (its key in ``data_dir/srs.key``), or None when ``srs`` is off."""
    d = cfg.delivery
    if not d.srs:
        return None
    return Srs(load_key(cfg.data_dir / "srs.key"), (d.srs_domain or cfg.hostname).lower(),
               d.srs_max_age // 86400)
