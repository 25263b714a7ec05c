"""ENVELOPE, BODY and BODYSTRUCTURE from a parsed message, and FETCH sections as ranges.

Everything here works from the store's cached `MessageStructure`, never from
the message file: the s-expressions are rendered from the parsed fields
(RFC 3501 §7.4.2, RFC 9051 §7.5.2), and a section such as ``1.2.MIME`` or
``TEXT`` becomes the byte range of the file to read, so a partial FETCH is a
ranged read. ``HEADER.FIELDS`` is the one section that needs its bytes
filtered after the read (`filter_header_fields`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from postwarden.mail.addresslist import EnvelopeAddress
from postwarden.mail.mime import MessageEnvelope, MessageStructure, MimePart
from postwarden.mail.mime_decode import decode_body, knows_encoding
from postwarden.mail.mime_headers import MimeParam, header_text, raw_fields
from postwarden.protocol.imap import encoder
from postwarden.protocol.imap.fetch import Partial, Section, SectionText

_SURROGATE = re.compile("[\udc80-\udcff]")  # an 8-bit octet that was not UTF-8


def _has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _string(value: str, utf8: bool) -> bytes:
    """Header text as an IMAP string: its octets as they arrived.

    Undecodable 8-bit octets (no charset known) always go as a literal, even
    to a UTF-8 client, whose quoted strings must be valid UTF-8.
    """
    if value.isascii():
        return encoder.string(value.encode("ascii"))
    data = value.encode("utf-8", "surrogateescape")
    return encoder.string(data, utf8=utf8 and not _has_surrogates(value))


def _nstring(value: str | None, utf8: bool) -> bytes:
    return b"NIL" if value is None else _string(value, utf8)


# -- ENVELOPE ----------------------------------------------------------------------


def _addresses(addresses: tuple[EnvelopeAddress, ...], utf8: bool) -> bytes:
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(
        b"(" + b" ".join(_nstring(v, utf8) for v in (a.name, a.adl, a.mailbox, a.host)) + b")"
        for a in addresses
    ) + b")"


def envelope(env: MessageEnvelope, *, utf8: bool = False) -> bytes:
    """The ENVELOPE s-expression (``utf8``: the client accepts 8-bit quoted strings)."""
    return b"(" + b" ".join((
        _nstring(env.date, utf8),
        _nstring(env.subject, utf8),
        _addresses(env.from_, utf8),
        _addresses(env.sender, utf8),
        _addresses(env.reply_to, utf8),
        _addresses(env.to, utf8),
        _addresses(env.cc, utf8),
        _addresses(env.bcc, utf8),
        _nstring(env.in_reply_to, utf8),
        _nstring(env.message_id, utf8),
    )) + b")"


# -- BODY / BODYSTRUCTURE ------------------------------------------------------------


def _param(p: MimeParam, utf8: bool) -> bytes:
    """One name/value pair; non-ASCII text goes RFC 2231 encoded unless the client takes UTF-8.

    Undecodable 8-bit bytes (no charset known) go as they arrived.
    """
    if p.value.isascii() or utf8 or _has_surrogates(p.value):
        return _string(p.name, utf8) + b" " + _string(p.value, utf8)
    encoded = urllib.parse.quote(p.value.encode("utf-8"), safe="!#$&+-.^_`|~")
    value = f"utf-8'{p.language or ''}'{encoded}"
    return _string(p.name + "*", utf8) + b" " + _string(value, utf8)


def _params(params: tuple[MimeParam, ...], utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_param(p, utf8) for p in params) + b")"


def _disposition(part: MimePart, utf8: bool) -> bytes:
    if part.disposition is None:
        return b"NIL"
    return (b"(" + _string(part.disposition, utf8) + b" "
            + _params(part.disposition_params, utf8) + b")")


def _language(part: MimePart, utf8: bool) -> bytes:
    match part.language:
        case ():
            return b"NIL"
        case (tag,):
            return _string(tag, utf8)
        case tags:
            return b"(" + b" ".join(_string(t, utf8) for t in tags) + b")"


def body(part: MimePart, *, extended: bool, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY of a part, recursively."""
    if part.children and part.is_multipart:
        out = b"(" + b"".join(body(c, extended=extended, utf8=utf8) for c in part.children)
        out += b" " + _string(part.media_subtype, utf8)
        if extended:
            out += b" " + b" ".join((
                _params(part.params, utf8), _disposition(part, utf8), _language(part, utf8),
                _nstring(part.location, utf8),
            ))
        return out + b")"
    fields = [
        _string(part.media_type, utf8),
        _string(part.media_subtype, utf8),
        _params(part.params, utf8),
        _nstring(part.content_id, utf8),
        _nstring(part.description, utf8),
        _string(part.encoding or "7BIT", utf8),
        b"%d" % part.body_size,
    ]
    if part.envelope is not None and part.children:
        fields.append(envelope(part.envelope, utf8=utf8))
        fields.append(body(part.children[0], extended=extended, utf8=utf8))
        fields.append(b"%d" % part.body_lines)
    elif part.media_type.lower() == "text":
        fields.append(b"%d" % part.body_lines)
    if extended:
        fields += [_nstring(part.md5, utf8), _disposition(part, utf8), _language(part, utf8),
                   _nstring(part.location, utf8)]
    return b"(" + b" ".join(fields) + b")"


def bodystructure(structure: MessageStructure, *, utf8: bool = False) -> bytes:
    """FETCH BODYSTRUCTURE: the structure with extension data."""
    return body(structure.root, extended=True, utf8=utf8)


def body_plain(structure: MessageStructure, *, utf8: bool = False) -> bytes:
    """FETCH BODY: the structure without extension data."""
    return body(structure.root, extended=False, utf8=utf8)


# -- Sections -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SectionRange:
    """The bytes ``[start, end)`` of the message that a section means.

    To answer ``BODY[...]<partial>``: read `body_range`, then `body_data`.
    To answer ``BINARY[...]<partial>``: read ``[start, end)``, then
    `binary_data`. ``fields`` is set for HEADER.FIELDS(.NOT) (``exclude`` for
    .NOT), whose bytes are filtered after the read, so a partial of it
    applies to the filtered text. ``part`` is the MIME part the section
    names, None for the whole message or a header/text.
    """

    start: int
    end: int
    fields: tuple[str, ...] | None = None
    exclude: bool = False
    part: MimePart | None = None

    def body_range(self, partial: Partial | None = None) -> tuple[int, int]:
        """The bytes to read: only the partial's when nothing is filtered."""
        if partial is None or self.fields is not None:
            return self.start, self.end
        start = min(self.start + partial.offset, self.end)
        return start, min(self.end, start + partial.length)

    def body_data(self, data: bytes, partial: Partial | None = None) -> bytes:
        """BODY[...]<partial> from the bytes of `body_range`."""
        if self.fields is None:
            return data
        data = filter_header_fields(data, self.fields, self.exclude)
        return data if partial is None else _slice(data, partial)

    def binary_data(self, data: bytes, partial: Partial | None = None) -> bytes | None:
        """BINARY[...]<partial> (RFC 3516) from the bytes ``[start, end)``.

        The part's transfer encoding undone (a multipart or message is 7/8-bit
        by definition and comes as it is); None when the encoding is unknown
        (the client gets NO [UNKNOWN-CTE]). The partial applies to the decoded
        bytes; their length is BINARY.SIZE.
        """
        part = self.part
        if part is not None and not part.children:
            if not knows_encoding(part.encoding):
                return None
            data = decode_body(part.encoding, data)
        return data if partial is None else _slice(data, partial)


def _slice(data: bytes, partial: Partial) -> bytes:
    return data[partial.offset:partial.offset + partial.length]


def _locate(root: MimePart, numbers: tuple[int, ...]) -> tuple[MimePart, bool] | None:
    """Walk part numbers (RFC 3501 §6.4.5) to (part, is the root of a message)."""
    part, at_message = root, True
    for n in numbers:
        if not at_message and part.is_message:
            part, at_message = part.children[0], True
        if part.is_multipart:
            if not 1 <= n <= len(part.children):
                return None
            part = part.children[n - 1]
        elif not (at_message and n == 1):
            return None  # a leaf has no sub-parts; a one-part message has only part 1
        at_message = False
    return part, at_message


def resolve_section(structure: MessageStructure, section: Section) -> SectionRange | None:
    """The range ``BODY[section]`` reads; None if the section does not exist."""
    located = _locate(structure.root, section.part)
    if located is None:
        return None
    part, at_message = located
    match section.text:
        case None if at_message:
            return SectionRange(0, structure.size)
        case None:
            return SectionRange(part.body_start, part.end, part=part)
        case SectionText.MIME:
            if not section.part:
                return None
            return SectionRange(part.header_start, part.body_start)
    if not at_message:
        if not part.is_message:
            return None  # HEADER and TEXT need a message/rfc822 part
        part = part.children[0]
    match section.text:
        case SectionText.HEADER:
            return SectionRange(part.header_start, part.body_start)
        case SectionText.HEADER_FIELDS | SectionText.HEADER_FIELDS_NOT:
            return SectionRange(part.header_start, part.body_start, fields=section.fields,
                                exclude=section.text is SectionText.HEADER_FIELDS_NOT)
        case _:
            return SectionRange(part.body_start, part.end)


def filter_header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The fields of a header named (or, with ``exclude``, not named), then a blank line.

    Each field is kept as written, folding included (RFC 3501 §6.4.5). The
    usual case (a few ASCII names, FETCH of them for 1:*) is one regex scan.
    """
    if not exclude and all(n.isascii() for n in names):
        return raw_fields(header, names) + b"\r\n"
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in header.split(b"\n"):
        if line in (b"\r", b""):
            break
        if line[:1] not in (b" ", b"\t"):
            name, colon, _ = line.partition(b":")
            keep = bool(colon) and (header_text(name).strip().lower() in wanted) != exclude
        if keep:
            out.append(line + b"\n")
    out.append(b"\r\n")
    return b"".join(out)
