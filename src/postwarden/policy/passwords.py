"""argon2id password hashes (argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return str(_HASHER.hash(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if the password matches; a malformed hash never matches.

    ``None`` means there is no such account: the check still runs, against a
    real hash, so an unknown user costs as much time as a wrong password (no
    user enumeration by timing), and it never matches.
    """
    stored = _dummy_hash() if password_hash is None else password_hash
    try:
        ok = bool(_HASHER.verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and password_hash is not None


@functools.cache
def _dummy_hash() -> str:
    """Made on first use, not at import: every CLI call and server start skips its cost."""
    return hash_password("postwarden-no-such-user")
