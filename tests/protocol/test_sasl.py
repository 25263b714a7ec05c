"""SASL PLAIN and LOGIN decoders."""

from __future__ import annotations

import base64

import pytest

from postwarden.protocol.sasl import (
    PASSWORD_CHALLENGE,
    USERNAME_CHALLENGE,
    Challenge,
    Credentials,
    Failure,
    Login,
    Plain,
    mechanism,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TestPlain:
    def test_decodes_an_initial_response(self) -> None:
        """authzid NUL user NUL password -> credentials."""
        step = Plain().start(b64(b"admin\0user@example.test\0s3cret"))
        assert step == Credentials("admin", "user@example.test", "s3cret")

    def test_asks_with_an_empty_challenge(self) -> None:
        """Without an initial response PLAIN sends an empty challenge."""
        plain = Plain()
        assert plain.start(None) == Challenge("")
        assert plain.respond(b64(b"\0u\0p")) == Credentials("", "u", "p")

    def test_decodes_utf8(self) -> None:
        """Usernames and passwords are UTF-8 (RFC 4616)."""
        step = Plain().start(b64("\0jörg\0pässwörd".encode()))
        assert step == Credentials("", "jörg", "pässwörd")

    @pytest.mark.parametrize(
        "message", [b"", b"user\0pass", b"\0\0pass", b"\0user\0", b"a\0b\0c\0d", b"\0u\0\xff"]
    )
    def test_refuses_malformed_messages(self, message: bytes) -> None:
        """Wrong NUL count, empty user/password or bad UTF-8 are malformed."""
        assert Plain().start(b64(message) if message else "=") is Failure.MALFORMED

    def test_equals_sign_is_an_empty_initial_response(self) -> None:
        """``=`` means an empty response, which PLAIN cannot accept."""
        assert Plain().start("=") is Failure.MALFORMED

    @pytest.mark.parametrize("text", ["not base64!", "AAA", "YQ", "ü"])
    def test_refuses_bad_base64(self, text: str) -> None:
        """Invalid characters or padding are an error value, not an exception."""
        assert Plain().respond(text) is Failure.BAD_BASE64

    def test_star_cancels(self) -> None:
        """``*`` is the client's cancel."""
        plain = Plain()
        plain.start(None)
        assert plain.respond("*") is Failure.CANCELLED

    def test_password_is_not_in_repr(self) -> None:
        """Credentials never print the password."""
        assert "s3cret" not in repr(Credentials("", "u", "s3cret"))


class TestLogin:
    def test_asks_for_username_then_password(self) -> None:
        """The two fixed LOGIN challenges, then credentials."""
        login = Login()
        assert login.start(None) == Challenge(USERNAME_CHALLENGE)
        assert login.respond(b64(b"user")) == Challenge(PASSWORD_CHALLENGE)
        assert login.respond(b64(b"pass")) == Credentials("", "user", "pass")

    def test_takes_the_username_as_initial_response(self) -> None:
        """``AUTH LOGIN <user>`` skips the username challenge."""
        login = Login()
        assert login.start(b64(b"user")) == Challenge(PASSWORD_CHALLENGE)
        assert login.respond(b64(b"pass")) == Credentials("", "user", "pass")

    def test_cancel_and_bad_base64(self) -> None:
        """Either answer ends the exchange with a failure."""
        login = Login()
        login.start(None)
        assert login.respond("*") is Failure.CANCELLED
        assert Login().start("%%%") is Failure.BAD_BASE64

    def test_refuses_non_utf8(self) -> None:
        """Bytes that are not UTF-8 are malformed."""
        assert Login().start(b64(b"\xff")) is Failure.MALFORMED


class TestLookup:
    def test_mechanism_names_are_case_insensitive(self) -> None:
        """``plain`` and ``LOGIN`` both name a mechanism; others do not."""
        assert isinstance(mechanism("plain"), Plain)
        assert isinstance(mechanism("LOGIN"), Login)
        assert mechanism("CRAM-MD5") is None
