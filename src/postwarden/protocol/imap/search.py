"""SEARCH keys (RFC 9051 §6.4.4, RFC 3501 §6.4.4, RFC 7162 MODSEQ) as a typed tree.

The parser turns the key list into this tree so the server (and the store's
query type) never sees IMAP syntax: FROM/TO/CC/BCC/SUBJECT become
``Header``; the flag keys become ``FlagKey``; NEW is RECENT UNSEEN; a list
of keys is ``And``. Dates are calendar dates without a zone (RFC 9051
§6.4.4: the comparison uses the date only).
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from postwarden.protocol.imap.sequence import SequenceSet


class DateOp(enum.Enum):
    BEFORE = "BEFORE"
    ON = "ON"
    SINCE = "SINCE"


class SizeOp(enum.Enum):
    LARGER = "LARGER"
    SMALLER = "SMALLER"


@dataclass(frozen=True, slots=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class FlagKey:
    """ANSWERED, UNSEEN, KEYWORD x, UNKEYWORD x, RECENT, OLD...: ``flag`` set (or not)."""

    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class Header:
    """HEADER name value (FROM/TO/CC/BCC/SUBJECT too): substring, case-insensitive.

    An empty ``value`` matches every message that has the field.
    """

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Body:
    """BODY: substring of the body text."""

    value: str


@dataclass(frozen=True, slots=True)
class Text:
    """TEXT: substring of the header or body."""

    value: str


@dataclass(frozen=True, slots=True)
class InternalDate:
    """BEFORE/ON/SINCE: the internal date, compared as a date."""

    op: DateOp
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SentDate:
    """SENTBEFORE/SENTON/SENTSINCE: the Date header field, compared as a date."""

    op: DateOp
    date: datetime.date


@dataclass(frozen=True, slots=True)
class Size:
    """LARGER/SMALLER: RFC822.SIZE strictly above/below ``octets``."""

    op: SizeOp
    octets: int


@dataclass(frozen=True, slots=True)
class Sequence:
    """A sequence set (message numbers) as a key."""

    numbers: SequenceSet


@dataclass(frozen=True, slots=True)
class Uid:
    """UID set."""

    uids: SequenceSet


@dataclass(frozen=True, slots=True)
class ModSeq:
    """MODSEQ [entry type] n: messages whose mod-sequence is at least ``modseq``.

    ``entry`` is the quoted flag entry name (e.g. ``/flags/\\draft``) or None;
    servers without per-flag mod-sequences may ignore it (RFC 7162 §3.1.5).
    """

    modseq: int
    entry: str | None = None


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class And:
    """A parenthesised list, or the top-level list: every key matches."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    All | FlagKey | Header | Body | Text | InternalDate | SentDate | Size | Sequence | Uid
    | ModSeq | Not | Or | And
)


def uses_modseq(key: SearchKey) -> bool:
    """Does the key contain MODSEQ (then the response carries a MODSEQ, RFC 7162 §3.1.5)?"""
    match key:
        case ModSeq():
            return True
        case Not(inner):
            return uses_modseq(inner)
        case Or(left, right):
            return uses_modseq(left) or uses_modseq(right)
        case And(keys):
            return any(uses_modseq(k) for k in keys)
    return False
