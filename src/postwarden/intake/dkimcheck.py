"""DKIM verification (RFC 6376 §6.1): dkimpy's parsing, OpenSSL's arithmetic.

dkimpy's ``DKIM.verify`` checks an RSA signature in pure Python (``pow`` and
a byte-by-byte integer conversion, ~0.3 ms of GIL per message: a third of
all sender checks). This follows its steps with its own public pieces
(``verify_headerprep`` parses and validates the signature's tags,
``load_pk_from_dns`` the key record, its canonicalisation and
``hash_headers`` build the header hash) and leaves only the signature check
to ``cryptography``, so the verdicts stay dkimpy's: same exceptions, same
1024-bit minimum, the same extra ``From`` in the header hash.

Two verdicts differ from dkimpy's, for RFC 8601 §2.7.1's split between a
signature that was checked and failed (``fail``) and one that could not be
checked (``permerror``): a body hash mismatch is a failure here (dkimpy
raises, which would read as permerror; RFC 6376 §6.1.3 makes it the
"body hash did not verify" PERMFAIL, a verification that failed), and a
missing or unusable key record is an error (dkimpy returns False, which
would read as fail; RFC 6376 §6.1.2: no key, no verification).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Callable

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: smaller keys do not verify
_SPACE = re.compile(rb"\s+")


def failure(message: dkim.DKIM, idx: int, dnsfunc: Callable[..., bytes | None]) -> str | None:
    """Why the ``idx``-th DKIM-Signature fails to verify (``dkim=fail``), None when it
    verifies; raises ``dkim.DKIMException`` for a signature that cannot be
    evaluated: malformed tags, a missing or malformed key record (``permerror``)."""
    prep = message.verify_headerprep(idx)
    if not prep:
        raise dkim.MessageFormatError(f"no DKIM-Signature number {idx + 1}")
    sig, include, sig_headers = prep
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
    body = policy.canonicalize_body(message.body)
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
    digest = hashlib.sha256()
    dkim.hash_headers(digest, policy, policy.canonicalize_headers(message.headers), include,
                      sig_headers[idx], sig)
    if _check(sig[b"a"], kind, key, bits, signature, digest.digest()):
        return None
    return "signature did not verify"


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
