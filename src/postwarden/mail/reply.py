"""SMTP replies as values, and the named replies the server sends.

Tests compare against these constants, so a reply's wording lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: three-digit code, enhanced status (RFC 3463), text lines."""

    code: int
    status: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def encode(self) -> bytes:
        lines = self.lines
        prefix = f"{self.status} " if self.status else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500


OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_CONTINUE_EMPTY = Reply(334, "", "")

# Syntax and sequence (the protocol room).
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_LINEFEED = Reply(500, "5.5.2", "Bare CR or LF not allowed; use CRLF")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
BAD_SENDER_ADDRESS = Reply(501, "5.1.7", "Bad sender address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL before RCPT")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT before DATA")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
PARAM_NOT_RECOGNISED = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized")
UNKNOWN_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "SMTPUTF8 required for this address")
BDAT_AFTER_DATA = Reply(503, "5.5.1", "Mixing BDAT and DATA is not allowed")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section exceeds fixed limit")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")

# Decisions (the policy room).
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_THROTTLED = Reply(454, "4.7.0", "Too many authentication failures, try again later")
AUTH_BUSY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
UNKNOWN_USER = Reply(550, "5.1.1", "Mailbox unavailable")
RELAY_DENIED = Reply(550, "5.7.1", "Unable to relay")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: not owned by user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From header address not owned by user")
SRS_UNPROVEN = Reply(
    550, "5.7.1", "Not forwarded: the original sender of the mail this answers was not verified"
)
TEMP_FAILURE = Reply(451, "4.3.0", "Temporary local problem, try again later")
STORAGE_FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service shutting down, closing connection")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")

# Appended by the SMTP machine.
HELP = Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT")
