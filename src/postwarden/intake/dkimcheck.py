"""DKIM verification (RFC 6376 §6.1): dkimpy's parsing, OpenSSL's arithmetic.

dkimpy's ``DKIM.verify`` checks an RSA signature in pure Python (``pow`` and
a byte-by-byte integer conversion, ~0.3 ms of GIL per message: a third of
all sender checks). This follows its steps with its own public pieces
(``rfc822_parse`` splits the message, ``parse_tag_value`` and
``validate_signature_fields`` check the signature's tags, ``evaluate_pk``
the key record, its canonicalisation and ``select_headers`` build the header
hash) and leaves only the signature check to ``cryptography``, so the
verdicts stay dkimpy's: same exceptions, same 1024-bit minimum, the same
extra ``From`` in the header hash.

Two verdicts differ from dkimpy's, for RFC 8601 §2.7.1's split between a
signature that was checked and failed (``fail``) and one that could not be
checked (``permerror``): a body hash mismatch is a failure here (dkimpy
raises, which would read as permerror; RFC 6376 §6.1.3 makes it the
"body hash did not verify" PERMFAIL, a verification that failed), and a
missing or unusable key record is an error (dkimpy returns False, which
would read as fail; RFC 6376 §6.1.2: no key, no verification).

Where dkimpy spends time on work that cannot change the result, this takes
a shorter way to the same bytes (each shown equal to dkimpy's own function,
on generated input, by ``tests/intake/test_dkimcheck.py``):

- ``parse`` does not split and rejoin the body of a message without bare LF
  (all SMTP mail: the protocol machine refuses bare LF), which is what
  ``rfc822_parse`` would turn it back into, and splits its header fields
  with ``rfc822_parse``'s pattern compiled once (any line it would refuse or
  skip is left to ``rfc822_parse`` itself);
- only the header fields the signature names are canonicalised, not all, with
  relaxed canonicalisation's two patterns compiled once;
- ``b=`` is emptied by a regular expression equal to dkimpy's ``RE_BTAG``
  (its folding whitespace ``(?:(?:\\s*\\r?\\n)?\\s+)?`` matches exactly what
  ``\\s*`` matches) that does not try each folding form at every character;
- relaxed body canonicalisation skips its two substitutions when the body
  has no tab, no two spaces in a row and no space before a line end, where
  they change nothing.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
    correct_empty_body,
    strip_trailing_lines,
)
from dkim.util import InvalidTagValueList, parse_tag_value

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: smaller keys do not verify
_SPACE = re.compile(rb"\s+")
_COLON = re.compile(rb"\s*:\s*")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")  # rfc822_parse's
_LINE_END = re.compile(rb"\r?\n")  # relaxed header canonicalisation's unfolding, as dkimpy's
_WSP = re.compile(rb"[\t ]+")  # and its whitespace
_BTAG = re.compile(rb"([;\s]b\s*=)(?:[\s0-9A-Za-z+/=]*[0-9A-Za-z+/=])?(?:\r?\n\Z)?")


@dataclass(frozen=True, slots=True)
class Message:
    """A message as dkimpy's ``rfc822_parse`` splits it: [name, value] fields, the body."""

    headers: list[list[bytes]]
    body: bytes


def parse(message: bytes) -> Message:
    """``dkim.rfc822_parse(message)``; raises what it raises (``MessageFormatError``)."""
    end = message.find(b"\r\n\r\n")
    if end > 0 and not message.startswith(b"\r\n") \
            and message.count(b"\n") == message.count(b"\r\n") \
            and (headers := _fields(message[: end + 2])) is not None:
        # Lines end in CRLF only: the header section ends at the first empty line,
        # and the body's lines joined by CRLF again are the bytes after it.
        return Message(headers, message[end + 4:])
    headers, body = dkim.rfc822_parse(message)
    return Message(headers, body)


def _fields(head: bytes) -> list[list[bytes]] | None:
    """The fields of a CRLF-only header section as ``rfc822_parse`` makes them, or None
    for a section it would refuse or where it would skip a line (let it do those)."""
    fields: list[list[bytes]] = []
    for line in head[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1] += line + b"\r\n"
        elif m := _FIELD_NAME.match(line):
            fields.append([m.group(1), line[m.end():] + b"\r\n"])
        else:
            return None
    return fields


def signed_body(policy: CanonicalizationPolicy, body: bytes) -> bytes:
    """``policy.canonicalize_body(body)``."""
    if policy.body_algorithm is Relaxed and b"\t" not in body and b"  " not in body \
            and b" \r\n" not in body:
        canonical: bytes = correct_empty_body(strip_trailing_lines(body))
    else:
        canonical = policy.canonicalize_body(body)
    return canonical


def without_signature(value: bytes) -> bytes:
    """The DKIM-Signature value with ``b=`` emptied: ``dkim.RE_BTAG.sub(rb"\\1", value)``."""
    return _BTAG.sub(rb"\1", value)


def failure(message: Message, idx: int, dnsfunc: Callable[..., bytes | None]) -> str | None:
    """Why the ``idx``-th DKIM-Signature fails to verify (``dkim=fail``), None when it
    verifies; raises ``dkim.DKIMException`` for a signature that cannot be
    evaluated: malformed tags, a missing or malformed key record (``permerror``)."""
    fields = [f for f in message.headers if f[0].lower() == b"dkim-signature"]
    if len(fields) <= idx:
        raise dkim.MessageFormatError(f"no DKIM-Signature number {idx + 1}")
    try:
        sig = parse_tag_value(fields[idx][1])
    except InvalidTagValueList as exc:
        raise dkim.MessageFormatError(exc) from None
    dkim.validate_signature_fields(sig)
    include = [x.lower() for x in _COLON.split(sig[b"h"])]
    name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
    try:
        key, bits, kind, tls_only = _key(name, dnsfunc(name))
    except binascii.Error as exc:
        raise dkim.KeyFormatError(f"key record: {exc}") from None
    if tls_only:
        raise dkim.ValidationError("the key is for TLS reports only (s=tlsrpt)")
    try:
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError as exc:
        raise dkim.MessageFormatError(f"invalid c= value: {exc.args[0]!r}") from None
    body = signed_body(policy, message.body)
    if b"l" in sig:
        body = body[: int(sig[b"l"])]
    try:
        claimed = base64.b64decode(_SPACE.sub(b"", sig[b"bh"]))
        signature = base64.b64decode(_SPACE.sub(b"", sig[b"b"]))
    except binascii.Error as exc:
        raise dkim.MessageFormatError(str(exc)) from None
    if hashlib.sha256(body).digest() != claimed:
        return "body hash mismatch (the body changed after signing)"
    if b"from" in include:  # a From added above the signed one breaks it (dkimpy does too)
        include.append(b"from")
    if _check(sig[b"a"], kind, key, bits, signature, _header_hash(
            policy, message.headers, include, fields[idx])):
        return None
    return "signature did not verify"


def _header_hash(policy: CanonicalizationPolicy, headers: list[list[bytes]],
                 include: list[bytes], field: list[bytes]) -> bytes:
    """SHA-256 over the signed fields, then the signature's own field without ``b=`` and
    its line end (RFC 6376 §3.7), as ``dkim.hash_headers`` computes it."""
    digest = hashlib.sha256()
    signed = [*dkim.select_headers(headers, include), (field[0], without_signature(field[1]))]
    if policy.header_algorithm is Relaxed:
        signed = [relaxed_field(name, value) for name, value in signed]
    signed[-1] = (signed[-1][0], signed[-1][1].rstrip())
    for name, value in signed:
        digest.update(name + b":" + value)
    return digest.digest()


def relaxed_field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """``Relaxed.canonicalize_headers([(name, value)])[0]`` with its patterns compiled once."""
    return name.lower().rstrip(), _WSP.sub(b" ", _LINE_END.sub(b"", value)).strip() + b"\r\n"


PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@functools.lru_cache(maxsize=1024)
def _key(name: bytes, record: bytes | None) -> tuple[PublicKey | None, int, bytes, bool]:
    """A key record parsed by dkimpy's rules, as an OpenSSL key; memoised by its text
    (the last 1024), as the same few keys sign most mail."""
    pk, bits, kind, tls_only = dkim.evaluate_pk(name, record)
    match kind:
        case b"rsa":
            return (rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"]).public_key(),
                    bits, kind, tls_only)
        case b"ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(bytes(pk)), bits, kind, tls_only
        case _:
            return None, bits, kind, tls_only


def _check(algorithm: bytes, kind: bytes, key: PublicKey | None, bits: int, signature: bytes,
           digest: bytes) -> bool:
    match algorithm, kind, key:
        case b"rsa-sha256", b"rsa", rsa.RSAPublicKey():
            try:
                key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            except InvalidSignature:
                return False
            if bits < MIN_RSA_BITS:
                raise dkim.KeyFormatError(f"public key too small: {bits}")
            return True
        case b"ed25519-sha256", b"ed25519", ed25519.Ed25519PublicKey():
            # RFC 8463: Ed25519 over the SHA-256 digest
            try:
                key.verify(signature, digest)
            except InvalidSignature:
                return False
            return True
        case _:
            raise dkim.ValidationError(
                f"a={algorithm.decode(errors='replace')} does not fit a k={kind.decode()} key")
