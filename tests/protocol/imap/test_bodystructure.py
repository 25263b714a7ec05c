"""BODYSTRUCTURE rendering and section ranges beyond the corpus: strings, partials, BINARY."""

from __future__ import annotations

from postwarden.mail.mime import parse_message
from postwarden.protocol.imap.bodystructure import (
    SectionRange,
    bodystructure,
    envelope,
    filter_header_fields,
    resolve_section,
)
from postwarden.protocol.imap.fetch import Partial, Section, SectionText

MESSAGE = (
    b"Subject: a \"quoted\" \\ subject\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AGhpAA==\r\n--b--\r\n"
)


class TestStrings:
    def test_quotes_and_backslashes_are_escaped(self) -> None:
        """A quoted string escapes " and \\ (RFC 3501 quoted-specials)."""
        env = envelope(parse_message(MESSAGE).envelope)
        assert env.startswith(b'(NIL "a \\"quoted\\" \\\\ subject" NIL')

    def test_long_description_goes_as_a_literal(self) -> None:
        """A string too long to quote is sent as a literal with its octet count."""
        text = b"d" * 5000
        msg = b"Content-Description: " + text + b"\r\n\r\nx"
        rendered = bodystructure(parse_message(msg))
        assert b" {5000}\r\n" + text + b" " in rendered


class TestSections:
    def test_partial_is_clipped_to_the_section(self) -> None:
        """<offset.length> reads inside the section only; past its end is empty."""
        rng = SectionRange(100, 150)
        assert rng.body_range(Partial(10, 20)) == (110, 130)
        assert rng.body_range(Partial(40, 1000)) == (140, 150)
        assert rng.body_range(Partial(500, 10)) == (150, 150)
        assert rng.body_range() == (100, 150)

    def test_partial_of_header_fields_applies_after_filtering(self) -> None:
        """HEADER.FIELDS reads the whole header; the partial cuts the filtered text."""
        structure = parse_message(MESSAGE)
        found = resolve_section(structure, Section((), SectionText.HEADER_FIELDS, ("subject",)))
        assert found is not None
        start, end = found.body_range(Partial(2, 7))
        assert (start, end) == (0, structure.root.body_start)
        assert found.body_data(MESSAGE[start:end], Partial(2, 7)) == b"bject: "

    def test_partial_of_binary_applies_to_the_decoded_bytes(self) -> None:
        """BINARY<1.2> counts decoded octets (RFC 3516)."""
        structure = parse_message(MESSAGE)
        found = resolve_section(structure, Section((2,)))
        assert found is not None
        assert found.binary_data(MESSAGE[found.start:found.end], Partial(1, 2)) == b"hi"

    def test_mime_of_the_whole_message_does_not_exist(self) -> None:
        """MIME needs a part number (RFC 3501 §6.4.5)."""
        structure = parse_message(MESSAGE)
        assert resolve_section(structure, Section((), SectionText.MIME)) is None
        assert resolve_section(structure, Section((0,))) is None

    def test_binary_of_an_unknown_encoding_is_refused(self) -> None:
        """x-uuencode cannot be undone: None, so the server answers NO [UNKNOWN-CTE]."""
        structure = parse_message(MESSAGE)
        found = resolve_section(structure, Section((1,)))
        assert found is not None and found.part is not None
        assert found.binary_data(MESSAGE[found.start:found.end]) is None

    def test_binary_keeps_nul_octets(self) -> None:
        """Decoded base64 with NULs comes back whole (sent as literal8 by the encoder)."""
        structure = parse_message(MESSAGE)
        found = resolve_section(structure, Section((2,)))
        assert found is not None
        assert found.binary_data(MESSAGE[found.start:found.end]) == b"\x00hi\x00"

    def test_whole_message_binary_is_unchanged(self) -> None:
        """BINARY[] is the message as stored: nothing to decode at the top."""
        structure = parse_message(MESSAGE)
        found = resolve_section(structure, Section())
        assert found == SectionRange(0, len(MESSAGE))
        assert found.binary_data(MESSAGE) == MESSAGE


class TestHeaderFieldFilter:
    HEADER = (b"Received: by x\r\n\tfrom y\r\nSubject: one\r\n  folded\r\nFROM : a@b\r\n"
              b"X-Subject: no\r\nsubject: two\r\n\r\n")

    def test_named_fields_in_order_with_folding_any_case(self) -> None:
        """HEADER.FIELDS keeps each named field as written, folded lines too, in order."""
        assert filter_header_fields(self.HEADER, ("Subject", "From"), False) == (
            b"Subject: one\r\n  folded\r\nFROM : a@b\r\nsubject: two\r\n\r\n")

    def test_not_keeps_the_others(self) -> None:
        """HEADER.FIELDS.NOT drops the named fields and keeps the rest as written."""
        assert filter_header_fields(self.HEADER, ("Subject", "From"), True) == (
            b"Received: by x\r\n\tfrom y\r\nX-Subject: no\r\n\r\n")

    def test_nothing_past_the_blank_line(self) -> None:
        """A field-like line in the body is not a header field."""
        assert filter_header_fields(b"To: a\r\n\r\nSubject: body\r\n", ("Subject",), False) \
            == b"\r\n"
