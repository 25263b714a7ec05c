"""The IMAP4rev1/IMAP4rev2 server session as a sans-IO state machine.

Bytes in (``receive_data``), events out (``next_event``), responses in
(``send``), bytes out (``data_to_send``); no sockets, no store, no clock.

The machine frames commands (lines and literals: it sends ``+`` for a
synchronising literal only once the literal's size is known to be within
its limit, and it discards, never buffers, the octets of a refused
non-synchronising one), parses them (``parser``), checks them against
``_VALID_IN``, the only place that says which command is allowed in which
state, and answers itself everything that needs no store: syntax errors,
CAPABILITY, LOGOUT, STARTTLS, the SASL exchange, ENABLE, ID, NAMESPACE,
IDLE and COMPRESS. Every other command becomes an event and the machine
is PAUSED until the server's ``Done``, so pipelined commands are each
judged in the state the previous one left. The state changes that
results cause (login, SELECT, CLOSE) are in ``_after``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from typing import Final

from postwarden.protocol import sasl
from postwarden.protocol.connection import SansIOConnection
from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import encoder
from postwarden.protocol.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendData,
    AppendEnd,
    Closed,
    CloseReason,
    CompressionStarted,
    Enabled,
    Event,
    IdleDone,
    LoginAttempt,
)
from postwarden.protocol.imap.fetch import Simple
from postwarden.protocol.imap.parser import (
    Head,
    Malformed,
    literal_at_end,
    parse_command,
    parse_head,
)
from postwarden.protocol.imap.responses import (
    Condition,
    Done,
    FetchBlock,
    FetchData,
    Proceed,
    Response,
    Status,
    TLSStarted,
)
from postwarden.protocol.imap.search import uses_modseq
from postwarden.protocol.imap.settings import LITERAL_MINUS_LIMIT, IMAPSettings
from postwarden.protocol.linebuffer import LineError

CHUNK_SIZE: Final = 64 * 1024  # the largest AppendData
_TAG_PEEK: Final = 128  # octets kept to name the tag of a line too long to keep


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class _Mode(enum.Enum):
    """What the next input octets are."""

    COMMAND = enum.auto()  # a command line (or the line after a literal)
    LITERAL = enum.auto()  # a literal's octets, kept as part of the command
    DISCARD = enum.auto()  # a refused non-synchronising literal's octets, dropped
    SKIP_REST = enum.auto()  # the lines after a refused literal, up to the command's end
    AUTH = enum.auto()  # a SASL response line
    IDLE = enum.auto()  # waiting for DONE
    APPEND_DATA = enum.auto()  # the APPEND message, streamed out
    APPEND_END = enum.auto()  # the end of the APPEND line after the message
    TLS = enum.auto()  # STARTTLS answered; input untouched until the handshake
    CLOSED = enum.auto()


_NA, _AU, _SE = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
_ANY = frozenset({_NA, _AU, _SE})
_LOGGED_IN = frozenset({_AU, _SE})
# The transition table: the states in which each command may be given.
_VALID_IN: Final[dict[str, frozenset[State]]] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "ID"), _ANY),
    **dict.fromkeys(("STARTTLS", "LOGIN", "AUTHENTICATE"), frozenset({_NA})),
    "ENABLE": frozenset({_AU}),  # RFC 5161 §3.1: before SELECT
    **dict.fromkeys(
        ("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST",
         "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE", "GETQUOTA", "GETQUOTAROOT",
         "SETQUOTA", "COMPRESS"),
        _LOGGED_IN,
    ),
    **dict.fromkeys(
        ("CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "UID EXPUNGE", "SEARCH", "UID SEARCH",
         "FETCH", "UID FETCH", "STORE", "UID STORE", "COPY", "UID COPY", "MOVE", "UID MOVE",
         "SORT", "UID SORT", "THREAD", "UID THREAD"),
        frozenset({_SE}),
    ),
}
_ENABLEABLE: Final = {"IMAP4REV2": "IMAP4rev2", "CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC"}
_FIXED_CAPABILITIES: Final = (
    "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN",
    "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE",
    "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "SORT", "THREAD=REFERENCES",
    "THREAD=ORDEREDSUBJECT", "QUOTA", "QUOTA=RES-STORAGE", "BINARY",
)
# Events the server must answer (with Done, Proceed or TLSStarted) before input goes on.
_NOTIFICATIONS: Final = (c.Idle, c.Id, IdleDone, Enabled, AppendData, AppendAborted,
                         CompressionStarted)


class ProtocolError(Exception):
    """The server sent a response the machine was not waiting for (a bug)."""


def _misplaced(verb: str, state: State) -> str:
    """Why ``verb`` is not allowed in ``state`` (the text of the BAD)."""
    allowed = _VALID_IN[verb]
    if state is _NA:
        return "Log in first"
    if allowed == {_NA}:
        return "Already authenticated"
    if allowed == {_SE}:
        return "No mailbox selected"
    return f"{verb} is not allowed with a mailbox selected"


class IMAPSession(SansIOConnection):
    """One IMAP connection, server side. See the module docstring."""

    def __init__(self, settings: IMAPSettings) -> None:
        super().__init__()
        self._settings = settings
        self.state = State.NOT_AUTHENTICATED
        self.tls_active = settings.tls_active
        self.compressed = False
        self.readonly = False  # the selected mailbox was EXAMINEd
        self.enabled: set[str] = set()  # "IMAP4rev2", "CONDSTORE", "QRESYNC"
        self._events: deque[tuple[Event, bool]] = deque()
        self._pending: Event | None = None  # the event whose answer is outstanding
        self._mode = _Mode.COMMAND
        self._bad_count = 0
        self._close_reason = CloseReason.EOF
        # The command being framed.
        self._head: Head | None = None
        self._command = bytearray()
        self._left = 0  # octets still to come of the current literal or APPEND message
        self._long_tag: str | None = None  # the tag of a line too long to keep
        self._refusal: bytes | None = None  # sent once a refused command is skipped
        self._refusal_counts = False  # the refusal is a BAD that counts
        # APPEND, SASL and IDLE.
        self._append: c.Append | None = None
        self._append_sync = False
        self._append_nul = False
        self._sasl: sasl.Mechanism | None = None
        self._sasl_tag = ""
        self._idle_tag = ""
        caps = " ".join(self.capabilities())
        self._out += encoder.status(
            "*", Status.OK, f"{settings.hostname} postwarden IMAP4 server ready",
            f"CAPABILITY {caps}")

    # --- the four sans-IO calls --------------------------------------------------------

    @property
    def imap4rev2(self) -> bool:
        """The client enabled IMAP4rev2: no RECENT, ESEARCH for every SEARCH, UTF-8 names."""
        return "IMAP4rev2" in self.enabled

    @property
    def utf8(self) -> bool:
        """Mailbox names are UTF-8 on the wire (IMAP4rev2), not modified UTF-7."""
        return self.imap4rev2

    def _is_closed(self) -> bool:
        return self._mode is _Mode.CLOSED

    def next_event(self) -> Event | type[NEED_DATA] | type[PAUSED]:
        """The next event, NEED_DATA, or PAUSED while an answer is outstanding."""
        while True:
            if self._events:
                event, decision = self._events.popleft()
                if decision:
                    self._pending = event
                return event
            if self._mode is _Mode.CLOSED:
                return Closed(self._close_reason)
            if self._pending is not None or self._mode is _Mode.TLS:
                return PAUSED
            if not self._step():
                if not self._eof:
                    return NEED_DATA
                if self._mode in (_Mode.APPEND_DATA, _Mode.APPEND_END):
                    assert self._append is not None
                    self._emit(AppendAborted(self._append.tag))
                self._close(CloseReason.EOF)

    def send(self, response: Response) -> None:
        """A response from the server: data, an untagged status, or the answer awaited."""
        if isinstance(response, FetchData):  # most of what a session sends: the short way
            if self._mode is not _Mode.CLOSED:
                self._out += encoder.fetch(response, utf8=self.utf8)
            return
        if isinstance(response, FetchBlock):
            if self._mode is not _Mode.CLOSED:
                self._out += response.data
            return
        pending = self._pending
        match response:
            case TLSStarted() if isinstance(pending, c.StartTLS):
                self._lines.clear()  # nothing sent in plaintext is obeyed (RFC 9051 §6.2.1)
                self.tls_active = True
                self._mode = _Mode.COMMAND
            case Proceed() if isinstance(pending, c.Append):
                if self._append_sync:
                    self._out += b"+ Ready for the message\r\n"
                self._left = pending.size
                self._mode = _Mode.APPEND_DATA
            case Done() if isinstance(pending, c.Append):
                self._append = None
                if self._append_sync:
                    self._tagged(pending.tag, response)
                else:  # its octets are coming anyway: drop them, then answer
                    self._refuse_after(pending.size, encoder.status(
                        pending.tag, response.status, response.text, response.code), False)
            case Done() if pending is not None and not isinstance(pending, c.StartTLS):
                self.state = self._after(pending, response.status)
                self._tagged(getattr(pending, "tag", "*"), response)
                self._append = None
            case Condition(status=Status.BYE):
                self._out += encoder.untagged(response)
                self._close(CloseReason.BYE)
                return
            case Done() | Proceed() | TLSStarted():
                raise ProtocolError(f"unexpected {response!r} while waiting for {pending!r}")
            case _:
                if self._mode is not _Mode.CLOSED:
                    tag = getattr(pending, "tag", "")
                    self._out += encoder.untagged(response, tag=tag, utf8=self.utf8)
                return
        self._pending = None

    # --- state and capabilities -------------------------------------------------------------

    def _after(self, event: Event, status: Status) -> State:
        """The state a command's result leaves the session in."""
        ok = status is Status.OK
        match event:
            case LoginAttempt() if ok:
                return State.AUTHENTICATED
            case c.Select(readonly=readonly):
                self.readonly = readonly
                return State.SELECTED if ok else State.AUTHENTICATED  # RFC 9051 §6.3.2
            case c.Close() | c.Unselect() if ok:
                return State.AUTHENTICATED
        return self.state

    @property
    def _auth_allowed(self) -> bool:
        return self.tls_active or self._settings.plaintext_auth

    def capabilities(self) -> list[str]:
        """The CAPABILITY list for the current state, TLS and compression."""
        settings = self._settings
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if self.state is _NA:
            if settings.starttls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self._auth_allowed:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN", "SASL-IR"]
            else:
                caps.append("LOGINDISABLED")
        caps.append("LITERAL+" if settings.literal_plus else "LITERAL-")
        caps += _FIXED_CAPABILITIES
        caps.append(f"APPENDLIMIT={settings.max_append_size}")
        if self.state is not _NA and settings.compress_available and not self.compressed:
            caps.append("COMPRESS=DEFLATE")
        return caps

    # --- output helpers ----------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.append((event, not isinstance(event, _NOTIFICATIONS)))

    def _ok(self, tag: str, text: str, code: str | None = None) -> None:
        self._out += encoder.status(tag, Status.OK, text, code)

    def _no(self, tag: str, text: str, code: str | None = None) -> None:
        self._out += encoder.status(tag, Status.NO, text, code)

    def _bad(self, tag: str | None, text: str, code: str | None = None) -> None:
        """A BAD: malformed or misplaced. Too many of them end the session."""
        self._out += encoder.status(tag or "*", Status.BAD, text, code)
        self._count_bad()

    def _count_bad(self) -> None:
        self._bad_count += 1
        if self._bad_count >= self._settings.max_bad_commands:
            self._out += encoder.status("*", Status.BYE, "Too many invalid commands", None)
            self._close(CloseReason.BAD_COMMANDS)

    def _tagged(self, tag: str, done: Done) -> None:
        code: str | None = None
        if done.code is None and done.status is Status.OK:
            match self._pending:
                case LoginAttempt():
                    code = "CAPABILITY " + " ".join(self.capabilities())
                case c.Select(readonly=readonly):
                    code = "READ-ONLY" if readonly else "READ-WRITE"
        self._out += encoder.status(tag, done.status, done.text, code or done.code)

    def _close(self, reason: CloseReason) -> None:
        self.state = State.LOGOUT
        self._mode = _Mode.CLOSED
        self._close_reason = reason
        self._lines.clear()

    # --- reading ------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Act on buffered input; False if more input is needed first."""
        match self._mode:
            case _Mode.LITERAL | _Mode.DISCARD | _Mode.APPEND_DATA:
                return self._octets()
        limit = self._settings.max_line_length
        if len(self._lines) >= limit and self._head is None:
            self._long_tag = _tag_of(self._lines.peek(_TAG_PEEK))
        line = self._lines.read_line(limit)
        if line is None:
            return False
        match self._mode:
            case _Mode.COMMAND:
                self._command_line(line)
            case _Mode.SKIP_REST:
                self._skip_line(line)
            case _Mode.AUTH:
                self._auth_line(line)
            case _Mode.IDLE:
                self._idle_line(line)
            case _Mode.APPEND_END:
                self._append_end(line)
        return True

    def _octets(self) -> bool:
        if self._left and not self._lines:
            return False
        piece = self._lines.take(min(self._left, CHUNK_SIZE))
        self._left -= len(piece)
        match self._mode:
            case _Mode.LITERAL:
                self._command += piece
                done_mode = _Mode.COMMAND
            case _Mode.DISCARD:
                done_mode = _Mode.SKIP_REST
            case _:
                if self._append is not None and not self._append.binary and b"\0" in piece:
                    self._append_nul = True
                if piece:
                    self._emit(AppendData(piece))
                done_mode = _Mode.APPEND_END
        if not self._left:
            self._mode = done_mode
        return True

    def _reset_command(self) -> None:
        self._head = None
        self._command.clear()
        self._long_tag = None

    def _refuse_after(self, size: int, reply: bytes, counts: bool) -> None:
        """Refuse a command whose non-synchronising literal of ``size`` octets is
        on its way: drop the octets and the rest of the command, then reply."""
        self._reset_command()
        self._refusal = reply
        self._refusal_counts = counts
        self._left = size
        self._mode = _Mode.DISCARD

    def _refuse(self, tag: str | None, line: bytes, text: str, *, status: Status = Status.BAD,
                code: str | None = None) -> None:
        """Refuse the command whose latest line is ``line``, before reading any literal."""
        spec = literal_at_end(line)
        reply = encoder.status(tag or "*", status, text, code)
        counts = status is Status.BAD
        if spec is not None and not spec[1]:
            self._refuse_after(spec[0], reply, counts)
            return
        self._reset_command()
        self._out += reply
        if counts:
            self._count_bad()

    def _skip_line(self, line: bytes | LineError) -> None:
        spec = literal_at_end(line) if isinstance(line, bytes) else None
        if spec is not None and not spec[1]:
            self._left = spec[0]
            self._mode = _Mode.DISCARD
            return
        self._mode = _Mode.COMMAND
        reply, self._refusal = self._refusal or b"", None
        self._out += reply
        if self._refusal_counts:
            self._count_bad()

    def _command_line(self, line: bytes | LineError) -> None:
        head = self._head
        if isinstance(line, LineError):
            tag = head.tag if head is not None else self._long_tag
            self._reset_command()
            if line is LineError.TOO_LONG:
                self._bad(tag, "Command line too long", "TOOBIG")
            else:
                self._bad(tag, "Lines must end with CRLF")
            return
        if head is None:
            if not line:
                return  # an empty line: some clients send one as a keep-alive
            parsed = parse_head(line)
            if isinstance(parsed, Malformed):
                self._refuse(parsed.tag, line, parsed.reason)
                return
            if parsed.verb not in _VALID_IN:
                self._refuse(parsed.tag, line, f"Unknown command {parsed.verb}")
                return
            if self.state not in _VALID_IN[parsed.verb]:
                self._refuse(parsed.tag, line, _misplaced(parsed.verb, self.state))
                return
            head = self._head = parsed
        self._command += line
        if len(self._command) > self._settings.max_command_size:
            self._refuse(head.tag, line, "Command too long", code="TOOBIG")
            return
        spec = literal_at_end(line)
        if spec is None:
            self._finish_command(head)
        else:
            self._literal(head, line, *spec)

    def _literal(self, head: Head, line: bytes, size: int, sync: bool, binary: bool) -> None:
        settings = self._settings
        if head.verb == "APPEND":
            parsed = parse_command(bytes(self._command), settings, utf8=self.utf8)
            if isinstance(parsed, c.Append):
                self._start_append(parsed, line, sync)
                return
            if size > settings.max_literal_size and isinstance(parsed, Malformed):
                self._refuse(head.tag, line, parsed.reason)
                return
        if binary:
            self._refuse(head.tag, line, "literal8 is only allowed for APPEND's message")
        elif not sync and not settings.literal_plus and size > LITERAL_MINUS_LIMIT:
            self._refuse(head.tag, line, "Non-synchronizing literals are limited to 4096 octets",
                         code="TOOBIG")
        elif (size > settings.max_literal_size
              or len(self._command) + size > settings.max_command_size):
            self._refuse(head.tag, line, "Literal too big", code="TOOBIG")
        else:
            self._command += b"\r\n"
            self._left = size
            self._mode = _Mode.LITERAL
            if sync:
                self._out += b"+ Ready for literal data\r\n"

    def _start_append(self, append: c.Append, line: bytes, sync: bool) -> None:
        settings = self._settings
        if append.size > settings.max_append_size:
            self._refuse(append.tag, line, "Message too big", status=Status.NO, code="TOOBIG")
        elif not sync and not settings.literal_plus and append.size > LITERAL_MINUS_LIMIT:
            self._refuse(append.tag, line,
                         "Non-synchronizing literals are limited to 4096 octets", code="TOOBIG")
        else:
            self._reset_command()
            self._append = append
            self._append_sync = sync
            self._append_nul = False
            self._emit(append)

    def _append_end(self, line: bytes | LineError) -> None:
        append = self._append
        assert append is not None
        self._mode = _Mode.COMMAND
        if line == b"" and not self._append_nul:
            self._emit(AppendEnd(append.tag))
            return
        self._append = None
        self._emit(AppendAborted(append.tag))
        if self._append_nul:
            self._refuse(append.tag, b"", "NUL in the message: send it as literal8 (~{n})")
        elif isinstance(line, bytes):
            self._refuse(append.tag, line, "Only one message per APPEND")
        else:
            self._bad(append.tag, "Malformed line after the APPEND message")

    def _finish_command(self, head: Head) -> None:
        raw = bytes(self._command)
        self._reset_command()
        parsed = parse_command(raw, self._settings, utf8=self.utf8)
        match parsed:
            case Malformed(tag, reason, None):
                self._bad(tag, reason)
            case Malformed(tag, reason, code):
                self._no(tag or head.tag, reason, code)
            case _:
                self._dispatch(parsed)

    # --- commands the machine answers, and the rest ---------------------------------------------

    def _dispatch(self, command: c.Command) -> None:
        match command:
            case c.Capability(tag):
                self._out += ("* CAPABILITY " + " ".join(self.capabilities()) + "\r\n").encode()
                self._ok(tag, "CAPABILITY completed")
            case c.Logout(tag):
                self._out += encoder.status("*", Status.BYE, "Logging out", None)
                self._ok(tag, "LOGOUT completed")
                self._close(CloseReason.LOGOUT)
            case c.Id(tag):
                self._out += b'* ID ("name" "postwarden")\r\n'
                self._ok(tag, "ID completed")
                self._emit(command)
            case c.Namespace(tag):
                delimiter = encoder.string(encoder.DELIMITER.encode())
                self._out += b'* NAMESPACE (("" ' + delimiter + b")) NIL NIL\r\n"
                self._ok(tag, "NAMESPACE completed")
            case c.StartTLS(tag):
                if self.tls_active:
                    self._bad(tag, "TLS is already active")
                elif not self._settings.starttls_available:
                    self._no(tag, "TLS is not available")
                else:
                    self._ok(tag, "Begin TLS negotiation now")
                    self._mode = _Mode.TLS
                    self._emit(command)
            case c.Login(tag, username, password):
                if not self._auth_allowed:
                    self._no(tag, "Plaintext login is disabled; use STARTTLS", "PRIVACYREQUIRED")
                else:
                    self._emit(LoginAttempt(tag, "LOGIN", "", username, password))
            case c.Authenticate(tag, name, initial):
                mechanism = sasl.mechanism(name)
                if not self._auth_allowed:
                    self._no(tag, "Plaintext login is disabled; use STARTTLS", "PRIVACYREQUIRED")
                elif mechanism is None:
                    self._no(tag, "Unsupported authentication mechanism")
                else:
                    self._sasl, self._sasl_tag = mechanism, tag
                    self._sasl_step(mechanism.start(initial))
            case c.Enable(tag, names):
                self._enable(tag, names)
            case c.Idle(tag):
                self._out += b"+ idling\r\n"
                self._idle_tag = tag
                self._mode = _Mode.IDLE
                self._emit(command)
            case c.SetQuota(tag):
                self._no(tag, "Quota limits are set by the administrator", "NOPERM")
            case c.Compress(tag, mechanism):
                self._compress(tag, mechanism)
            case c.Select(tag, qresync=qresync) if qresync and "QRESYNC" not in self.enabled:
                self._bad(tag, "ENABLE QRESYNC first")
            case c.Fetch(tag, vanished=True) if "QRESYNC" not in self.enabled:
                self._bad(tag, "ENABLE QRESYNC first")
            case c.Search(returns=None) if self.imap4rev2:
                self._emit(dataclasses.replace(command, returns=()))  # RFC 9051 §6.4.4: ESEARCH
            case _:
                if _enables_condstore(command) and "CONDSTORE" not in self.enabled:
                    self.enabled.add("CONDSTORE")
                    self._emit(Enabled(("CONDSTORE",)))
                self._emit(command)

    def _enable(self, tag: str, names: tuple[str, ...]) -> None:
        new: list[str] = []
        for name in names:
            known = _ENABLEABLE.get(name)
            implied = ["CONDSTORE", "QRESYNC"] if known == "QRESYNC" else [known]
            for capability in implied:
                if capability is not None and capability not in self.enabled:
                    self.enabled.add(capability)
                    new.append(capability)
        self._out += ("* ENABLED" + "".join(" " + n for n in new) + "\r\n").encode()
        self._ok(tag, "ENABLE completed")
        if new:
            self._emit(Enabled(tuple(new)))

    def _compress(self, tag: str, mechanism: str) -> None:
        if self.compressed:
            self._no(tag, "Compression is already active", "COMPRESSIONACTIVE")
        elif mechanism != "DEFLATE" or not self._settings.compress_available:
            self._no(tag, f"Unsupported compression mechanism {mechanism}", "CANNOT")
        else:
            self._ok(tag, "DEFLATE active")
            self.compressed = True
            self._emit(CompressionStarted(self._lines.take(len(self._lines))))

    def _sasl_step(self, step: sasl.Step) -> None:
        mechanism, tag = self._sasl, self._sasl_tag
        assert mechanism is not None
        self._mode = _Mode.COMMAND
        match step:
            case sasl.Challenge(text):
                self._out += b"+ " + text.encode("ascii") + b"\r\n"
                self._mode = _Mode.AUTH
                return
            case sasl.Credentials(authzid, username, password):
                self._emit(LoginAttempt(tag, mechanism.name, authzid, username, password))
            case sasl.Failure.CANCELLED:
                self._bad(tag, "Authentication cancelled")
            case sasl.Failure.BAD_BASE64:
                self._bad(tag, "Invalid base64 in the SASL response")
            case sasl.Failure.MALFORMED:
                self._bad(tag, "Malformed SASL response")
        self._sasl = None

    def _auth_line(self, line: bytes | LineError) -> None:
        mechanism = self._sasl
        assert mechanism is not None
        if isinstance(line, LineError):
            self._sasl = None
            self._mode = _Mode.COMMAND
            self._bad(self._sasl_tag, "Malformed SASL response line")
            return
        self._sasl_step(mechanism.respond(line.decode("latin-1")))

    def _idle_line(self, line: bytes | LineError) -> None:
        self._mode = _Mode.COMMAND
        if isinstance(line, bytes) and line.upper() == b"DONE":
            self._ok(self._idle_tag, "IDLE terminated")
        else:
            self._bad(self._idle_tag, "Expected DONE")
        self._emit(IdleDone(self._idle_tag))


def _tag_of(start: bytes) -> str | None:
    head = parse_head(start.split(b" ", 1)[0] + b" X")
    return head.tag if isinstance(head, Head) else None


def _enables_condstore(command: c.Command) -> bool:
    """Commands that turn CONDSTORE on by using it (RFC 7162 §3.1)."""
    match command:
        case c.Select(condstore=True):
            return True
        case c.Fetch(changed_since=changed, attributes=attributes):
            return changed is not None or Simple.MODSEQ in attributes
        case c.Store(unchanged_since=unchanged):
            return unchanged is not None
        case c.Search(key=key) | c.Sort(key=key) | c.Thread(key=key):
            return uses_modseq(key)
        case c.Status(items=items):
            return c.StatusItem.HIGHESTMODSEQ in items
    return False
