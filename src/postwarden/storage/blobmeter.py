"""What the store records about a message's bytes, measured while they stream in.

Every figure comes from cheap C-level byte operations on each chunk, so the
intake pays almost nothing, and POP3 LIST, IMAP RFC822.SIZE and BODY[HEADER]
never have to open a file to learn them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class BlobFacts:
    """Size and shape of one message file.

    ``wire_size`` is what POP3 RETR sends between "+OK" and ".CRLF" (lines
    starting with "." doubled, a CRLF added after an unterminated last line:
    RFC 1939 §3, the same rule as ``protocol.pop3.dotstuff``); ``header_size``
    covers the header and the blank line after it; ``digest`` is SHA-256.
    """

    size: int
    wire_size: int
    lines: int
    header_size: int
    digest: bytes


class BlobMeter:
    """Fed every chunk in order; ``facts()`` at the end."""

    __slots__ = ("_hash", "_header_size", "_last", "_lines", "_size", "_stuffed", "_tail")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0
        self._lines = 0
        self._stuffed = 0
        self._header_size = -1
        # The last octets seen, to find the blank line across chunks; it starts
        # as a line break so that a message opening with CRLF (no header) is
        # found the same way.
        self._tail = b"\r\n"
        self._last = 0x0A  # as if after a line break: a leading "." is stuffed

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._hash.update(chunk)
        self._lines += chunk.count(b"\n")
        self._stuffed += chunk.count(b"\n.") + (self._last == 0x0A and chunk[0] == 0x2E)
        if self._header_size < 0:
            window = self._tail + chunk
            at = window.find(b"\r\n\r\n")
            if at >= 0:
                self._header_size = self._size - len(self._tail) + at + 4
            self._tail = window[-3:]
        self._size += len(chunk)
        self._last = chunk[-1]

    def facts(self) -> BlobFacts:
        unterminated = 2 if self._size and self._last != 0x0A else 0
        header = self._header_size if self._header_size >= 0 else self._size
        return BlobFacts(self._size, self._size + self._stuffed + unterminated, self._lines,
                         header, self._hash.digest())


def measure_file(path: Path) -> BlobFacts:
    """The facts of a file already on disk (upgrades, re-attached files)."""
    meter = BlobMeter()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            meter.feed(chunk)
    return meter.facts()
