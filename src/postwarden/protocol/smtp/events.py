"""What the SMTP machine tells the server, as values.

Events marked *decision* wait for ``SMTPSession.send``; the machine answers
every other one itself before the server sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postwarden.mail.address import Address, ReversePath
from postwarden.mail.reply import Reply


class NEED_DATA:
    """Sentinel: feed more input with ``receive_data``."""


class PAUSED:
    """Sentinel: a decision (or a TLS handshake) is outstanding; input waits."""


@dataclass(frozen=True, slots=True)
class Hello:
    """EHLO (``extended``) or HELO; answered, and any transaction is reset."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET; answered."""


@dataclass(frozen=True, slots=True)
class MailFrom:
    """Decision: MAIL FROM with its RFC 1870/6152/6531/3461/4954 parameters."""

    sender: ReversePath
    size: int | None
    body: str | None  # "7BIT" | "8BITMIME"
    smtputf8: bool
    ret: str | None  # "FULL" | "HDRS"
    envid: str | None  # xtext-decoded
    auth: str | None  # xtext-decoded AUTH= value, "<>" included


@dataclass(frozen=True, slots=True)
class RcptTo:
    """Decision: RCPT TO; a positive reply counts the recipient."""

    address: Address
    notify: tuple[str, ...]
    orcpt: str | None  # "addr-type;decoded-xtext"


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message octets: dot-unstuffed, CRLF kept, at most CHUNK_SIZE of them."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DataEnd:
    """Decision: the whole message was received; any reply ends the transaction."""


@dataclass(frozen=True, slots=True)
class DataAborted:
    """The message is refused: discard what was written. The machine sends
    ``reply`` itself once the client has finished sending the data."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class MailRefused:
    """MAIL refused by the machine's own limit (a declared SIZE too big), already
    answered with ``reply``: the server only counts it, as it counts its own refusals."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTLS:
    """220 queued: flush, upgrade the socket, then call ``tls_started``."""


@dataclass(frozen=True, slots=True)
class AuthCredentials:
    """Decision: check these; a positive reply, sent with ``login=``, logs the session in."""

    mechanism: str
    authzid: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Quit:
    """221 queued: flush and close."""


@dataclass(frozen=True, slots=True)
class Closed:
    """Flush and close: ``reason`` is "eof", "eof in data", "quit", "too many errors"..."""

    reason: str


Event = (
    Hello
    | Reset
    | MailFrom
    | RcptTo
    | DataChunk
    | DataEnd
    | DataAborted
    | MailRefused
    | StartTLS
    | AuthCredentials
    | Quit
    | Closed
)
Decision = MailFrom | RcptTo | DataEnd | AuthCredentials
