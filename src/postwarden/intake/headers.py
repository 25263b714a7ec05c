"""Trace and submission headers, added while the message streams to disk.

The header section is held back until its end is seen, so that a missing
``Message-ID``/``Date`` can be added and ``Received`` headers counted before
anything is written; the body then streams straight through. What is held is
bounded (``max_header_bytes``, Postfix's ``header_size_limit``): a longer
header section refuses the message, so a connection never holds more.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

from postwarden.storage.interfaces import BlobWriter

MAX_HEADER_BYTES = 100 * 1024  # default [limits] max_header_size, as Postfix's header_size_limit
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
_FROM = re.compile(rb"^from[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.MULTILINE | re.IGNORECASE)
# A whole Return-Path field, folded lines and all: only final delivery writes one.
_RETURN_PATH = re.compile(rb"^return-path[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*",
                          re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What the Received header says about the transaction."""

    helo: str
    client_ip: str
    hostname: str
    queue_id: str
    protocol: str  # "SMTP" | "ESMTP" | "ESMTPS" | "ESMTPA" | "ESMTPSA" (RFC 3848)
    recipient: str | None  # "for <...>" only when there is exactly one
    tls_info: str = ""
    auth_user: str | None = None  # named only if [auth] received_header_shows_login


def received_header(t: TraceInfo, when: float | None = None) -> bytes:
    date = email.utils.formatdate(when, localtime=False)
    helo = re.sub(r"[^\x21-\x7e]", "?", t.helo)[:100]
    tls = f"\r\n\t({t.tls_info})" if t.tls_info else ""
    rcpt = f"\r\n\tfor <{t.recipient}>" if t.recipient else ""
    login = f"\t(Authenticated sender: {t.auth_user})\r\n" if t.auth_user else ""
    return (
        f"Received: from {helo} ([{t.client_ip}])\r\n{login}"
        f"\tby {t.hostname} (postwarden) with {t.protocol} id {t.queue_id}{tls}{rcpt};\r\n"
        f"\t{date}\r\n"
    ).encode()


def delivery_headers(sender: str, recipient: str) -> bytes:
    """The lines local delivery puts before one mailbox copy (as Postfix's local and
    Dovecot's LMTP do): the envelope sender (RFC 5321 §4.4; ``<>`` for the null
    sender) and the final recipient, after aliases, which the file cannot say
    because every copy shares it."""
    return f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()


def from_fields(header_section: bytes) -> tuple[str, ...]:
    """The unfolded values of every ``From:`` field (for sender_must_match_login)."""
    return tuple(
        re.sub(r"\r\n(?=[ \t])", "", m.group(1).decode("utf-8", "replace")).strip()
        for m in _FROM.finditer(header_section)
    )


def field_names(header_section: bytes) -> list[bytes]:
    """Lower-cased field names of a header section, in order."""
    return [m.group(1).lower() for m in _FIELD.finditer(header_section)]


class HeaderSectionTooLarge(Exception):
    """The header section passed its bound without ending: refuse the message."""


class MessageBuilder:
    """Streams a message into a BlobWriter, prefixed by trace headers, without
    the client's Return-Path fields.

    ``add_submission_headers`` adds Message-ID and Date when missing (RFC
    6409 §8), which only authenticated submissions get.
    """

    def __init__(
        self,
        writer: BlobWriter,
        prefix: bytes,
        *,
        hostname: str,
        add_submission_headers: bool,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.writer = writer
        self._prefix = prefix
        self._hostname = hostname
        self._submission = add_submission_headers
        self._max = max_header_bytes
        self._head: bytearray | None = bytearray()
        self.received_count = 0
        self.from_fields: tuple[str, ...] = ()  # read from the header section once flushed

    def write(self, data: bytes) -> None:
        """Raises HeaderSectionTooLarge once the header section cannot end
        within ``max_header_bytes``; what was held is dropped then."""
        head = self._head
        if head is None:
            self.writer.write(data)
            return
        start = max(0, len(head) - 3)  # a blank line may straddle two writes
        head += data
        # A leading CRLF: no header section, the body starts at once. Else only
        # a blank line that leaves the section within the bound counts.
        no_head = head.startswith(b"\r\n")
        end = -2 if no_head else head.find(b"\r\n\r\n", start, self._max + 2)
        if end != -1:
            self._flush_head(bytes(head[: end + 2]), bytes(head[end + 2 :]))
        elif len(head) >= self._max + 2:
            self._head = None
            raise HeaderSectionTooLarge(f"header section over {self._max} octets")

    def _flush_head(self, head: bytes, rest: bytes) -> None:
        self._head = None
        # The client's Return-Path fields go (Postfix's cleanup drops them too):
        # delivery adds the one true field, from the envelope.
        head = _RETURN_PATH.sub(b"", head)
        names = field_names(head)
        self.received_count = names.count(b"received")
        self.from_fields = from_fields(head)
        extra = b""
        if self._submission:
            if b"message-id" not in names:
                extra += f"Message-ID: {email.utils.make_msgid(domain=self._hostname)}\r\n".encode()
            if b"date" not in names:
                extra += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
        self.writer.write(self._prefix + head + extra + rest)

    def finish(self) -> None:
        """Flush a header section that never reached a blank line."""
        if self._head is not None:
            head = bytes(self._head)
            if head and not head.endswith(b"\r\n"):
                head += b"\r\n"
            self._flush_head(head, b"")

    @property
    def size(self) -> int:
        return self.writer.size + (len(self._head) if self._head is not None else 0)
