"""The POP3 server state machine (RFC 1939, 2449, 2595, 5034), sans-IO.

Bytes in (``receive_data``), events out (``next_event``), answers in
(``send``), bytes out (``data_to_send``); no sockets, no clock, no store.
The transition table is ``_dispatch``: one ``match`` on (state, verb) is the
only place that decides which command is allowed when. The machine also
keeps the maildrop snapshot of the session (numbers, DELE marks, sizes,
UIDL strings), because that is pure bookkeeping: the server is asked only
for the things that need I/O (checking a password, reading a message file,
the TLS handshake, applying deletions).

Commands are read one at a time, so pipelining (RFC 2449) needs no special
case: while an answer is outstanding the machine is PAUSED and later
commands wait in the bounded line buffer.
"""

from __future__ import annotations

import enum

from postwarden.protocol import sasl
from postwarden.protocol.connection import SansIOConnection
from postwarden.protocol.linebuffer import LineError
from postwarden.protocol.pop3.dotstuff import DotStuffer
from postwarden.protocol.pop3.events import (
    NEED_DATA,
    PAUSED,
    Answer,
    Closed,
    CloseReason,
    Event,
    LoginAccepted,
    LoginAttempt,
    LoginRefused,
    MaildropItem,
    MessageChunk,
    MessageEnd,
    MessageStart,
    MessageUnavailable,
    Retrieve,
    StartTLS,
    TimedOut,
    TLSStarted,
    Update,
    Updated,
)

GREETING = b"+OK postwarden POP3 server ready\r\n"
COMMAND_LIMIT = 255  # octets including CRLF (RFC 2449 §4)
SASL_LINE_LIMIT = 4096  # RFC 5034 §4: SASL responses are not bound by the 255 limit
MAX_NUMBER_DIGITS = 10


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


class _Waiting(enum.Enum):
    """Which answer from the server is outstanding, if any."""

    NOTHING = enum.auto()
    LOGIN = enum.auto()
    MESSAGE_START = enum.auto()
    MESSAGE_BODY = enum.auto()
    TLS = enum.auto()
    UPDATE = enum.auto()


class ProtocolError(Exception):
    """The server sent an answer the machine was not waiting for (a bug)."""


def _ok(text: str) -> bytes:
    return b"+OK " + text.encode("utf-8") + b"\r\n"


def _err(text: str) -> bytes:
    return b"-ERR " + text.encode("utf-8") + b"\r\n"


NOT_ALLOWED = _err("Unknown command or not allowed in this state")
TOO_LONG = _err("Line too long")
BARE_EOL = _err("Lines must end with CRLF")
TOO_MANY_BAD = _err("Too many bad commands, closing connection")
PLAINTEXT_DISALLOWED = _err("[AUTH] Plaintext authentication disallowed without TLS")
NO_SUCH_MESSAGE = _err("No such message")
DELETED = _err("Message is deleted")
BAD_NUMBER = _err("Invalid message number")
SYNTAX = _err("Syntax error")


def _number(text: str) -> int | None:
    """A message number or line count: plain decimal digits, nothing else."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_NUMBER_DIGITS:
        return None
    return int(text)


class POP3Machine(SansIOConnection):
    """One POP3 server session.

    ``plaintext_auth``: may USER/PASS and AUTH PLAIN be used now (the
    ``[auth]`` rule for this peer before TLS); ``tls_active``: the socket is
    already TLS (pop3s); ``tls_available``: STLS can be offered.
    """

    def __init__(
        self, *, plaintext_auth: bool, tls_active: bool, tls_available: bool,
        max_bad_commands: int,
    ) -> None:
        super().__init__()
        self._out += GREETING
        self.state = State.AUTHORIZATION
        self.plaintext_auth = plaintext_auth
        self.tls_active = tls_active
        self._tls_available = tls_available
        self._max_bad = max_bad_commands
        self._bad = 0
        self._waiting = _Waiting.NOTHING
        self._closed: Closed | None = None
        self._user: str | None = None
        self._sasl: sasl.Mechanism | None = None
        self._drop: tuple[MaildropItem, ...] = ()
        self._deleted: set[int] = set()  # message numbers marked by DELE
        self._stuffer: DotStuffer | None = None
        self._retrieving: Retrieve | None = None

    # --- the four sans-IO calls -----------------------------------------------

    def _is_closed(self) -> bool:
        return self._closed is not None

    def next_event(self) -> Event | type[NEED_DATA] | type[PAUSED]:
        """The next thing the server must act on, handling all it can itself."""
        while True:
            if self._closed is not None:
                return self._closed
            if self._waiting is not _Waiting.NOTHING:
                return PAUSED
            limit = SASL_LINE_LIMIT if self._sasl is not None else COMMAND_LIMIT
            line = self._lines.read_line(limit)
            if line is None:
                if self._eof:
                    return self._close(CloseReason.EOF)
                return NEED_DATA
            event = self._line(line)
            if event is not None:
                return event

    def send(self, answer: Answer) -> None:
        """The server's answer to the outstanding event."""
        match (self._waiting, answer):
            case (_, TimedOut()):
                self._out += _err("Autologout; idle for too long")
                self._close(CloseReason.TIMEOUT)
            case (_Waiting.LOGIN, LoginAccepted(maildrop)):
                self._drop = maildrop
                self.state = State.TRANSACTION
                self._out += _ok(f"Logged in, {len(maildrop)} messages")
            case (_Waiting.LOGIN, LoginRefused(reason)):
                self._out += _err(reason.value)
            case (_Waiting.MESSAGE_START, MessageStart()):
                assert self._retrieving is not None
                item, lines = self._retrieving.item, self._retrieving.lines
                self._out += _ok(f"{item.size} octets" if lines is None else "Top of message")
                self._waiting = _Waiting.MESSAGE_BODY
                return
            case (_Waiting.MESSAGE_START, MessageUnavailable()):
                self._stuffer = self._retrieving = None
                self._out += _err("[SYS/TEMP] Message is no longer available")
            case (_Waiting.MESSAGE_BODY, MessageChunk(data)):
                assert self._stuffer is not None
                self._out += self._stuffer.feed(data)
                return
            case (_Waiting.MESSAGE_BODY, MessageEnd()):
                assert self._stuffer is not None
                self._out += self._stuffer.finish()
                self._stuffer = self._retrieving = None
            case (_Waiting.TLS, TLSStarted(plaintext_auth)):
                # Back to the greeting state (RFC 2595 §4): nothing said in
                # plaintext counts, neither a USER nor commands pipelined
                # behind STLS, which an attacker may have injected.
                self._lines.clear()
                self._user = None
                self.tls_active = True
                self.plaintext_auth = plaintext_auth
            case (_Waiting.UPDATE, Updated(ok)):
                self._out += (
                    _ok("postwarden POP3 server signing off") if ok
                    else _err("[SYS/TEMP] Some deleted messages not removed")
                )
                self._close(CloseReason.QUIT)
            case _:
                raise ProtocolError(f"unexpected {answer!r} while waiting for {self._waiting}")
        self._waiting = _Waiting.NOTHING

    @property
    def message_done(self) -> bool:
        """During RETR/TOP: true once TOP has all its lines, so reading can stop."""
        return self._stuffer is not None and self._stuffer.done

    # --- commands ------------------------------------------------------------------

    def _close(self, reason: CloseReason) -> Closed:
        self.state = State.CLOSED
        self._closed = Closed(reason)
        return self._closed

    def _bad_command(self, reply: bytes) -> None:
        self._bad += 1
        if self._bad >= self._max_bad:
            self._out += TOO_MANY_BAD
            self._close(CloseReason.BAD_COMMANDS)
        else:
            self._out += reply

    def _line(self, line: bytes | LineError) -> Event | None:
        match line:
            case LineError.TOO_LONG:
                self._sasl = None
                self._bad_command(TOO_LONG)
                return None
            case LineError.BARE_LINE_ENDING:
                self._sasl = None
                self._bad_command(BARE_EOL)
                return None
        assert isinstance(line, bytes)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._sasl = None
            self._bad_command(NOT_ALLOWED)
            return None
        if self._sasl is not None:
            return self._sasl_step(self._sasl.respond(text))
        verb, _, rest = text.partition(" ")
        return self._dispatch(verb.upper(), rest)

    def _dispatch(self, verb: str, rest: str) -> Event | None:
        args = rest.split()
        match (self.state, verb):
            case (_, "CAPA") if not rest:
                self._capa()
            case (State.TRANSACTION, "NOOP") if not rest:
                self._out += _ok("")
            case (State.AUTHORIZATION, "QUIT"):
                self._out += _ok("postwarden POP3 server signing off")
                return self._close(CloseReason.QUIT)
            case (State.AUTHORIZATION, "STLS"):
                if self.tls_active or not self._tls_available:
                    self._out += _err("TLS not available" if not self.tls_active
                                      else "Already using TLS")
                    return None
                self._out += _ok("Begin TLS negotiation now")
                self._waiting = _Waiting.TLS
                return StartTLS()
            case (State.AUTHORIZATION, "USER"):
                if not self.plaintext_auth:
                    self._out += PLAINTEXT_DISALLOWED
                elif not rest:
                    self._out += SYNTAX
                else:
                    self._user = rest
                    self._out += _ok("Send your password")
            case (State.AUTHORIZATION, "PASS"):
                user, self._user = self._user, None
                if user is None:
                    self._out += _err("Send USER first")
                    return None
                self._waiting = _Waiting.LOGIN
                return LoginAttempt("USER", "", user, rest)
            case (State.AUTHORIZATION, "AUTH"):
                return self._auth(args)
            case (State.TRANSACTION, "STAT") if not args:
                count, octets = self._totals()
                self._out += _ok(f"{count} {octets}")
            case (State.TRANSACTION, "LIST" | "UIDL"):
                self._listing(verb, args)
            case (State.TRANSACTION, "RETR") if len(args) == 1:
                return self._retrieve(args[0], None)
            case (State.TRANSACTION, "TOP") if len(args) == 2:
                lines = _number(args[1])
                if lines is None:
                    self._out += SYNTAX
                    return None
                return self._retrieve(args[0], lines)
            case (State.TRANSACTION, "DELE") if len(args) == 1:
                number = self._message(args[0])
                if number is not None:
                    self._deleted.add(number)
                    self._out += _ok(f"Message {number} deleted")
            case (State.TRANSACTION, "RSET") if not args:
                self._deleted.clear()
                count, octets = self._totals()
                self._out += _ok(f"Maildrop has {count} messages ({octets} octets)")
            case (State.TRANSACTION, "QUIT"):
                self.state = State.UPDATE
                self._waiting = _Waiting.UPDATE
                return Update(tuple(self._drop[n - 1] for n in sorted(self._deleted)))
            case (State.TRANSACTION, "RETR" | "TOP" | "DELE" | "RSET" | "STAT"):
                self._out += SYNTAX
            case _:
                self._bad_command(NOT_ALLOWED)
        return None

    def _capa(self) -> None:
        lines = ["Capability list follows", "TOP", "UIDL"]
        if self.state is State.AUTHORIZATION and self.plaintext_auth:
            lines += ["USER", "SASL PLAIN"]
        lines += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION and self._tls_available and not self.tls_active:
            lines.append("STLS")
        lines += ["IMPLEMENTATION postwarden"]
        self._out += ("+OK " + "\r\n".join(lines) + "\r\n.\r\n").encode("ascii")

    def _auth(self, args: list[str]) -> Event | None:
        if not args:  # the pre-RFC 5034 way of asking for the mechanisms
            mechs = "PLAIN\r\n" if self.plaintext_auth else ""
            self._out += ("+OK Methods supported\r\n" + mechs + ".\r\n").encode("ascii")
            return None
        if not self.plaintext_auth:
            self._out += PLAINTEXT_DISALLOWED
            return None
        if len(args) > 2 or args[0].upper() != "PLAIN":
            self._out += _err("Unsupported authentication mechanism")
            return None
        mechanism = sasl.Plain()
        self._sasl = mechanism
        return self._sasl_step(mechanism.start(args[1] if len(args) == 2 else None))

    def _sasl_step(self, step: sasl.Step) -> Event | None:
        match step:
            case sasl.Challenge(text):
                self._out += b"+ " + text.encode("ascii") + b"\r\n"
                return None
            case sasl.Credentials(authzid, username, password):
                self._sasl = None
                self._waiting = _Waiting.LOGIN
                return LoginAttempt("PLAIN", authzid, username, password)
            case sasl.Failure.CANCELLED:
                self._out += _err("Authentication cancelled")
            case sasl.Failure.BAD_BASE64:
                self._out += _err("[AUTH] Invalid base64 data")
            case sasl.Failure.MALFORMED:
                self._out += _err("[AUTH] Malformed SASL response")
        self._sasl = None
        return None

    # --- the maildrop ----------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        live = [item for n, item in enumerate(self._drop, 1) if n not in self._deleted]
        return len(live), sum(item.size for item in live)

    def _message(self, arg: str) -> int | None:
        """The number of a message that exists and is not deleted, or None (answered)."""
        number = _number(arg)
        if number is None:
            self._out += BAD_NUMBER
        elif not 1 <= number <= len(self._drop):
            self._out += NO_SUCH_MESSAGE
        elif number in self._deleted:
            self._out += DELETED
        else:
            return number
        return None

    def _listing(self, verb: str, args: list[str]) -> None:
        def entry(number: int) -> str:
            item = self._drop[number - 1]
            return f"{number} {item.size if verb == 'LIST' else item.unique_id}"

        match args:
            case []:
                count, octets = self._totals()
                lines = [f"{count} messages ({octets} octets)"]
                lines += [entry(n) for n in range(1, len(self._drop) + 1)
                          if n not in self._deleted]
                self._out += ("+OK " + "\r\n".join(lines) + "\r\n.\r\n").encode("ascii")
            case [arg]:
                number = self._message(arg)
                if number is not None:
                    self._out += _ok(entry(number))
            case _:
                self._out += SYNTAX

    def _retrieve(self, arg: str, lines: int | None) -> Event | None:
        number = self._message(arg)
        if number is None:
            return None
        self._stuffer = DotStuffer(lines)
        self._waiting = _Waiting.MESSAGE_START
        self._retrieving = Retrieve(number, self._drop[number - 1], lines)
        return self._retrieving
