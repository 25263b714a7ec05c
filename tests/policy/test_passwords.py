"""argon2id hashing and verification, including the no-such-account path."""

from __future__ import annotations

import pytest

from postwarden.policy.passwords import hash_password, verify_password


def test_a_hash_is_argon2id_salted_and_verifies() -> None:
    """Two hashes of one password differ (salt) and both verify; no clear text is kept."""
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first.startswith("$argon2id$") and first != second
    assert "s3cret" not in first
    assert verify_password(first, "s3cret") and verify_password(second, "s3cret")


def test_wrong_password_does_not_verify() -> None:
    assert not verify_password(hash_password("s3cret"), "S3cret")


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$broken", "!locked"])
def test_a_malformed_or_locked_hash_never_matches(stored: str) -> None:
    """A damaged row or a locked account refuses every password instead of raising."""
    assert not verify_password(stored, "")
    assert not verify_password(stored, "anything")


def test_no_account_never_matches_even_the_dummy_password() -> None:
    """None runs a real check (same cost as a wrong password) and always fails."""
    assert not verify_password(None, "postwarden-no-such-user")
    assert not verify_password(None, "")
