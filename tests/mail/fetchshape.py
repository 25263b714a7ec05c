"""FETCH responses as imaplib hands them to imapclient's parser (a real client's reader)."""

from __future__ import annotations

import re


def imaplib_shape(response: bytes) -> list[bytes | tuple[bytes, bytes]]:
    """A FETCH response cut the way imaplib hands it over: literals as (head, data)."""
    out: list[bytes | tuple[bytes, bytes]] = []
    pos = 0
    for m in re.finditer(rb"\{(\d+)\}\r\n", response):
        if m.start() < pos:
            continue  # inside a literal already taken
        size = int(m.group(1))
        out.append((response[pos:m.end() - 2], response[m.end():m.end() + size]))
        pos = m.end() + size
    out.append(response[pos:])
    return out
