"""Hypothesis: whatever the bytes, the IMAP machine answers and never raises."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imap_driver import logged_in, new

from postwarden.protocol.imap import IMAPSession
from postwarden.protocol.imap.commands import Append, StartTLS
from postwarden.protocol.imap.events import NEED_DATA, PAUSED, Closed
from postwarden.protocol.imap.responses import Done, Proceed, Status, TLSStarted

# Every line the machine may write on its own: untagged, tagged, or a continuation.
_LINE = re.compile(rb'(\* |\+ |[^\x00-\x20(){%*"\\+\x7f-\xff]+ (OK|NO|BAD) )')
TOKENS = [b"a1 ", b"UID ", b"FETCH ", b"SEARCH ", b"1:*", b"(", b")", b"[", b"]", b"<0.5>",
          b"{3}\r\n", b"{2+}\r\n", b"~{1}\r\n", b'"', b"\\", b" ", b"\r\n", b"\n", b"\0",
          b"BODY.PEEK", b"HEADER.FIELDS", b"NOT ", b"OR ", b"APPEND INBOX ", b"LOGIN ",
          b"AUTHENTICATE PLAIN", b"STARTTLS", b"COMPRESS DEFLATE", b"IDLE", b"DONE", b"*", b"$",
          b"\xff", b"SELECT ", b"&"]


def run(session: IMAPSession, chunks: list[bytes]) -> bytes:
    """Feed every chunk, answering as a server that refuses everything; return all output."""
    out = bytearray()
    last: object = None
    for chunk in [*chunks, b""]:
        session.receive_data(chunk)
        for _ in range(10_000):
            event = session.next_event()
            if event is NEED_DATA or isinstance(event, Closed):
                break
            if event is not PAUSED:
                last = event
                continue
            match last:
                case Append():
                    session.send(Proceed())
                case StartTLS():
                    session.send(TLSStarted())
                case _:
                    session.send(Done(Status.NO, "no"))
            last = None
        out += session.data_to_send()
    return bytes(out)


def check_lines(out: bytes) -> None:
    """Each line written is a status reply or a continuation request, nothing else."""
    assert out == b"" or out.endswith(b"\r\n")
    for line in out.split(b"\r\n")[:-1]:
        assert _LINE.match(line), line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    """Random octets: only replies come out, never an exception."""
    check_lines(run(new(max_literal_size=50, max_line_length=200), chunks))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join), max_size=6))
def test_random_command_shapes_never_raise(chunks: list[bytes]) -> None:
    """Near-IMAP input (tokens of the grammar in any order), logged in: never an exception."""
    check_lines(run(logged_in(max_literal_size=50, max_line_length=200), chunks))
