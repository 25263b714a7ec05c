"""The IMAP command grammar: command text in, command values (or a reason) out."""

from __future__ import annotations

import datetime

import pytest

from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import fetch as f
from postwarden.protocol.imap import search as s
from postwarden.protocol.imap import utf7
from postwarden.protocol.imap.parser import BADCHARSET, Malformed, parse_command
from postwarden.protocol.imap.sequence import SAVED_RESULT, SeqRange, SequenceSet, compact
from postwarden.protocol.imap.settings import IMAPSettings

SETTINGS = IMAPSettings("mail.example.test", False, True, True)
ONE = SequenceSet((SeqRange(1, 1),))
ALL_MESSAGES = SequenceSet((SeqRange(1, None),))
UTC = datetime.UTC


def parse(raw: bytes, *, utf8: bool = False) -> object:
    return parse_command(raw, SETTINGS, utf8=utf8)


VALID = [
    (b"a CAPABILITY", c.Capability("a")),
    (b"a noop", c.Noop("a")),
    (b'a LOGIN "joe" "pa\\"ss\\\\"', c.Login("a", "joe", 'pa"ss\\')),
    (b"a LOGIN {3}\r\njoe {2+}\r\npw", c.Login("a", "joe", "pw")),
    (b"a AUTHENTICATE plain AGpvZQBwdw==", c.Authenticate("a", "PLAIN", "AGpvZQBwdw==")),
    (b"a AUTHENTICATE LOGIN", c.Authenticate("a", "LOGIN", None)),
    (b"a ENABLE IMAP4rev2 condstore", c.Enable("a", ("IMAP4REV2", "CONDSTORE"))),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("name" "mutt" "os" NIL)', c.Id("a", (("name", "mutt"), ("os", None)))),
    (b"a SELECT inbox", c.Select("a", "INBOX")),
    (b"a EXAMINE Archive (CONDSTORE)", c.Select("a", "Archive", True, True)),
    (b"a SELECT x (QRESYNC (7 42 1:9 (1,3 4,8)))",
     c.Select("a", "x", qresync=c.QResync(
         7, 42, SequenceSet((SeqRange(1, 9),)),
         (SequenceSet((SeqRange(1, 1), SeqRange(3, 3))),
          SequenceSet((SeqRange(4, 4), SeqRange(8, 8))))))),
    (b"a SELECT &AMQ-rger", c.Select("a", "\u00c4rger")),
    (b"a CREATE Sent (USE (\\Sent))", c.Create("a", "Sent", ("\\Sent",))),
    (b"a CREATE a/b", c.Create("a", "a/b")),
    (b"a DELETE a/b", c.Delete("a", "a/b")),
    (b'a RENAME "old box" new', c.Rename("a", "old box", "new")),
    (b"a SUBSCRIBE x", c.Subscribe("a", "x")),
    (b"a UNSUBSCRIBE x", c.Unsubscribe("a", "x")),
    (b'a LIST "" *', c.List("a", "", ("*",))),
    (b"a LIST ~ a/%", c.List("a", "~", ("a/%",))),
    (b'a LSUB "" %', c.List("a", "", ("%",), lsub=True)),
    (b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX "*") RETURN (CHILDREN STATUS (MESSAGES))',
     c.List("a", "", ("INBOX", "*"),
            frozenset({c.ListSelect.SUBSCRIBED, c.ListSelect.RECURSIVEMATCH}),
            frozenset({c.ListReturn.CHILDREN}), (c.StatusItem.MESSAGES,), extended=True)),
    (b'a LIST "" % RETURN (SPECIAL-USE)',
     c.List("a", "", ("%",), returns=frozenset({c.ListReturn.SPECIAL_USE}), extended=True)),
    (b"a NAMESPACE", c.Namespace("a")),
    (b"a STATUS INBOX (MESSAGES UNSEEN SIZE HIGHESTMODSEQ APPENDLIMIT DELETED)",
     c.Status("a", "INBOX", (c.StatusItem.MESSAGES, c.StatusItem.UNSEEN, c.StatusItem.SIZE,
                             c.StatusItem.HIGHESTMODSEQ, c.StatusItem.APPENDLIMIT,
                             c.StatusItem.DELETED))),
    (b"a APPEND Drafts {10}", c.Append("a", "Drafts", (), None, 10)),
    (b'a APPEND Drafts (\\Draft $Fwd) " 5-Nov-2026 09:03:04 -0130" ~{7+}',
     c.Append("a", "Drafts", ("\\Draft", "$Fwd"),
              datetime.datetime(2026, 11, 5, 9, 3, 4,
                                tzinfo=datetime.timezone(-datetime.timedelta(minutes=90))),
              7, binary=True)),
    (b"a IDLE", c.Idle("a")),
    (b'a GETQUOTA ""', c.GetQuota("a", "")),
    (b"a GETQUOTAROOT INBOX", c.GetQuotaRoot("a", "INBOX")),
    (b'a SETQUOTA "" (STORAGE 512)', c.SetQuota("a", "", (("STORAGE", 512),))),
    (b"a COMPRESS deflate", c.Compress("a", "DEFLATE")),
    (b"a CHECK", c.Check("a")),
    (b"a CLOSE", c.Close("a")),
    (b"a UNSELECT", c.Unselect("a")),
    (b"a EXPUNGE", c.Expunge("a")),
    (b"a UID EXPUNGE 3:5,9", c.Expunge("a", SequenceSet((SeqRange(3, 5), SeqRange(9, 9))))),
    (b"a COPY 1 Trash", c.Copy("a", ONE, "Trash")),
    (b"a uid move $ Trash", c.Copy("a", SAVED_RESULT, "Trash", uid=True, move=True)),
    (b"a STORE 1 FLAGS \\Seen", c.Store("a", ONE, c.StoreMode.REPLACE, ("\\Seen",))),
    (b"a STORE 1 FLAGS \\Seen $Work",
     c.Store("a", ONE, c.StoreMode.REPLACE, ("\\Seen", "$Work"))),
    (b"a STORE 1:* +FLAGS.SILENT (\\deleted foo)",
     c.Store("a", ALL_MESSAGES, c.StoreMode.ADD, ("\\Deleted", "foo"), silent=True)),
    (b"a UID STORE 1 (UNCHANGEDSINCE 12) -FLAGS ()",
     c.Store("a", ONE, c.StoreMode.REMOVE, (), uid=True, unchanged_since=12)),
    (b"a FETCH 1 FAST", c.Fetch("a", ONE, f.MACROS["FAST"])),
    (b"a FETCH 1 ALL", c.Fetch("a", ONE, f.MACROS["ALL"])),
    (b"a FETCH 1 FULL", c.Fetch("a", ONE, f.MACROS["FULL"])),
    (b"a FETCH 1 (uid rfc822.size)", c.Fetch("a", ONE, (f.Simple.UID, f.Simple.RFC822_SIZE))),
    (b"a UID FETCH 1:* FLAGS", c.Fetch("a", ALL_MESSAGES, (f.Simple.FLAGS, f.Simple.UID), True)),
    (b"a FETCH 1 BODY[]", c.Fetch("a", ONE, (f.BodySection(f.Section()),))),
    (b"a FETCH 1 BODY.PEEK[1.2.MIME]<10.20>",
     c.Fetch("a", ONE, (f.BodySection(f.Section((1, 2), f.SectionText.MIME), True,
                                      f.Partial(10, 20)),))),
    (b"a FETCH 1 BODY[HEADER.FIELDS.NOT (Received X-Spam)]",
     c.Fetch("a", ONE, (f.BodySection(f.Section((), f.SectionText.HEADER_FIELDS_NOT,
                                                ("Received", "X-Spam"))),))),
    (b"a FETCH 1 (BODY[3] BODY[2.TEXT] BODY[HEADER] BODYSTRUCTURE ENVELOPE)",
     c.Fetch("a", ONE, (f.BodySection(f.Section((3,))),
                        f.BodySection(f.Section((2,), f.SectionText.TEXT)),
                        f.BodySection(f.Section((), f.SectionText.HEADER)),
                        f.Simple.BODYSTRUCTURE, f.Simple.ENVELOPE))),
    (b"a FETCH 1 (BINARY.PEEK[1]<0.5> BINARY[] BINARY.SIZE[2])",
     c.Fetch("a", ONE, (f.BinarySection((1,), True, f.Partial(0, 5)), f.BinarySection(()),
                        f.BinarySize((2,))))),
    (b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 9 VANISHED)",
     c.Fetch("a", ALL_MESSAGES, (f.Simple.FLAGS, f.Simple.UID, f.Simple.MODSEQ), True, 9, True)),
    (b"a SEARCH ALL", c.Search("a", s.All())),
    (b"a UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) UNSEEN",
     c.Search("a", s.FlagKey("\\Seen", False), True, returns=(
         c.SearchReturn.MIN, c.SearchReturn.MAX, c.SearchReturn.COUNT, c.SearchReturn.ALL,
         c.SearchReturn.SAVE))),
    (b"a SEARCH RETURN () 2:4", c.Search("a", s.Sequence(SequenceSet((SeqRange(2, 4),))),
                                         returns=())),
    (b"a SEARCH CHARSET utf-8 SUBJECT {4}\r\n\xc3\xa4pf",
     c.Search("a", s.Header("Subject", "\u00e4pf"), charset="UTF-8")),
    (b'a SEARCH OR FROM "a b" NOT TO c (SINCE 1-Feb-2026 SENTBEFORE "3-Mar-2026")',
     c.Search("a", s.And((
         s.Or(s.Header("From", "a b"), s.Not(s.Header("To", "c"))),
         s.And((s.InternalDate(s.DateOp.SINCE, datetime.date(2026, 2, 1)),
                s.SentDate(s.DateOp.BEFORE, datetime.date(2026, 3, 3)))))))),
    (b"a SEARCH NEW LARGER 100 KEYWORD $Junk UID 5:* HEADER X-Id abc BODY x TEXT y",
     c.Search("a", s.And((
         s.And((s.FlagKey("\\Recent", True), s.FlagKey("\\Seen", False))),
         s.Size(s.SizeOp.LARGER, 100), s.FlagKey("$Junk", True),
         s.Uid(SequenceSet((SeqRange(5, None),))), s.Header("X-Id", "abc"), s.Body("x"),
         s.Text("y"))))),
    (b'a SEARCH MODSEQ "/flags/\\\\draft" all 620', c.Search("a", s.ModSeq(620, "/flags/\\draft"))),
    (b"a SEARCH $", c.Search("a", s.Sequence(SAVED_RESULT))),
    (b"a SORT (REVERSE ARRIVAL subject) US-ASCII ALL",
     c.Sort("a", (c.SortCriterion(c.SortKey.ARRIVAL, True), c.SortCriterion(c.SortKey.SUBJECT)),
            "US-ASCII", s.All())),
    (b"a UID THREAD REFERENCES UTF-8 ALL", c.Thread("a", "REFERENCES", "UTF-8", s.All(), True)),
]


@pytest.mark.parametrize(("raw", "expected"), VALID, ids=[v[0][:40].decode("latin-1")
                                                          for v in VALID])
def test_parses_command(raw: bytes, expected: object) -> None:
    """Each command of RFC 3501/9051 and the extensions parses into its value."""
    assert parse(raw) == expected


MALFORMED = [
    (b"a", "Expected a space and a command after the tag"),
    (b"a FROB", "Unknown command FROB"),
    (b"a NOOP x", "Unexpected characters at the end of the command"),
    (b"a LOGIN joe", "Expected a space"),
    (b'a LOGIN "joe', "Unterminated quoted string"),
    (b'a LOGIN "j\\oe" x', "may be escaped"),
    (b"a LOGIN {3}\r\njo", "Literal shorter than announced"),
    (b"a LOGIN {3}\r\nj\x00e x", "NUL in a literal"),
    (b"a LOGIN \xff x", "Expected a user name"),
    (b'a LOGIN "a\x00b" x', "NUL, CR or LF in a quoted string"),
    (b"a ID (x y)", "Expected a string"),
    (b'a LIST "" )', "Expected a mailbox pattern"),
    (b"a FETCH 1 ()", "Expected a keyword"),
    (b'a LOGIN "\xff" x', "not valid UTF-8"),
    (b"a SELECT \xc3\xa4", "Expected a mailbox name"),
    (b'a SELECT "\xc3\xa4"', "modified UTF-7"),
    (b"a SELECT &Jjo", "modified UTF-7"),
    (b'a SELECT ""', "Empty mailbox name"),
    (b"a SELECT x (FOO)", "Unknown SELECT parameter FOO"),
    (b"a FETCH 0 FLAGS", "a message number"),
    (b"a FETCH 1: FLAGS", "a message number"),
    (b"a FETCH 99999999999 FLAGS", "Number too large"),
    (b"a FETCH 1 (FLAGS", "Expected ')'"),
    (b"a FETCH 1 BODY[1.FOO]", "Unknown section FOO"),
    (b"a FETCH 1 BODY[MIME]", "Unknown section MIME"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a header field name"),
    (b"a FETCH 1 BODY[]<5>", "'.' in a partial"),
    (b"a FETCH 1 BODY[]<1.0>", "a partial length"),
    (b"a FETCH 1 SIZE", "Unknown FETCH attribute SIZE"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE x)", "Unknown or malformed FETCH modifier"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "VANISHED needs UID FETCH"),
    (b"a STORE 1 FLAGS (\\Recent)", "\\Recent cannot be set"),
    (b"a STORE 1 LABELS (x)", "Expected FLAGS"),
    (b"a STORE 1 (FOO 3) FLAGS (x)", "Unknown or malformed STORE modifier FOO"),
    (b"a FETCH 1 BODY[HEADER.FIELDS (Subject: x)]", "Invalid header field name"),
    (b"a SORT (COLOR) UTF-8 ALL", "Unknown sort key COLOR"),
    (b'a SEARCH MODSEQ "/flags/x" some 3', "Expected priv, shared or all"),
    (b'a LIST "" * FOO (CHILDREN)', "Expected RETURN"),
    (b"a SELECT x (QRESYNC (1 0))", "non-zero mod-sequence"),
    (b"a SELECT x (QRESYNC (1 2 $))", "$ is not allowed in QRESYNC"),
    (b'a APPEND x "1-Jan-2026 12:00:00 +0000" {3}', "Expected a date-time"),
    (b"a SEARCH", "Expected search criteria"),
    (b"a SEARCH FOO", "Unknown search key FOO"),
    (b"a SEARCH SINCE 31-Feb-2026", "No such date"),
    (b"a SEARCH SINCE 1-Foo-2026", "Expected a date"),
    (b"a SEARCH RETURN (BEST) ALL", "Unknown SEARCH return option BEST"),
    (b"a SEARCH OR ALL", "Expected a space"),
    (b"a SEARCH " + b"(" * 70 + b"ALL" + b")" * 70, "nested too deeply"),
    (b"a SEARCH " + b"NOT " * 70 + b"ALL", "nested too deeply"),
    (b"a STATUS x ()", "STATUS needs at least one item"),
    (b"a STATUS x (COLOR)", "Unknown STATUS item COLOR"),
    (b"a LIST (FOO) \"\" *", "Unknown LIST selection option FOO"),
    (b'a LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH needs another"),
    (b'a LIST "" * RETURN (BAR)', "Unknown LIST return option BAR"),
    (b"a APPEND x", "Expected a space"),
    (b"a APPEND x (\\Seen)", "Expected a space"),
    (b'a APPEND x "1-Jan-2026" {3}', "Expected a date-time"),
    (b"a APPEND x {3} extra", "Expected the message as a literal"),
    (b"a SORT () UTF-8 ALL", "Expected sort criteria"),
    (b"a SORT (REVERSE) UTF-8 ALL", "Expected sort criteria"),
    (b"a THREAD SPAGHETTI UTF-8 ALL", "Unknown THREAD algorithm"),
    (b"a ENABLE", "ENABLE needs at least one capability"),
    (b"a ID (" + b'"k" "v" ' * 30 + b'"k" "v")', "At most 30 ID"),
    (b"a CREATE x (FOO (x))", "The only CREATE parameter is USE"),
    (b"a STORE 1 +FLAGS (" + b"x " * 1000 + b"y)", "Too many items"),
    (b"a FETCH " + b"1," * 10000 + b"1 FLAGS", "Too many ranges"),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED, ids=[m[0][:40].decode("latin-1")
                                                           for m in MALFORMED])
def test_refuses_malformed_command_with_reason(raw: bytes, reason: str) -> None:
    """Each malformed command comes back Malformed, with its tag and a clear reason."""
    result = parse(raw)
    assert isinstance(result, Malformed)
    assert result.tag == "a"
    assert result.code is None
    assert reason in result.reason


class TestCharsets:
    def test_unknown_search_charset_is_a_no_with_badcharset(self) -> None:
        """CHARSET other than UTF-8/US-ASCII: NO [BADCHARSET (...)], not BAD."""
        assert parse(b"a SEARCH CHARSET KOI8-R ALL") == Malformed(
            "a", "Unsupported charset KOI8-R", BADCHARSET)

    def test_sort_charset_is_checked_too(self) -> None:
        """SORT names a charset without the CHARSET keyword; it is checked the same."""
        result = parse(b"a SORT (DATE) ISO-8859-1 ALL")
        assert isinstance(result, Malformed)
        assert result.code == BADCHARSET


class TestMailboxNames:
    def test_rev2_client_names_are_utf8(self) -> None:
        """After ENABLE IMAP4rev2, names are UTF-8 and '&' is just a character."""
        assert parse(b'a SELECT "\xc3\x84rger &Co"', utf8=True) == c.Select("a", "\u00c4rger &Co")

    def test_inbox_in_any_case_is_inbox(self) -> None:
        """INBOX is case-insensitive; other names are not."""
        assert parse(b"a STATUS iNbOx (MESSAGES)") == c.Status(
            "a", "INBOX", (c.StatusItem.MESSAGES,))
        assert parse(b"a DELETE Inbox2") == c.Delete("a", "Inbox2")


class TestModifiedUtf7:
    @pytest.mark.parametrize("name", ["INBOX", "&", "\u00c4rger", "\u65e5\u672c\u8a9e/x",
                                      "a&b\u00e9", "\U0001f600"])
    def test_round_trips(self, name: str) -> None:
        """Encoding then decoding gives the name back."""
        assert utf7.decode(utf7.encode(name)) == name

    def test_known_spelling(self) -> None:
        """The RFC 3501 §5.1.3 example."""
        assert utf7.decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == (
            "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e")

    @pytest.mark.parametrize("spelling", ["&AGE-", "&Jjo", "&Jjo!-", "\u00e4", "&ZeVnLIqe", "&A-"])
    def test_refuses_non_canonical_or_broken(self, spelling: str) -> None:
        """Encoded ASCII, an open shift, bad base64 or raw 8-bit are refused."""
        with pytest.raises(utf7.Utf7Error):
            utf7.decode(spelling)


class TestHelpers:
    def test_which_attributes_set_seen(self) -> None:
        """BODY[] and RFC822(.TEXT) set \\Seen; PEEK, headers and metadata do not."""
        assert f.sets_seen(f.BodySection(f.Section()))
        assert f.sets_seen(f.Simple.RFC822_TEXT)
        assert f.sets_seen(f.BinarySection((1,)))
        assert not f.sets_seen(f.BodySection(f.Section(), peek=True))
        assert not f.sets_seen(f.Simple.RFC822_HEADER)
        assert not f.sets_seen(f.BinarySize((1,)))

    def test_modseq_is_found_anywhere_in_the_key(self) -> None:
        """A MODSEQ under NOT, OR or a list still counts (the response carries MODSEQ)."""
        modseq = s.ModSeq(3)
        assert s.uses_modseq(s.Not(modseq))
        assert s.uses_modseq(s.Or(s.All(), modseq))
        assert s.uses_modseq(s.And((s.All(), s.Not(s.Or(s.All(), modseq)))))
        assert not s.uses_modseq(s.And((s.All(), s.Body("x"))))


class TestSequenceSets:
    def test_numbers(self) -> None:
        """Every number of the set, in order."""
        seqs = SequenceSet((SeqRange(4, 2), SeqRange(None, None)))
        assert list(seqs.numbers(6)) == [2, 3, 4, 6]

    def test_resolve_merges_and_replaces_star(self) -> None:
        """'*' is the largest number; ranges are ordered either way and merged."""
        seqs = SequenceSet((SeqRange(5, 3), SeqRange(None, 9), SeqRange(1, 1), SeqRange(2, 2)))
        assert seqs.resolve(12) == ((1, 5), (9, 12))

    def test_star_in_an_empty_mailbox_is_nothing(self) -> None:
        """1:* of no messages is empty, not message 1."""
        assert SequenceSet((SeqRange(None, None),)).resolve(0) == ()

    def test_saved_result_cannot_be_resolved_here(self) -> None:
        """'$' belongs to the session."""
        with pytest.raises(ValueError):
            SAVED_RESULT.resolve(3)

    def test_compact(self) -> None:
        """Numbers to ranges, as for COPYUID."""
        assert compact([7, 1, 2, 3, 9, 10]) == "1:3,7,9:10"
        assert SequenceSet((SeqRange(1, None), SeqRange(4, 4))).render() == "1:*,4"
