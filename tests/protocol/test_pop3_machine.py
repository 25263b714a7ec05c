"""The POP3 machine, bytes in and bytes out: no sockets, no store, no clock."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwarden.protocol.pop3 import (
    GREETING,
    NEED_DATA,
    PAUSED,
    Closed,
    CloseReason,
    DotStuffer,
    LoginAccepted,
    LoginAttempt,
    LoginRefused,
    MaildropItem,
    MessageChunk,
    MessageEnd,
    MessageStart,
    MessageUnavailable,
    POP3Machine,
    ProtocolError,
    Refusal,
    Retrieve,
    StartTLS,
    State,
    TimedOut,
    TLSStarted,
    Update,
    Updated,
    wire_size,
)

ITEMS = (
    MaildropItem(11, "1700000000.11", 120),
    MaildropItem(12, "1700000000.12", 200),
    MaildropItem(15, "1700000000.15", 3000),
)
NOT_ALLOWED = b"-ERR Unknown command or not allowed in this state\r\n"
NO_SUCH = b"-ERR No such message\r\n"
BAD_NUMBER = b"-ERR Invalid message number\r\n"
DELETED = b"-ERR Message is deleted\r\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new(*, plaintext: bool = True, tls_active: bool = False, tls_available: bool = True,
        max_bad: int = 10) -> POP3Machine:
    m = POP3Machine(plaintext_auth=plaintext, tls_active=tls_active,
                    tls_available=tls_available, max_bad_commands=max_bad)
    assert m.data_to_send() == GREETING
    return m


def say(m: POP3Machine, data: bytes) -> tuple[bytes, object]:
    """Feed client bytes; return what the machine wrote and the event it stopped at."""
    m.receive_data(data)
    event = m.next_event()
    return m.data_to_send(), event


def logged_in(items: tuple[MaildropItem, ...] = ITEMS) -> POP3Machine:
    m = new()
    say(m, b"USER u@example.test\r\n")
    _, event = say(m, b"PASS pw\r\n")
    assert isinstance(event, LoginAttempt)
    m.send(LoginAccepted(items))
    assert m.data_to_send() == b"+OK Logged in, %d messages\r\n" % len(items)
    return m


def retrieve(m: POP3Machine, command: bytes, chunks: list[bytes]) -> bytes:
    """Run a RETR/TOP with the given file pieces; return everything written."""
    _, event = say(m, command)
    assert isinstance(event, Retrieve)
    m.send(MessageStart())
    for chunk in chunks:
        if m.message_done:
            break
        m.send(MessageChunk(chunk))
    m.send(MessageEnd())
    return m.data_to_send()


class TestAuthorization:
    def test_greets_first(self) -> None:
        """The greeting is the first thing written."""
        m = POP3Machine(plaintext_auth=True, tls_active=False, tls_available=True,
                        max_bad_commands=10)
        assert m.data_to_send() == b"+OK postwarden POP3 server ready\r\n"
        assert m.state is State.AUTHORIZATION

    def test_capa_lists_plaintext_mechanisms_and_stls(self) -> None:
        """Before TLS on loopback CAPA offers USER, SASL PLAIN and STLS."""
        out, _ = say(new(), b"CAPA\r\n")
        assert out == (
            b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n"
            b"RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
            b"IMPLEMENTATION postwarden\r\n.\r\n"
        )

    def test_capa_hides_passwords_where_plaintext_is_refused(self) -> None:
        """Without plaintext auth, USER and SASL are not advertised."""
        out, _ = say(new(plaintext=False), b"capa\r\n")
        assert b"USER\r\n" not in out and b"SASL" not in out and b"STLS\r\n" in out

    def test_capa_drops_stls_once_tls_is_on(self) -> None:
        """On pop3s STLS is not offered."""
        out, _ = say(new(tls_active=True), b"CAPA\r\n")
        assert b"STLS" not in out and b"USER\r\n" in out

    def test_user_pass_asks_the_server(self) -> None:
        """USER then PASS yields one login attempt with the whole rest as password."""
        m = new()
        out, event = say(m, b"USER joe@example.test\r\n")
        assert out == b"+OK Send your password\r\n" and event is NEED_DATA
        out, event = say(m, b"PASS pass with spaces\r\n")
        assert event == LoginAttempt("USER", "", "joe@example.test", "pass with spaces")
        assert m.next_event() is PAUSED
        m.send(LoginAccepted(ITEMS))
        assert m.data_to_send() == b"+OK Logged in, 3 messages\r\n"
        assert m.state is State.TRANSACTION

    def test_password_is_not_in_the_repr(self) -> None:
        """A logged event never carries the password."""
        assert "secret" not in repr(LoginAttempt("USER", "", "u", "secret"))

    def test_pass_without_user_is_refused(self) -> None:
        """PASS first is a sequence error."""
        out, event = say(new(), b"PASS x\r\n")
        assert out == b"-ERR Send USER first\r\n" and event is NEED_DATA

    def test_user_is_refused_without_tls_when_plaintext_is_off(self) -> None:
        """[auth] plaintext_without_tls refuses USER with [AUTH]."""
        out, _ = say(new(plaintext=False), b"USER u\r\n")
        assert out.startswith(b"-ERR [AUTH] Plaintext authentication disallowed")

    @pytest.mark.parametrize(("reason", "reply"), [
        (Refusal.AUTH, b"-ERR [AUTH] Authentication failed\r\n"),
        (Refusal.THROTTLED, b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n"),
        (Refusal.IN_USE, b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n"),
    ])
    def test_refusals_carry_response_codes(self, reason: Refusal, reply: bytes) -> None:
        """RFC 2449/3206 codes on failed logins; the session stays in AUTHORIZATION."""
        m = new()
        say(m, b"USER u\r\n")
        say(m, b"PASS p\r\n")
        m.send(LoginRefused(reason))
        assert m.data_to_send() == reply
        assert m.state is State.AUTHORIZATION
        out, _ = say(m, b"PASS p\r\n")
        assert out == b"-ERR Send USER first\r\n"

    def test_auth_plain_with_initial_response(self) -> None:
        """AUTH PLAIN <base64> is one round trip (RFC 5034)."""
        _, event = say(new(), b"AUTH PLAIN " + b64(b"\0u@example.test\0pw").encode() + b"\r\n")
        assert event == LoginAttempt("PLAIN", "", "u@example.test", "pw")

    def test_auth_plain_with_continuation(self) -> None:
        """AUTH PLAIN without a response gets '+ ' and reads the next line."""
        m = new()
        out, event = say(m, b"AUTH PLAIN\r\n")
        assert out == b"+ \r\n" and event is NEED_DATA
        _, event = say(m, b64(b"\0u\0pw").encode() + b"\r\n")
        assert event == LoginAttempt("PLAIN", "", "u", "pw")

    def test_auth_cancelled_with_star(self) -> None:
        """'*' cancels the exchange with -ERR."""
        m = new()
        say(m, b"AUTH PLAIN\r\n")
        out, _ = say(m, b"*\r\n")
        assert out == b"-ERR Authentication cancelled\r\n"
        out, _ = say(m, b"NOOP\r\n")
        assert out == NOT_ALLOWED  # back to reading commands

    def test_auth_bad_base64(self) -> None:
        """Garbage in the SASL response is an [AUTH] error, not a crash."""
        out, _ = say(new(), b"AUTH PLAIN !!!\r\n")
        assert out == b"-ERR [AUTH] Invalid base64 data\r\n"

    def test_auth_unknown_mechanism(self) -> None:
        """Only PLAIN is spoken."""
        out, _ = say(new(), b"AUTH CRAM-MD5\r\n")
        assert out == b"-ERR Unsupported authentication mechanism\r\n"

    def test_auth_without_mechanism_lists_them(self) -> None:
        """Bare AUTH lists mechanisms, as older clients expect."""
        out, _ = say(new(), b"AUTH\r\n")
        assert out == b"+OK Methods supported\r\nPLAIN\r\n.\r\n"

    def test_transaction_commands_before_login(self) -> None:
        """STAT, RETR, LIST and friends are not allowed before login."""
        m = new()
        for command in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 1"):
            out, _ = say(m, command + b"\r\n")
            assert out == NOT_ALLOWED

    def test_quit_before_login(self) -> None:
        """QUIT in AUTHORIZATION closes without an UPDATE."""
        out, event = say(new(), b"QUIT\r\n")
        assert out == b"+OK postwarden POP3 server signing off\r\n"
        assert event == Closed(CloseReason.QUIT)

    def test_input_after_close_is_dropped_unread(self) -> None:
        """Once closed, what a client pipelined after QUIT is neither answered nor kept."""
        m = new()
        say(m, b"QUIT\r\n")
        out, event = say(m, b"CAPA\r\n" + b"x" * 100)
        assert (out, event, m.buffered) == (b"", Closed(CloseReason.QUIT), 0)


class TestSTLS:
    def test_stls_hands_over_and_discards_pipelined_plaintext(self) -> None:
        """Commands sent before the handshake are never obeyed (RFC 2595 §4)."""
        m = new()
        out, event = say(m, b"STLS\r\nUSER evil\r\n")
        assert out == b"+OK Begin TLS negotiation now\r\n" and isinstance(event, StartTLS)
        assert m.next_event() is PAUSED
        m.send(TLSStarted(plaintext_auth=True))
        assert m.tls_active and m.next_event() is NEED_DATA
        out, _ = say(m, b"PASS x\r\n")
        assert out == b"-ERR Send USER first\r\n"
        out, _ = say(m, b"STLS\r\n")
        assert out == b"-ERR Already using TLS\r\n"

    def test_user_given_before_stls_is_forgotten(self) -> None:
        """USER answered in plaintext, then STLS: PASS over TLS has no user to go with."""
        m = new()
        out, _ = say(m, b"USER alice@example.test\r\n")
        assert out == b"+OK Send your password\r\n"
        say(m, b"STLS\r\n")
        m.send(TLSStarted(plaintext_auth=True))
        out, event = say(m, b"PASS secret\r\n")
        assert out == b"-ERR Send USER first\r\n" and event is NEED_DATA

    def test_stls_unavailable_without_certificate(self) -> None:
        """No TLS context: STLS is refused and not advertised."""
        m = new(tls_available=False)
        out, _ = say(m, b"STLS\r\n")
        assert out == b"-ERR TLS not available\r\n"

    def test_plaintext_auth_enabled_after_tls(self) -> None:
        """A non-loopback peer may log in once TLS is on."""
        m = new(plaintext=False)
        say(m, b"STLS\r\n")
        m.send(TLSStarted(plaintext_auth=True))
        out, _ = say(m, b"USER u\r\n")
        assert out == b"+OK Send your password\r\n"


class TestTransaction:
    def test_stat_and_list(self) -> None:
        """STAT and LIST count the snapshot's wire sizes."""
        m = logged_in()
        out, _ = say(m, b"STAT\r\n")
        assert out == b"+OK 3 3320\r\n"
        out, _ = say(m, b"LIST\r\n")
        assert out == b"+OK 3 messages (3320 octets)\r\n1 120\r\n2 200\r\n3 3000\r\n.\r\n"
        out, _ = say(m, b"LIST 2\r\n")
        assert out == b"+OK 2 200\r\n"

    def test_uidl(self) -> None:
        """UIDL shows UIDVALIDITY.UID for every message."""
        m = logged_in()
        out, _ = say(m, b"UIDL\r\n")
        assert out == (b"+OK 3 messages (3320 octets)\r\n1 1700000000.11\r\n"
                       b"2 1700000000.12\r\n3 1700000000.15\r\n.\r\n")
        out, _ = say(m, b"UIDL 3\r\n")
        assert out == b"+OK 3 1700000000.15\r\n"

    @pytest.mark.parametrize(("command", "reply"), [
        (b"RETR 0", NO_SUCH), (b"RETR 4", NO_SUCH), (b"RETR -1", BAD_NUMBER),
        (b"RETR +1", BAD_NUMBER), (b"RETR 1x", BAD_NUMBER), (b"LIST 99999999999", BAD_NUMBER),
        (b"DELE 7", NO_SUCH), (b"TOP 1 -1", b"-ERR Syntax error\r\n"),
        (b"RETR", b"-ERR Syntax error\r\n"), (b"RETR 1 2", b"-ERR Syntax error\r\n"),
        (b"UIDL \xd9\xa1", BAD_NUMBER), (b"LIST 1 2", b"-ERR Syntax error\r\n"),
    ])
    def test_bad_message_numbers(self, command: bytes, reply: bytes) -> None:
        """Out of range, negative and malformed numbers get -ERR and nothing else."""
        m = logged_in()
        out, event = say(m, command + b"\r\n")
        assert out == reply and event is NEED_DATA

    def test_dele_marks_and_rset_unmarks(self) -> None:
        """A deleted message disappears from STAT/LIST until RSET."""
        m = logged_in()
        out, _ = say(m, b"DELE 2\r\n")
        assert out == b"+OK Message 2 deleted\r\n"
        for command in (b"DELE 2", b"RETR 2", b"LIST 2", b"TOP 2 0", b"UIDL 2"):
            out, _ = say(m, command + b"\r\n")
            assert out == DELETED
        out, _ = say(m, b"STAT\r\n")
        assert out == b"+OK 2 3120\r\n"
        out, _ = say(m, b"LIST\r\n")
        assert out == b"+OK 2 messages (3120 octets)\r\n1 120\r\n3 3000\r\n.\r\n"
        out, _ = say(m, b"RSET\r\n")
        assert out == b"+OK Maildrop has 3 messages (3320 octets)\r\n"
        out, _ = say(m, b"STAT\r\n")
        assert out == b"+OK 3 3320\r\n"

    def test_quit_applies_deletions(self) -> None:
        """QUIT enters UPDATE with exactly the marked messages."""
        m = logged_in()
        say(m, b"DELE 3\r\nDELE 1\r\n")
        _, event = say(m, b"QUIT\r\n")
        assert event == Update((ITEMS[0], ITEMS[2]))
        assert m.state is State.UPDATE
        m.send(Updated(ok=True))
        assert m.data_to_send() == b"+OK postwarden POP3 server signing off\r\n"
        assert m.next_event() == Closed(CloseReason.QUIT)

    def test_failed_update_is_reported(self) -> None:
        """If the store fails, QUIT says so (RFC 1939 §6)."""
        m = logged_in()
        say(m, b"DELE 1\r\nQUIT\r\n")
        m.send(Updated(ok=False))
        assert m.data_to_send().startswith(b"-ERR [SYS/TEMP]")

    def test_dropped_connection_deletes_nothing(self) -> None:
        """EOF after DELE closes without an Update event."""
        m = logged_in()
        _, event = say(m, b"DELE 1\r\n")
        assert event is NEED_DATA
        m.receive_data(b"")
        assert m.next_event() == Closed(CloseReason.EOF)

    def test_noop_and_capa_in_transaction(self) -> None:
        """NOOP answers +OK; CAPA no longer offers login mechanisms."""
        m = logged_in()
        out, _ = say(m, b"NOOP\r\n")
        assert out == b"+OK \r\n"
        out, _ = say(m, b"CAPA\r\n")
        assert b"USER" not in out and b"STLS" not in out and b"UIDL" in out

    def test_login_commands_are_refused_after_login(self) -> None:
        """USER, PASS, AUTH and STLS belong to AUTHORIZATION only."""
        m = logged_in()
        for command in (b"USER x", b"PASS y", b"AUTH PLAIN", b"STLS"):
            out, _ = say(m, command + b"\r\n")
            assert out == NOT_ALLOWED

    def test_timeout_closes_without_update(self) -> None:
        """An idle client is told and dropped; nothing is deleted."""
        m = logged_in()
        say(m, b"DELE 1\r\n")
        m.send(TimedOut())
        assert m.data_to_send() == b"-ERR Autologout; idle for too long\r\n"
        assert m.next_event() == Closed(CloseReason.TIMEOUT)


class TestRetrieve:
    def test_retr_dot_stuffs_across_chunks(self) -> None:
        """Lines starting with '.' get another '.', even when a chunk ends before it."""
        m = logged_in()
        out = retrieve(m, b"RETR 1\r\n", [b".first\r\nSubject: x\r\n", b".\r\n.", b"..x\r\nend"])
        assert out == (b"+OK 120 octets\r\n..first\r\nSubject: x\r\n..\r\n....x\r\nend\r\n.\r\n")

    def test_unavailable_message(self) -> None:
        """A message file gone since login is a temporary error, and the session goes on."""
        m = logged_in()
        say(m, b"RETR 1\r\n")
        m.send(MessageUnavailable())
        assert m.data_to_send() == b"-ERR [SYS/TEMP] Message is no longer available\r\n"
        out, _ = say(m, b"NOOP\r\n")
        assert out == b"+OK \r\n"

    def test_top_sends_header_and_n_lines(self) -> None:
        """TOP 1 2: the header, the empty line, two body lines."""
        message = [b"A: 1\r\nB: 2\r", b"\n\r\n.one\r\ntwo\r\nthree\r\n"]
        out = retrieve(logged_in(), b"TOP 1 2\r\n", message)
        assert out == b"+OK Top of message\r\nA: 1\r\nB: 2\r\n\r\n..one\r\ntwo\r\n.\r\n"

    def test_top_zero_sends_only_the_header(self) -> None:
        """TOP n 0 stops at the empty line."""
        out = retrieve(logged_in(), b"TOP 1 0\r\n", [b"A: 1\r\n\r\nbody\r\n"])
        assert out == b"+OK Top of message\r\nA: 1\r\n\r\n.\r\n"

    def test_top_beyond_the_end_sends_everything(self) -> None:
        """More lines than the body has: the whole message."""
        out = retrieve(logged_in(), b"TOP 1 100\r\n", [b"A: 1\r\n\r\nx\r\ny"])
        assert out == b"+OK Top of message\r\nA: 1\r\n\r\nx\r\ny\r\n.\r\n"

    def test_commands_wait_while_a_message_is_sent(self) -> None:
        """Pipelined commands after RETR are answered after the message."""
        m = logged_in()
        _, event = say(m, b"RETR 1\r\nNOOP\r\n")
        assert isinstance(event, Retrieve) and m.next_event() is PAUSED
        m.send(MessageStart())
        m.send(MessageChunk(b"x\r\n"))
        m.send(MessageEnd())
        assert m.next_event() is NEED_DATA
        assert m.data_to_send() == b"+OK 120 octets\r\nx\r\n.\r\n+OK \r\n"

    def test_unexpected_answer_is_a_bug(self) -> None:
        """The server can only answer what was asked."""
        with pytest.raises(ProtocolError):
            logged_in().send(MessageChunk(b"x"))


class TestWireSize:
    @given(st.lists(st.binary(max_size=40).map(
        lambda b: b.replace(b"\x00", b".").replace(b"\x01", b"\r\n")), max_size=8))
    def test_size_is_exactly_what_retr_sends(self, chunks: list[bytes]) -> None:
        """wire_size equals the octets between '+OK' and the terminator, for any chunking."""
        stuffer = DotStuffer()
        sent = b"".join(stuffer.feed(c) for c in chunks) + stuffer.finish()
        assert wire_size(chunks) == len(sent) - 3
        assert sent.endswith(b".\r\n")
        whole = b"".join(chunks)
        again = DotStuffer()
        assert again.feed(whole) + again.finish() == sent  # chunking never matters

    def test_counts_the_stuffed_dots(self) -> None:
        """'.x' lines cost one octet more each; an unterminated last line two more."""
        assert wire_size([b".a\r\n", b".b\r\nc"]) == 9 + 2 + 2


class TestBadInput:
    def test_unknown_commands(self) -> None:
        """Unknown verbs get -ERR and the session continues."""
        m = new()
        out, event = say(m, b"XYZZY\r\n")
        assert out == NOT_ALLOWED and event is NEED_DATA

    def test_over_long_line(self) -> None:
        """Over 255 octets: -ERR, the line is dropped, the next one works."""
        m = new()
        out, _ = say(m, b"NOOP " + b"x" * 300 + b"\r\nCAPA\r\n")
        assert out.startswith(b"-ERR Line too long\r\n+OK Capability list follows")

    def test_over_long_line_in_pieces_is_not_buffered(self) -> None:
        """A line that never ends never grows the buffer past the limit."""
        m = new()
        for _ in range(100):
            say(m, b"A" * 10_000)
        out, _ = say(m, b"\r\nCAPA\r\n")
        assert out.startswith(b"-ERR Line too long\r\n+OK")

    def test_binary_garbage(self) -> None:
        """Non-UTF-8 bytes and bare line feeds are refused one by one."""
        m = new()
        out, _ = say(m, b"\xff\xfe\x00\x01\r\n")
        assert out == NOT_ALLOWED
        out, _ = say(m, b"CAPA\n")
        assert out == b"-ERR Lines must end with CRLF\r\n"

    def test_too_many_bad_commands_close(self) -> None:
        """The bad-command budget ends the session with -ERR."""
        m = new(max_bad=3)
        out, event = say(m, b"A\r\nB\r\nC\r\nD\r\n")
        assert out == NOT_ALLOWED * 2 + b"-ERR Too many bad commands, closing connection\r\n"
        assert event == Closed(CloseReason.BAD_COMMANDS)

    def test_thousand_pipelined_commands(self) -> None:
        """1000 commands in one write are answered in order."""
        m = logged_in()
        out, event = say(m, b"NOOP\r\nSTAT\r\n" * 500)
        assert event is NEED_DATA
        assert out == b"+OK \r\n+OK 3 3320\r\n" * 500
