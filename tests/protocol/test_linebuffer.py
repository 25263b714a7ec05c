"""The bounded CRLF line buffer."""

from __future__ import annotations

from postwarden.protocol.linebuffer import LineBuffer, LineError


class TestLines:
    def test_returns_complete_lines_without_crlf(self) -> None:
        """Lines come out one at a time, CRLF stripped."""
        buf = LineBuffer()
        buf.feed(b"ONE\r\nTWO\r\nTHR")
        assert buf.read_line(100) == b"ONE"
        assert buf.read_line(100) == b"TWO"
        assert buf.read_line(100) is None
        buf.feed(b"EE\r\n")
        assert buf.read_line(100) == b"THREE"

    def test_waits_for_lf_after_trailing_cr(self) -> None:
        """A CR at the end of input may still be followed by its LF."""
        buf = LineBuffer()
        buf.feed(b"NOOP\r")
        assert buf.read_line(100) is None
        buf.feed(b"\n")
        assert buf.read_line(100) == b"NOOP"

    def test_refuses_bare_lf(self) -> None:
        """A LF without CR ends the line as an error, not as a line."""
        buf = LineBuffer()
        buf.feed(b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n")
        assert buf.read_line(100) is LineError.BARE_LINE_ENDING
        assert buf.read_line(100) == b"RCPT TO:<c@d>"

    def test_refuses_bare_cr_inside_a_line(self) -> None:
        """A CR not followed by LF poisons the whole line."""
        buf = LineBuffer()
        buf.feed(b"NOOP\rNOOP\r\n")
        assert buf.read_line(100) is LineError.BARE_LINE_ENDING


class TestLimits:
    def test_limit_counts_the_crlf(self) -> None:
        """A line of exactly ``limit`` octets with CRLF fits; one more does not."""
        buf = LineBuffer()
        buf.feed(b"x" * 8 + b"\r\n" + b"y" * 9 + b"\r\n")
        assert buf.read_line(10) == b"x" * 8
        assert buf.read_line(10) is LineError.TOO_LONG

    def test_drops_an_endless_line_as_it_arrives(self) -> None:
        """An over-long line is never held, and is reported once when it ends."""
        buf = LineBuffer()
        buf.feed(b"x" * 1000)
        assert buf.read_line(10) is None
        assert len(buf) == 0
        for _ in range(100):
            buf.feed(b"y" * 10_000)
            assert len(buf) == 0
        buf.feed(b"zz\r\nNOOP\r\n")
        assert buf.read_line(10) is LineError.TOO_LONG
        assert buf.read_line(10) == b"NOOP"

    def test_clear_forgets_a_skipped_line(self) -> None:
        """After clear() input is read from scratch."""
        buf = LineBuffer()
        buf.feed(b"x" * 100)
        assert buf.read_line(10) is None
        buf.clear()
        buf.feed(b"NOOP\r\n")
        assert buf.read_line(10) == b"NOOP"


class TestRawAccess:
    def test_peek_consume_take(self) -> None:
        """Octet modes read the same buffer without line rules."""
        buf = LineBuffer()
        buf.feed(b"abc\ndef")
        assert buf.peek(2) == b"ab"
        buf.consume(1)
        assert buf.take(3) == b"bc\n"
        assert buf.take(100) == b"def"
        assert len(buf) == 0


class TestLineCount:
    def test_counts_lines_handed_out_refused_ones_too(self) -> None:
        """``lines`` moves only when a line is complete, however it is fed."""
        buf = LineBuffer()
        buf.feed(b"NO")
        assert buf.read_line(100) is None and buf.lines == 0
        buf.feed(b"OP\r\nBAD\nLONG" + b"x" * 200)
        assert buf.read_line(100) == b"NOOP" and buf.lines == 1
        assert buf.read_line(100) is LineError.BARE_LINE_ENDING and buf.lines == 2
        assert buf.read_line(100) is None and buf.lines == 2  # skipping the long one
        buf.feed(b"xxx\r\n")
        assert buf.read_line(100) is LineError.TOO_LONG and buf.lines == 3
