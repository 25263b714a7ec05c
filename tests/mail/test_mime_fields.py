"""Header-level pieces: address lists, encoded words, parameters, sort keys, decoders."""

from __future__ import annotations

import base64
import datetime
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postwarden.mail.addresslist import EnvelopeAddress, _Parser, parse_address_list
from postwarden.mail.encoded_words import decode_words
from postwarden.mail.mime import parse_message
from postwarden.mail.mime_codec import loads
from postwarden.mail.mime_decode import TransferDecoder, decode_body, extract_text
from postwarden.mail.mime_headers import (
    _scanned_content_type,
    field_lines,
    field_values,
    parse_content_type,
    raw_fields,
)
from postwarden.mail.sortkeys import (
    Subject,
    base_subject,
    message_ids,
    parse_subject,
    sent_date,
    thread_references,
)

A = EnvelopeAddress


class TestAddressList:
    @pytest.mark.parametrize(("text", "expected"), [
        ("a@b", (A(None, None, "a", "b"),)),
        ('"Doe, John" <j@x>', (A("Doe, John", None, "j", "x"),)),
        ("John  Q.  Public <j@x>", (A("John Q. Public", None, "j", "x"),)),
        ("j@x (John Doe)", (A("John Doe", None, "j", "x"),)),
        ("<@r1,@r2:m@h>", (A(None, "@r1,@r2", "m", "h"),)),
        ('"john doe"@x', (A(None, None, "john doe", "x"),)),
        ("bob", (A(None, None, "bob", ""),)),
        ("<>", ()),
        ("a@b,,c@d", (A(None, None, "a", "b"), A(None, None, "c", "d"))),
        ("team: a@b, C <c@d>;, e@f", (
            A(None, None, "team", None), A(None, None, "a", "b"), A("C", None, "c", "d"),
            A(None, None, None, None), A(None, None, "e", "f"))),
        ("open: a@b", (A(None, None, "open", None), A(None, None, "a", "b"),
                       A(None, None, None, None))),
        ("x@[127.0.0.1]", (A(None, None, "x", "[127.0.0.1]"),)),
        ("Unclosed <u@h", (A("Unclosed", None, "u", "h"),)),
    ])
    def test_parses(self, text: str, expected: tuple[EnvelopeAddress, ...]) -> None:
        """Names, routes, groups and broken forms give IMAP's (name adl mailbox host)."""
        assert parse_address_list(text) == expected

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet='ab@<>,;:()"\\[]. \t=?', max_size=40))
    def test_never_raises(self, text: str) -> None:
        """Any mix of specials parses; group markers balance."""
        result = parse_address_list(text)
        starts = sum(1 for a in result if a.host is None and a.mailbox is not None)
        ends = sum(1 for a in result if a.host is None and a.mailbox is None)
        assert starts == ends


class TestEncodedWords:
    @pytest.mark.parametrize(("raw", "text"), [
        ("=?iso-8859-1?q?this=20is=20some=20text?=", "this is some text"),
        ("=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>", "Keith Moore <moore@cs.utk.edu>"),
        ("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("=?ISO-8859-1?Q?a?= b", "a b"),
        ("=?utf-8?b?w6k?=", "é"),  # missing padding
        ("=?utf-8*fr?q?=C3=A9?=", "é"),  # RFC 2231 language in the word
        ("=?utf-8?x?abc?=", "=?utf-8?x?abc?="),
        ("=?utf-8?b?@@@?=", "=?utf-8?b?@@@?="),
        ("=?iso-8859-1?q?a?= =?utf-8?q?=C3=A9?=", "aé"),
        ("glued=?utf-8?q?word?=here", "gluedwordhere"),
    ])
    def test_decodes(self, raw: str, text: str) -> None:
        """RFC 2047 examples (§8) and the usual breakage."""
        assert decode_words(raw) == text

    def test_raw_latin1_header_bytes_read_as_latin1(self) -> None:
        """Undecodable 8-bit header bytes fall back to Latin-1."""
        raw = b"caf\xe9".decode("utf-8", "surrogateescape")
        assert decode_words(raw) == "café"


class TestFieldValues:
    def test_every_occurrence_unfolded_and_decoded(self) -> None:
        """SEARCH HEADER looks at each occurrence of a field, decoded."""
        header = (b"X-Tag: one\r\nx-tag :\r\n =?utf-8?q?t=C3=A9?=\r\nX-Tagged: no\r\n"
                  b"Subject: X-Tag: not a field\r\n\r\n")
        assert field_values(header, "X-TAG") == ["one", "té"]
        assert field_values(header, "x-missing") == []


class TestParameters:
    def test_sections_out_of_order_and_gaps(self) -> None:
        """Sections join in number order; a gap ends the value (RFC 2231 §3)."""
        ct = parse_content_type("a/b; t*1=B; t*0=A; t*3=D")
        assert ct is not None and [(p.name, p.value) for p in ct.params] == [("t", "AB")]

    def test_unknown_charset_falls_back(self) -> None:
        """An unknown charset still yields text, never an exception."""
        ct = parse_content_type("a/b; t*=x-nope''%C3%A9")
        assert ct is not None and ct.params[0].value == "é"

    @pytest.mark.parametrize("value", ["", "text", "/plain", "text/", "(c)", '"a/b"'])
    def test_unreadable_type_is_none(self, value: str) -> None:
        """No type/subtype, no Content-Type (the caller applies the default)."""
        assert parse_content_type(value) is None


class TestSortKeys:
    @pytest.mark.parametrize(("subject", "base"), [
        ("Re: hello", "hello"),
        ("RE: Re: re:hello", "hello"),
        ("Fwd: hello (fwd)", "hello"),
        ("[list] Re: [other] hello", "hello"),
        ("Re [x]: hello", "hello"),
        ("[fwd: hello]", "hello"),
        ("[fwd: Re: [list] hello (fwd)]", "hello"),
        ("[only a blob]", "[only a blob]"),
        ("  spaced\tout  ", "spaced out"),
        ("Reply later", "Reply later"),
        ("", ""),
    ])
    def test_base_subject(self, subject: str, base: str) -> None:
        """RFC 5256 §2.1 steps 2-6."""
        assert base_subject(subject) == base

    @pytest.mark.parametrize(("subject", "parsed"), [
        ("Re: hello", Subject("hello", True)),
        ("FWD: hello", Subject("hello", True)),
        ("hello (fwd)", Subject("hello", True)),
        ("[fwd: hello]", Subject("hello", True)),
        ("[list] Re: hello", Subject("hello", True)),
        ("[list] hello", Subject("hello", False)),
        ("  hello  ", Subject("hello", False)),
        ("Reply later", Subject("Reply later", False)),
        ("Re:", Subject("", True)),
    ])
    def test_reply_or_forward(self, subject: str, parsed: Subject) -> None:
        """A reply or forward is one whose extraction removed "Re:"/"Fwd:", "(fwd)" or
        "[fwd: ...]"; a list tag or blanks alone do not count (RFC 5256 §3)."""
        assert parse_subject(subject) == parsed

    def test_quoted_message_ids(self) -> None:
        """A quoted local part is unquoted, so both forms are one id (RFC 5256 §3)."""
        assert message_ids('<"01KF8JC"@x.y> <"a\\"b c"@h>') == ("<01KF8JC@x.y>", '<a"b c@h>')
        assert message_ids("<01KF8JC@x.y>") == ("<01KF8JC@x.y>",)

    def test_thread_references(self) -> None:
        """References ids in order; else the first In-Reply-To id; junk is not an id."""
        assert thread_references("<a@x> junk <b@y>\t<c@z>", "<d@w>") == (
            "<a@x>", "<b@y>", "<c@z>")
        assert thread_references("no ids here", "<d@w> <e@v>") == ("<d@w>",)
        assert thread_references(None, "Your message of ...") == ()
        assert message_ids("<no-at-sign> <ok@h>") == ("<ok@h>",)

    def test_sent_date(self) -> None:
        """Zones are kept; a zone-less or -0000 date is UTC; junk is None."""
        when = sent_date("Tue, 1 Dec 2026 08:00:00 -0500")
        assert when == datetime.datetime(2026, 12, 1, 13, 0, tzinfo=datetime.UTC)
        assert sent_date("1 Dec 2026 08:00:00 -0000") == datetime.datetime(
            2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
        assert sent_date("yesterday") is None and sent_date(None) is None


class TestTransferDecoder:
    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=300), st.lists(st.integers(0, 2000), max_size=5),
           st.sampled_from(["base64", "quoted-printable", "8bit"]))
    def test_any_chunking_decodes_the_same(self, raw: bytes, cuts: list[int],
                                           encoding: str) -> None:
        """Encoded with the stdlib, decoded in pieces: the original bytes."""
        match encoding:
            case "base64":
                encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
            case "quoted-printable":
                raw = raw.replace(b"\r", b"")  # quopri treats a bare CR inconsistently
                encoded = quopri.encodestring(raw).replace(b"\n", b"\r\n")
            case _:
                encoded = raw
        decoder = TransferDecoder(encoding)
        out, last = b"", 0
        for cut in sorted(c % (len(encoded) + 1) for c in cuts):
            out += decoder.feed(encoded[last:cut])
            last = cut
        out += decoder.feed(encoded[last:]) + decoder.close()
        # quoted-printable line breaks are CRLF on the wire, so decode as CRLF
        expected = raw.replace(b"\n", b"\r\n") if encoding == "quoted-printable" else raw
        assert out == expected

    def test_unknown_encoding_is_refused(self) -> None:
        """An encoding we cannot undo is a ValueError (IMAP: UNKNOWN-CTE)."""
        with pytest.raises(ValueError, match="unknown transfer encoding"):
            decode_body("x-uuencode", b"")

    def test_base64_with_junk_and_inner_padding(self) -> None:
        """Non-alphabet characters are skipped; two joined encodings both decode."""
        assert decode_body("base64", b"aGk=\r\n!!aGk=\r\n") == b"hihi"


class TestCodec:
    @pytest.mark.parametrize("data", [
        b"", b"[]", b"[2]", b"[1,0,[]]", b"\xff", b"{}", b"[1,0,[],[],[],0]",
        b"[1,0,[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],[],[],0]",
        b'[1,0,[0,0,0,0,"t","p","ab",0,0,0,0,0,[],[],0,[],null,0],[],[],0]',
    ])
    def test_damaged_rows_are_value_errors(self, data: bytes) -> None:
        """Anything loads did not write is a ValueError, so the store re-parses."""
        with pytest.raises(ValueError):
            loads(data)


class TestShortcuts:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(
        ["a", "b.c", "@", "<", ">", ",", " ", "  ", '"', "Jo", "x y", "(", ")", ":", ";", "\t"]),
        max_size=14).map("".join))
    def test_plain_address_shortcut_agrees_with_the_parser(self, text: str) -> None:
        """The regex shortcut for usual addresses gives what the full parser gives."""
        assert parse_address_list(text) == _Parser(text).parse()

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(
        ["text", "/", "plain", ";", " ", "a", "=", "b", '"', "q r", "*", "0", "(", ")", "\\"]),
        max_size=14).map("".join))
    def test_plain_content_type_shortcut_agrees_with_the_scanner(self, text: str) -> None:
        """The regex shortcut for usual Content-Types gives what the scanner gives."""
        assert parse_content_type(text) == _scanned_content_type(text)


class TestBodyText:
    MESSAGE = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n"
        b"<p>caf\xe9 <b>au</b> lait</p><script>var hidden;</script>\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Disposition: attachment; filename=notes.txt\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("naïve notes".encode()).replace(b"\n", b"\r\n")
        + b"--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"iVBORw0KGgo=\r\n--b--\r\n"
    )

    def read(self, start: int, end: int) -> bytes:
        return self.MESSAGE[start:end]

    def test_html_text_and_text_attachments_are_indexed(self) -> None:
        """Tags and scripts go, charsets decode, text attachments count, images do not."""
        structure = parse_message(self.MESSAGE)
        text = extract_text(structure, self.read, 10_000, chunk=7)
        assert " ".join(text.split()) == "café au lait naïve notes"

    def test_limit_bounds_the_text(self) -> None:
        """At most ``limit`` characters come back."""
        assert len(extract_text(parse_message(self.MESSAGE), self.read, 6)) <= 6


def _fields_line_by_line(header: bytes, names: tuple[str, ...]) -> bytes:
    """The reference for ``raw_fields``: walk the lines (each with its line end)
    up to the blank one that ends the header; a line that starts a field
    decides for it and its folded lines whether they are kept."""
    wanted = {n.lower().encode() for n in names}
    lines = [line + b"\n" for line in header.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # the text after the last line end, if any
    out: list[bytes] = []
    keep = False
    for at, line in enumerate(lines):
        if line == b"\r\n" and at > 0:
            break
        if line[:1] not in (b" ", b"\t"):
            name, colon, _ = line.partition(b":")
            keep = bool(colon) and name.rstrip(b" \t").lower() in wanted
        if keep:
            out.append(line)
    return b"".join(out)


_HEADER_PIECES = st.sampled_from([
    b"From", b"from", b"SUBJECT", b"Date", b"X-Date", b"Dates", b":", b" ", b"\t", b"\r",
    b"\n", b"\r\n", b"x", b"\n ", b"\n\t", b"Subject :", b"date\t:", b"\x00", b"\xff"])


class TestRawFields:
    """FETCH BODY[HEADER.FIELDS] selection: one regex scan that jumps from line to
    line, checked against a walk over the lines (any bytes, folding, bare LF,
    a last field with no line end, names in any case)."""

    NAMES = ("FROM", "Subject", "date")

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(_HEADER_PIECES, max_size=30).map(b"".join))
    def test_matches_a_walk_over_the_lines(self, header: bytes) -> None:
        expected = _fields_line_by_line(header, self.NAMES)
        assert raw_fields(header, self.NAMES) == expected
        assert field_lines(raw_fields(header, ("from", "subject", "date", "to")),
                           self.NAMES) == expected

    @pytest.mark.parametrize(("header", "expected"), [
        (b"From: a\r\n b\r\nTo: c\r\nDATE : d\r\n\r\nFrom: body\r\n",
         b"From: a\r\n b\r\nDATE : d\r\n"),
        (b"To: c\nsubject: s", b"subject: s"),  # no line end at all after the last field
        (b"X-From: x\r\nFromage: y\r\n", b""),
        (b"", b""),
    ])
    def test_examples(self, header: bytes, expected: bytes) -> None:
        assert raw_fields(header, self.NAMES) == expected
