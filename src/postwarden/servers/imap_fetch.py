"""FETCH answered from the store: metadata, the parsed cache, and ranged reads.

``plan`` decides once per command which store fields the attributes need
(FLAGS and UID need only the narrow row; ENVELOPE and BODYSTRUCTURE the
parsed structure; a section a byte range of the file). ``render`` turns
one batch of metadata into FETCH responses; it reads files, so the session
runs it in a worker thread. A message whose file is missing or whose cached
structure is unreadable fails alone: its number is returned in ``failed``
and the session answers ``NO`` after sending the others.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, parse_message
from postwarden.protocol.imap import bodystructure as bs
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.fetch import (
    BinarySection,
    BinarySize,
    BodySection,
    FetchAttribute,
    Partial,
    Section,
    SectionText,
    Simple,
)
from postwarden.servers.imap_view import flag_names
from postwarden.storage.interfaces import StoreError
from postwarden.storage.mailbox import Field, MessageMeta

ReadBlob = Callable[[str, int, int | None], bytes]
_WHOLE_MESSAGE_TEXTS = (None, SectionText.HEADER, SectionText.TEXT,
                        SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT)


class DamagedMessage(Exception):
    """The message file is shorter than the store says it is."""


class UnknownEncoding(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot undo."""


@dataclass(frozen=True, slots=True)
class FetchPlan:
    attributes: tuple[FetchAttribute, ...]
    fields: Field
    uid: bool  # send UID (UID FETCH always does)
    modseq: bool  # send MODSEQ (asked for, or CHANGEDSINCE given)
    utf8: bool


def _needs(attribute: FetchAttribute) -> Field:
    match attribute:
        case Simple.INTERNALDATE:
            return Field.INTERNALDATE
        case Simple.RFC822_SIZE | Simple.RFC822 | Simple.RFC822_HEADER | Simple.RFC822_TEXT:
            return Field.SIZE
        case Simple.ENVELOPE | Simple.BODY | Simple.BODYSTRUCTURE:
            return Field.STRUCTURE
        case BodySection(section=Section(part=(), text=text)) if text in _WHOLE_MESSAGE_TEXTS:
            return Field.SIZE  # the blob row knows the header's length
        case BodySection() | BinarySection() | BinarySize():
            return Field.SIZE | Field.STRUCTURE
    return Field.NONE


def plan(attributes: Sequence[FetchAttribute], *, uid: bool, modseq: bool,
         utf8: bool) -> FetchPlan:
    fields = Field.NONE
    for attribute in attributes:
        fields |= _needs(attribute)
    wants_modseq = modseq or Simple.MODSEQ in attributes
    kept = tuple(a for a in attributes if a not in (Simple.UID, Simple.MODSEQ))
    return FetchPlan(kept, fields, uid or Simple.UID in attributes, wants_modseq, utf8)


@dataclass(slots=True)
class _Message:
    """One message being rendered: its structure is loaded at most once."""

    meta: MessageMeta
    read: ReadBlob
    _structure: MessageStructure | None = field(default=None)

    @property
    def blob_name(self) -> str:
        assert self.meta.blob is not None
        return self.meta.blob.name

    def bytes(self, start: int, end: int) -> bytes:
        """``[start, end)`` of the file; a short read means a damaged file."""
        if end <= start:
            return b""
        data = self.read(self.blob_name, start, end - start)
        if len(data) != end - start:
            raise DamagedMessage(self.blob_name)
        return data

    def structure(self) -> MessageStructure:
        if self._structure is None:
            if self.meta.structure is not None:
                self._structure = mime_codec.loads(self.meta.structure)
            else:  # not indexed yet (or unparseable then): parse it now, once
                self._structure = parse_message(self.read(self.blob_name, 0, None))
        return self._structure


def _range(message: _Message, section: Section) -> bs.SectionRange | None:
    """Where a section's bytes are: from the blob row for the whole message's
    header and text (no structure needed), else from the parsed structure."""
    blob = message.meta.blob
    assert blob is not None
    if section.part or section.text not in _WHOLE_MESSAGE_TEXTS:
        return bs.resolve_section(message.structure(), section)
    match section.text:
        case None:
            return bs.SectionRange(0, blob.size)
        case SectionText.TEXT:
            return bs.SectionRange(blob.header_size, blob.size)
        case SectionText.HEADER:
            return bs.SectionRange(0, blob.header_size)
    return bs.SectionRange(0, blob.header_size, fields=section.fields,
                           exclude=section.text is SectionText.HEADER_FIELDS_NOT)


def _section(message: _Message, section: Section, partial: Partial | None) -> bytes | None:
    """BODY[section]<partial>: a ranged read (HEADER.FIELDS: the header, filtered)."""
    found = _range(message, section)
    if found is None:
        return None
    return found.body_data(message.bytes(*found.body_range(partial)), partial)


def _binary(message: _Message, part: tuple[int, ...], partial: Partial | None = None
            ) -> bytes | None:
    """BINARY[part]<partial>: the part's bytes with their transfer encoding undone."""
    found = bs.resolve_section(message.structure(), Section(part))
    if found is None:
        return None
    decoded = found.binary_data(message.bytes(found.start, found.end), partial)
    if decoded is None:
        raise UnknownEncoding(part)
    return decoded


def _item(message: _Message, attribute: FetchAttribute, recent: bool,
          utf8: bool) -> r.FetchItem:
    meta = message.meta
    match attribute:  # the section classes first: value patterns compare with ==
        case BodySection(section=section, partial=partial):
            return r.SectionItem(attribute.response_name(),
                                 _section(message, section, partial))
        case BinarySection(part=part, partial=partial):
            return r.BinaryItem(attribute.response_name(), _binary(message, part, partial))
        case BinarySize(part=part):
            data = _binary(message, part)
            return r.BinarySizeItem(attribute.response_name(), len(data or b""))
        case Simple.FLAGS:
            return r.FlagsItem(flag_names(meta.flags, meta.keywords, recent))
        case Simple.INTERNALDATE:
            return r.InternalDateItem(
                datetime.datetime.fromtimestamp(meta.internaldate, datetime.UTC))
        case Simple.RFC822_SIZE:
            assert meta.blob is not None
            return r.SizeItem(meta.blob.size)
        case Simple.ENVELOPE:
            return r.RenderedItem("ENVELOPE", bs.envelope(message.structure().envelope,
                                                          utf8=utf8))
        case Simple.BODY:
            return r.RenderedItem("BODY", bs.body_plain(message.structure(), utf8=utf8))
        case Simple.BODYSTRUCTURE:
            return r.RenderedItem("BODYSTRUCTURE",
                                  bs.bodystructure(message.structure(), utf8=utf8))
        case Simple.RFC822:
            return r.SectionItem("RFC822", _section(message, Section(), None))
        case Simple.RFC822_HEADER:
            return r.SectionItem("RFC822.HEADER",
                                 _section(message, Section(text=SectionText.HEADER), None))
        case Simple.RFC822_TEXT:
            return r.SectionItem("RFC822.TEXT",
                                 _section(message, Section(text=SectionText.TEXT), None))
    raise AssertionError(attribute)  # UID and MODSEQ are taken out by ``plan``


@dataclass(frozen=True, slots=True)
class Rendered:
    responses: list[r.FetchData]
    failed: list[int]  # sequence numbers
    unknown_encoding: bool


def _render_flags(fetch: FetchPlan, batch: Sequence[tuple[int, MessageMeta]],
                  recent_from: int) -> Rendered:
    """FETCH of UID, FLAGS and MODSEQ only (a client's resync of 1:*): no file,
    no structure, and one FLAGS item per distinct set of flags."""
    flags_items: dict[tuple[int, frozenset[str], bool], r.FlagsItem] = {}
    with_flags = Simple.FLAGS in fetch.attributes
    out: list[r.FetchData] = []
    for number, meta in batch:
        items: list[r.FetchItem] = [r.UidItem(meta.uid)] if fetch.uid else []
        if with_flags:
            key = (meta.flags, meta.keywords, recent_from > 0 and meta.uid >= recent_from)
            item = flags_items.get(key)
            if item is None:
                item = flags_items[key] = r.FlagsItem(flag_names(*key))
            items.append(item)
        if fetch.modseq:
            items.append(r.ModSeqItem(meta.modseq))
        out.append(r.FetchData(number, tuple(items)))
    return Rendered(out, [], False)


def render(read: ReadBlob, fetch: FetchPlan, batch: Sequence[tuple[int, MessageMeta]],
           recent_from: int, flags_for: frozenset[int] = frozenset()) -> Rendered:
    """FETCH responses for (number, metadata) pairs; ``flags_for``: UIDs whose
    \\Seen this FETCH set, which get FLAGS even if not asked (RFC 9051 §6.4.5)."""
    if not fetch.fields and set(fetch.attributes) <= {Simple.FLAGS}:
        return _render_flags(fetch, batch, recent_from)
    out: list[r.FetchData] = []
    failed: list[int] = []
    unknown = False
    with_flags = Simple.FLAGS in fetch.attributes
    for number, meta in batch:
        recent = recent_from > 0 and meta.uid >= recent_from
        items: list[r.FetchItem] = [r.UidItem(meta.uid)] if fetch.uid else []
        message = _Message(meta, read)
        try:
            items += (_item(message, a, recent, fetch.utf8) for a in fetch.attributes)
        except UnknownEncoding:
            unknown = True
            failed.append(number)
            continue
        except (DamagedMessage, StoreError, OSError, ValueError, KeyError, TypeError,
                IndexError):
            failed.append(number)  # a missing file or a corrupt cache entry: this one only
            continue
        if meta.uid in flags_for and not with_flags:
            items.append(r.FlagsItem(flag_names(meta.flags, meta.keywords, recent)))
        if fetch.modseq:
            items.append(r.ModSeqItem(meta.modseq))
        out.append(r.FetchData(number, tuple(items)))
    return Rendered(out, failed, unknown)
