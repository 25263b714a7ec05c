"""Mail addresses: parsed once, compared by normalised form.

Hand-written because no maintained library parses RFC 5321 *paths* (source
routes, address literals, SMTPUTF8 local parts) strictly enough for relay
control: ``email.utils`` is built for header fields and is forgiving by design.

Relay safety rests on three choices made here, so that nothing later can get
them wrong:

* the domain is the part after the *last* unquoted ``@``; a second unquoted
  ``@`` is a syntax error, and an ``@`` inside a quoted local part stays in
  the local part;
* source routes are parsed and dropped (RFC 5321 §4.1.1.3: the final mailbox
  is the destination); ``%`` and ``!`` are ordinary local-part characters and
  never route anywhere;
* a single trailing dot on the domain is the same domain (DNS root), so
  ``user@example.test.`` is the local ``user@example.test``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+(\.[{_ATEXT}]+)*\Z")
_DOT_ATOM_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
_QUOTED_ASCII = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_UTF8 = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_ROUTE = re.compile(r"@[^,:@<>]+(,@[^,:@<>]+)*:")


class AddressError(ValueError):
    """The text is not a valid address; ``str(err)`` is safe to show a client."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local@domain``; ``domain`` is lower-case ASCII (A-labels).

    ``local`` keeps the sender's spelling (it is what goes on the wire
    onward); ``key`` is the form used to look up local mailboxes, where the
    local part is matched case-insensitively like every mainstream server.
    An address literal domain keeps its brackets, e.g. ``[192.0.2.1]``.
    """

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        return f"{self.local.lower()}@{self.domain}"

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def needs_smtputf8(self) -> bool:
        return not self.local.isascii()


@dataclass(frozen=True, slots=True)
class ReversePath:
    """MAIL FROM: ``address`` is None for the null sender ``<>``."""

    address: Address | None

    def __str__(self) -> str:
        return "" if self.address is None else str(self.address)


def normalise_domain(text: str) -> str:
    """Lower-case A-label form of a domain name, or AddressError."""
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text) > MAX_DOMAIN:
        raise AddressError("bad domain")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise AddressError("bad international domain") from exc
    labels = text.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise AddressError("bad domain")
    return text.lower()


def _parse_literal(text: str) -> str:
    inner = text[1:-1]
    if inner.lower().startswith("ipv6:"):
        import ipaddress

        try:
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        except ValueError as exc:
            raise AddressError("bad address literal") from exc
    parts = inner.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise AddressError("bad address literal")
    return f"[{'.'.join(str(int(p)) for p in parts)}]"


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split at the ``@`` that follows the local part, honouring quotes."""
    if text.startswith('"'):
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        else:
            raise AddressError("unterminated quoted local part")
        local, rest = text[: i + 1], text[i + 1 :]
        if not rest.startswith("@"):
            raise AddressError("missing domain")
        return local, rest[1:]
    if text.count("@") != 1:
        raise AddressError("missing domain" if "@" not in text else "too many @")
    local, domain = text.split("@")
    return local, domain


def _canonical_local(local: str) -> str:
    """Quoted local parts that need no quotes are unquoted (RFC 5321 §4.1.2)."""
    if local.startswith('"'):
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM_UTF8.match(inner):
            return inner
    return local


def parse_mailbox(text: str, *, smtputf8: bool = False) -> Address:
    """Parse ``local@domain`` (no angle brackets) or raise AddressError."""
    if not text or len(text) > MAX_PATH:
        raise AddressError("bad address")
    local, domain = _split_mailbox(text)
    dot_atom, quoted = (
        (_DOT_ATOM_UTF8, _QUOTED_UTF8) if smtputf8 else (_DOT_ATOM_ASCII, _QUOTED_ASCII)
    )
    if not (dot_atom.match(local) or quoted.match(local)):
        raise AddressError("bad local part")
    local = _canonical_local(local)
    if len(local.encode()) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    if domain.startswith("[") and domain.endswith("]"):
        domain = _parse_literal(domain)
    else:
        if not domain.isascii() and not smtputf8:
            raise AddressError("international domain needs SMTPUTF8")
        domain = normalise_domain(domain)
    return Address(local, domain)


def parse_path(text: str, *, smtputf8: bool = False, allow_null: bool = False) -> ReversePath:
    """Parse an SMTP path ``<...>`` as it appears after MAIL FROM: / RCPT TO:.

    ``<postmaster>`` (no domain) is returned as local part ``postmaster``
    with an empty domain; callers treat it as the local postmaster.
    """
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError("address must be in angle brackets")
    if len(text.encode()) > MAX_PATH:  # RFC 5321 4.5.3.1.3 counts the brackets
        raise AddressError("path too long")
    inner = text[1:-1]
    if inner == "":
        if allow_null:
            return ReversePath(None)
        raise AddressError("null address not allowed here")
    if inner.startswith("@"):
        route = _ROUTE.match(inner)
        if route is None:
            raise AddressError("bad source route")
        inner = inner[route.end() :]
    if inner.lower() == "postmaster":
        return ReversePath(Address("postmaster", ""))
    return ReversePath(parse_mailbox(inner, smtputf8=smtputf8))


def parse_address(text: str) -> Address:
    """Parse an address given by an administrator (CLI, config): ``a@b``."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return parse_mailbox(text, smtputf8=True)
