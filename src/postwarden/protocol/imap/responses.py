"""What the server hands the IMAP machine (``send``), as values.

``Done`` completes the outstanding command (the machine adds its tag).
Untagged data (``Exists``, ``FetchData``, ``ListData``...) and untagged
``Condition`` may be sent at any time, e.g. while IDLE; a ``Condition``
with ``BYE`` ends the session. ``Proceed`` accepts an APPEND's message and
``TLSStarted`` reports the handshake after STARTTLS. The encoder
(``encoder``) owns every byte of the wire form, so the server never
formats IMAP syntax itself.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from postwarden.protocol.imap.commands import StatusItem


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"


class Code(enum.Enum):
    """Response codes without arguments (RFC 9051 §7.1, RFC 5530, 7162, 4315, 9208, 6154)."""

    ALERT = "ALERT"
    ALREADYEXISTS = "ALREADYEXISTS"
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
    CANNOT = "CANNOT"
    CLIENTBUG = "CLIENTBUG"
    CLOSED = "CLOSED"
    CONTACTADMIN = "CONTACTADMIN"
    CORRUPTION = "CORRUPTION"
    EXPIRED = "EXPIRED"
    EXPUNGEISSUED = "EXPUNGEISSUED"
    HASCHILDREN = "HASCHILDREN"
    INUSE = "INUSE"
    LIMIT = "LIMIT"
    NOMODSEQ = "NOMODSEQ"
    NONEXISTENT = "NONEXISTENT"
    NOPERM = "NOPERM"
    OVERQUOTA = "OVERQUOTA"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    SERVERBUG = "SERVERBUG"
    TOOBIG = "TOOBIG"
    TRYCREATE = "TRYCREATE"
    UIDNOTSTICKY = "UIDNOTSTICKY"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN_CTE = "UNKNOWN-CTE"
    USEATTR = "USEATTR"


@dataclass(frozen=True, slots=True)
class UidNext:
    uid: int


@dataclass(frozen=True, slots=True)
class UidValidity:
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class Unseen:
    """[UNSEEN n]: the first unseen message's number (IMAP4rev1 SELECT)."""

    number: int


@dataclass(frozen=True, slots=True)
class HighestModSeq:
    modseq: int


@dataclass(frozen=True, slots=True)
class AppendUid:
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class CopyUid:
    """[COPYUID v src dst]: ``source[i]`` became ``destination[i]``."""

    uidvalidity: int
    source: tuple[int, ...]
    destination: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PermanentFlags:
    flags: tuple[str, ...]  # include "\\*" if new keywords may be created


@dataclass(frozen=True, slots=True)
class Modified:
    """[MODIFIED set]: messages that failed STORE's UNCHANGEDSINCE (numbers or UIDs)."""

    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BadCharset:
    charsets: tuple[str, ...]


ResponseCode = (
    Code | UidNext | UidValidity | Unseen | HighestModSeq | AppendUid | CopyUid
    | PermanentFlags | Modified | BadCharset
)


# --- the completion and untagged status ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """The tagged result of the outstanding command."""

    status: Status
    text: str
    code: ResponseCode | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """``* OK/NO/BAD/BYE [code] text``; BYE closes the session after it."""

    status: Status
    text: str
    code: ResponseCode | None = None


# --- untagged data ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exists:
    count: int


@dataclass(frozen=True, slots=True)
class Recent:
    count: int


@dataclass(frozen=True, slots=True)
class Expunged:
    """``* n EXPUNGE``."""

    number: int


@dataclass(frozen=True, slots=True)
class Vanished:
    """``* VANISHED [(EARLIER)] uids`` (QRESYNC)."""

    uids: tuple[int, ...]
    earlier: bool = False


@dataclass(frozen=True, slots=True)
class Flags:
    """``* FLAGS (...)``: the flags defined in the mailbox."""

    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlagsItem:
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UidItem:
    uid: int


@dataclass(frozen=True, slots=True)
class ModSeqItem:
    modseq: int


@dataclass(frozen=True, slots=True)
class InternalDateItem:
    when: datetime.datetime  # aware


@dataclass(frozen=True, slots=True)
class SizeItem:
    """RFC822.SIZE."""

    octets: int


@dataclass(frozen=True, slots=True)
class SectionItem:
    """BODY[...]/RFC822/RFC822.HEADER/RFC822.TEXT: ``name`` as the attribute's
    ``response_name()`` (or the RFC822 name); ``data`` None is NIL."""

    name: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class BinaryItem:
    """BINARY[...]: sent as literal8 (``~{n}``) when it holds a NUL."""

    name: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class BinarySizeItem:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class RenderedItem:
    """ENVELOPE, BODY or BODYSTRUCTURE, already in wire syntax (``bodystructure``)."""

    name: str
    value: bytes


FetchItem = (
    FlagsItem | UidItem | ModSeqItem | InternalDateItem | SizeItem | SectionItem | BinaryItem
    | BinarySizeItem | RenderedItem
)


@dataclass(frozen=True, slots=True)
class FetchData:
    """``* n FETCH (...)``."""

    number: int
    items: tuple[FetchItem, ...]


@dataclass(frozen=True, slots=True)
class FetchBlock:
    """Many ``* n FETCH (...)`` responses already in wire form (``encoder.fetch``):
    a FETCH of a large mailbox is encoded in batches off the event loop."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SearchData:
    """``* SEARCH n...`` (with ``(MODSEQ m)`` when the search used MODSEQ)."""

    numbers: tuple[int, ...]
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class ESearchData:
    """``* ESEARCH (TAG "t") [UID] ...`` (RFC 4731); None fields are left out."""

    uid: bool
    min: int | None = None
    max: int | None = None
    count: int | None = None
    all: tuple[int, ...] | None = None
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class SortData:
    numbers: tuple[int, ...]
    modseq: int | None = None


ThreadTree = tuple["int | ThreadTree", ...]
"""A thread as RFC 5256 writes it: numbers in order, then sub-threads: (3 6 (4 23)(44 7))."""


@dataclass(frozen=True, slots=True)
class ThreadData:
    threads: tuple[ThreadTree, ...]


@dataclass(frozen=True, slots=True)
class ListData:
    """``* LIST (attributes) "/" name`` or LSUB; ``child_info`` adds
    ("CHILDINFO" ("SUBSCRIBED")) for RECURSIVEMATCH; ``old_name`` is OLDNAME."""

    name: str
    attributes: tuple[str, ...] = ()
    lsub: bool = False
    child_info: bool = False
    old_name: str | None = None


@dataclass(frozen=True, slots=True)
class StatusData:
    mailbox: str
    items: tuple[tuple[StatusItem, int], ...]


@dataclass(frozen=True, slots=True)
class QuotaData:
    """``* QUOTA root (STORAGE usage limit ...)``; STORAGE is in KiB (RFC 9208)."""

    root: str
    resources: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class QuotaRootData:
    mailbox: str
    roots: tuple[str, ...]


Untagged = (
    Condition | Exists | Recent | Expunged | Vanished | Flags | FetchData | SearchData
    | ESearchData | SortData | ThreadData | ListData | StatusData | QuotaData | QuotaRootData
)


# --- not for the wire ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proceed:
    """APPEND: the mailbox takes the message; let its octets come."""


@dataclass(frozen=True, slots=True)
class TLSStarted:
    """The TLS handshake after STARTTLS succeeded."""


Response = Done | Untagged | FetchBlock | Proceed | TLSStarted
