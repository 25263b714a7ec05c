"""IMAP commands as values: what the parser makes of one command.

Every command carries its ``tag``. Mailbox names are already decoded
(modified UTF-7 or UTF-8) and ``INBOX`` in any case is spelt ``INBOX``.
``uid`` marks the UID form (``UID FETCH`` ...): its sets are UIDs.
Commands the machine answers itself (CAPABILITY, LOGOUT, STARTTLS, ID,
ENABLE, NAMESPACE, IDLE, COMPRESS, SETQUOTA) are parsed the same way.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

from postwarden.protocol.imap.fetch import FetchAttribute
from postwarden.protocol.imap.search import SearchKey
from postwarden.protocol.imap.sequence import SequenceSet

# --- any state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP: answer with any pending untagged updates, then OK."""

    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971): the client's field/value pairs, None for ``ID NIL``."""

    tag: str
    params: tuple[tuple[str, str | None], ...] | None


# --- not authenticated ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTLS:
    tag: str


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a log


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 4959 SASL-IR)."""

    tag: str
    mechanism: str
    initial_response: str | None = field(repr=False)


# --- authenticated ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enable:
    tag: str
    capabilities: tuple[str, ...]  # upper-cased


@dataclass(frozen=True, slots=True)
class QResync:
    """The QRESYNC select parameter (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    # known sequence numbers and their UIDs, as the client last saw them
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT, or EXAMINE when ``readonly``."""

    tag: str
    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 USE (\Sent ...)


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


class StatusItem(enum.Enum):
    MESSAGES = "MESSAGES"
    RECENT = "RECENT"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    DELETED = "DELETED"  # RFC 9051
    SIZE = "SIZE"  # RFC 8438
    HIGHESTMODSEQ = "HIGHESTMODSEQ"  # RFC 7162
    APPENDLIMIT = "APPENDLIMIT"  # RFC 7889


class ListSelect(enum.Enum):
    """LIST-EXTENDED selection options (RFC 5258, RFC 6154)."""

    SUBSCRIBED = "SUBSCRIBED"
    REMOTE = "REMOTE"
    RECURSIVEMATCH = "RECURSIVEMATCH"
    SPECIAL_USE = "SPECIAL-USE"


class ListReturn(enum.Enum):
    """LIST-EXTENDED return options (RFC 5258, RFC 6154; STATUS is ``List.status``)."""

    SUBSCRIBED = "SUBSCRIBED"
    CHILDREN = "CHILDREN"
    SPECIAL_USE = "SPECIAL-USE"


@dataclass(frozen=True, slots=True)
class List:
    """LIST, or LSUB when ``lsub``. Patterns keep their ``*``/``%`` wildcards.

    ``status`` holds the items of RETURN (STATUS (...)) (RFC 5819 LIST-STATUS).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select: frozenset[ListSelect] = frozenset()
    returns: frozenset[ListReturn] = frozenset()
    status: tuple[StatusItem, ...] = ()
    lsub: bool = False
    extended: bool = False  # selection or return options were given (RFC 5258 answers)


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    mailbox: str
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """The head of APPEND; the message octets follow as ``AppendData`` events.

    ``size`` is the literal's length; ``binary`` means literal8 (``~{n}``,
    RFC 3516): the octets may hold NULs and are not transfer-encoded.
    """

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime.datetime | None
    size: int
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Idle:
    tag: str


@dataclass(frozen=True, slots=True)
class GetQuota:
    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Compress:
    tag: str
    mechanism: str


# --- selected ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    """CLOSE: expunge silently (unless read-only), then leave the mailbox."""

    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE set (RFC 4315) when ``uids`` is given."""

    tag: str
    uids: SequenceSet | None = None


class SearchReturn(enum.Enum):
    """ESEARCH return options (RFC 4731) and SAVE (RFC 5182)."""

    MIN = "MIN"
    MAX = "MAX"
    COUNT = "COUNT"
    ALL = "ALL"
    SAVE = "SAVE"


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH. ``returns`` None is the old form (``* SEARCH``); a tuple asks
    for ``* ESEARCH``, and an empty tuple means ALL (RFC 4731 §3.1)."""

    tag: str
    key: SearchKey
    uid: bool = False
    charset: str = "US-ASCII"
    returns: tuple[SearchReturn, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    tag: str
    messages: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None  # CHANGEDSINCE (RFC 7162)
    vanished: bool = False  # VANISHED, UID FETCH only, needs QRESYNC enabled


class StoreMode(enum.Enum):
    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class Store:
    tag: str
    messages: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY, or MOVE (RFC 6851) when ``move``."""

    tag: str
    messages: SequenceSet
    mailbox: str
    uid: bool = False
    move: bool = False


class SortKey(enum.Enum):
    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort:
    """SORT (RFC 5256); ``returns`` as in Search (ESORT not offered, so None)."""

    tag: str
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Thread:
    """THREAD (RFC 5256); ``algorithm`` is REFERENCES or ORDEREDSUBJECT."""

    tag: str
    algorithm: str
    charset: str
    key: SearchKey
    uid: bool = False


Command = (
    Capability | Noop | Logout | Id | StartTLS | Login | Authenticate | Enable | Select
    | Create | Delete | Rename | Subscribe | Unsubscribe | List | Namespace | Status | Append
    | Idle | GetQuota | GetQuotaRoot | SetQuota | Compress | Check | Close | Unselect | Expunge
    | Search | Fetch | Store | Copy | Sort | Thread
)
