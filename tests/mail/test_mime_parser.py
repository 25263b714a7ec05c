"""The streaming MIME parser: offsets, chunking, limits, the cache codec."""

from __future__ import annotations

from postwarden.mail.mime import MimeLimits, MimeParser, MimePart, parse_message
from postwarden.mail.mime_codec import dumps, loads, loads_envelope

SIMPLE = b"From: a@b.example\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"

MIXED = (
    b"From: a@b.example\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"world\r\n"
    b"--XX\r\n"
    b"\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)


def feed_in(data: bytes, *cuts: int) -> MimeParser:
    parser = MimeParser()
    last = 0
    for cut in (*cuts, len(data)):
        parser.feed(data[last:cut])
        last = cut
    return parser


def leaves(part: MimePart) -> list[MimePart]:
    if not part.children:
        return [part]
    return [leaf for child in part.children for leaf in leaves(child)]


class TestOffsets:
    def test_simple_message_header_and_body(self) -> None:
        """A one-part message: header up to the blank line, body to the end."""
        s = parse_message(SIMPLE)
        root = s.root
        assert SIMPLE[root.header_start:root.body_start].endswith(b"Subject: hi\r\n\r\n")
        assert SIMPLE[root.body_start:root.end] == b"line one\r\nline two\r\n"
        assert (root.body_size, root.body_lines, s.size) == (20, 2, len(SIMPLE))

    def test_multipart_children_exclude_the_boundary_line_break(self) -> None:
        """A child ends before the CRLF that belongs to the next boundary (RFC 2046)."""
        root = parse_message(MIXED).root
        first, second = root.children
        assert MIXED[first.header_start:first.body_start] == b"Content-Type: text/plain\r\n\r\n"
        assert MIXED[first.body_start:first.end] == b"hello\r\nworld"
        assert first.body_lines == 2
        assert MIXED[second.header_start:second.end] == b"\r\n"
        assert second.body_size == 0 and second.defaulted


class TestChunks:
    def test_every_split_point_gives_the_same_structure(self) -> None:
        """Feeding in two pieces, cut anywhere, changes nothing."""
        whole = parse_message(MIXED)
        for cut in range(len(MIXED) + 1):
            assert feed_in(MIXED, cut).close() == whole, cut

    def test_byte_by_byte(self) -> None:
        """One byte at a time is the same as all at once."""
        assert feed_in(MIXED, *range(1, len(MIXED))).close() == parse_message(MIXED)


class TestLimits:
    def test_too_many_parts_become_the_epilogue(self) -> None:
        """Past max_parts the rest of the multipart is not split, and degraded is set."""
        body = b"".join(b"--B\r\n\r\npart %d\r\n" % i for i in range(10)) + b"--B--\r\n"
        msg = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body
        s = parse_message(msg, MimeLimits(max_parts=4))
        assert len(s.root.children) == 3 and s.degraded
        assert s.root.end == len(msg)


class TestCodec:
    def test_round_trip(self) -> None:
        """dumps/loads give back an equal structure."""
        for msg in (SIMPLE, MIXED):
            s = parse_message(msg)
            assert loads(dumps(s)) == s

    def test_envelope_alone(self) -> None:
        """loads_envelope reads just the envelope back."""
        s = parse_message(SIMPLE)
        assert loads_envelope(dumps(s)) == s.envelope
