"""The POP3 multi-line wire form of a stored message (RFC 1939 §3).

Stored messages are the octets received over SMTP: CRLF line endings, not
dot-stuffed. On the wire each line starting with "." gets one more ".", a
message not ending in a line break gets a CRLF, and ".CRLF" follows. The
stuffing works across chunk boundaries so a 50 MB message streams in small
pieces, and ``wire_size`` uses the very same rules, so the octet counts in
LIST and STAT are exact for what RETR sends.
"""

from __future__ import annotations

from collections.abc import Iterable

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


class DotStuffer:
    """Raw message octets in, wire form out; with ``body_lines`` it stops like TOP.

    TOP n sends the header, the empty line and the first n body lines; ``done``
    turns true once they are out, and later input is ignored.
    """

    __slots__ = ("_at_line_start", "_body_seen", "_first", "_in_header", "_limit",
                 "_line_len", "done")

    def __init__(self, body_lines: int | None = None) -> None:
        self._limit = body_lines
        self._at_line_start = True
        self._in_header = True
        self._body_seen = 0
        self._line_len = 0  # octets of the current line seen so far (TOP only)
        self._first = 0  # first octet of the current line (TOP only)
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        if self._limit is None:
            lead = b"." if self._at_line_start and chunk[0] == 0x2E else b""
            self._at_line_start = chunk[-1] == 0x0A
            return lead + chunk.replace(b"\n.", b"\n..")
        return self._feed_lines(chunk)

    def measure(self, chunk: bytes) -> int:
        """``len(self.feed(chunk))`` without building the bytes (full message only)."""
        if not chunk:
            return 0
        lead = 1 if self._at_line_start and chunk[0] == 0x2E else 0
        self._at_line_start = chunk[-1] == 0x0A
        return len(chunk) + lead + chunk.count(b"\n.")

    def finish(self) -> bytes:
        """What ends the response: a CRLF if the last line was unterminated, then ".CRLF"."""
        return TERMINATOR if self._at_line_start else CRLF + TERMINATOR

    def _feed_lines(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        pos = 0
        while pos < len(chunk) and not self.done:
            lf = chunk.find(b"\n", pos)
            end = len(chunk) if lf < 0 else lf + 1
            piece = chunk[pos:end]
            if self._at_line_start:
                self._first = piece[0]
                if piece[0] == 0x2E:
                    out.append(b".")
            out.append(piece)
            self._line_len += len(piece)
            self._at_line_start = lf >= 0
            if lf >= 0:
                self._line_ended()
            pos = end
        return b"".join(out)

    def _line_ended(self) -> None:
        empty = self._line_len == 1 or (self._line_len == 2 and self._first == 0x0D)
        self._line_len = 0
        if self._in_header:
            if empty:
                self._in_header = False
                self.done = self._limit == 0
            return
        self._body_seen += 1
        self.done = self._body_seen == self._limit


def wire_size(chunks: Iterable[bytes]) -> int:
    """Octets RETR sends for a message between the ``+OK`` line and the ".CRLF"."""
    stuffer = DotStuffer()
    total = sum(stuffer.measure(chunk) for chunk in chunks)
    return total + len(stuffer.finish()) - len(TERMINATOR)
