"""What the IMAP machine tells the server (``next_event``), besides commands.

Most events are *decisions*: the parsed command values of ``commands``
that need the store (SELECT, FETCH, STORE, LIST...), plus ``LoginAttempt``
and ``AppendEnd``; each waits for exactly one ``Done`` (after any untagged
data), except ``Append`` (``Proceed`` or ``Done``) and ``StartTLS``
(``TLSStarted``). The rest are *notifications* that need no answer:
``Idle`` (the machine already sent ``+ idling``), ``IdleDone``, ``Id``,
``Enabled``, ``AppendData``, ``AppendAborted``, ``CompressionStarted`` and
``Closed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from postwarden.protocol.imap.commands import Command


class NEED_DATA:
    """Sentinel: feed more input with ``receive_data``."""


class PAUSED:
    """Sentinel: an answer from the server (``send``) is outstanding; input waits."""


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """Decision: LOGIN or a finished AUTHENTICATE; ``Done(OK)`` authenticates."""

    tag: str
    mechanism: str  # "LOGIN" for the LOGIN command, else the SASL mechanism
    authzid: str
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a log


@dataclass(frozen=True, slots=True)
class AppendData:
    """Notification: the next octets of the APPEND message (at most CHUNK_SIZE)."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppendEnd:
    """Decision: the whole APPEND message arrived; answer ``Done`` (with APPENDUID)."""

    tag: str


@dataclass(frozen=True, slots=True)
class AppendAborted:
    """Notification: drop what the APPEND wrote; the machine has answered the client."""

    tag: str


@dataclass(frozen=True, slots=True)
class IdleDone:
    """Notification: IDLE is over (the machine sent its tagged reply); stop pushing."""

    tag: str


@dataclass(frozen=True, slots=True)
class Enabled:
    """Notification: these extensions are on from now (ENABLE, or CONDSTORE implied)."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompressionStarted:
    """Notification: ``tag OK`` is queued. Flush ``data_to_send`` as is, then
    deflate all output and inflate all input (RFC 4978); ``pending`` is input
    that already arrived after COMPRESS: inflate it and feed it back."""

    pending: bytes = field(repr=False)


class CloseReason(enum.Enum):
    LOGOUT = "logout"
    EOF = "eof"
    BAD_COMMANDS = "too many bad commands"
    BYE = "bye"  # the server sent an untagged BYE (autologout, shutdown)


@dataclass(frozen=True, slots=True)
class Closed:
    """Flush ``data_to_send`` and close the connection."""

    reason: CloseReason


Event = (
    Command | LoginAttempt | AppendData | AppendEnd | AppendAborted | IdleDone | Enabled
    | CompressionStarted | Closed
)
