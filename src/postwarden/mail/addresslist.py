"""RFC 5322 address lists as IMAP envelope addresses (RFC 3501 §7.4.2).

Hand-written because ``email.utils.getaddresses`` drops groups and source
routes (the adl) and splits quoted commas in some inputs; IMAP needs all of
them. Lenient: unreadable pieces are skipped, a missing ``>`` or ``;`` is
taken as read, and nothing raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnvelopeAddress:
    """(name, adl, mailbox, host) as in an IMAP ENVELOPE address.

    A group is a start marker (mailbox = group name, host None) and an end
    marker (all None) around its members (RFC 3501). ``name`` is the raw
    phrase (encoded words left encoded); a missing domain is "" so it is not
    taken for a group marker.
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_marker(self) -> bool:
        return self.host is None


_SPECIALS = frozenset('<>@,;:\\')
_STOP = frozenset(' \t\r\n("[<>@,;:\\')  # a stray ")" is part of an atom

_Token = tuple[str, str, bool]  # kind, text, preceded by white space


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    n = len(text)
    space = False
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            space = True
            i += 1
            continue
        if c == "(":
            depth, j, buf = 1, i + 1, []
            while j < n and depth:
                d = text[j]
                if d == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                depth += (d == "(") - (d == ")")
                if depth:
                    buf.append(d)
                j += 1
            out.append(("(", "".join(buf), space))
            i = j
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            out.append(('"', "".join(buf), space))
            i = j + 1
        elif c == "[":
            j = text.find("]", i)
            j = n if j < 0 else j + 1
            out.append(("a", text[i:j], space))
            i = j
        elif c in _SPECIALS:
            out.append((c, c, space))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _STOP:
                j += 1
            out.append(("a", text[i:j], space))
            i = j
        space = False
    return out


class _Parser:
    __slots__ = ("comment", "i", "out", "toks")

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.out: list[EnvelopeAddress] = []
        self.comment: str | None = None

    def kind(self) -> str:
        while self.i < len(self.toks) and self.toks[self.i][0] == "(":
            self.comment = self.toks[self.i][1].strip() or self.comment
            self.i += 1
        return self.toks[self.i][0] if self.i < len(self.toks) else ""

    def words(self, spaced: bool) -> str:
        """Atoms and quoted strings up to the next special."""
        parts: list[str] = []
        while self.kind() in ("a", '"'):
            _, text, space = self.toks[self.i]
            if parts and space and spaced:
                parts.append(" ")
            parts.append(text)
            self.i += 1
        return "".join(parts)

    def domain(self) -> str:
        return self.words(spaced=False)

    def parse(self) -> tuple[EnvelopeAddress, ...]:
        in_group = False
        while self.i < len(self.toks):
            self.comment = None
            start = self.i
            phrase = self.words(spaced=True)
            after = self.i
            self.i = start
            local = self.words(spaced=False)
            self.i = after
            match self.kind():
                case "<":
                    self.angle(phrase)
                case "@":
                    self.i += 1
                    self.emit(None, local, self.domain())
                case ":" if not in_group:
                    self.i += 1
                    self.out.append(EnvelopeAddress(None, None, phrase, None))
                    in_group = True
                case ";" if in_group:
                    self.i += 1
                    if local:
                        self.emit(None, local, "")
                    self.out.append(EnvelopeAddress(None, None, None, None))
                    in_group = False
                case _:
                    if local:
                        self.emit(None, local, "")
            kind = self.kind()
            if kind in (",", ":", ">", "\\") or (kind == ";" and not in_group):
                self.i += 1
            if self.i == start:
                self.i += 1  # never stall on a token no rule takes
        if in_group:
            self.out.append(EnvelopeAddress(None, None, None, None))
        return tuple(self.out)

    def angle(self, phrase: str) -> None:
        self.i += 1
        adl: list[str] = []
        while self.kind() == "@":  # obsolete source route
            self.i += 1
            adl.append("@" + self.domain())
            while self.kind() == ",":
                self.i += 1
        if adl and self.kind() == ":":
            self.i += 1
        local = self.words(spaced=False)
        host = ""
        if self.kind() == "@":
            self.i += 1
            host = self.domain()
        while self.kind() not in ("", ">"):
            self.i += 1
        if self.kind() == ">":
            self.i += 1
        if not local and not host and not adl:
            return  # "<>": no address to report
        self.emit(phrase or None, local, host, ",".join(adl) or None)

    def emit(self, name: str | None, mailbox: str, host: str, adl: str | None = None) -> None:
        self.kind()  # a trailing comment may still name the address
        self.out.append(EnvelopeAddress(name or self.comment, adl, mailbox, host))


_WORD = r"[^\s\"(),:;<>@\[\]\\]+"
_PLAIN_ADDRESS = re.compile(
    rf'[ \t]*(?:(?:"([^"\\]*)"|((?:{_WORD}[ \t]+)*{_WORD})?)[ \t]*<({_WORD})@({_WORD})>'
    rf"|({_WORD})@({_WORD}))[ \t]*"
)
_NOT_PLAIN = re.compile(r'["():;\[\]\\]')


def _plain(piece: str) -> EnvelopeAddress | None:
    m = _PLAIN_ADDRESS.fullmatch(piece)
    if m is None:
        return None
    if m.group(3) is not None:
        name = m.group(1) if m.group(1) is not None else " ".join((m.group(2) or "").split())
        return EnvelopeAddress(name or None, None, m.group(3), m.group(4))
    return EnvelopeAddress(None, None, m.group(5), m.group(6))


def parse_address_list(value: str) -> tuple[EnvelopeAddress, ...]:
    """Every address of a header value, with group markers, in order."""
    if not value.strip():
        return ()
    # The usual shapes ("a@b", "Name <a@b>", '"Name" <a@b>', lists of them)
    # without the full tokenizer; anything else goes to the parser.
    if _NOT_PLAIN.search(value) is None:
        pieces = [_plain(piece) for piece in value.split(",") if piece.strip()]
    else:
        pieces = [_plain(value)]
    if all(pieces):
        return tuple(p for p in pieces if p is not None)
    return _Parser(value).parse()
