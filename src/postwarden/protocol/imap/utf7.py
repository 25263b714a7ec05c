"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).

IMAP4rev1 clients spell non-ASCII mailbox names in this variant of UTF-7:
printable ASCII stands for itself except ``&``, which is written ``&-``;
everything else is UTF-16BE in base64 (``,`` for ``/``, no padding) between
``&`` and ``-``. The stdlib's ``utf-7`` codec differs in exactly those
points, hence these few lines. Decoding is strict (a name has one spelling)
so two spellings can never name the same mailbox.
"""

from __future__ import annotations

import base64
import binascii


class Utf7Error(ValueError):
    """The name is not valid modified UTF-7."""


def _printable(char: str) -> bool:
    return " " <= char <= "~"


def encode(name: str) -> str:
    """The modified UTF-7 spelling of ``name``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            pending.clear()

    for char in name:
        if _printable(char):
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    """The mailbox name spelt ``name``; Utf7Error unless it is the canonical spelling."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        char = name[pos]
        if not _printable(char):
            raise Utf7Error("only printable US-ASCII may appear in modified UTF-7")
        if char != "&":
            out.append(char)
            pos += 1
            continue
        end = name.find("-", pos + 1)
        if end < 0:
            raise Utf7Error("unterminated '&' shift sequence")
        if end == pos + 1:
            out.append("&")
            pos = end + 1
            continue
        chunk = name[pos + 1 : end]
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
            text = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise Utf7Error("invalid base64 in shift sequence") from error
        if any(_printable(c) for c in text) or encode(text) != "&" + chunk + "-":
            raise Utf7Error("non-canonical shift sequence")
        out.append(text)
        pos = end + 1
    return "".join(out)
