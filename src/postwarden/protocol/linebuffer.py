"""A bounded CRLF line buffer, shared by the SMTP, POP3 and IMAP machines.

Deciding what a line is happens here and only here, so every protocol gets
the same two guarantees: a peer can never make us hold more than one line's
limit (an over-long line is dropped as it arrives and reported once), and
only CRLF ends a line cleanly (a lone CR or LF is reported, never treated as
a line end, because that difference is what SMTP smuggling exploits).
"""

from __future__ import annotations

import enum


class LineError(enum.Enum):
    """Why a line was refused; each protocol maps it to its own reply."""

    TOO_LONG = "too long"
    BARE_LINE_ENDING = "bare CR or LF"


class LineBuffer:
    """Bytes in; CRLF lines (without the CRLF), LineError, or raw octets out.

    ``find``/``peek``/``consume``/``take`` serve the modes that read octets rather
    than lines (SMTP DATA and BDAT, IMAP literals).
    """

    __slots__ = ("_buf", "_overlong", "_skipping", "lines")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Lines handed out so far (refused ones too): the servers' deadlines
        # bound each whole line, so they must see when one is complete.
        self.lines = 0
        self._skipping = False  # inside an over-long line: drop input up to the next LF
        self._overlong = False  # an over-long line ended and is still to be reported

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append input; the rest of an over-long line is dropped right here."""
        if self._skipping:
            lf = data.find(b"\n")
            if lf < 0:
                return
            self._skipping = False
            self._overlong = True
            data = data[lf + 1 :]
        self._buf += data

    def read_line(self, limit: int) -> bytes | LineError | None:
        """The next line if complete (``limit`` counts the CRLF), else None."""
        line = self._next_line(limit)
        if line is not None:
            self.lines += 1
        return line

    def _next_line(self, limit: int) -> bytes | LineError | None:
        if self._overlong:
            self._overlong = False
            return LineError.TOO_LONG
        if self._skipping:
            return None
        lf = self._buf.find(b"\n", 0, limit)
        if lf < 0:
            if len(self._buf) < limit:
                return None
            end = self._buf.find(b"\n", limit)
            if end < 0:
                self._buf.clear()
                self._skipping = True
                return None
            del self._buf[: end + 1]
            return LineError.TOO_LONG
        line = bytes(self._buf[: lf + 1])
        del self._buf[: lf + 1]
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            return LineError.BARE_LINE_ENDING
        return line[:-2]

    def find(self, sub: bytes, end: int) -> int:
        """Index of ``sub`` wholly inside the first ``end`` octets, or -1; copies nothing."""
        return self._buf.find(sub, 0, end)

    def peek(self, n: int, start: int = 0) -> bytes:
        """Up to ``n`` buffered octets from ``start``, left in the buffer."""
        return bytes(self._buf[start : start + n])

    def consume(self, n: int) -> None:
        del self._buf[:n]

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` octets."""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def clear(self) -> None:
        """Forget everything, e.g. plaintext that arrived before a TLS upgrade."""
        self._buf.clear()
        self._skipping = False
        self._overlong = False
