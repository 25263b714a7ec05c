"""The wire form of IMAP responses: values in, exact bytes out."""

from __future__ import annotations

import datetime

import pytest

from postwarden.protocol.imap import encoder
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.commands import StatusItem
from postwarden.protocol.imap.fetch import BinarySection, BinarySize, BodySection, Partial, Section
from postwarden.protocol.imap.fetch import SectionText as T


class TestStrings:
    @pytest.mark.parametrize(("data", "wire"), [
        (b"plain", b'"plain"'),
        (b'say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
        (b"", b'""'),
        (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        (b"nul\0", b"{4}\r\nnul\0"),
        ("Grüße".encode(), b"{7}\r\n" + "Grüße".encode()),
        (b"x" * 1025, b"{1025}\r\n" + b"x" * 1025),
    ])
    def test_quoted_when_safe_literal_otherwise(self, data: bytes, wire: bytes) -> None:
        """Quoted only when short and free of CR, LF, NUL and 8-bit octets."""
        assert encoder.string(data) == wire

    def test_utf8_may_be_quoted_for_rev2(self) -> None:
        """With UTF-8 on, 8-bit text can be quoted."""
        assert encoder.string("Grüße".encode(), utf8=True) == '"Grüße"'.encode()

    @pytest.mark.parametrize(("text", "wire"), [
        ("INBOX", b"INBOX"), ("a b", b'"a b"'), ("NIL", b'"NIL"'), ("", b'""'), ("x]", b'"x]"'),
    ])
    def test_astring(self, text: str, wire: bytes) -> None:
        """An atom when possible; never a bare NIL."""
        assert encoder.astring(text) == wire

    def test_nstring_and_literal8(self) -> None:
        assert encoder.nstring(None) == b"NIL"
        assert encoder.literal8(b"a\0") == b"~{2}\r\na\0"

    def test_date_time(self) -> None:
        """Day space-padded, zone as +hhmm."""
        when = datetime.datetime(2026, 3, 5, 7, 8, 9,
                                 tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
        assert encoder.date_time(when) == b'" 5-Mar-2026 07:08:09 -0500"'


class TestStatusResponses:
    @pytest.mark.parametrize(("code", "wire"), [
        (r.Code.TRYCREATE, b"[TRYCREATE]"),
        (r.Code.READ_ONLY, b"[READ-ONLY]"),
        (r.UidNext(5), b"[UIDNEXT 5]"),
        (r.UidValidity(9), b"[UIDVALIDITY 9]"),
        (r.Unseen(3), b"[UNSEEN 3]"),
        (r.HighestModSeq(77), b"[HIGHESTMODSEQ 77]"),
        (r.AppendUid(9, 12), b"[APPENDUID 9 12]"),
        (r.CopyUid(9, (1, 2, 3, 7), (20, 21, 22, 23)), b"[COPYUID 9 1:3,7 20:23]"),
        (r.CopyUid(9, (5, 2), (8, 9)), b"[COPYUID 9 5,2 8:9]"),
        (r.PermanentFlags(("\\Seen", "\\*")), b"[PERMANENTFLAGS (\\Seen \\*)]"),
        (r.Modified((4, 5, 9)), b"[MODIFIED 4:5,9]"),
        (r.BadCharset(("UTF-8",)), b"[BADCHARSET (UTF-8)]"),
    ])
    def test_codes(self, code: r.ResponseCode, wire: bytes) -> None:
        """Each response code in its RFC spelling."""
        assert encoder.status("a1", r.Status.OK, "done", code) == b"a1 OK " + wire + b" done\r\n"

    def test_text_is_one_line_and_never_a_code(self) -> None:
        """CR/LF in text are flattened; text starting with '[' cannot pose as a code."""
        out = encoder.status("a", r.Status.NO, "bad\r\n* 1 EXISTS", None)
        assert out == b"a NO bad * 1 EXISTS\r\n"
        assert encoder.status("a", r.Status.NO, "[ALERT] x", None) == b"a NO  [ALERT] x\r\n"

    def test_untagged_condition(self) -> None:
        out = encoder.untagged(r.Condition(r.Status.OK, "Previous mailbox closed", r.Code.CLOSED))
        assert out == b"* OK [CLOSED] Previous mailbox closed\r\n"


UTC = datetime.UTC


class TestUntaggedData:
    @pytest.mark.parametrize(("response", "wire"), [
        (r.Exists(3), b"* 3 EXISTS"),
        (r.Recent(0), b"* 0 RECENT"),
        (r.Expunged(2), b"* 2 EXPUNGE"),
        (r.Vanished((3, 4, 5, 9)), b"* VANISHED 3:5,9"),
        (r.Vanished((1,), earlier=True), b"* VANISHED (EARLIER) 1"),
        (r.Flags(("\\Seen", "$Junk")), b"* FLAGS (\\Seen $Junk)"),
        (r.SearchData((2, 5)), b"* SEARCH 2 5"),
        (r.SearchData(()), b"* SEARCH"),
        (r.SearchData((2,), modseq=8), b"* SEARCH 2 (MODSEQ 8)"),
        (r.SortData((5, 2)), b"* SORT 5 2"),
        (r.ESearchData(True, 1, 9, 3, (1, 2, 9)),
         b'* ESEARCH (TAG "t1") UID MIN 1 MAX 9 COUNT 3 ALL 1:2,9'),
        (r.ESearchData(False, count=0), b'* ESEARCH (TAG "t1") COUNT 0'),
        (r.ThreadData(((2,), (3, 6, (4, 23), (44, 7, 96)))),
         b"* THREAD (2)(3 6 (4 23)(44 7 96))"),
        (r.ThreadData(()), b"* THREAD"),
        (r.ListData("INBOX", ("\\HasNoChildren",)), b'* LIST (\\HasNoChildren) "/" INBOX'),
        (r.ListData("My Box", (), lsub=True), b'* LSUB () "/" "My Box"'),
        (r.ListData("Foo", ("\\Subscribed",), child_info=True),
         b'* LIST (\\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))'),
        (r.StatusData("INBOX", ((StatusItem.MESSAGES, 4), (StatusItem.SIZE, 100))),
         b"* STATUS INBOX (MESSAGES 4 SIZE 100)"),
        (r.QuotaData("", (("STORAGE", 10, 512),)), b'* QUOTA "" (STORAGE 10 512)'),
        (r.QuotaRootData("INBOX", ("",)), b'* QUOTAROOT INBOX ""'),
    ])
    def test_data(self, response: r.Untagged, wire: bytes) -> None:
        """Each untagged response in its RFC form."""
        assert encoder.untagged(response, tag="t1") == wire + b"\r\n"

    def test_fetch_items(self) -> None:
        """FETCH items: names from the attributes, literals where needed, literal8 for NUL."""
        section = BodySection(Section((1,), T.HEADER_FIELDS, ("From", "To")), True, Partial(0, 9))
        items = (
            r.UidItem(7), r.FlagsItem(("\\Seen",)), r.ModSeqItem(12),
            r.InternalDateItem(datetime.datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC)),
            r.SizeItem(2048),
            r.SectionItem(section.response_name(), b"From: a\r\n"),
            r.SectionItem(BodySection(Section((9,))).response_name(), None),
            r.BinaryItem(BinarySection((2,)).response_name(), b"\0\1"),
            r.BinarySizeItem(BinarySize((2,)).response_name(), 2),
            r.RenderedItem("ENVELOPE", b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
        )
        assert encoder.untagged(r.FetchData(3, items)) == (
            b"* 3 FETCH (UID 7 FLAGS (\\Seen) MODSEQ (12) "
            b'INTERNALDATE "30-Nov-2026 01:02:03 +0000" RFC822.SIZE 2048 '
            b"BODY[1.HEADER.FIELDS (From To)]<0> {9}\r\nFrom: a\r\n BODY[9] NIL "
            b"BINARY[2] ~{2}\r\n\0\1 BINARY.SIZE[2] 2 "
            b"ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n")

    def test_mailbox_names_in_utf7_for_rev1(self) -> None:
        """Non-ASCII names go out in modified UTF-7 unless UTF-8 is on."""
        data = r.StatusData("Ärger & Co", ((StatusItem.UNSEEN, 1),))
        assert encoder.untagged(data) == b'* STATUS "&AMQ-rger &- Co" (UNSEEN 1)\r\n'
        assert encoder.untagged(data, utf8=True) == '* STATUS "Ärger & Co" (UNSEEN 1)\r\n'.encode()
