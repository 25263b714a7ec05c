"""An incremental MIME structure parser with byte offsets (RFC 2045/2046).

Fed the message bytes in chunks as they stream in (at SMTP intake), it keeps
the headers of each part, never the bodies, and yields a frozen
`MessageStructure`: every part's byte offsets in the whole message, sizes,
line counts and MIME fields, the nested structure of attached messages, the
IMAP envelope and the normalised header fields SEARCH and SORT use.

Hand-written because Python's ``email`` package re-parses the whole message
in memory and gives no byte offsets, and the store needs offsets so that
``BODY[1.2]<0.1000>`` is a ranged read of the file, not a parse.

Limits (`MimeLimits`) bound parts, nesting and kept header bytes; past a
limit the structure degrades (the rest of a multipart is taken as its
epilogue, a too-deep multipart or message as an opaque body) and
`MessageStructure.degraded` is set, but offsets stay true.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from postwarden.mail.addresslist import EnvelopeAddress, parse_address_list
from postwarden.mail.encoded_words import decode_words
from postwarden.mail.mime_headers import (
    MimeParam,
    iter_fields,
    param,
    parse_content_type,
    parse_disposition,
    parse_language,
    parse_token,
)

__all__ = [
    "EnvelopeAddress",
    "MessageEnvelope",
    "MessageStructure",
    "MimeLimits",
    "MimeParam",
    "MimeParser",
    "MimePart",
    "parse_message",
]

LF = 10
CR = 13


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """Bounds on what one message may cost the parser."""

    max_parts: int = 1000  # parts in the whole message, attached messages included
    max_depth: int = 50  # nested multiparts / attached messages
    max_header_bytes: int = 65536  # kept per part; the rest of a part header is skipped
    max_total_header_bytes: int = 1 << 20  # kept for the whole message
    max_boundary_length: int = 200  # RFC 2046 says 70; longer means "not a multipart"


@dataclass(frozen=True, slots=True)
class MessageEnvelope:
    """The fields of an IMAP ENVELOPE (RFC 3501 §7.4.2), raw header text.

    Strings are the unfolded header values, None when the field is absent;
    sender and reply_to are the From addresses when absent or empty.
    """

    date: str | None = None
    subject: str | None = None
    from_: tuple[EnvelopeAddress, ...] = ()
    sender: tuple[EnvelopeAddress, ...] = ()
    reply_to: tuple[EnvelopeAddress, ...] = ()
    to: tuple[EnvelopeAddress, ...] = ()
    cc: tuple[EnvelopeAddress, ...] = ()
    bcc: tuple[EnvelopeAddress, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class MimePart:
    """One MIME part and where it lies in the message.

    ``header_start <= body_start <= end`` are offsets in the whole message:
    the part's header (blank line included) is ``[header_start, body_start)``,
    its body ``[body_start, end)``. A multipart child's end excludes the line
    break before the next boundary (it belongs to the boundary, RFC 2046).
    ``body_lines`` counts text lines (RFC 3501 body-fld-lines): the line
    feeds in the body, plus one for a last line that has none.
    Type, subtype and parameter names are as written; a missing or unreadable
    Content-Type gives the upper-case default (TEXT/PLAIN; CHARSET=US-ASCII,
    or MESSAGE/RFC822 inside multipart/digest) and ``defaulted`` is set.
    A multipart always has children (an empty TEXT/PLAIN one when it had none
    readable); a message/rfc822 whose inner message was parsed has it as its
    only child and its envelope in ``envelope``.
    """

    header_start: int
    body_start: int
    end: int
    body_lines: int
    media_type: str
    media_subtype: str
    params: tuple[MimeParam, ...] = ()
    content_id: str | None = None
    description: str | None = None
    encoding: str | None = None
    md5: str | None = None
    disposition: str | None = None
    disposition_params: tuple[MimeParam, ...] = ()
    language: tuple[str, ...] = ()
    location: str | None = None
    children: tuple[MimePart, ...] = ()
    envelope: MessageEnvelope | None = None
    defaulted: bool = False

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.media_type.lower() == "multipart"

    @property
    def is_message(self) -> bool:
        """An attached message whose inner structure was parsed."""
        return self.envelope is not None

    def param(self, name: str) -> str | None:
        return param(self.params, name)


@dataclass(frozen=True, slots=True)
class MessageStructure:
    """The parse of a whole message: its root part, envelope and search fields.

    ``fields`` holds (lower-case name, value) for each From, To, Cc, Bcc,
    Subject, Date, Message-ID, In-Reply-To and References field of the top
    header, in order, unfolded, encoded words decoded.
    """

    size: int
    root: MimePart
    envelope: MessageEnvelope
    fields: tuple[tuple[str, str], ...] = ()
    degraded: bool = False

    def field(self, name: str) -> str | None:
        """The first normalised value of a field, by lower-case name."""
        for key, value in self.fields:
            if key == name:
                return value
        return None


# -- Header interpretation ------------------------------------------------------

_ENVELOPE_FIELDS = frozenset(
    ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
     "in-reply-to", "message-id")
)
NORMALISED_FIELDS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to", "references")
)
_PART_WANTED = frozenset((b"content-",))
_MESSAGE_WANTED = _PART_WANTED | {n.encode() for n in _ENVELOPE_FIELDS}
_TOP_WANTED = _MESSAGE_WANTED | {n.encode() for n in NORMALISED_FIELDS}
_Type = tuple[str, str, tuple[MimeParam, ...]]
_DEFAULT_TEXT: _Type = ("TEXT", "PLAIN", (MimeParam("CHARSET", "US-ASCII"),))
_DEFAULT_DIGEST: _Type = ("MESSAGE", "RFC822", ())
_PARSED_MESSAGE_ENCODINGS = frozenset(("7bit", "8bit", "binary"))


@dataclass(frozen=True, slots=True)
class _Fields:
    """What one part header says, before offsets are known."""

    media_type: str
    media_subtype: str
    params: tuple[MimeParam, ...]
    defaulted: bool
    content_id: str | None
    description: str | None
    encoding: str | None
    md5: str | None
    disposition: str | None
    disposition_params: tuple[MimeParam, ...]
    language: tuple[str, ...]
    location: str | None
    envelope: MessageEnvelope | None
    normalised: tuple[tuple[str, str], ...]


def _interpret(header: bytes, in_digest: bool, is_message: bool, is_top: bool) -> _Fields:
    first: dict[str, str] = {}
    normalised: list[tuple[str, str]] = []
    wanted = _TOP_WANTED if is_top else _MESSAGE_WANTED if is_message else _PART_WANTED
    for name, value in iter_fields(header, wanted):
        if name != "references":
            first.setdefault(name, value)
        if is_top and name in NORMALISED_FIELDS:
            normalised.append((name, " ".join(decode_words(value).split())))
    ctype = parse_content_type(first.get("content-type", ""))
    if ctype is None:
        kind, sub, params = _DEFAULT_DIGEST if in_digest else _DEFAULT_TEXT
    else:
        kind, sub, params = ctype.type, ctype.subtype, ctype.params
    disposition = parse_disposition(first.get("content-disposition", ""))
    location = first.get("content-location")
    return _Fields(
        media_type=kind,
        media_subtype=sub,
        params=params,
        defaulted=ctype is None,
        content_id=first.get("content-id"),
        description=first.get("content-description"),
        encoding=parse_token(first.get("content-transfer-encoding", "")),
        md5=first.get("content-md5"),
        disposition=disposition[0] if disposition else None,
        disposition_params=disposition[1] if disposition else (),
        language=parse_language(first.get("content-language", "")),
        location="".join(location.split()) if location is not None else None,
        envelope=_envelope(first) if is_message else None,
        normalised=tuple(normalised),
    )


def _envelope(first: dict[str, str]) -> MessageEnvelope:
    def addresses(name: str) -> tuple[EnvelopeAddress, ...]:
        return parse_address_list(first.get(name, ""))

    sender_from = addresses("from")
    return MessageEnvelope(
        date=first.get("date"),
        subject=first.get("subject"),
        from_=sender_from,
        sender=addresses("sender") or sender_from,
        reply_to=addresses("reply-to") or sender_from,
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        in_reply_to=first.get("in-reply-to"),
        message_id=first.get("message-id"),
    )


# -- The streaming parser ---------------------------------------------------------


class _State(enum.Enum):
    HEADERS = enum.auto()  # reading the part header
    LEAF = enum.auto()  # an opaque body
    PREAMBLE = enum.auto()  # multipart, before its first boundary
    PARTS = enum.auto()  # multipart, a child is open (on the stack above)
    EPILOGUE = enum.auto()  # multipart, after its close delimiter
    MESSAGE = enum.auto()  # message/rfc822, the inner message is on the stack above


class _Frame:
    """A part still being read (mutable; becomes a MimePart when it ends)."""

    __slots__ = ("body_start", "children", "dash", "depth", "fields", "header", "header_full",
                 "header_start", "in_digest", "inner_envelope", "is_message", "lf_body", "state")

    def __init__(self, header_start: int | None, depth: int, in_digest: bool,
                 is_message: bool) -> None:
        self.header_start = header_start
        self.body_start = -1
        self.lf_body = 0
        self.depth = depth
        self.in_digest = in_digest
        self.is_message = is_message
        self.state = _State.HEADERS
        self.header = bytearray()
        self.header_full = False
        self.fields: _Fields | None = None
        self.inner_envelope: MessageEnvelope | None = None
        self.dash = b""  # "--" + boundary while the boundary is active
        self.children: list[MimePart] = []


class MimeParser:
    """Feed message bytes with `feed`, then `close` for the structure.

    Memory is bounded by the limits: one part header at a time, the parsed
    fields of each part, and a tail of at most a boundary line.
    """

    def __init__(self, limits: MimeLimits | None = None) -> None:
        self._limits = limits or MimeLimits()
        self._buf = b""
        self._base = 0  # offset of _buf[0] in the message
        self._recent = b""  # up to 3 bytes consumed just before _buf
        self._lf = 0  # line feeds consumed so far
        self._bol = True  # the next byte starts a line
        self._skip_eol = False  # a boundary line's rest, then a part header starts
        self._root = _Frame(0, 0, False, True)
        self._stack = [self._root]
        self._bounds: list[tuple[bytes, int]] = []  # innermost first
        self._need = 0  # bytes of a line needed to tell a boundary
        self._needles: list[bytes] = []  # LF + each active "--boundary"
        self._parts = 1
        self._header_budget = self._limits.max_total_header_bytes
        self._degraded = False
        self._result: MimePart | None = None
        self._top: _Fields | None = None

    def feed(self, data: bytes) -> None:
        if self._result is not None:
            raise ValueError("feed after close")
        if data:
            self._buf = self._buf + data if self._buf else bytes(data)
            self._run(final=False)

    def close(self) -> MessageStructure:
        if self._result is None:
            self._run(final=True)
            size = self._base + len(self._buf)
            self._finish_all(size)
        assert self._result is not None and self._top is not None
        envelope = self._top.envelope or MessageEnvelope()
        return MessageStructure(
            size=self._result.end,
            root=self._result,
            envelope=envelope,
            fields=self._top.normalised,
            degraded=self._degraded,
        )

    # -- scanning --

    def _run(self, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            if self._skip_eol:
                j = buf.find(b"\n", i)
                if j < 0:
                    i = self._consume(buf, i, n)
                    break
                i = self._consume(buf, i, j + 1)
                self._skip_eol = False
                self._stack[-1].header_start = self._base + i
                continue
            if self._stack[-1].state is _State.HEADERS:
                j = self._header_step(buf, i, final)
            else:
                j = self._body_step(buf, i, final)
            if j == i:
                break  # the rest needs more data
            i = j
        self._recent = (self._recent + buf[max(0, i - 3):i])[-3:]
        self._buf = buf[i:]
        self._base += i

    def _consume(self, buf: bytes, i: int, j: int) -> int:
        if j > i:
            self._lf += buf.count(b"\n", i, j)
            self._bol = buf[j - 1] == LF
        return j

    def _byte(self, pos: int) -> int:
        rel = pos - self._base
        if rel >= 0:
            return self._buf[rel]
        return self._recent[rel]

    def _header_step(self, buf: bytes, i: int, final: bool) -> int:
        n = len(buf)
        if self._bol:
            c = buf[i]
            if c == LF:
                self._consume(buf, i, i + 1)
                self._end_headers(self._base + i + 1)
                return i + 1
            if c == CR:
                if i + 1 >= n and not final:
                    return i
                if i + 1 < n and buf[i + 1] == LF:
                    self._consume(buf, i, i + 2)
                    self._end_headers(self._base + i + 2)
                    return i + 2
            if c == 45 and self._bounds:  # "-"
                j = self._boundary_check(buf, i, final)
                if j != i + 2 or j == i:
                    return j
                i = j
        # Take header lines in bulk up to the blank line, or a line that may be a
        # boundary; the step after starts on that line.
        ends = [k + 1 for k in (buf.find(b"\n\r\n", i), buf.find(b"\n\n", i)) if k >= 0]
        stop = min(ends, default=n)
        if self._bounds:
            found = self._next_boundary(buf, i, stop)
            stop = stop if found < 0 else found + 1
        if stop == n and not final and buf.endswith(b"\n\r"):
            stop -= 1  # the blank line may be "\r" here and "\n" in the next chunk
        self._keep_header(buf[i:stop])
        return self._consume(buf, i, stop)

    def _keep_header(self, piece: bytes) -> None:
        frame = self._stack[-1]
        if frame.header_full:
            return
        room = min(self._limits.max_header_bytes - len(frame.header), self._header_budget)
        if len(piece) > room:
            piece = piece[:max(room, 0)]
            frame.header_full = True  # the rest of this header is skipped
            self._degraded = True
        frame.header += piece
        self._header_budget -= len(piece)

    def _body_step(self, buf: bytes, i: int, final: bool) -> int:
        n = len(buf)
        if not self._bounds:
            return self._consume(buf, i, n)
        if self._bol and buf[i] == 45:
            return self._boundary_check(buf, i, final)
        found = self._next_boundary(buf, i, n)
        if found < 0:
            stop = n
            if not final:  # a boundary line may have begun in the last few bytes
                k = buf.rfind(b"\n", max(i, n - self._need), n)
                stop = n if k < 0 else k + 1
            return self._consume(buf, i, stop)
        self._consume(buf, i, found + 1)
        return self._boundary_check(buf, found + 1, final)

    def _next_boundary(self, buf: bytes, i: int, stop: int) -> int:
        """The line feed before the next line starting with an active boundary, or -1."""
        found = -1
        for needle in self._needles:
            k = buf.find(needle, i, stop)
            if k >= 0 and (found < 0 or k < found):
                found = k
                stop = k + len(needle)
        return found

    def _boundary_check(self, buf: bytes, c: int, final: bool) -> int:
        """At a line start: a boundary line ends parts; anything else is skipped."""
        n = len(buf)
        j = buf.find(b"\n", c, c + self._need)
        if j < 0 and n - c < self._need and not final:
            return c
        line = buf[c:j] if j >= 0 else buf[c:c + self._need]
        for dash, index in self._bounds:
            if line.startswith(dash):
                close = line[len(dash):len(dash) + 2] == b"--"
                self._at_boundary(index, close, self._base + c)
                return self._consume(buf, c, c + len(dash) + (2 if close else 0))
        return self._consume(buf, c, min(c + 2, n))

    # -- structure --

    def _at_boundary(self, index: int, close: bool, pos: int) -> None:
        top = self._stack[-1]
        start = top.body_start if top.body_start >= 0 else top.header_start
        end, lf_end = pos, self._lf
        closing = len(self._stack) - 1 > index
        if closing and start is not None and pos > start and self._byte(pos - 1) == LF:
            end -= 1
            lf_end -= 1
            if end > start and self._byte(end - 1) == CR:
                end -= 1
        while len(self._stack) - 1 > index:
            self._finish_top(end, lf_end)
        multipart = self._stack[index]
        if close:
            multipart.state = _State.EPILOGUE
        elif self._parts >= self._limits.max_parts:
            multipart.state = _State.EPILOGUE
            self._degraded = True
        else:
            multipart.state = _State.PARTS
            fields = multipart.fields
            digest = fields is not None and fields.media_subtype.lower() == "digest"
            self._stack.append(_Frame(None, multipart.depth + 1, digest, False))
            self._parts += 1
            self._skip_eol = True
        self._update_bounds()

    def _end_headers(self, body_start: int) -> None:
        frame = self._stack[-1]
        self._open_body(frame, body_start, self._lf)
        fields = frame.fields
        assert fields is not None
        kind = fields.media_type.lower()
        sub = fields.media_subtype.lower()
        limits = self._limits
        deep_enough = frame.depth >= limits.max_depth
        if kind == "multipart":
            boundary = param(fields.params, "boundary")
            if boundary and len(boundary) <= limits.max_boundary_length and not deep_enough:
                frame.state = _State.PREAMBLE
                frame.dash = b"--" + boundary.encode("utf-8", "surrogateescape")
                self._update_bounds()
                return
            self._degraded = True
        elif kind == "message" and sub in ("rfc822", "global"):
            encoding = (fields.encoding or "7bit").lower()
            if encoding in _PARSED_MESSAGE_ENCODINGS:
                if deep_enough or self._parts >= limits.max_parts:
                    self._degraded = True
                else:
                    frame.state = _State.MESSAGE
                    self._parts += 1
                    self._stack.append(_Frame(body_start, frame.depth + 1, False, True))
                    return
        frame.state = _State.LEAF

    def _open_body(self, frame: _Frame, body_start: int, lf: int) -> None:
        """The header ended (or was cut off): interpret it and free its bytes."""
        frame.body_start = body_start
        frame.lf_body = lf
        is_top = frame is self._root
        frame.fields = _interpret(bytes(frame.header), frame.in_digest, frame.is_message, is_top)
        frame.header = bytearray()
        frame.dash = b""
        if is_top:
            self._top = frame.fields

    def _finish_top(self, end: int, lf_end: int) -> None:
        frame = self._stack.pop()
        if frame.header_start is None:
            frame.header_start = end
        if frame.fields is None:  # the header never ended
            self._open_body(frame, max(end, frame.header_start), lf_end)
        fields = frame.fields
        assert fields is not None
        end = max(end, frame.body_start)
        lines = 0
        if end > frame.body_start:
            lines = lf_end - frame.lf_body + (self._byte(end - 1) != LF)
        children = tuple(frame.children)
        envelope = frame.inner_envelope if children else None
        if fields.media_type.lower() == "multipart" and not children:
            children = (_empty_part(end),)
        part = MimePart(
            header_start=frame.header_start,
            body_start=frame.body_start,
            end=end,
            body_lines=lines,
            media_type=fields.media_type,
            media_subtype=fields.media_subtype,
            params=fields.params,
            content_id=fields.content_id,
            description=fields.description,
            encoding=fields.encoding,
            md5=fields.md5,
            disposition=fields.disposition,
            disposition_params=fields.disposition_params,
            language=fields.language,
            location=fields.location,
            children=children,
            envelope=envelope,
            defaulted=fields.defaulted,
        )
        if self._stack:
            parent = self._stack[-1]
            parent.children.append(part)
            if frame.is_message:
                parent.inner_envelope = fields.envelope
        else:
            self._result = part

    def _finish_all(self, size: int) -> None:
        if self._skip_eol:
            self._skip_eol = False
            self._stack[-1].header_start = size
        while self._stack:
            self._finish_top(size, self._lf)

    def _update_bounds(self) -> None:
        bounds = [
            (frame.dash, index)
            for index, frame in enumerate(self._stack)
            if frame.state in (_State.PREAMBLE, _State.PARTS) and frame.dash
        ]
        bounds.reverse()
        self._bounds = bounds
        self._needles = [b"\n" + dash for dash, _ in bounds]
        self._need = max((len(dash) for dash, _ in bounds), default=0) + 2


def _empty_part(pos: int) -> MimePart:
    kind, sub, params = _DEFAULT_TEXT
    return MimePart(pos, pos, pos, 0, kind, sub, params, defaulted=True)


def parse_message(data: bytes, limits: MimeLimits | None = None) -> MessageStructure:
    """The structure of a whole message held in memory (tests, the CLI)."""
    parser = MimeParser(limits)
    parser.feed(data)
    return parser.close()
