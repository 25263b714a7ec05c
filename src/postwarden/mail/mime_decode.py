"""Content-Transfer-Encoding undone, in pieces, and the body text of text parts.

The decoders take the body in chunks of any size (a ranged read, or bytes as
they stream) and keep only what spans a chunk edge: a partial base64
quantum or a quoted-printable line. Used by IMAP BINARY (RFC 3516) and by
the store's full-text index.
"""

from __future__ import annotations

import binascii
import codecs
import html.parser
import re
from collections.abc import Callable, Iterator

from postwarden.mail.encoded_words import codec_for
from postwarden.mail.mime import MessageStructure, MimePart

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
IDENTITY_ENCODINGS = frozenset(("", "7bit", "8bit", "binary"))
KNOWN_ENCODINGS = IDENTITY_ENCODINGS | {"base64", "quoted-printable"}


def knows_encoding(encoding: str | None) -> bool:
    """Whether `TransferDecoder` can undo this Content-Transfer-Encoding."""
    return (encoding or "").lower() in KNOWN_ENCODINGS


class TransferDecoder:
    """Undo one Content-Transfer-Encoding on a body fed in chunks.

    Lenient like mail readers: characters outside the base64 alphabet are
    skipped, and a broken quoted-printable escape is kept as written.
    """

    __slots__ = ("_kind", "_rest")

    def __init__(self, encoding: str | None) -> None:
        kind = (encoding or "").lower()
        if kind not in KNOWN_ENCODINGS:
            raise ValueError(f"unknown transfer encoding {encoding!r}")
        self._kind = kind
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        match self._kind:
            case "base64":
                # "=" ends an encoding; what follows (joined parts) starts afresh
                *ended, last = (self._rest + _NOT_BASE64.sub(b"", data)).split(b"=")
                cut = len(last) - len(last) % 4
                self._rest = last[cut:]
                return b"".join(_b64(piece) for piece in ended) + _b64(last[:cut])
            case "quoted-printable":
                data = self._rest + data
                cut = data.rfind(b"\n") + 1
                self._rest = data[cut:]
                return binascii.a2b_qp(data[:cut])
            case _:
                return data

    def close(self) -> bytes:
        rest, self._rest = self._rest, b""
        match self._kind:
            case "base64":
                return _b64(rest)
            case "quoted-printable":
                return binascii.a2b_qp(rest)
            case _:
                return rest


def _b64(data: bytes) -> bytes:
    """Base64 alphabet characters to bytes, padding added; a lone 6 bits are dropped."""
    data = data[:len(data) - 1] if len(data) % 4 == 1 else data
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4)) if data else b""


def decode_body(encoding: str | None, data: bytes) -> bytes:
    """A whole body with its transfer encoding undone (ValueError if unknown)."""
    decoder = TransferDecoder(encoding)
    return decoder.feed(data) + decoder.close()


# -- Body text for the full-text index -----------------------------------------------


class _HtmlText(html.parser.HTMLParser):
    """The character data of an HTML body, without scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        self.out.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)

    def take(self) -> str:
        text = "".join(self.out)
        self.out.clear()
        return text


class TextDecoder:
    """Body bytes of one text/* part in, its text out (transfer + charset decoded)."""

    __slots__ = ("_chars", "_html", "_transfer")

    def __init__(self, part: MimePart) -> None:
        encoding = part.encoding if knows_encoding(part.encoding) else None
        self._transfer = TransferDecoder(encoding)
        codec = codec_for(part.param("charset") or "") or "utf-8"
        self._chars = codecs.getincrementaldecoder(codec)(errors="replace")
        self._html = _HtmlText() if part.media_subtype.lower() == "html" else None

    def feed(self, data: bytes) -> str:
        return self._text(self._chars.decode(self._transfer.feed(data)))

    def close(self) -> str:
        text = self._chars.decode(self._transfer.close(), final=True)
        if self._html is None:
            return text
        self._html.feed(text)
        self._html.close()
        return self._html.take()

    def _text(self, text: str) -> str:
        if self._html is None:
            return text
        self._html.feed(text)
        return self._html.take()


def text_parts(part: MimePart) -> Iterator[MimePart]:
    """The text/* leaves under a part, in order.

    Attached messages and text attachments count: SEARCH BODY looks at the
    whole body (RFC 9051 §6.4.4), and a forwarded note's words are there.
    """
    if part.children:
        for child in part.children:
            yield from text_parts(child)
    elif part.media_type.lower() == "text":
        yield part


def extract_text(structure: MessageStructure, read: Callable[[int, int], bytes],
                 limit: int, chunk: int = 65536) -> str:
    """Up to ``limit`` characters of body text, via ranged reads ``read(start, end)``."""
    out: list[str] = []
    left = limit
    for part in text_parts(structure.root):
        decoder = TextDecoder(part)
        pos = part.body_start
        while pos < part.end and left > 0:
            stop = min(part.end, pos + chunk)
            piece = decoder.feed(read(pos, stop))
            out.append(piece[:left])
            left -= len(out[-1])
            pos = stop
        if left > 0:
            out.append(decoder.close()[:left])
            left -= len(out[-1])
        if left <= 0:
            break
        out.append("\n")
        left -= 1
    return "".join(out)
