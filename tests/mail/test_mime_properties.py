"""Properties of the MIME parser over generated and hostile messages.

Generated MIME trees are rendered to bytes with their true offsets known, so
each part's slice is checked against what was written; any chunking of the
same bytes must give the same structure; random and mangled bytes never raise.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

from fetchshape import imaplib_shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from postwarden.mail.mime import MessageStructure, MimeLimits, MimeParser, MimePart, parse_message
from postwarden.mail.mime_codec import dumps, loads
from postwarden.protocol.imap.bodystructure import body_plain, bodystructure, envelope

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Expect:
    """Where a generated part lies, relative to the start of its own bytes."""

    header: int  # header length (blank line included)
    size: int  # header + body
    children: tuple[tuple[int, Expect], ...]  # (offset of the child, its expectation)


_line = st.text(alphabet="abc -=.", max_size=12).map(lambda s: s.encode())
_body = st.lists(_line, max_size=4).map(b"\r\n".join)


def _leaf() -> st.SearchStrategy[tuple[bytes, Expect]]:
    def build(body: bytes) -> tuple[bytes, Expect]:
        header = b"Content-Type: text/plain\r\n\r\n"
        return header + body, Expect(len(header), len(header) + len(body), ())

    return _body.map(build)


def _multipart(children: list[tuple[bytes, Expect]], preamble: bytes | None,
               epilogue: bytes | None, tag: int) -> tuple[bytes, Expect]:
    boundary = b"_b%d_" % tag  # "_" never occurs in generated body lines
    header = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    out = bytearray(header)
    if preamble is not None:
        out += preamble + b"\r\n"
    placed = []
    for i, (data, expect) in enumerate(children):
        out += (b"--" if i == 0 else b"\r\n--") + boundary + b"\r\n"
        placed.append((len(out), expect))
        out += data
    out += b"\r\n--" + boundary + b"--"
    if epilogue is not None:
        out += b"\r\n" + epilogue
    return bytes(out), Expect(len(header), len(out), tuple(placed))


def _message(inner: tuple[bytes, Expect]) -> tuple[bytes, Expect]:
    header = b"Content-Type: message/rfc822\r\n\r\n"
    data, expect = inner
    return header + data, Expect(len(header), len(header) + len(data), ((len(header), expect),))


def _extend(children: st.SearchStrategy[tuple[bytes, Expect]]
            ) -> st.SearchStrategy[tuple[bytes, Expect]]:
    multipart = st.builds(
        _multipart, st.lists(children, min_size=1, max_size=3),
        st.none() | _body, st.none() | _body, st.integers(0, 10**6),
    )
    return multipart | children.map(_message)


TREES = st.recursive(_leaf(), _extend, max_leaves=8)


def check(part: MimePart, expect: Expect, start: int) -> None:
    assert (part.header_start, part.body_start, part.end) == (
        start, start + expect.header, start + expect.size)
    if part.envelope is not None:  # message/rfc822: the inner message starts at the body
        (offset, inner), = expect.children
        check(part.children[0], inner, start + offset)
        return
    assert len(part.children) == len(expect.children)
    for child, (offset, inner) in zip(part.children, expect.children, strict=True):
        check(child, inner, start + offset)


def chunked(data: bytes, cuts: list[int]) -> MessageStructure:
    parser = MimeParser()
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        parser.feed(data[last:cut])
        last = max(last, cut)
    parser.feed(data[last:])
    return parser.close()


class TestGenerated:
    @FAST
    @given(TREES)
    def test_every_part_lies_where_it_was_written(self, tree: tuple[bytes, Expect]) -> None:
        """Header, body and end offsets of every part match the generated message."""
        data, expect = tree
        message = b"From: x@example.org\r\n" + data
        structure = parse_message(message)
        check(structure.root, Expect(expect.header + 21, expect.size + 21, tuple(
            (offset + 21, child) for offset, child in expect.children)), 0)
        assert not structure.degraded

    @FAST
    @given(TREES, st.lists(st.integers(0, 10**6), max_size=6))
    def test_chunking_never_changes_the_structure(self, tree: tuple[bytes, Expect],
                                                  cuts: list[int]) -> None:
        """The same bytes cut at any positions give an equal structure."""
        data, _ = tree
        assert chunked(data, cuts) == parse_message(data)


def _valid(part: MimePart, low: int, high: int) -> None:
    assert low <= part.header_start <= part.body_start <= part.end <= high
    assert part.body_lines >= 0
    if part.is_multipart:
        assert part.children
    for child in part.children:
        _valid(child, part.body_start, part.end)


def _survives(data: bytes, cuts: list[int]) -> None:
    structure = chunked(data, cuts)
    assert structure == parse_message(data)
    assert structure.size == len(data)
    _valid(structure.root, 0, len(data))
    assert loads(dumps(structure)) == structure
    for utf8 in (False, True):  # well-formed IMAP, as a real client's parser reads it
        response = (b"1 (ENVELOPE " + envelope(structure.envelope, utf8=utf8)
                    + b" BODYSTRUCTURE " + bodystructure(structure, utf8=utf8)
                    + b" BODY " + body_plain(structure, utf8=utf8) + b")")
        parsed = parse_fetch_response(imaplib_shape(response))[1]
        assert {b"ENVELOPE", b"BODYSTRUCTURE", b"BODY"} <= parsed.keys()


_NOISE = st.lists(st.sampled_from([
    b"\r\n", b"\n", b"\r", b"--", b"--a", b"--a--", b"Content-Type: multipart/mixed; boundary=a",
    b"Content-Type: message/rfc822", b"Content-Type: multipart/digest; boundary=\"a\"",
    b"\r\n\r\n", b":", b" ", b"=?utf-8?b?", b"?=", b"\xff\xfe", b"\x00", b"From: <@a,@b:c@d>",
    b"To: g: a@b, (c) \"d\" <e@f>;", b"; name*0*=x''%", b"; name*1=y", b"(((", b"\"",
]), max_size=40).map(b"".join)


class TestHostile:
    @FAST
    @given(st.binary(max_size=400), st.lists(st.integers(0, 10**6), max_size=4))
    def test_random_bytes(self, data: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes parse, render and round-trip, in any chunking."""
        _survives(data, cuts)

    @FAST
    @given(_NOISE, st.lists(st.integers(0, 10**6), max_size=4))
    def test_mime_shaped_noise(self, data: bytes, cuts: list[int]) -> None:
        """Fragments of MIME syntax in any order parse, render and round-trip."""
        _survives(data, cuts)

    def test_deep_nesting_stops_at_the_depth_limit(self) -> None:
        """10,000 nested multiparts: bounded depth, no recursion error."""
        depth = 10_000
        header = b"Content-Type: multipart/mixed; boundary=b%d_\r\n\r\n--b%d_\r\n"
        data = b"".join(header % (i, i) for i in range(depth)) + b"x\r\n"
        structure = parse_message(data, MimeLimits(max_depth=20))
        levels = 0
        part = structure.root
        while part.children:
            part = part.children[0]
            levels += 1
        assert structure.degraded and levels <= 22
        assert bodystructure(structure).count(b"(") < 100

    def test_many_parts_stop_at_the_part_limit(self) -> None:
        """50,000 parts: the first max_parts are kept, the rest is epilogue."""
        data = (b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
                + b"--p\r\n\r\nx\r\n" * 50_000 + b"--p--\r\n")
        structure = parse_message(data)
        assert len(structure.root.children) == MimeLimits().max_parts - 1
        assert structure.degraded and structure.root.end == len(data)

    def test_huge_header_is_cut_at_the_limit(self) -> None:
        """A 1 MB header keeps at most max_header_bytes; offsets stay exact."""
        data = b"Subject: x\r\n" + b"X-Junk: " + b"j" * 1_000_000 + b"\r\n\r\nbody"
        structure = parse_message(data, MimeLimits(max_header_bytes=4096))
        assert structure.envelope.subject == "x"
        assert structure.root.body_start == len(data) - 4 and structure.degraded

    def test_long_boundary_line_split_anywhere(self) -> None:
        """A boundary of the maximum length is found across any chunk edge."""
        boundary = b"q" * MimeLimits().max_boundary_length
        data = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--"
                + boundary + b"\r\n\r\nbody\r\n--" + boundary + b"--\r\n")
        whole = parse_message(data)
        assert len(whole.root.children) == 1 and whole.root.children[0].body_size == 4
        for cut in range(len(data)):
            assert chunked(data, [cut]) == whole

    def test_many_dash_lines_inside_a_part(self) -> None:
        """Lines that start "--" but name no active boundary stay body text."""
        body = b"--x-not\r\n--\r\n-- \r\n" * 10_000
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + body
                + b"--b--\r\n")
        part, = parse_message(data).root.children
        assert part.body_size == len(body) - 2 and part.body_lines == 30_000
        assert chunked(data, [100, 1000, 50_000]) == parse_message(data)


class TestMemory:
    """The parser keeps headers, never bodies: memory does not grow with the message."""

    @staticmethod
    def peak_while_feeding(head: bytes, line: bytes, chunks: int) -> tuple[int, MessageStructure]:
        chunk = line * (65536 // len(line))
        parser = MimeParser()
        tracemalloc.start()
        try:
            parser.feed(head)
            for _ in range(chunks):
                parser.feed(chunk)
            structure = parser.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak, structure

    def test_a_long_body_is_not_kept(self) -> None:
        """16 MB of body fed in 64 KB chunks: the peak stays near one chunk."""
        head = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
        peak, structure = self.peak_while_feeding(head, b"QUJD" * 19 + b"\r\n--\r\n", 256)
        assert peak < 1_000_000
        assert structure.root.children[0].end == structure.size

    def test_a_header_that_never_ends_is_not_kept(self) -> None:
        """16 MB of header lines: only max_header_bytes of them are kept."""
        peak, structure = self.peak_while_feeding(b"Subject: x\r\n", b"X-Junk: 12345678\r\n", 256)
        assert peak < 1_000_000
        assert structure.degraded and structure.envelope.subject == "x"
