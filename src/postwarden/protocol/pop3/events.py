"""What the POP3 machine and the server tell each other, as values.

Events flow from the machine to the server (``next_event``); each one except
``Closed`` waits for exactly one answer from the server (``send``). Every
command that needs no I/O (CAPA, STAT, LIST, UIDL, DELE, RSET, NOOP, syntax
and sequence errors) is answered by the machine itself and never surfaces.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class NEED_DATA:
    """Sentinel: feed more input with ``receive_data``."""


class PAUSED:
    """Sentinel: an answer from the server (``send``) is outstanding; input waits."""


@dataclass(frozen=True, slots=True)
class MaildropItem:
    """One message of the snapshot taken at login.

    ``size`` is the octet count of the message's wire form (see
    ``dotstuff.wire_size``); ``unique_id`` is the UIDL string; ``ref`` is the
    server's handle (the store UID), opaque to the machine.
    """

    ref: int
    unique_id: str
    size: int


# --- machine -> server -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """USER/PASS or AUTH PLAIN finished; answer ``LoginAccepted`` or ``LoginRefused``."""

    method: str  # "USER" | "PLAIN"
    authzid: str
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a log


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (``lines`` None) or TOP; answer ``MessageStart`` or ``MessageUnavailable``."""

    number: int
    item: MaildropItem
    lines: int | None


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STLS accepted and its ``+OK`` queued: flush it, handshake, answer ``TLSStarted``."""


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in TRANSACTION: remove ``deleted`` and answer ``Updated``."""

    deleted: tuple[MaildropItem, ...]


class CloseReason(enum.Enum):
    QUIT = "quit"
    EOF = "eof"  # the client went away: nothing is deleted
    BAD_COMMANDS = "too many bad commands"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over; flush ``data_to_send`` and close the connection."""

    reason: CloseReason


Event = LoginAttempt | Retrieve | StartTLS | Update | Closed


# --- server -> machine --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginAccepted:
    """The credentials were right and the maildrop is locked; this is its snapshot."""

    maildrop: tuple[MaildropItem, ...]


class Refusal(enum.Enum):
    """Why a login failed, with its RFC 2449 / RFC 3206 response code."""

    AUTH = "[AUTH] Authentication failed"
    THROTTLED = "[SYS/TEMP] Too many failed logins, try again later"
    IN_USE = "[IN-USE] Mailbox is locked by another POP3 session"
    UNAVAILABLE = "[SYS/TEMP] Mailbox unavailable, try again later"
    BUSY = "[SYS/TEMP] Temporary authentication failure, try again later"


@dataclass(frozen=True, slots=True)
class LoginRefused:
    reason: Refusal


@dataclass(frozen=True, slots=True)
class MessageStart:
    """The message file is open; its chunks follow."""


@dataclass(frozen=True, slots=True)
class MessageChunk:
    """Raw stored octets of the message, in order, any size."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """No more octets (or the machine said ``message_done``)."""


@dataclass(frozen=True, slots=True)
class MessageUnavailable:
    """The message file vanished since login (e.g. expunged over IMAP)."""


@dataclass(frozen=True, slots=True)
class TLSStarted:
    """The handshake succeeded; ``plaintext_auth`` is the new USER/SASL policy."""

    plaintext_auth: bool


@dataclass(frozen=True, slots=True)
class Updated:
    """The deletions were applied (``ok``) or failed and nothing was removed."""

    ok: bool


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The client was idle too long: say so and close without UPDATE."""


Answer = (
    LoginAccepted | LoginRefused | MessageStart | MessageChunk | MessageEnd
    | MessageUnavailable | TLSStarted | Updated | TimedOut
)
