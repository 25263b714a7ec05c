"""Hypothesis: whatever bytes arrive, the SMTP machine answers in well-formed replies."""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_driver import SETTINGS

from postwarden.mail.reply import (
    AUTH_FAILED,
    AUTH_OK,
    OK,
    RECIPIENT_OK,
    RELAY_DENIED,
    SENDER_OK,
    SERVICE_UNAVAILABLE,
    TEMP_FAILURE,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_USER,
)
from postwarden.protocol.smtp import (
    CHUNK_SIZE,
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataChunk,
    DataEnd,
    MailFrom,
    RcptTo,
    SMTPSession,
    StartTLS,
)

REPLY_LINE = re.compile(rb"\d{3}[ -]")
DECISION_REPLIES = {
    MailFrom: [SENDER_OK, RELAY_DENIED, TEMP_FAILURE],
    RcptTo: [RECIPIENT_OK, UNKNOWN_USER, TOO_MANY_RECIPIENTS],
    DataEnd: [OK.with_text("Ok: queued as X"), TEMP_FAILURE],
    AuthCredentials: [AUTH_OK, AUTH_FAILED],
}
PLAIN = base64.b64encode(b"\0user\0pass")
COMMANDS = [
    b"EHLO client.example\r\n",
    b"HELO client\r\n",
    b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME ENVID=x+2By\r\n",
    b"MAIL FROM:<>\r\n",
    "MAIL FROM:<jörg@example.org> SMTPUTF8\r\n".encode(),
    b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\n",
    b"DATA\r\n.\r\n",
    b"BDAT 5\r\nab\r\nc",
    b"BDAT 3 LAST\r\nxyz",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN " + PLAIN + b"\r\n",
    b"AUTH PLAIN\r\n" + PLAIN + b"\r\n",
    b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n",
    b"AUTH LOGIN\r\n*\r\n",
    b"QUIT\r\n",
]
DECISION_TYPES = (MailFrom, RcptTo, DataEnd, AuthCredentials)


def check_output(out: bytes) -> None:
    """Every line is ``ddd`` + space or dash, and every line ends in CRLF."""
    if not out:
        return
    assert out.endswith(b"\r\n")
    assert out.count(b"\n") == out.count(b"\r\n") == out.count(b"\r")
    for line in out[:-2].split(b"\r\n"):
        assert REPLY_LINE.match(line), line


def run(stream: bytes, cuts: list[int], data: st.DataObject, **overrides: Any) -> None:
    session = SMTPSession(replace(SETTINGS, **overrides))
    check_output(session.data_to_send())
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    closed = False
    for piece in pieces:
        session.receive_data(piece)
        while not closed:
            event = session.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED, "every decision is answered at once"
            if isinstance(event, DECISION_TYPES):
                choices = DECISION_REPLIES[type(event)] + [SERVICE_UNAVAILABLE]
                session.send(data.draw(st.sampled_from(choices)), login="fuzz@example.test")
            elif isinstance(event, StartTLS):
                check_output(session.data_to_send())
                session.tls_started()
            elif isinstance(event, DataChunk):
                assert 0 < len(event.data) <= CHUNK_SIZE
            closed = isinstance(event, Closed)
        check_output(session.data_to_send())
        assert session.buffered <= len(piece) + SETTINGS.max_auth_line_length
    assert closed, "EOF always ends in Closed"


def mutate(stream: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Insert, delete or replace single bytes, favouring CR, LF, dot and NUL."""
    buf = bytearray(stream)
    for kind, pos, value in ops:
        where = pos % (len(buf) + 1)
        byte = b"\r\n.\0 :<>"[value % 8] if value < 200 else value
        match kind % 3:
            case 0:
                buf.insert(where, byte)
            case 1 if where < len(buf):
                del buf[where]
            case 2 if where < len(buf):
                buf[where] = byte
    return bytes(buf)


sessions = st.lists(st.sampled_from(COMMANDS), max_size=25).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
mutations = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=8
)
fuzz_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@fuzz_settings
@given(stream=sessions, cuts=cuts, data=st.data())
def test_valid_sessions_split_anywhere(stream: bytes, cuts: list[int], data: st.DataObject) -> None:
    """Valid command streams cut at random points, random decisions."""
    run(stream, cuts, data)


@fuzz_settings
@given(stream=sessions, ops=mutations, cuts=cuts, data=st.data(), plain_auth=st.booleans())
def test_mutated_sessions(
    stream: bytes,
    ops: list[tuple[int, int, int]],
    cuts: list[int],
    data: st.DataObject,
    plain_auth: bool,
) -> None:
    """Valid streams with bytes inserted, deleted or replaced."""
    run(mutate(stream, ops), cuts, data, auth_without_tls=plain_auth, max_message_size=40)


@fuzz_settings
@given(stream=st.binary(max_size=2000), cuts=cuts, data=st.data())
def test_random_bytes(stream: bytes, cuts: list[int], data: st.DataObject) -> None:
    """Pure noise, with a short line limit so over-long lines happen too."""
    run(b"EHLO x\r\n" + stream, cuts, data, max_line_length=40, max_auth_line_length=60)


@fuzz_settings
@given(
    lines=st.lists(
        st.sampled_from([line.split(b"\r\n")[0] for line in COMMANDS])
        | st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
        max_size=20,
    ),
    endings=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b""]), max_size=20),
    data=st.data(),
)
def test_mutated_line_endings(
    lines: list[bytes], endings: list[bytes], data: st.DataObject
) -> None:
    """Command lines and data lines glued with every kind of line ending."""
    ends = endings + [b"\r\n"] * len(lines)
    run(b"".join(line + end for line, end in zip(lines, ends, strict=False)), [], data)


def transcript(stream: bytes, bounds: list[int]) -> tuple[bytes, list[object]]:
    """Output and events (adjacent DataChunks merged) of a session fed in pieces."""
    session = SMTPSession(SETTINGS)
    events: list[object] = []
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    for piece in pieces:
        session.receive_data(piece)
        while (event := session.next_event()) is not NEED_DATA:
            assert event is not PAUSED
            if isinstance(event, DECISION_TYPES):
                session.send(DECISION_REPLIES[type(event)][0], login="fuzz@example.test")
            elif isinstance(event, StartTLS):
                session.tls_started()
            if isinstance(event, DataChunk) and events and isinstance(events[-1], bytes):
                events[-1] += event.data
            else:
                events.append(event.data if isinstance(event, DataChunk) else event)
            if isinstance(event, Closed):
                return session.data_to_send(), events
    raise AssertionError("no Closed after EOF")


@fuzz_settings
@given(stream=sessions.map(lambda s: s.replace(b"STARTTLS\r\n", b"")), cuts=cuts)
def test_splitting_never_changes_the_outcome(stream: bytes, cuts: list[int]) -> None:
    """The same stream cut anywhere gives the same replies, events and message bytes."""
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    assert transcript(stream, bounds) == transcript(stream, [0, len(stream)])
