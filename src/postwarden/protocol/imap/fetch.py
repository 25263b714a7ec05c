"""FETCH attributes (RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 MODSEQ), as values.

The parser expands the macros ALL, FAST and FULL, so the server sees only
these. Each section attribute knows the name its FETCH response item must
carry (``response_name``), which echoes the section as the client wrote it
(header field names included) and drops ``.PEEK``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Simple(enum.Enum):
    """The attributes that take no section."""

    ENVELOPE = "ENVELOPE"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822 = "RFC822"  # BODY[] under its old name; sets \Seen
    RFC822_HEADER = "RFC822.HEADER"  # BODY.PEEK[HEADER]
    RFC822_SIZE = "RFC822.SIZE"
    RFC822_TEXT = "RFC822.TEXT"  # BODY[TEXT]; sets \Seen
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    MODSEQ = "MODSEQ"


class SectionText(enum.Enum):
    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """``[1.2.HEADER.FIELDS (From)]``: part numbers, then what of that part.

    ``part`` empty and ``text`` None is the whole message (``BODY[]``).
    ``fields`` is set only for HEADER.FIELDS(.NOT), in the client's spelling.
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()

    def render(self) -> str:
        pieces = [_numbers(self.part)] if self.part else []
        if self.text is not None:
            pieces.append(self.text.value)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class Partial:
    """``<offset.length>``: at most ``length`` octets from ``offset``."""

    offset: int
    length: int


def _numbers(part: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in part)


def _origin(partial: Partial | None) -> str:
    return "" if partial is None else f"<{partial.offset}>"


@dataclass(frozen=True, slots=True)
class BodySection:
    """BODY[section]<partial> or BODY.PEEK[...] (``peek``: do not set \\Seen)."""

    section: Section
    peek: bool = False
    partial: Partial | None = None

    def response_name(self) -> str:
        """``BODY[section]`` plus ``<offset>`` when partial (RFC 9051 §7.5.2)."""
        return f"BODY[{self.section.render()}]{_origin(self.partial)}"


@dataclass(frozen=True, slots=True)
class BinarySection:
    """BINARY[part]<partial> or BINARY.PEEK: the part with its transfer encoding undone."""

    part: tuple[int, ...]
    peek: bool = False
    partial: Partial | None = None

    def response_name(self) -> str:
        return f"BINARY[{_numbers(self.part)}]{_origin(self.partial)}"


@dataclass(frozen=True, slots=True)
class BinarySize:
    """BINARY.SIZE[part]: the decoded size of a part."""

    part: tuple[int, ...]

    def response_name(self) -> str:
        return f"BINARY.SIZE[{_numbers(self.part)}]"


FetchAttribute = Simple | BodySection | BinarySection | BinarySize

MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "ALL": (Simple.FLAGS, Simple.INTERNALDATE, Simple.RFC822_SIZE, Simple.ENVELOPE),
    "FAST": (Simple.FLAGS, Simple.INTERNALDATE, Simple.RFC822_SIZE),
    "FULL": (Simple.FLAGS, Simple.INTERNALDATE, Simple.RFC822_SIZE, Simple.ENVELOPE,
             Simple.BODY),
}


def sets_seen(attribute: FetchAttribute) -> bool:
    """Does fetching this set \\Seen (in a read-write mailbox)?"""
    match attribute:
        case Simple.RFC822 | Simple.RFC822_TEXT:
            return True
        case BodySection(peek=peek) | BinarySection(peek=peek):
            return not peek
    return False
