"""The server side of SMTP as a sans-IO state machine.

RFC 5321 with PIPELINING (2920), SIZE (1870), 8BITMIME (6152), SMTPUTF8
(6531), ENHANCEDSTATUSCODES (2034), CHUNKING (3030), DSN (3461), STARTTLS
(3207) and AUTH (4954). Bytes in, events out, replies in, bytes out: no
sockets, no clock. The machine answers everything that is pure syntax or
sequence itself and stops (PAUSED) at every decision the server must make,
so each pipelined command is judged against the state the previous reply
left behind. ``_REFUSALS`` is the only place ordering rules live.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Final

from postwarden.mail.address import AddressError, parse_path
from postwarden.mail.reply import (
    ALREADY_AUTHENTICATED,
    AUTH_BAD_BASE64,
    AUTH_CANCELLED,
    AUTH_CONTINUE_EMPTY,
    BAD_ADDRESS,
    BAD_SENDER_ADDRESS,
    BAD_SEQUENCE,
    BARE_LINEFEED,
    BDAT_AFTER_DATA,
    BYE,
    ENCRYPTION_REQUIRED,
    HELP,
    LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    NEED_HELO,
    NEED_MAIL,
    NEED_RCPT,
    NOOP_OK,
    NOT_IMPLEMENTED,
    OK,
    PARAM_SYNTAX,
    READY_TLS,
    RESET_OK,
    SMTPUTF8_REQUIRED,
    START_DATA,
    SYNTAX_ERROR,
    TLS_ALREADY,
    TOO_MANY_ERRORS,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_AUTH_MECHANISM,
    VRFY_CANNOT,
    Reply,
)
from postwarden.protocol import sasl
from postwarden.protocol.connection import SansIOConnection
from postwarden.protocol.linebuffer import LineError
from postwarden.protocol.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataAborted,
    DataChunk,
    DataEnd,
    Decision,
    Event,
    Hello,
    MailFrom,
    MailRefused,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
)
from postwarden.protocol.smtp.params import parse_mail_params, parse_rcpt_params, split_path

CHUNK_SIZE: Final = 64 * 1024  # largest DataChunk, and the most DATA input scanned at once
_TERMINATOR: Final = b"\r\n.\r\n"
_BDAT_ARGS = re.compile(r"([0-9]{1,18})( LAST)?\Z", re.IGNORECASE)
# Replies that mean "you are not speaking SMTP": they count toward max_bad_commands.
_SYNTAX_CODES: Final = frozenset({500, 501, 503, 504, 555})


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    """What one listener allows; fixed for the life of a connection."""

    hostname: str
    max_message_size: int
    max_recipients: int
    starttls_available: bool
    tls_active: bool
    auth_available: bool
    auth_without_tls: bool
    max_line_length: int = 512
    max_auth_line_length: int = 12288
    max_bad_commands: int = 10
    # Refused recipients (Postfix's soft/hard error limits): past the first,
    # ``delay_replies`` asks the glue to slow down; at the second, 421.
    rcpt_error_soft_limit: int = 10
    rcpt_error_hard_limit: int = 20


class State(enum.Enum):
    GREETED = enum.auto()  # banner sent; EHLO/HELO expected
    HELLO = enum.auto()  # greeted, no transaction
    MAIL = enum.auto()  # sender accepted, no recipient yet
    RCPT = enum.auto()  # at least one recipient accepted
    AUTH = enum.auto()  # SASL exchange: lines are responses, not commands
    DATA = enum.auto()  # reading the DATA body up to CRLF.CRLF
    BDAT = enum.auto()  # reading the octets of one BDAT chunk
    TLS_HANDSHAKE = enum.auto()  # 220 sent; input stays untouched until tls_started()
    CLOSED = enum.auto()


class Verb(enum.StrEnum):
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    QUIT = "QUIT"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"


_BEFORE_MAIL: Final = {State.GREETED: NEED_MAIL, State.HELLO: NEED_MAIL, State.MAIL: NEED_RCPT}
_OUTSIDE_TRANSACTION: Final = {
    State.GREETED: NEED_HELO,
    State.MAIL: BAD_SEQUENCE,
    State.RCPT: BAD_SEQUENCE,
}
# The transition table: the reply refusing each verb in each command state.
# A verb absent here, or a state absent for a verb, is allowed.
_REFUSALS: Final[dict[Verb, dict[State, Reply]]] = {
    Verb.MAIL: _OUTSIDE_TRANSACTION,
    Verb.RCPT: {State.GREETED: NEED_MAIL, State.HELLO: NEED_MAIL},
    Verb.DATA: _BEFORE_MAIL,
    Verb.BDAT: _BEFORE_MAIL,
    Verb.AUTH: _OUTSIDE_TRANSACTION,
    Verb.STARTTLS: _OUTSIDE_TRANSACTION,
}


def _clean(segment: bytes) -> bool:
    """True if every CR and every LF in ``segment`` belongs to a CRLF pair."""
    pairs = segment.count(b"\r\n")
    return segment.count(b"\r") == pairs == segment.count(b"\n")


class SMTPSession(SansIOConnection):
    """One SMTP connection, server side. See the module docstring."""

    def __init__(self, settings: SMTPSettings) -> None:
        super().__init__()
        self._settings = settings
        self._events: deque[Event] = deque()
        self._pending: Decision | None = None
        self._state = State.GREETED
        self._close_reason = ""
        self._tls_active = settings.tls_active
        # What the client told us about itself: the session's one record of
        # it, so forgetting it at STARTTLS (RFC 3207 §4.2) forgets it everywhere.
        self._greeting: Hello | None = None
        self._login: str | None = None
        self._errors = 0
        self._rcpt_errors = 0
        self._sasl: sasl.Mechanism | None = None
        # The transaction.
        self._recipients = 0
        self._smtputf8 = False
        self._bdat_used = False
        self._size = 0  # message octets so far
        self._prev_cr = False  # BDAT data so far ends in CR (a CRLF may straddle chunks)
        # Reading DATA/BDAT.
        self._first_line = True  # DATA: no CRLF before the first line to search from
        self._discard: Reply | None = None  # data refused: swallow it, then send this
        self._chunk_size = 0
        self._chunk_left = 0
        self._chunk_last = False
        self._after_chunk = State.HELLO
        self._reply(Reply(220, "", f"{settings.hostname} ESMTP postwarden"))

    # -- the public API -------------------------------------------------

    @property
    def authenticated(self) -> bool:
        return self._login is not None

    @property
    def login(self) -> str | None:
        """The account the client logged in as (from ``send(..., login=)``), or None."""
        return self._login

    @property
    def hello(self) -> Hello | None:
        """The last accepted EHLO/HELO, or None before it (and after STARTTLS)."""
        return self._greeting

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_message(self) -> bool:
        """Reading message octets (DATA or a BDAT chunk) rather than command lines."""
        return self._state in (State.DATA, State.BDAT)

    @property
    def delay_replies(self) -> bool:
        """True once refused recipients pass the soft limit: a prober, so tarpit it."""
        return self._rcpt_errors > self._settings.rcpt_error_soft_limit

    def _is_closed(self) -> bool:
        return self._state is State.CLOSED

    def next_event(self) -> Event | type[NEED_DATA] | type[PAUSED]:
        """The next event, NEED_DATA, or PAUSED while a decision is outstanding."""
        while True:
            if self._events:
                event = self._events.popleft()
                if isinstance(event, MailFrom | RcptTo | DataEnd | AuthCredentials):
                    self._pending = event
                return event
            if self._pending is not None:
                return PAUSED
            match self._state:
                case State.CLOSED:
                    return Closed(self._close_reason)
                case State.TLS_HANDSHAKE:
                    return PAUSED
                case State.AUTH:
                    progressed = self._step_auth()
                case State.DATA:
                    progressed = self._step_data()
                case State.BDAT:
                    progressed = self._step_bdat()
                case State.GREETED | State.HELLO | State.MAIL | State.RCPT:
                    progressed = self._step_command()
            if not progressed:
                if not self._eof:
                    return NEED_DATA
                in_data = self._state in (State.DATA, State.BDAT)
                self._close("eof in data" if in_data else "eof")

    def send(self, reply: Reply, *, login: str | None = None) -> None:
        """Answer the outstanding decision event.

        A positive answer to ``AuthCredentials`` names the account logged in
        as ``login``; the machine keeps it until STARTTLS or the end.
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError("no event is waiting for a reply")
        if isinstance(pending, AuthCredentials) and reply.is_positive and not login:
            raise RuntimeError("a positive AUTH answer must name the login")
        self._pending = None
        match pending:
            case MailFrom(smtputf8=smtputf8) if reply.is_positive:
                self._reset_transaction()
                self._smtputf8 = smtputf8
                self._state = State.MAIL
            case RcptTo() if reply.is_positive:
                self._recipients += 1
                self._state = State.RCPT
            case RcptTo():
                self._rcpt_errors += 1
            case AuthCredentials() if reply.is_positive:
                self._login = login
        self._reply(reply)
        if reply.code == 421:
            self._close("closed by server")
        elif self._rcpt_errors >= self._settings.rcpt_error_hard_limit:
            self._reply(TOO_MANY_ERRORS)
            self._close("too many refused recipients")

    def tls_started(self) -> None:
        """The TLS handshake after StartTLS is done: forget everything said in
        plaintext (RFC 3207 §4.2), including input pipelined after STARTTLS,
        which an attacker may have injected."""
        if self._state is not State.TLS_HANDSHAKE:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._lines.clear()
        self._tls_active = True
        self._greeting = None
        self._login = None
        self._reset_transaction()
        self._state = State.GREETED

    # -- output and bookkeeping -----------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._out += reply.encode()

    def _refuse(self, reply: Reply) -> None:
        """Send a reply the machine decided; too many syntax errors end the session."""
        self._reply(reply)
        if reply.code not in _SYNTAX_CODES:
            return
        self._errors += 1
        if self._errors >= self._settings.max_bad_commands:
            self._reply(TOO_MANY_ERRORS)
            self._close("too many errors")

    def _close(self, reason: str) -> None:
        self._state = State.CLOSED
        self._close_reason = reason
        self._lines.clear()

    def _reset_transaction(self) -> None:
        self._recipients = 0
        self._smtputf8 = False
        self._bdat_used = False
        self._size = 0
        self._prev_cr = False

    @property
    def _auth_offered(self) -> bool:
        settings = self._settings
        return settings.auth_available and (self._tls_active or settings.auth_without_tls)

    # -- commands -------------------------------------------------------

    def _step_command(self) -> bool:
        head = self._lines.peek(5).upper()
        settings = self._settings
        limit = settings.max_auth_line_length if head == b"AUTH " else settings.max_line_length
        line = self._lines.read_line(limit)
        match line:
            case None:
                return False
            case LineError.TOO_LONG:
                self._refuse(LINE_TOO_LONG)
            case LineError.BARE_LINE_ENDING:
                self._refuse(BARE_LINEFEED)
            case bytes():
                self._command(line)
        return True

    def _command(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(SYNTAX_ERROR)
            return
        word, _, arg = text.partition(" ")
        try:
            verb = Verb(word.upper()) if word.isascii() and "\0" not in text else None
        except ValueError:
            verb = None
        if verb is None:
            self._refuse(SYNTAX_ERROR)
            return
        refusal = _REFUSALS.get(verb, {}).get(self._state)
        if refusal is not None and verb is not Verb.BDAT:
            self._refuse(refusal)
            return
        match verb:
            case Verb.EHLO | Verb.HELO:
                self._hello(arg.strip(), extended=verb is Verb.EHLO)
            case Verb.MAIL:
                self._mail(arg)
            case Verb.RCPT:
                self._rcpt(arg)
            case Verb.DATA:
                self._data(arg)
            case Verb.BDAT:
                self._bdat(arg, refusal)
            case Verb.RSET:
                self._reset_transaction()
                if self._state is not State.GREETED:
                    self._state = State.HELLO
                self._reply(RESET_OK)
                self._events.append(Reset())
            case Verb.NOOP:
                self._reply(NOOP_OK)
            case Verb.VRFY:
                self._reply(VRFY_CANNOT)
            case Verb.EXPN:
                self._refuse(NOT_IMPLEMENTED)
            case Verb.HELP:
                self._reply(HELP)
            case Verb.QUIT:
                self._reply(BYE)
                self._events.append(Quit())
                self._close("quit")
            case Verb.STARTTLS:
                self._starttls(arg)
            case Verb.AUTH:
                self._auth(arg)

    def _hello(self, name: str, *, extended: bool) -> None:
        if not name:
            self._refuse(PARAM_SYNTAX)
            return
        self._reset_transaction()
        self._state = State.HELLO
        settings = self._settings
        if extended:
            lines = [
                settings.hostname,
                "PIPELINING",
                f"SIZE {settings.max_message_size}",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "CHUNKING",
                "DSN",
            ]
            if settings.starttls_available and not self._tls_active:
                lines.append("STARTTLS")
            if self._auth_offered:
                lines.append("AUTH " + " ".join(sasl.MECHANISMS))
            self._reply(Reply(250, "", "\n".join(lines)))
        else:
            self._reply(Reply(250, "", settings.hostname))
        self._greeting = Hello(name, extended)
        self._events.append(self._greeting)

    def _mail(self, arg: str) -> None:
        split = split_path(arg, "FROM:")
        if split is None:
            self._refuse(PARAM_SYNTAX)
            return
        path, rest = split
        params = parse_mail_params(rest)
        if isinstance(params, Reply):
            self._refuse(params)
            return
        if params.size is not None and params.size > self._settings.max_message_size:
            self._refuse(MESSAGE_TOO_BIG)
            self._events.append(MailRefused(MESSAGE_TOO_BIG))
            return
        if not path.isascii() and not params.smtputf8:
            self._refuse(SMTPUTF8_REQUIRED)
            return
        try:
            sender = parse_path(path, smtputf8=params.smtputf8, allow_null=True)
        except AddressError:
            self._refuse(BAD_SENDER_ADDRESS)
            return
        self._events.append(
            MailFrom(
                sender,
                params.size,
                params.body,
                params.smtputf8,
                params.ret,
                params.envid,
                params.auth,
            )
        )

    def _rcpt(self, arg: str) -> None:
        split = split_path(arg, "TO:")
        if split is None:
            self._refuse(PARAM_SYNTAX)
            return
        path, rest = split
        params = parse_rcpt_params(rest)
        if isinstance(params, Reply):
            self._refuse(params)
            return
        if not path.isascii() and not self._smtputf8:
            self._refuse(SMTPUTF8_REQUIRED)
            return
        try:
            address = parse_path(path, smtputf8=self._smtputf8).address
        except AddressError:
            address = None
        if address is None:
            self._refuse(BAD_ADDRESS)
            return
        if self._recipients >= self._settings.max_recipients:
            self._refuse(TOO_MANY_RECIPIENTS)
            return
        self._events.append(RcptTo(address, params.notify, params.orcpt))

    def _data(self, arg: str) -> None:
        if arg.strip():
            self._refuse(PARAM_SYNTAX)
        elif self._bdat_used:
            self._refuse(BDAT_AFTER_DATA)
        else:
            self._reply(START_DATA)
            self._state = State.DATA
            self._first_line = True
            self._discard = None

    def _bdat(self, arg: str, refusal: Reply | None) -> None:
        """Start reading a chunk. A refused BDAT still has its octets read
        (RFC 3030 §4.2), or they would be taken for commands."""
        match = _BDAT_ARGS.match(arg.strip())
        if match is None:
            self._refuse(PARAM_SYNTAX)
            return
        self._chunk_size = self._chunk_left = int(match[1])
        self._chunk_last = match[2] is not None
        self._after_chunk = self._state
        self._discard = refusal
        if refusal is None:
            self._bdat_used = True
            if self._size + self._chunk_size > self._settings.max_message_size:
                self._abort(MESSAGE_TOO_BIG)
            else:
                self._size += self._chunk_size
        self._state = State.BDAT

    def _starttls(self, arg: str) -> None:
        if arg.strip():
            self._refuse(PARAM_SYNTAX)
        elif self._tls_active:
            self._refuse(TLS_ALREADY)
        elif not self._settings.starttls_available:
            self._refuse(NOT_IMPLEMENTED)
        else:
            self._reply(READY_TLS)
            self._events.append(StartTLS())
            self._state = State.TLS_HANDSHAKE

    def _auth(self, arg: str) -> None:
        settings = self._settings
        args = arg.split()
        if self._login is not None:
            self._refuse(ALREADY_AUTHENTICATED)
        elif not self._auth_offered:
            tls_would_help = settings.auth_available and settings.starttls_available
            self._refuse(ENCRYPTION_REQUIRED if tls_would_help else NOT_IMPLEMENTED)
        elif not 1 <= len(args) <= 2:
            self._refuse(PARAM_SYNTAX)
        elif (mechanism := sasl.mechanism(args[0])) is None:
            self._refuse(UNKNOWN_AUTH_MECHANISM)
        else:
            self._sasl = mechanism
            self._sasl_step(mechanism.start(args[1] if len(args) == 2 else None))

    def _sasl_step(self, step: sasl.Step) -> None:
        mechanism = self._sasl
        assert mechanism is not None
        if not isinstance(step, sasl.Challenge):
            self._sasl = None
            self._state = State.HELLO
        match step:
            case sasl.Challenge(text):
                self._reply(AUTH_CONTINUE_EMPTY.with_text(text))
                self._state = State.AUTH
            case sasl.Credentials(authzid, username, password):
                self._events.append(AuthCredentials(mechanism.name, authzid, username, password))
            case sasl.Failure.CANCELLED:
                self._refuse(AUTH_CANCELLED)
            case sasl.Failure.BAD_BASE64 | sasl.Failure.MALFORMED:
                self._refuse(AUTH_BAD_BASE64)

    def _step_auth(self) -> bool:
        line = self._lines.read_line(self._settings.max_auth_line_length)
        match line:
            case None:
                return False
            case LineError.TOO_LONG | LineError.BARE_LINE_ENDING:
                self._sasl = None
                self._state = State.HELLO
                self._refuse(LINE_TOO_LONG if line is LineError.TOO_LONG else BARE_LINEFEED)
            case bytes():
                mechanism = self._sasl
                assert mechanism is not None
                self._sasl_step(mechanism.respond(line.decode("latin-1")))
        return True

    # -- message data ---------------------------------------------------

    def _abort(self, reply: Reply) -> None:
        """Refuse the message now; the reply follows once its data is read."""
        self._events.append(DataAborted(reply))
        self._discard = reply
        self._after_chunk = State.HELLO
        self._reset_transaction()

    def _step_data(self) -> bool:
        """Scan DATA input: find CRLF.CRLF, unstuff dots, refuse bare CR/LF.

        Whole windows are handled by ``bytes`` methods, not line by line, so
        a message of a million dot-lines costs no more than any other. A
        window never ends inside a possible terminator (those octets wait
        for more input), hence every CRLF and the dot after it are seen
        together and ``replace`` unstuffs exactly one dot per line.
        """
        if self._first_line:
            head = self._lines.peek(3)
            if head == b".\r\n":  # an empty message
                self._lines.consume(3)
                self._end_data()
                return True
            if len(head) < 3 and b".\r\n".startswith(head):
                return False
            if head.startswith(b"."):
                self._lines.consume(1)
            self._first_line = False
            return True
        window = min(len(self._lines), CHUNK_SIZE)
        end = self._lines.find(_TERMINATOR, window)
        if end >= 0:
            length = end + 2  # the CRLF before the dot belongs to the message
        else:
            tail = self._lines.peek(4, start=max(0, window - 4))
            held = next((k for k in (4, 3, 2, 1) if tail.endswith(_TERMINATOR[:k])), 0)
            length = window - held
            if not length:
                return False
        self._accept_data(self._lines.take(length))
        if end >= 0:
            self._lines.consume(3)
            self._end_data()
        return True

    def _accept_data(self, raw: bytes) -> None:
        if self._discard is not None:
            return
        if not _clean(raw):
            self._abort(BARE_LINEFEED)
            return
        data = raw.replace(b"\r\n.", b"\r\n")
        if self._size + len(data) > self._settings.max_message_size:
            self._abort(MESSAGE_TOO_BIG)
        else:
            self._size += len(data)
            self._events.append(DataChunk(data))

    def _end_data(self) -> None:
        self._reset_transaction()
        self._state = State.HELLO
        if self._discard is not None:
            reply, self._discard = self._discard, None
            self._refuse(reply)
        else:
            self._events.append(DataEnd())

    def _step_bdat(self) -> bool:
        if self._chunk_left:
            if not self._lines:
                return False
            piece = self._lines.take(min(self._chunk_left, CHUNK_SIZE))
            self._chunk_left -= len(piece)
            if self._discard is None:
                if self._bdat_clean(piece):
                    self._events.append(DataChunk(piece))
                else:
                    self._abort(BARE_LINEFEED)
            if self._chunk_left:
                return True
        self._end_chunk()
        return True

    def _bdat_clean(self, piece: bytes) -> bool:
        """Bare CR/LF check that lets a CRLF straddle two pieces or chunks."""
        if self._prev_cr:
            if not piece.startswith(b"\n"):
                return False
            piece = piece[1:]
        self._prev_cr = piece.endswith(b"\r")
        return _clean(piece[:-1] if self._prev_cr else piece)

    def _end_chunk(self) -> None:
        if self._discard is None and self._chunk_last and self._prev_cr:
            self._abort(BARE_LINEFEED)
        self._state = self._after_chunk
        if self._discard is not None:
            reply, self._discard = self._discard, None
            self._refuse(reply)
        elif self._chunk_last:
            self._reset_transaction()
            self._state = State.HELLO
            self._events.append(DataEnd())
        else:
            self._reply(OK.with_text(f"{self._chunk_size} octets received"))
