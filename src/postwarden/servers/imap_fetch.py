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

import dataclasses
import datetime
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from postwarden.mail import mime_codec
from postwarden.mail.mime import MessageStructure, parse_message
from postwarden.mail.mime_headers import field_lines
from postwarden.protocol.imap import bodystructure as bs
from postwarden.protocol.imap import encoder
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.bodystructure import SectionRange
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
from postwarden.storage.mailbox import (
    HEAD_FIELDS,
    BlobHandle,
    Field,
    Flag,
    MessageMeta,
    read_message,
)

ReadBlob = Callable[[str, int, int | None], bytes]
BATCH = 500  # messages in the first batch of a FETCH of metadata and header fields
BATCH_MOST = 4000  # ... and in the largest, later batches doubling up to it
BODY_BATCH = 20  # per batch of a FETCH of bodies: a batch is held in memory whole
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
    batch: int  # messages in the first store read and rendering: fewer when bodies are read
    most: int  # messages in the largest
    uncached: Field  # what a message without a cached ``head`` needs in addition


@functools.lru_cache(maxsize=64)
def _from_head(section: Section) -> bool:
    """Can the parsed cache's ``head`` answer this section? (HEADER.FIELDS of the
    message, every name one it keeps; selecting from its lines gives the same
    bytes as selecting from the whole header.)"""
    return (not section.part and section.text is SectionText.HEADER_FIELDS
            and all(name.lower() in HEAD_FIELDS for name in section.fields))


def _needs(attribute: FetchAttribute) -> Field:
    match attribute:
        case Simple.INTERNALDATE:
            return Field.INTERNALDATE
        case Simple.RFC822_SIZE | Simple.RFC822 | Simple.RFC822_HEADER | Simple.RFC822_TEXT:
            return Field.SIZE
        case Simple.ENVELOPE | Simple.BODY | Simple.BODYSTRUCTURE:
            return Field.STRUCTURE
        case BodySection(section=section) if _from_head(section):
            return Field.HEAD  # and ``plan.uncached`` for a message not in the cache yet
        case BodySection(section=Section(part=(), text=text)) if text in _WHOLE_MESSAGE_TEXTS:
            return Field.SIZE  # the blob row knows the header's length
        case BodySection() | BinarySection() | BinarySize():
            return Field.SIZE | Field.STRUCTURE
    return Field.NONE


def _reads_body(attribute: FetchAttribute) -> bool:
    match attribute:
        case BodySection(section=Section(text=SectionText.HEADER | SectionText.HEADER_FIELDS
                                         | SectionText.HEADER_FIELDS_NOT | SectionText.MIME)):
            return False
        case BodySection() | BinarySection() | BinarySize():
            return True
    return attribute in (Simple.RFC822, Simple.RFC822_TEXT)


def plan(attributes: Sequence[FetchAttribute], *, uid: bool, modseq: bool,
         utf8: bool) -> FetchPlan:
    fields = Field.NONE
    for attribute in attributes:
        fields |= _needs(attribute)
    wants_modseq = modseq or Simple.MODSEQ in attributes
    kept = tuple(a for a in attributes if a not in (Simple.UID, Simple.MODSEQ))
    bodies = any(_reads_body(a) for a in kept)
    uncached = Field.SIZE if fields & Field.HEAD else Field.NONE
    return FetchPlan(kept, fields, uid or Simple.UID in attributes, wants_modseq, utf8,
                     BODY_BATCH if bodies else BATCH, BODY_BATCH if bodies else BATCH_MOST,
                     uncached)


def spans(fetch: FetchPlan, count: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each batch of ``count`` messages: the first small, so
    the client has answers to read early; then doubling, as each batch is one
    trip to the worker thread and back (whose hand-overs of the interpreter
    lock cost wall-clock time on a busy machine)."""
    out: list[tuple[int, int]] = []
    at, size = 0, fetch.batch
    while at < count:
        out.append((at, min(count, at + size)))
        at += size
        size = min(2 * size, fetch.most)
    return out


def lacks(fetch: FetchPlan, metas: Sequence[MessageMeta]) -> bool:
    """Must the batch be read again with ``fetch.uncached``? (A message is not in
    the parsed cache yet, and the fields of its file were not read.)"""
    return bool(fetch.uncached) and any(meta.head is None and meta.blob is None
                                        for meta in metas)


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
        """``[start, end)`` of the message (the copy's prefix, then the file); a
        short read means a damaged file."""
        if end <= start:
            return b""
        assert self.meta.blob is not None
        data = read_message(self.read, self.meta.blob, start, end - start)
        if len(data) != end - start:
            raise DamagedMessage(self.blob_name)
        return data

    def resolve(self, section: Section) -> bs.SectionRange | None:
        """Where a section is by the parsed structure, which measures the file
        alone: moved past the copy's prefix, to where ``bytes`` finds it."""
        found = bs.resolve_section(self.structure(), section)
        shift = len(self.meta.blob.prefix) if self.meta.blob is not None else 0
        if found is None or not shift:
            return found
        return dataclasses.replace(found, start=found.start + shift, end=found.end + shift)

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
        return message.resolve(section)
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
    """BODY[section]<partial>: a ranged read (HEADER.FIELDS: the header, filtered,
    or the cached lines of the usual fields, filtered: no file opened)."""
    head = message.meta.head
    if head is not None and _from_head(section):
        return SectionRange(0, len(head), fields=section.fields).body_data(head, partial)
    found = _range(message, section)
    if found is None:
        return None
    return found.body_data(message.bytes(*found.body_range(partial)), partial)


def _binary(message: _Message, part: tuple[int, ...], partial: Partial | None = None
            ) -> bytes | None:
    """BINARY[part]<partial>: the part's bytes with their transfer encoding undone."""
    found = message.resolve(Section(part))
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


@dataclass(frozen=True, slots=True)
class Wire:
    """A batch's FETCH responses encoded for the wire (``encoder.fetch`` form)."""

    data: bytes
    failed: list[int]  # sequence numbers
    unknown_encoding: bool


class _Uncached(Exception):
    """This message needs the general path (its header fields are not cached yet)."""


_Value = Callable[[MessageMeta, bool], bytes | int]  # one attribute's value, ready to format


def _direct(attribute: FetchAttribute, utf8: bool) -> tuple[bytes, _Value] | None:
    """The response template and value of an attribute a message list asks for,
    None for the rest.

    FETCH 1:* of UID, FLAGS, sizes, dates and the usual header fields is what
    clients send to draw a mailbox; these skip the response objects and go
    into one %-format per message (the bytes are what ``encoder.fetch``
    writes for the same items).
    """
    match attribute:
        case BodySection(section=section, partial=partial) if _from_head(section):
            name = attribute.response_name().encode("ascii")
            names = section.fields

            def head(meta: MessageMeta, _: bool) -> bytes:
                if meta.head is None:
                    raise _Uncached
                data = field_lines(meta.head, names) + b"\r\n"  # as ``filter_header_fields``
                if partial is not None:
                    return encoder.string(data[partial.offset:partial.offset + partial.length],
                                          utf8=utf8)
                return b"{%d}\r\n%b" % (len(data), data)  # a CRLF in it: always a literal
            return name + b" %b", head
        case Simple.FLAGS:
            return b"FLAGS %b", _flag_list()
        case Simple.RFC822_SIZE:
            return b"RFC822.SIZE %d", lambda meta, _: _blob(meta).size
        case Simple.INTERNALDATE:
            return b"INTERNALDATE %b", lambda meta, _: encoder.date_time(
                datetime.datetime.fromtimestamp(meta.internaldate, datetime.UTC))
    return None


def _flag_list() -> Callable[[MessageMeta, bool], bytes]:
    """A message's FLAGS list, each distinct one encoded once (a mailbox has few)."""
    rendered: dict[tuple[Flag, frozenset[str], bool], bytes] = {}

    def flags(meta: MessageMeta, recent: bool) -> bytes:
        key = (meta.flags, meta.keywords, recent)
        found = rendered.get(key)
        if found is None:
            found = rendered[key] = encoder.flag_list(flag_names(*key))
        return found
    return flags


def _blob(meta: MessageMeta) -> BlobHandle:
    if meta.blob is None:
        raise _Uncached
    return meta.blob


def _recent_in(claims: Sequence[range], batch: Sequence[tuple[int, MessageMeta]]
               ) -> Callable[[int], bool]:
    """\\Recent by UID for a batch (ascending UIDs): the claims that reach into it
    are picked once; usually none do, and no message needs a test."""
    low, high = batch[0][1].uid, batch[-1][1].uid
    near = tuple(c for c in claims if c and c.start <= high and c.stop > low)
    if not near:
        return _never
    return lambda uid: any(uid in claim for claim in near)


def _never(_: int) -> bool:
    return False


def render_wire(read: ReadBlob, fetch: FetchPlan, batch: Sequence[tuple[int, MessageMeta]],
                recent: Sequence[range], flags_for: frozenset[int] = frozenset()) -> Wire:
    """``render``, encoded: the attributes of a message list directly to bytes,
    anything else through the response objects and ``encoder.fetch``. ``batch``
    is in ascending UID order; ``recent``: the UID ranges that are \\Recent
    in this session."""
    if not batch:
        return Wire(b"", [], False)
    is_recent = _recent_in(recent, batch)
    direct = [_direct(a, fetch.utf8) for a in fetch.attributes]
    out: list[bytes] = []
    failed: list[int] = []
    unknown = False
    slow: Sequence[tuple[int, MessageMeta]] = batch
    if None not in direct and not flags_for:
        slow, out = _direct_lines(fetch, [d for d in direct if d is not None], batch, is_recent)
    if slow:
        done = render(read, fetch, slow, is_recent, flags_for)
        out += [encoder.fetch(response, utf8=fetch.utf8) for response in done.responses]
        failed, unknown = done.failed, done.unknown_encoding
        if slow is not batch:  # back in the batch's order
            order = {number: at for at, (number, _) in enumerate(batch)}
            out.sort(key=lambda line: order[int(line[2:line.index(b" ", 2)])])
    return Wire(b"".join(out), failed, unknown)


def _direct_lines(fetch: FetchPlan, direct: list[tuple[bytes, _Value]],
                  batch: Sequence[tuple[int, MessageMeta]], is_recent: Callable[[int], bool]
                  ) -> tuple[list[tuple[int, MessageMeta]], list[bytes]]:
    """One %-format per message; the messages that need the general path."""
    parts = [b"* %d FETCH ("] + [b"UID %d"] * fetch.uid + [t for t, _ in direct]
    parts += [b"MODSEQ (%d)"] * fetch.modseq
    line = parts[0] + b" ".join(parts[1:]) + b")\r\n"
    values = [v for _, v in direct]
    out: list[bytes] = []
    slow: list[tuple[int, MessageMeta]] = []
    if [t for t, _ in direct] == [b"FLAGS %b"] and is_recent is _never:
        flags = values[0]  # the commonest FETCH, (UID) FLAGS (MODSEQ), kept tight
        match fetch.uid, fetch.modseq:
            case True, False:
                return slow, [line % (n, m.uid, flags(m, False)) for n, m in batch]
            case False, False:
                return slow, [line % (n, flags(m, False)) for n, m in batch]
    for number, meta in batch:
        recent = is_recent(meta.uid)
        try:
            got = [value(meta, recent) for value in values]
        except _Uncached:
            slow.append((number, meta))
            continue
        args = (number, meta.uid, *got) if fetch.uid else (number, *got)
        out.append(line % ((*args, meta.modseq) if fetch.modseq else args))
    return slow, out


def render(read: ReadBlob, fetch: FetchPlan, batch: Sequence[tuple[int, MessageMeta]],
           is_recent: Callable[[int], bool], flags_for: frozenset[int] = frozenset()
           ) -> Rendered:
    """FETCH responses for (number, metadata) pairs; ``is_recent``: \\Recent for this
    session (RFC 3501: one session only); ``flags_for``: UIDs whose
    \\Seen this FETCH set, which get FLAGS even if not asked (RFC 9051 §6.4.5)."""
    out: list[r.FetchData] = []
    failed: list[int] = []
    unknown = False
    with_flags = Simple.FLAGS in fetch.attributes
    for number, meta in batch:
        recent = is_recent(meta.uid)
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
