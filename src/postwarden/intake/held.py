"""A message held in memory until its ``Authentication-Results`` header is known.

DKIM needs the whole message before the header can be written, and dkimpy
verifies from bytes in memory anyway; so for a checked message the bytes are
kept here (bounded by ``max_message_size``, which the SMTP machine enforces)
and written to the file once, behind the new header, at ``release``. The
message is therefore still copied to disk only once.
"""

from __future__ import annotations

import re

from postwarden.storage.interfaces import BlobRef, BlobWriter

_AR = re.compile(rb"^authentication-results[ \t]*:[ \t\r\n]*([^ \t\r\n;]+)", re.IGNORECASE)
# Every field that _AR could match starts a line like this (a superset: it also looks
# after a bare LF, where fields are not split).
_ANY_AR = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE | re.MULTILINE)


class HeldWriter:
    """A BlobWriter that buffers until ``release``; then it writes through."""

    def __init__(self, inner: BlobWriter) -> None:
        self.inner = inner
        self.buffer: bytearray | None = bytearray()

    @property
    def size(self) -> int:
        return self.inner.size + (len(self.buffer) if self.buffer is not None else 0)

    def write(self, data: bytes) -> None:
        if self.buffer is None:
            self.inner.write(data)
        else:
            self.buffer += data

    def held(self) -> bytes:
        return bytes(self.buffer or b"")

    def release(self, header: bytes, authserv_id: str) -> int:
        """Write ``header`` then the held message less any A-R field claiming
        ``authserv_id`` (RFC 8601 §5); returns how many were removed."""
        data, self.buffer = bytes(self.buffer or b""), None
        end = data.find(b"\r\n\r\n")
        head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 2:])
        if not _ANY_AR.search(head):  # the usual case: no field to look at, none to drop
            self.inner.write(header + data)
            return 0
        fields = re.split(rb"\r\n(?![ \t])", head)
        ours = authserv_id.lower().encode()
        kept = [f for f in fields
                if not ((m := _AR.match(f)) and m.group(1).lower() == ours)]
        self.inner.write(header + b"\r\n".join(kept) + body)
        return len(fields) - len(kept)

    def commit(self) -> BlobRef:
        if self.buffer is not None:  # never checked (refused earlier): write as received
            data, self.buffer = bytes(self.buffer), None
            self.inner.write(data)
        return self.inner.commit()

    def abort(self) -> None:
        self.buffer = None
        self.inner.abort()
