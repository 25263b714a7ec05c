"""The byte plumbing shared by the SMTP, POP3 and IMAP machines.

Each machine is sans-IO: the server glue feeds it what the socket read
(``receive_data``) and writes what it produced (``data_to_send``). That
plumbing is the same for all three: input goes into one bounded
``LineBuffer``, output collects in a bytearray, an empty read means the
client closed its side, and input that arrives after the machine closed is
ignored. Only what "closed" means differs, so that is the one hook.
"""

from __future__ import annotations

from postwarden.protocol.linebuffer import LineBuffer


class SansIOConnection:
    """Input buffer, output buffer and end-of-input flag; subclasses say when they are closed."""

    def __init__(self) -> None:
        self._lines = LineBuffer()
        self._out = bytearray()
        self._eof = False

    def _is_closed(self) -> bool:
        """True once the session has ended: later input is dropped unread."""
        raise NotImplementedError

    def receive_data(self, data: bytes) -> None:
        """Input from the client; ``b""`` means the client closed its side."""
        if self._is_closed():
            return
        if data:
            self._lines.feed(data)
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """Everything produced since the last call, for the glue to write."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def lines_read(self) -> int:
        """Command and SASL lines read so far (refused ones too): the glue's
        deadline bounds each whole line, so it must see when one is complete."""
        return self._lines.lines

    @property
    def buffered(self) -> int:
        """Input octets held; bounded by the line (and literal) limits and one feed."""
        return len(self._lines)
