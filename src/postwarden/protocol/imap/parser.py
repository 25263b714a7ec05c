"""The IMAP command grammar (RFC 3501, RFC 9051 and the extensions we offer).

``parse_command`` turns one whole command (see ``reader``) into a value of
``commands``; a malformed command comes back as ``Malformed`` carrying the
tag (when one could be read) and the reason, never as an exception. The
grammar does not depend on the session's state: which command is allowed
when is the machine's business.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import fetch as f
from postwarden.protocol.imap import search as s
from postwarden.protocol.imap import utf7
from postwarden.protocol.imap.reader import (
    LITERAL_SPEC,
    MAX_NUMBER64,
    ParseError,
    Reader,
    Unsupported,
    as_text,
)
from postwarden.protocol.imap.sequence import SAVED_RESULT, SeqRange, SequenceSet
from postwarden.protocol.imap.settings import IMAPSettings

SEARCH_CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"
MAX_ID_PAIRS = 30  # RFC 2971 §3.3
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
_FLAG_SEARCH_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),
}
_HEADER_SEARCH_KEYS = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
_DATE_SEARCH_KEYS = {
    "BEFORE": (False, s.DateOp.BEFORE), "ON": (False, s.DateOp.ON),
    "SINCE": (False, s.DateOp.SINCE), "SENTBEFORE": (True, s.DateOp.BEFORE),
    "SENTON": (True, s.DateOp.ON), "SENTSINCE": (True, s.DateOp.SINCE),
}
_SIMPLE_FETCH = {item.value: item for item in f.Simple}
_SECTION_TEXTS = {item.value: item for item in f.SectionText}
_SEARCH_RETURNS = {item.value: item for item in c.SearchReturn}
_STATUS_ITEMS = {item.value: item for item in c.StatusItem}
_SORT_KEYS = {item.value: item for item in c.SortKey}
_LIST_SELECT = {item.value: item for item in c.ListSelect}
_LIST_RETURN = {item.value: item for item in c.ListReturn}
THREAD_ALGORITHMS = ("REFERENCES", "ORDEREDSUBJECT")


@dataclass(frozen=True, slots=True)
class Malformed:
    """A command that cannot be carried out as written.

    ``tag`` is None when not even a tag could be read (answer ``* BAD``).
    ``code`` set means a NO with that response code (e.g. BADCHARSET) rather
    than a BAD.
    """

    tag: str | None
    reason: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """The tag and command name, read from a command's first line."""

    tag: str
    verb: str  # upper-case; the UID forms are "UID FETCH" etc.


def parse_head(line: bytes) -> Head | Malformed:
    """Tag and command name, so state rules can refuse a command before its literals."""
    reader = Reader(line, max_nesting=1, max_items=1)
    try:
        tag = reader.tag()
    except ParseError:
        return Malformed(None, "Expected a tag")
    try:
        if not reader.skip(b" "):
            raise ParseError("Expected a space and a command after the tag")
        verb = reader.keyword()
        if verb == "UID":
            reader.sp()
            verb = "UID " + reader.keyword()
    except ParseError as error:
        return Malformed(tag, error.reason)
    if not (reader.at_end() or reader.peek() == b" "):
        return Malformed(tag, "Expected a space after the command name")
    return Head(tag, verb)


def parse_command(raw: bytes, settings: IMAPSettings, *, utf8: bool) -> c.Command | Malformed:
    """One whole command; ``utf8`` after ENABLE IMAP4rev2 (UTF-8 mailbox names)."""
    head = parse_head(raw.split(b"\r\n", 1)[0])
    if isinstance(head, Malformed):
        return head
    reader = Reader(raw, max_nesting=settings.max_nesting, max_items=settings.max_list_items)
    reader.pos = len(head.tag) + 1 + len(head.verb)
    parser = _Parser(reader, settings, utf8=utf8)
    try:
        command = parser.command(head.tag, head.verb)
        reader.end()
    except Unsupported as error:
        return Malformed(head.tag, error.reason, error.code)
    except ParseError as error:
        return Malformed(head.tag, error.reason)
    return command


def literal_at_end(line: bytes) -> tuple[int, bool, bool] | None:
    """``(size, synchronising, binary)`` if the line ends with a literal's size."""
    match = LITERAL_SPEC.search(line, max(0, len(line) - 24))
    if match is None:
        return None
    return int(match[2]), not match[3], bool(match[1])


class _Parser:
    """Recursive descent over one command; every method consumes what it names."""

    def __init__(self, reader: Reader, settings: IMAPSettings, *, utf8: bool) -> None:
        self.r = reader
        self.settings = settings
        self.utf8 = utf8

    def command(self, tag: str, verb: str) -> c.Command:
        r = self.r
        uid = verb.startswith("UID ")
        match verb:
            case "CAPABILITY":
                return c.Capability(tag)
            case "NOOP":
                return c.Noop(tag)
            case "LOGOUT":
                return c.Logout(tag)
            case "ID":
                r.sp()
                return c.Id(tag, self.id_params())
            case "STARTTLS":
                return c.StartTLS(tag)
            case "LOGIN":
                r.sp()
                user = as_text(r.astring("a user name"), "The user name")
                r.sp()
                password = as_text(r.astring("a password"), "The password")
                return c.Login(tag, user, password)
            case "AUTHENTICATE":
                r.sp()
                mechanism = r.keyword()
                initial = r.atom("an initial response") if r.skip(b" ") else None
                return c.Authenticate(tag, mechanism, initial)
            case "ENABLE":
                names: list[str] = []
                while r.skip(b" "):
                    names.append(r.keyword())
                    r.count(len(names))
                if not names:
                    raise ParseError("ENABLE needs at least one capability")
                return c.Enable(tag, tuple(names))
            case "SELECT" | "EXAMINE":
                r.sp()
                mailbox = self.mailbox()
                condstore, qresync = self.select_params()
                return c.Select(tag, mailbox, verb == "EXAMINE", condstore, qresync)
            case "CREATE":
                r.sp()
                mailbox = self.mailbox()
                return c.Create(tag, mailbox, self.create_params())
            case "DELETE":
                r.sp()
                return c.Delete(tag, self.mailbox())
            case "RENAME":
                r.sp()
                old = self.mailbox()
                r.sp()
                return c.Rename(tag, old, self.mailbox())
            case "SUBSCRIBE":
                r.sp()
                return c.Subscribe(tag, self.mailbox())
            case "UNSUBSCRIBE":
                r.sp()
                return c.Unsubscribe(tag, self.mailbox())
            case "LIST":
                return self.list_command(tag)
            case "LSUB":
                r.sp()
                reference = self.mailbox_text(r.astring("a reference name"))
                r.sp()
                pattern = self.mailbox_text(r.list_mailbox())
                return c.List(tag, reference, (pattern,), lsub=True)
            case "NAMESPACE":
                return c.Namespace(tag)
            case "STATUS":
                r.sp()
                mailbox = self.mailbox()
                r.sp()
                return c.Status(tag, mailbox, self.status_items())
            case "APPEND":
                return self.append(tag)
            case "IDLE":
                return c.Idle(tag)
            case "GETQUOTA":
                r.sp()
                return c.GetQuota(tag, as_text(r.astring("a quota root"), "The quota root"))
            case "GETQUOTAROOT":
                r.sp()
                return c.GetQuotaRoot(tag, self.mailbox())
            case "SETQUOTA":
                return self.setquota(tag)
            case "COMPRESS":
                r.sp()
                return c.Compress(tag, r.keyword())
            case "CHECK":
                return c.Check(tag)
            case "CLOSE":
                return c.Close(tag)
            case "UNSELECT":
                return c.Unselect(tag)
            case "EXPUNGE":
                return c.Expunge(tag)
            case "UID EXPUNGE":
                r.sp()
                return c.Expunge(tag, self.sequence_set())
            case "SEARCH" | "UID SEARCH":
                return self.search(tag, uid)
            case "FETCH" | "UID FETCH":
                return self.fetch(tag, uid)
            case "STORE" | "UID STORE":
                return self.store(tag, uid)
            case "COPY" | "UID COPY" | "MOVE" | "UID MOVE":
                r.sp()
                messages = self.sequence_set()
                r.sp()
                return c.Copy(tag, messages, self.mailbox(), uid, verb.endswith("MOVE"))
            case "SORT" | "UID SORT":
                return self.sort(tag, uid)
            case "THREAD" | "UID THREAD":
                r.sp()
                algorithm = r.keyword()
                if algorithm not in THREAD_ALGORITHMS:
                    raise ParseError(f"Unknown THREAD algorithm {algorithm}")
                charset = self.charset()
                return c.Thread(tag, algorithm, charset, self.search_keys(), uid)
        raise ParseError(f"Unknown command {verb}")

    # --- strings and names -------------------------------------------------------------

    def mailbox_text(self, raw: bytes) -> str:
        """A mailbox name or pattern as sent: UTF-8 after IMAP4rev2, else modified UTF-7."""
        if self.utf8:
            return as_text(raw, "The mailbox name")
        try:
            return utf7.decode(raw.decode("ascii"))
        except (UnicodeDecodeError, utf7.Utf7Error):
            raise ParseError("Mailbox names must be modified UTF-7 (RFC 3501 5.1.3)") from None

    def mailbox(self) -> str:
        name = self.mailbox_text(self.r.astring("a mailbox name"))
        if not name:
            raise ParseError("Empty mailbox name")
        return "INBOX" if name.upper() == "INBOX" else name

    def flag(self, *, storable: bool) -> str:
        r = self.r
        if r.skip(b"\\"):
            name = "\\" + r.atom("a flag name")
            canonical = _SYSTEM_FLAGS.get(name.upper(), name)
            if storable and canonical == "\\Recent":
                raise ParseError("\\Recent cannot be set by a client")
            return canonical
        return r.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        return tuple(self.r.items(lambda: self.flag(storable=True)))

    def date(self) -> datetime.date:
        r = self.r
        quoted = r.skip(b'"')
        day = r.number(what="a day")
        r.expect(b"-", "'-' in a date")
        month_name, _, year_text = r.atom("a month").upper().partition("-")
        if month_name not in _MONTHS or not (year_text.isdigit() and len(year_text) == 4):
            raise ParseError("Expected a date like 1-Jan-2026")
        if quoted:
            r.expect(b'"', "the closing quote of a date")
        try:
            return datetime.date(int(year_text), _MONTHS.index(month_name) + 1, day)
        except ValueError:
            raise ParseError("No such date") from None

    def date_time(self) -> datetime.datetime:
        """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (the day may be space-padded)."""
        raw = self.r.quoted()
        text = raw.decode("ascii", "replace")
        try:
            stamp = datetime.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")
        except ValueError:
            raise ParseError('Expected a date-time like "01-Jan-2026 12:00:00 +0000"') from None
        if len(raw) != 26 or raw[2:3] != b"-":
            raise ParseError('Expected a date-time like "01-Jan-2026 12:00:00 +0000"')
        return stamp

    # --- sequence sets ---------------------------------------------------------------------

    def seq_number(self) -> int | None:
        if self.r.skip(b"*"):
            return None
        return self.r.nz_number("a message number or '*'")

    def sequence_set(self) -> SequenceSet:
        r = self.r
        if r.skip(b"$"):
            return SAVED_RESULT
        ranges: list[SeqRange] = []
        while True:
            first = self.seq_number()
            last = self.seq_number() if r.skip(b":") else first
            ranges.append(SeqRange(first, last))
            if len(ranges) > self.settings.max_sequence_ranges:
                raise ParseError("Too many ranges in a sequence set")
            if not r.skip(b","):
                return SequenceSet(tuple(ranges))

    # --- authenticated-state commands ---------------------------------------------------------

    def id_params(self) -> tuple[tuple[str, str | None], ...] | None:
        r = self.r
        if r.peek_upper("NIL"):
            r.pos += 3
            return None

        def pair() -> tuple[str, str | None]:
            key = as_text(r.string(), "An ID field")
            r.sp()
            value = r.nstring()
            return key, None if value is None else as_text(value, "An ID value")

        pairs = r.items(pair)
        if len(pairs) > MAX_ID_PAIRS:
            raise ParseError("At most 30 ID field-value pairs")
        return tuple(pairs)

    def select_params(self) -> tuple[bool, c.QResync | None]:
        r = self.r
        condstore, qresync = False, None
        if not r.skip(b" "):
            return condstore, qresync
        r.open()
        while True:
            name = r.keyword()
            if name == "CONDSTORE":
                condstore = True
            elif name == "QRESYNC":
                r.sp()
                qresync = self.qresync()
            else:
                raise ParseError(f"Unknown SELECT parameter {name}")
            if not r.skip(b" "):
                break
        r.close()
        return condstore, qresync

    def qresync(self) -> c.QResync:
        r = self.r
        r.open()
        uidvalidity = r.nz_number("a UIDVALIDITY")
        r.sp()
        modseq = r.number(MAX_NUMBER64, "a mod-sequence")
        if modseq == 0:
            raise ParseError("Expected a non-zero mod-sequence")
        known_uids = None
        seq_match = None
        if r.skip(b" "):
            if r.peek() != b"(":
                known_uids = self.sequence_set()
                if known_uids.saved:
                    raise ParseError("$ is not allowed in QRESYNC")
                r.skip(b" ")
            if r.peek() == b"(":
                r.open()
                known_seqs = self.sequence_set()
                r.sp()
                known_seq_uids = self.sequence_set()
                r.close()
                seq_match = (known_seqs, known_seq_uids)
        r.close()
        return c.QResync(uidvalidity, modseq, known_uids, seq_match)

    def create_params(self) -> tuple[str, ...]:
        r = self.r
        if not r.skip(b" "):
            return ()
        r.open()
        uses: tuple[str, ...] = ()
        while True:
            if r.keyword() != "USE":
                raise ParseError("The only CREATE parameter is USE")
            r.sp()
            uses = self.flag_list()
            if not r.skip(b" "):
                break
        r.close()
        return uses

    def list_command(self, tag: str) -> c.List:
        r = self.r
        r.sp()
        select: set[c.ListSelect] = set()
        extended = False
        if r.peek() == b"(":
            extended = True
            for name in self.option_list():
                option = _LIST_SELECT.get(name)
                if option is None:
                    raise ParseError(f"Unknown LIST selection option {name}")
                select.add(option)
            r.sp()
        reference = self.mailbox_text(r.astring("a reference name"))
        r.sp()
        patterns: list[str] = []
        if r.peek() == b"(":
            extended = True
            patterns = r.items(lambda: self.mailbox_text(r.list_mailbox()), empty=False)
        else:
            patterns.append(self.mailbox_text(r.list_mailbox()))
        returns: set[c.ListReturn] = set()
        status: tuple[c.StatusItem, ...] = ()
        if r.skip(b" "):
            extended = True
            if r.keyword() != "RETURN":
                raise ParseError("Expected RETURN")
            r.sp()
            r.open()
            while not r.skip(b")"):
                if returns or status:
                    r.sp()
                name = r.keyword()
                if name == "STATUS":
                    r.sp()
                    status = self.status_items()
                elif name in _LIST_RETURN:
                    returns.add(_LIST_RETURN[name])
                else:
                    raise ParseError(f"Unknown LIST return option {name}")
            r.depth -= 1
        if c.ListSelect.RECURSIVEMATCH in select and select == {c.ListSelect.RECURSIVEMATCH}:
            raise ParseError("RECURSIVEMATCH needs another selection option")
        return c.List(tag, reference, tuple(patterns), frozenset(select), frozenset(returns),
                      status, extended=extended)

    def option_list(self) -> list[str]:
        """``(A B C)`` of keywords, possibly empty."""
        return self.r.items(self.r.keyword)

    def status_items(self) -> tuple[c.StatusItem, ...]:
        items: list[c.StatusItem] = []
        names = self.option_list()
        if not names:
            raise ParseError("STATUS needs at least one item")
        for name in names:
            item = _STATUS_ITEMS.get(name)
            if item is None:
                raise ParseError(f"Unknown STATUS item {name}")
            items.append(item)
        return tuple(items)

    def append(self, tag: str) -> c.Append:
        """The head of APPEND up to its message literal's size, which ends the command here."""
        r = self.r
        r.sp()
        mailbox = self.mailbox()
        r.sp()
        flags: tuple[str, ...] = ()
        if r.peek() == b"(":
            flags = self.flag_list()
            r.sp()
        internal_date = None
        if r.peek() == b'"':
            internal_date = self.date_time()
            r.sp()
        spec = literal_at_end(r.data[r.pos :])
        if spec is None or LITERAL_SPEC.match(r.data, r.pos) is None:
            raise ParseError("Expected the message as a literal")
        r.pos = len(r.data)
        size, _, binary = spec
        return c.Append(tag, mailbox, flags, internal_date, size, binary)

    def setquota(self, tag: str) -> c.SetQuota:
        r = self.r
        r.sp()
        root = as_text(r.astring("a quota root"), "The quota root")
        r.sp()

        def limit() -> tuple[str, int]:
            name = r.keyword()
            r.sp()
            return name, r.number(MAX_NUMBER64, "a quota limit")

        return c.SetQuota(tag, root, tuple(r.items(limit)))

    # --- selected-state commands -----------------------------------------------------------------

    def charset(self) -> str:
        r = self.r
        r.sp()
        name = as_text(r.astring("a charset"), "The charset").upper()
        if name not in SEARCH_CHARSETS:
            raise Unsupported(f"Unsupported charset {name}", BADCHARSET)
        return name

    def search(self, tag: str, uid: bool) -> c.Search:
        r = self.r
        returns: tuple[c.SearchReturn, ...] | None = None
        if r.peek_upper(" RETURN "):
            r.pos += 8
            chosen: list[c.SearchReturn] = []
            for name in self.option_list():
                option = _SEARCH_RETURNS.get(name)
                if option is None:
                    raise ParseError(f"Unknown SEARCH return option {name}")
                chosen.append(option)
            returns = tuple(dict.fromkeys(chosen))
        charset = "US-ASCII"
        if r.peek_upper(" CHARSET "):
            r.pos += 8
            charset = self.charset()
        return c.Search(tag, self.search_keys(), uid, charset, returns)

    def search_keys(self) -> s.SearchKey:
        """``1*(SP search-key)``: one key, or an And of them."""
        r = self.r
        keys: list[s.SearchKey] = []
        while r.skip(b" "):
            keys.append(self.search_key())
            r.count(len(keys))
        if not keys:
            raise ParseError("Expected search criteria")
        return keys[0] if len(keys) == 1 else s.And(tuple(keys))

    def search_key(self) -> s.SearchKey:
        r = self.r
        r.depth += 1
        if r.depth > r.max_nesting:
            raise ParseError("Search criteria nested too deeply")
        try:
            return self._search_key()
        finally:
            r.depth -= 1

    def _search_key(self) -> s.SearchKey:
        r = self.r
        first = r.peek()
        if first == b"(":
            r.open()
            keys = [self.search_key()]
            while r.skip(b" "):
                keys.append(self.search_key())
                r.count(len(keys))
            r.close()
            return keys[0] if len(keys) == 1 else s.And(tuple(keys))
        if first in (b"*", b"$") or first.isdigit():
            return s.Sequence(self.sequence_set())
        name = r.keyword()
        if name in _FLAG_SEARCH_KEYS:
            flag, present = _FLAG_SEARCH_KEYS[name]
            return s.FlagKey(flag, present)
        if name in _HEADER_SEARCH_KEYS:
            r.sp()
            return s.Header(_HEADER_SEARCH_KEYS[name], self.search_string())
        if name in _DATE_SEARCH_KEYS:
            sent, op = _DATE_SEARCH_KEYS[name]
            r.sp()
            day = self.date()
            return s.SentDate(op, day) if sent else s.InternalDate(op, day)
        match name:
            case "ALL":
                return s.All()
            case "NEW":
                return s.And((s.FlagKey("\\Recent", True), s.FlagKey("\\Seen", False)))
            case "BODY":
                r.sp()
                return s.Body(self.search_string())
            case "TEXT":
                r.sp()
                return s.Text(self.search_string())
            case "HEADER":
                r.sp()
                field = as_text(r.astring("a header field name"), "The header field name")
                r.sp()
                return s.Header(field, self.search_string())
            case "KEYWORD" | "UNKEYWORD":
                r.sp()
                return s.FlagKey(r.atom("a keyword"), name == "KEYWORD")
            case "LARGER" | "SMALLER":
                r.sp()
                size_op = s.SizeOp.LARGER if name == "LARGER" else s.SizeOp.SMALLER
                return s.Size(size_op, r.number(MAX_NUMBER64, "a size"))
            case "NOT":
                r.sp()
                return s.Not(self.search_key())
            case "OR":
                r.sp()
                left = self.search_key()
                r.sp()
                return s.Or(left, self.search_key())
            case "UID":
                r.sp()
                return s.Uid(self.sequence_set())
            case "MODSEQ":
                return self.modseq_key()
        raise ParseError(f"Unknown search key {name}")

    def search_string(self) -> str:
        return as_text(self.r.astring("a search string"), "The search string")

    def modseq_key(self) -> s.ModSeq:
        r = self.r
        r.sp()
        entry = None
        if r.peek() == b'"':
            entry = as_text(r.quoted(), "The entry name")
            r.sp()
            if r.keyword() not in ("PRIV", "SHARED", "ALL"):
                raise ParseError("Expected priv, shared or all")
            r.sp()
        return s.ModSeq(r.number(MAX_NUMBER64, "a mod-sequence"), entry)

    def fetch(self, tag: str, uid: bool) -> c.Fetch:
        r = self.r
        r.sp()
        messages = self.sequence_set()
        r.sp()
        attributes: list[f.FetchAttribute] = []
        if r.peek() == b"(":
            attributes = r.items(self.fetch_attribute, empty=False)
        else:
            start = r.pos
            name = r.name()
            if name in f.MACROS:
                attributes.extend(f.MACROS[name])
            else:
                r.pos = start
                attributes.append(self.fetch_attribute())
        changed_since = None
        vanished = False
        if r.skip(b" "):
            for_modifiers = self.modifiers()
            for name, value in for_modifiers:
                if name == "CHANGEDSINCE" and value is not None:
                    changed_since = value
                elif name == "VANISHED" and value is None:
                    vanished = True
                else:
                    raise ParseError(f"Unknown or malformed FETCH modifier {name}")
        if vanished and not (uid and changed_since is not None):
            raise ParseError("VANISHED needs UID FETCH with CHANGEDSINCE")
        if uid and f.Simple.UID not in attributes:
            attributes.append(f.Simple.UID)
        if changed_since is not None and f.Simple.MODSEQ not in attributes:
            attributes.append(f.Simple.MODSEQ)
        return c.Fetch(tag, messages, tuple(dict.fromkeys(attributes)), uid, changed_since,
                       vanished)

    def modifiers(self) -> list[tuple[str, int | None]]:
        """``(NAME [number] ...)``: FETCH and STORE modifiers (RFC 4466)."""
        r = self.r
        r.open()
        found: list[tuple[str, int | None]] = []
        while True:
            name = r.keyword()
            value = None
            if r.peek(2)[:1] == b" " and r.peek(2)[1:].isdigit():
                r.pos += 1
                value = r.number(MAX_NUMBER64, "a mod-sequence")
            found.append((name, value))
            r.count(len(found))
            if not r.skip(b" "):
                break
        r.close()
        return found

    def fetch_attribute(self) -> f.FetchAttribute:
        r = self.r
        name = r.name()
        if name in _SIMPLE_FETCH and r.peek() != b"[":
            return _SIMPLE_FETCH[name]
        match name:
            case "BODY" | "BODY.PEEK":
                section = self.section()
                return f.BodySection(section, name == "BODY.PEEK", self.partial())
            case "BINARY" | "BINARY.PEEK":
                part = self.binary_part()
                return f.BinarySection(part, name == "BINARY.PEEK", self.partial())
            case "BINARY.SIZE":
                return f.BinarySize(self.binary_part())
        raise ParseError(f"Unknown FETCH attribute {name}")

    def binary_part(self) -> tuple[int, ...]:
        r = self.r
        r.expect(b"[", "'['")
        part = self.part_numbers() if r.peek() != b"]" else ()
        r.expect(b"]", "']' after a part number")
        return part

    def part_numbers(self) -> tuple[int, ...]:
        r = self.r
        numbers = [r.nz_number("a part number")]
        while r.peek() == b"." and r.data[r.pos + 1 : r.pos + 2].isdigit():
            r.pos += 1
            numbers.append(r.nz_number("a part number"))
            r.count(len(numbers))
        return tuple(numbers)

    def section(self) -> f.Section:
        r = self.r
        r.expect(b"[", "'['")
        if r.skip(b"]"):
            return f.Section()
        part: tuple[int, ...] = ()
        if r.peek().isdigit():
            part = self.part_numbers()
            if r.skip(b"]"):
                return f.Section(part)
            r.expect(b".", "'.' after a part number")
        word = r.name()
        text = _SECTION_TEXTS.get(word)
        if text is None or (text is f.SectionText.MIME and not part):
            raise ParseError(f"Unknown section {word}")
        fields: tuple[str, ...] = ()
        if text in (f.SectionText.HEADER_FIELDS, f.SectionText.HEADER_FIELDS_NOT):
            r.sp()
            fields = self.header_list()
        r.expect(b"]", "']' at the end of the section")
        return f.Section(part, text, fields)

    def header_list(self) -> tuple[str, ...]:
        r = self.r
        names = r.items(lambda: as_text(r.astring("a header field name"), "A header field name"),
                        empty=False)
        if any(not name or not name.isascii() or ":" in name for name in names):
            raise ParseError("Invalid header field name")
        return tuple(names)

    def partial(self) -> f.Partial | None:
        r = self.r
        if not r.skip(b"<"):
            return None
        offset = r.number(what="a partial offset")
        r.expect(b".", "'.' in a partial")
        length = r.nz_number("a partial length")
        r.expect(b">", "'>' at the end of a partial")
        return f.Partial(offset, length)

    def store(self, tag: str, uid: bool) -> c.Store:
        r = self.r
        r.sp()
        messages = self.sequence_set()
        r.sp()
        unchanged_since = None
        if r.peek() == b"(":
            for name, value in self.modifiers():
                if name != "UNCHANGEDSINCE" or value is None:
                    raise ParseError(f"Unknown or malformed STORE modifier {name}")
                unchanged_since = value
            r.sp()
        mode = c.StoreMode.REPLACE
        if r.skip(b"+"):
            mode = c.StoreMode.ADD
        elif r.skip(b"-"):
            mode = c.StoreMode.REMOVE
        name = r.name()
        if name not in ("FLAGS", "FLAGS.SILENT"):
            raise ParseError("Expected FLAGS, +FLAGS or -FLAGS")
        r.sp()
        if r.peek() == b"(":
            flags = self.flag_list()
        else:
            names = [self.flag(storable=True)]
            while r.skip(b" "):
                names.append(self.flag(storable=True))
                r.count(len(names))
            flags = tuple(names)
        return c.Store(tag, messages, mode, flags, name.endswith(".SILENT"), uid,
                       unchanged_since)

    def sort(self, tag: str, uid: bool) -> c.Sort:
        r = self.r
        r.sp()
        criteria: list[c.SortCriterion] = []
        names = self.option_list()
        reverse = False
        for name in names:
            if name == "REVERSE" and not reverse:
                reverse = True
                continue
            key = _SORT_KEYS.get(name)
            if key is None:
                raise ParseError(f"Unknown sort key {name}")
            criteria.append(c.SortCriterion(key, reverse))
            reverse = False
        if not criteria or reverse:
            raise ParseError("Expected sort criteria")
        charset = self.charset()
        return c.Sort(tag, tuple(criteria), charset, self.search_keys(), uid)

