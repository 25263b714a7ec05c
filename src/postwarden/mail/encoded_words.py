"""RFC 2047 encoded words decoded to text, leniently, never raising.

Hand-written rather than ``email.header.decode_header`` because real mail
breaks the rules that function relies on: encoded words glued to other text,
a multi-byte character split across two adjacent words, bad base64 padding,
unknown charsets. Each of those still gives the best readable text here; a
word that cannot be decoded at all stays as it was written.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_SPACE_ONLY = re.compile(rb"[ \t\r\n]*")


def codec_for(charset: str) -> str | None:
    """The Python codec name for a MIME charset, or None when it is unknown."""
    name = charset.strip().strip('"').lower()
    match name:
        case "" | "us-ascii" | "ascii" | "unknown-8bit" | "x-unknown":
            name = "utf-8"  # a superset of ASCII; unlabelled 8-bit is most often UTF-8
        case "iso-8859-8-i" | "iso-8859-8-e":
            name = "iso-8859-8"
        case "ks_c_5601-1987":
            name = "cp949"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_bytes(data: bytes, charset: str) -> str:
    """Bytes in a MIME charset to text; bad sequences become U+FFFD."""
    codec = codec_for(charset) or "utf-8"
    try:
        return data.decode(codec, "replace")
    except (LookupError, ValueError):  # codecs that refuse "replace" or their input
        return data.decode("utf-8", "replace")


def _word_bytes(encoding: bytes, text: bytes) -> bytes | None:
    if encoding in (b"b", b"B"):
        text = text.rstrip(b"=")
        text += b"=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.replace(b"_", b" "))


def decode_words(value: str) -> str:
    """Decode every encoded word in a header value (from `header_text`).

    Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2),
    and adjacent words in one charset are joined before decoding so a
    character split across them survives.
    """
    raw = value.encode("utf-8", "surrogateescape")
    if b"=?" not in raw:
        return bytes_to_text(raw)
    out: list[str] = []
    pending = b""
    pending_charset = ""
    pos = 0
    for m in _WORD.finditer(raw):
        between = raw[pos:m.start()]
        data = _word_bytes(m.group(2), m.group(3))
        charset = m.group(1).decode("ascii", "replace")
        if data is None or codec_for(charset) is None:
            continue  # left in place, as written
        gap = pending and _SPACE_ONLY.fullmatch(between)
        if not gap:
            if pending:
                out.append(decode_bytes(pending, pending_charset))
                pending = b""
            out.append(bytes_to_text(between))
        elif codec_for(charset) != codec_for(pending_charset):
            out.append(decode_bytes(pending, pending_charset))
            pending = b""
        pending += data
        pending_charset = charset
        pos = m.end()
    if pending:
        out.append(decode_bytes(pending, pending_charset))
    out.append(bytes_to_text(raw[pos:]))
    return "".join(out)


def bytes_to_text(raw: bytes) -> str:
    """Raw 8-bit header bytes as text: UTF-8 when valid, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
