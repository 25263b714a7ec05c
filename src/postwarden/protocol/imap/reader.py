"""The tokens of IMAP command syntax (RFC 9051 §9), read from one whole command.

A whole command is its lines joined by CRLF with each literal's octets in
place after its ``{n}`` CRLF, exactly as the client sent it; the framing
in ``framing`` has already checked every literal's size. ``Reader`` walks
it once, left to right, and raises ``ParseError`` (never anything else)
with a reason a client can read in a ``BAD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

_CTL = frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(range(0x21, 0x7F)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
LITERAL_SPEC = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
T = TypeVar("T")
MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1


class ParseError(Exception):
    """The command is malformed; ``reason`` is the text of the BAD reply."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unsupported(ParseError):
    """Well-formed but asking for what is not offered: a NO with ``code``."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class Reader:
    """A cursor over one command's bytes."""

    __slots__ = ("data", "depth", "max_items", "max_nesting", "pos")

    def __init__(self, data: bytes, *, max_nesting: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0
        self.max_nesting = max_nesting
        self.max_items = max_items

    # --- position ----------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def peek_upper(self, text: str) -> bool:
        """Does the input continue with ``text`` (ASCII, any case)?"""
        end = self.pos + len(text)
        return self.data[self.pos : end].upper() == text.encode("ascii")

    def skip(self, text: bytes) -> bool:
        """Consume ``text`` (exact octets) if it comes next."""
        if self.data.startswith(text, self.pos):
            self.pos += len(text)
            return True
        return False

    def expect(self, text: bytes, what: str) -> None:
        if not self.skip(text):
            raise ParseError(f"Expected {what}")

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("Unexpected characters at the end of the command")

    def open(self) -> None:
        """Consume ``(`` and count one more nesting level."""
        self.expect(b"(", "'('")
        self.depth += 1
        if self.depth > self.max_nesting:
            raise ParseError("Too deeply nested parentheses")

    def close(self) -> None:
        self.expect(b")", "')'")
        self.depth -= 1

    def items(self, item: Callable[[], T], *, empty: bool = True) -> list[T]:
        """``"(" [item *(SP item)] ")"``; ``empty`` False requires one item at least."""
        self.open()
        found: list[T] = []
        if not (empty and self.skip(b")")):
            found.append(item())
            while self.skip(b" "):
                found.append(item())
                self.count(len(found))
            self.expect(b")", "')'")
        self.depth -= 1
        return found

    def count(self, items: int) -> None:
        if items > self.max_items:
            raise ParseError("Too many items in a list")

    # --- tokens -----------------------------------------------------------------------

    def _run(self, chars: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        end = len(data)
        pos = start
        while pos < end and data[pos] in chars:
            pos += 1
        self.pos = pos
        return data[start:pos]

    def atom(self, what: str = "an atom") -> str:
        raw = self._run(ATOM_CHARS)
        if not raw:
            raise ParseError(f"Expected {what}")
        return raw.decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased: command names, options, search keys."""
        return self.atom().upper()

    def number(self, limit: int = MAX_NUMBER, what: str = "a number") -> int:
        raw = self._run(frozenset(b"0123456789"))
        if not raw or len(raw) > 20:
            raise ParseError(f"Expected {what}")
        value = int(raw)
        if value > limit:
            raise ParseError(f"Number too large: {what}")
        return value

    def nz_number(self, what: str = "a non-zero number") -> int:
        value = self.number(what=what)
        if value == 0:
            raise ParseError(f"Expected {what}")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise ParseError("Unterminated quoted string")
            octet = data[self.pos]
            self.pos += 1
            if octet == 0x22:
                return bytes(out)
            if octet == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise ParseError("Only \\\" and \\\\ may be escaped in a quoted string")
                octet = data[self.pos]
                self.pos += 1
            elif octet in (0x00, 0x0D, 0x0A):
                raise ParseError("NUL, CR or LF in a quoted string")
            out.append(octet)

    def literal(self, *, binary: bool = False) -> bytes:
        """``{n}``/``{n+}`` CRLF octets (or ``~{n}`` when ``binary``)."""
        allow_nul = binary and self.skip(b"~")
        self.expect(b"{", "a literal")
        size = self.number(limit=MAX_NUMBER64, what="a literal size")
        self.skip(b"+")
        self.expect(b"}\r\n", "'}' and the end of the line after a literal size")
        end = self.pos + size
        if end > len(self.data):
            raise ParseError("Literal shorter than announced")
        value = self.data[self.pos : end]
        self.pos = end
        if not allow_nul and b"\0" in value:
            raise ParseError("NUL in a literal")
        return value

    def string(self) -> bytes:
        if self.peek() == b'"':
            return self.quoted()
        if self.peek() == b"{":
            return self.literal()
        raise ParseError("Expected a string")

    def astring(self, what: str = "a string") -> bytes:
        if self.peek() in (b'"', b"{"):
            return self.string()
        raw = self._run(ASTRING_CHARS)
        if not raw:
            raise ParseError(f"Expected {what}")
        return raw

    def nstring(self) -> bytes | None:
        if self.peek_upper("NIL") and self.peek(4)[3:4] in (b"", b" ", b")"):
            self.pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """A LIST pattern: like an astring, but ``%`` and ``*`` are allowed bare."""
        if self.peek() in (b'"', b"{"):
            return self.string()
        raw = self._run(LIST_CHARS)
        if not raw:
            raise ParseError("Expected a mailbox pattern")
        return raw

    def tag(self) -> str:
        raw = self._run(TAG_CHARS)
        if not raw:
            raise ParseError("Expected a tag")
        return raw.decode("ascii")

    def name(self) -> str:
        """Letters, digits, dots and dashes, upper-cased: ``BODY.PEEK``, ``RFC822.SIZE``."""
        raw = self._run(_NAME_CHARS)
        if not raw:
            raise ParseError("Expected a keyword")
        return raw.decode("ascii").upper()


def as_text(raw: bytes, what: str) -> str:
    """Octets of a string as text: UTF-8 (which US-ASCII is a part of)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{what} is not valid UTF-8") from None
