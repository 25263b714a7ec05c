"""What one IMAP listener allows, and every size the machine will hold."""

from __future__ import annotations

from dataclasses import dataclass

LITERAL_MINUS_LIMIT = 4096  # RFC 7888 §5: the largest non-synchronising literal under LITERAL-


@dataclass(frozen=True, slots=True)
class IMAPSettings:
    """Fixed for the life of a connection; every limit has a name and a default.

    ``plaintext_auth``: LOGIN and AUTHENTICATE may be used before TLS
    (otherwise LOGINDISABLED is advertised until STARTTLS).
    ``literal_plus``: advertise LITERAL+ (non-synchronising literals of any
    size up to the limits) rather than LITERAL- (at most 4096 octets).
    """

    hostname: str
    tls_active: bool
    starttls_available: bool
    plaintext_auth: bool
    max_line_length: int = 65536  # one command line, CRLF included (RFC 7162 §4: >= 8192)
    max_literal_size: int = 65536  # a literal other than APPEND's message
    max_command_size: int = 262144  # a whole command, lines and literals, except APPEND's message
    max_append_size: int = 26214400  # APPEND's message (advertised as APPENDLIMIT)
    max_nesting: int = 64  # lists and NOT/OR inside one another (SEARCH keys, QRESYNC)
    max_list_items: int = 1000  # items in one list: flags, attributes, keys, patterns
    max_sequence_ranges: int = 10000  # ranges in one sequence set
    max_bad_commands: int = 20  # malformed or misplaced commands before BYE
    literal_plus: bool = True
    compress_available: bool = True
