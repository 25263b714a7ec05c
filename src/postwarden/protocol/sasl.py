"""Server side of SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login).

Pure decoders shared by SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034): the
protocol frames each Challenge (``334 ...`` or ``+ ...``) and maps a Failure
to its own reply; the mechanisms only decode, so both protocols agree on
what a valid response is. Both profiles spell an empty initial response
``=`` and a client's cancel ``*``.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field
from typing import Protocol

MECHANISMS = ("PLAIN", "LOGIN")
USERNAME_CHALLENGE = "VXNlcm5hbWU6"  # base64("Username:")
PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"  # base64("Password:")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``text`` (already base64) to the client and feed back its answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claims; checking it is the server's business."""

    authzid: str
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a log


class Failure(enum.Enum):
    """The exchange is over without credentials."""

    CANCELLED = "cancelled"  # the client answered "*"
    BAD_BASE64 = "bad base64"
    MALFORMED = "malformed"  # decodes, but is not what the mechanism expects


Step = Challenge | Credentials | Failure


class Mechanism(Protocol):
    """One SASL exchange: ``start`` once, then ``respond`` to each Challenge."""

    @property
    def name(self) -> str: ...

    def start(self, initial_response: str | None) -> Step: ...

    def respond(self, line: str) -> Step: ...


def _decode(text: str) -> bytes | Failure:
    if text == "*":
        return Failure.CANCELLED
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return Failure.BAD_BASE64


def _initial(text: str) -> bytes | Failure:
    return b"" if text == "=" else _decode(text)


def _text(data: bytes) -> str | Failure:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return Failure.MALFORMED


class Plain:
    """PLAIN: one message ``authzid NUL authcid NUL passwd`` in UTF-8."""

    name = "PLAIN"

    def start(self, initial_response: str | None) -> Step:
        if initial_response is None:
            return Challenge("")
        return self._credentials(_initial(initial_response))

    def respond(self, line: str) -> Step:
        return self._credentials(_decode(line))

    @staticmethod
    def _credentials(data: bytes | Failure) -> Step:
        if isinstance(data, Failure):
            return data
        parts = data.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Failure.MALFORMED
        texts = [_text(part) for part in parts]
        match texts:
            case [str(authzid), str(username), str(password)]:
                return Credentials(authzid, username, password)
        return Failure.MALFORMED


class Login:
    """LOGIN: the username, then the password, each asked for separately."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial_response: str | None) -> Step:
        if initial_response is None:
            return Challenge(USERNAME_CHALLENGE)
        return self._answer(_initial(initial_response))

    def respond(self, line: str) -> Step:
        return self._answer(_decode(line))

    def _answer(self, data: bytes | Failure) -> Step:
        if isinstance(data, Failure):
            return data
        text = _text(data)
        if isinstance(text, Failure):
            return text
        if self._username is None:
            self._username = text
            return Challenge(PASSWORD_CHALLENGE)
        return Credentials("", self._username, text)


def mechanism(name: str) -> Mechanism | None:
    """A fresh exchange for the named mechanism (case-insensitive), or None."""
    match name.upper():
        case "PLAIN":
            return Plain()
        case "LOGIN":
            return Login()
    return None
