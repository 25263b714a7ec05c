"""The IMAP machine, bytes in and bytes out: no sockets, no store, no clock."""

from __future__ import annotations

import base64

import pytest
from imap_driver import OK, SETTINGS, answer, drain, logged_in, new, say, selected

from postwarden.protocol.imap import IMAPSession, ProtocolError, State
from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendData,
    AppendEnd,
    Closed,
    CloseReason,
    CompressionStarted,
    Enabled,
    IdleDone,
    LoginAttempt,
)

CONTINUE = b"+ Ready for literal data\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def served(session: IMAPSession, tag: bytes = b"z") -> bool:
    """Does the session still answer a command (a NOOP, answered by the test)?"""
    _, event = say(session, tag + b" NOOP\r\n")
    if not isinstance(event, c.Noop):
        return False
    out, _ = answer(session)
    return out == tag + b" OK completed\r\n"


class TestGreetingAndCapabilities:
    def test_greeting_carries_capabilities(self) -> None:
        """The greeting is OK with a CAPABILITY code, so clients need not ask."""
        session = IMAPSession(SETTINGS)
        assert session.data_to_send().startswith(
            b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 STARTTLS AUTH=PLAIN AUTH=LOGIN SASL-IR ")

    def test_logindisabled_without_tls_when_plaintext_is_refused(self) -> None:
        """No TLS and no plaintext auth: LOGINDISABLED, no AUTH=, STARTTLS offered."""
        session = new(plaintext_auth=False)
        out, _ = say(session, b"a CAPABILITY\r\n")
        caps = out.split(b"\r\n")[0].split()
        assert b"LOGINDISABLED" in caps and b"STARTTLS" in caps
        assert not any(cap.startswith(b"AUTH=") for cap in caps)

    def test_after_tls_auth_is_offered_and_starttls_is_not(self) -> None:
        """On TLS: AUTH mechanisms, no STARTTLS, no LOGINDISABLED."""
        session = new(plaintext_auth=False, tls_active=True)
        out, _ = say(session, b"a CAPABILITY\r\n")
        caps = out.split(b"\r\n")[0].split()
        assert b"AUTH=PLAIN" in caps and b"SASL-IR" in caps
        assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps

    def test_after_login_compress_is_offered_and_auth_is_not(self) -> None:
        """Authenticated: COMPRESS=DEFLATE appears, AUTH= and STARTTLS go."""
        session = logged_in()
        out, _ = say(session, b"a CAPABILITY\r\n")
        caps = out.split(b"\r\n")[0].split()
        assert b"COMPRESS=DEFLATE" in caps and b"APPENDLIMIT=26214400" in caps
        assert b"STARTTLS" not in caps and b"AUTH=PLAIN" not in caps
        assert out.endswith(b"a OK CAPABILITY completed\r\n")

    def test_literal_minus_is_advertised_when_configured(self) -> None:
        """literal_plus=False: LITERAL- instead of LITERAL+."""
        out, _ = say(new(literal_plus=False), b"a CAPABILITY\r\n")
        assert b" LITERAL- " in out and b"LITERAL+" not in out


class TestLiterals:
    def test_synchronising_literal_split_at_every_byte(self) -> None:
        """A LOGIN with two literals, fed in two pieces cut at every position, works."""
        wire = b"a LOGIN {3}\r\njoe {6}\r\nse\"c t\r\n"
        for cut in range(1, len(wire)):
            session = new()
            out1, event1 = say(session, wire[:cut])
            out2, event2 = say(session, wire[cut:])
            event = event2 if event1 is NEED_DATA else event1
            assert event == LoginAttempt("a", "LOGIN", "", "joe", 'se"c t'), cut
            assert (out1 + out2) == CONTINUE * 2, cut

    def test_every_byte_alone(self) -> None:
        """One byte per receive_data call still gives the command."""
        session = new()
        events = []
        for octet in b"a LOGIN {3}\r\njoe {2+}\r\npw\r\n":
            session.receive_data(bytes([octet]))
            event = session.next_event()
            if event is not NEED_DATA:
                events.append(event)
        assert events == [LoginAttempt("a", "LOGIN", "", "joe", "pw")]
        assert session.data_to_send() == CONTINUE

    def test_literal_plus_needs_no_continuation(self) -> None:
        """{n+} literals are read without a '+' (RFC 7888)."""
        out, event = say(new(), b"a LOGIN {3+}\r\njoe {2+}\r\npw\r\n")
        assert out == b""
        assert event == LoginAttempt("a", "LOGIN", "", "joe", "pw")

    def test_literal_above_limit_is_refused_before_it_is_read(self) -> None:
        """{n} over the limit: BAD [TOOBIG], no '+', and the next line is a command."""
        session = logged_in(max_literal_size=100)
        out, event = say(session, b"a SELECT {101}\r\n")
        assert out == b"a BAD [TOOBIG] Literal too big\r\n"
        assert event is NEED_DATA
        assert session.buffered == 0
        assert served(session)

    def test_nonsync_literal_above_limit_is_dropped_not_obeyed(self) -> None:
        """{n+} over the limit: its octets are discarded (even if they look like
        commands), the rest of the command too, then BAD; then service goes on."""
        session = logged_in(max_literal_size=10)
        payload = b"x LOGOUT\r\ny LOGOUT\r\n"
        out, event = say(session, b"a SELECT {%d+}\r\n" % len(payload) + payload + b" (x)\r\n")
        assert out == b"a BAD [TOOBIG] Literal too big\r\n"
        assert event is NEED_DATA
        assert session.state is State.AUTHENTICATED
        assert served(session)

    def test_literal_minus_refuses_nonsync_over_4096(self) -> None:
        """Under LITERAL-, a {4097+} is refused (RFC 7888 §5) and discarded."""
        session = logged_in(literal_plus=False)
        out, _ = say(session, b"a STATUS {4097+}\r\n" + b"b" * 4097 + b" (MESSAGES)\r\n")
        assert out.startswith(b"a BAD [TOOBIG] Non-synchronizing literals are limited")
        assert served(session)
        _, event = say(session, b"c STATUS {4096+}\r\n" + b"b" * 4096 + b" (MESSAGES)\r\n")
        assert isinstance(event, c.Status)

    def test_whole_command_is_bounded(self) -> None:
        """Many small literals cannot add up past max_command_size."""
        session = logged_in(max_command_size=200)
        out, _ = say(session, b"a LIST {150}\r\n" + b"r" * 150 + b" {60}\r\n")
        assert out == CONTINUE + b"a BAD [TOOBIG] Literal too big\r\n"
        assert served(session)

    def test_long_command_line_counts_toward_the_command_limit(self) -> None:
        """Lines after literals count too: past max_command_size the command is refused."""
        session = logged_in(max_command_size=100, max_literal_size=20)
        out, _ = say(session, b"a LIST {2}\r\n")
        assert out == CONTINUE
        out, _ = say(session, b'ab "' + b"x" * 120 + b'"\r\n')
        assert out == b"a BAD [TOOBIG] Command too long\r\n"
        assert served(session)

    def test_literal8_outside_append_is_bad(self) -> None:
        """~{n} is for APPEND's message only."""
        out, _ = say(logged_in(), b"a SELECT ~{3}\r\n")
        assert out == b"a BAD literal8 is only allowed for APPEND's message\r\n"

    def test_literal_of_a_misplaced_command_is_never_asked_for(self) -> None:
        """A command refused by state rules gets no '+' for its literal."""
        out, _ = say(new(), b"a SELECT {5}\r\n")
        assert out == b"a BAD Log in first\r\n"


class TestSyntaxErrors:
    @pytest.mark.parametrize(("line", "reply"), [
        (b"a FROB\r\n", b"a BAD Unknown command FROB\r\n"),
        (b"a\r\n", b"a BAD Expected a space and a command after the tag\r\n"),
        (b"+ NOOP\r\n", b"* BAD Expected a tag\r\n"),
        (b"(x) NOOP\r\n", b"* BAD Expected a tag\r\n"),
        (b"a NOOP extra\r\n", b"a BAD Unexpected characters at the end of the command\r\n"),
        (b'a LOGIN "x\r\n', b"a BAD Unterminated quoted string\r\n"),
        (b"a LOGIN x\ny z\r\n", b"* BAD Lines must end with CRLF\r\ny BAD Unknown command Z\r\n"),
        (b"a LOGIN \x00 x\r\n", b"a BAD Expected a user name\r\n"),
        (b"a\x80 NOOP\r\n", b"a BAD Expected a space and a command after the tag\r\n"),
    ])
    def test_each_error_is_bad_and_the_session_serves_on(self, line: bytes, reply: bytes) -> None:
        """A malformed line gets its BAD (tagged when a tag was readable); then NOOP works."""
        session = new()
        out, event = say(session, line)
        assert out == reply
        assert event is NEED_DATA
        assert served(session)

    @pytest.mark.parametrize("line", [
        b"a FETCH 1 (FLAGS\r\n", b"a FETCH x FLAGS\r\n", b"a FETCH 1 BODY[9.X]\r\n",
        b"a STORE 1 +FLAGS (\\Recent)\r\n", b"a SEARCH SINCE yesterday\r\n",
        b"a UID FROB 1\r\n", b"a COPY 1\r\n", b"a SEARCH OR\r\n", b"a UID\r\n",
    ])
    def test_selected_state_syntax_errors(self, line: bytes) -> None:
        """Malformed selected-state commands are BAD, and the mailbox stays selected."""
        session = selected()
        out, _ = say(session, line)
        assert out.startswith(b"a BAD ")
        assert session.state is State.SELECTED
        assert served(session)

    def test_badcharset_is_a_no(self) -> None:
        """An unsupported SEARCH charset is NO [BADCHARSET (...)] (RFC 9051 §6.4.4)."""
        out, _ = say(selected(), b"a SEARCH CHARSET BIG5 ALL\r\n")
        assert out == b"a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset BIG5\r\n"

    def test_line_too_long_is_bad_with_its_tag(self) -> None:
        """A command line over the limit is dropped as it comes and answered BAD [TOOBIG]."""
        session = new(max_line_length=100)
        out, _ = say(session, b"t1 LOGIN " + b"x" * 300)
        assert out == b""
        assert session.buffered < 100
        out, _ = say(session, b"x" * 300 + b"\r\n")
        assert out == b"t1 BAD [TOOBIG] Command line too long\r\n"
        assert served(session)

    def test_too_many_bad_commands_end_the_session(self) -> None:
        """After max_bad_commands BADs: BYE and Closed."""
        session = new(max_bad_commands=3)
        out, event = say(session, b"a X\r\nb X\r\nc X\r\nd NOOP\r\n")
        assert out.endswith(b"c BAD Unknown command X\r\n* BYE Too many invalid commands\r\n")
        assert event == Closed(CloseReason.BAD_COMMANDS)

    def test_empty_lines_are_ignored(self) -> None:
        """A bare CRLF (a keep-alive) is neither a command nor an error."""
        session = new()
        out, event = say(session, b"\r\n\r\n")
        assert (out, event) == (b"", NEED_DATA)


class TestPipelining:
    def test_thousand_commands_in_one_burst(self) -> None:
        """1,000 pipelined commands in one read are each answered, in order."""
        session = selected()
        burst = b"".join(b"n%d NOOP\r\n" % i for i in range(1000))
        session.receive_data(burst)
        tags = []
        for _ in range(1000):
            event = session.next_event()
            assert isinstance(event, c.Noop)
            tags.append(event.tag)
            session.send(r.Exists(i := len(tags)))
            session.send(OK)
        assert tags == [f"n{i}" for i in range(1000)]
        assert session.next_event() is NEED_DATA
        out = session.data_to_send()
        assert out.count(b" OK completed\r\n") == 1000
        assert out.startswith(b"* 1 EXISTS\r\nn0 OK completed\r\n")
        assert out.endswith(b"* %d EXISTS\r\nn999 OK completed\r\n" % i)

    def test_paused_until_the_answer(self) -> None:
        """A second pipelined command waits until the first is done."""
        session = selected()
        _, event = say(session, b"a NOOP\r\nb CHECK\r\n")
        assert isinstance(event, c.Noop)
        assert session.next_event() is PAUSED
        out, event = answer(session)
        assert out == b"a OK completed\r\n"
        assert event == c.Check("b")


class TestStateRules:
    @pytest.mark.parametrize(("line", "reply"), [
        (b"a SELECT INBOX\r\n", b"a BAD Log in first\r\n"),
        (b"a FETCH 1 FLAGS\r\n", b"a BAD Log in first\r\n"),
        (b"a ENABLE QRESYNC\r\n", b"a BAD Log in first\r\n"),
        (b"a IDLE\r\n", b"a BAD Log in first\r\n"),
    ])
    def test_not_authenticated(self, line: bytes, reply: bytes) -> None:
        """Before login only CAPABILITY/NOOP/LOGOUT/ID/STARTTLS/LOGIN/AUTHENTICATE."""
        out, _ = say(new(), line)
        assert out == reply

    @pytest.mark.parametrize(("line", "reply"), [
        (b"a LOGIN x y\r\n", b"a BAD Already authenticated\r\n"),
        (b"a AUTHENTICATE PLAIN\r\n", b"a BAD Already authenticated\r\n"),
        (b"a STARTTLS\r\n", b"a BAD Already authenticated\r\n"),
        (b"a FETCH 1 FLAGS\r\n", b"a BAD No mailbox selected\r\n"),
        (b"a UID EXPUNGE 1\r\n", b"a BAD No mailbox selected\r\n"),
        (b"a CLOSE\r\n", b"a BAD No mailbox selected\r\n"),
    ])
    def test_authenticated(self, line: bytes, reply: bytes) -> None:
        """Logged in, no mailbox: no login commands, no message commands."""
        out, _ = say(logged_in(), line)
        assert out == reply

    def test_enable_only_before_select(self) -> None:
        """ENABLE in the selected state is refused (RFC 5161 §3.1)."""
        out, _ = say(selected(), b"a ENABLE CONDSTORE\r\n")
        assert out == b"a BAD ENABLE is not allowed with a mailbox selected\r\n"

    def test_failed_select_leaves_no_mailbox_selected(self) -> None:
        """A NO to SELECT while selected closes the old mailbox (RFC 9051 §6.3.2)."""
        session = selected()
        say(session, b"a SELECT nosuch\r\n")
        out, _ = answer(session, r.Done(r.Status.NO, "No such mailbox", r.Code.NONEXISTENT))
        assert out == b"a NO [NONEXISTENT] No such mailbox\r\n"
        assert session.state is State.AUTHENTICATED

    def test_examine_is_read_only(self) -> None:
        """EXAMINE's OK gets [READ-ONLY] and the session remembers it."""
        session = logged_in()
        _, event = say(session, b"a EXAMINE INBOX\r\n")
        assert event == c.Select("a", "INBOX", readonly=True)
        out, _ = answer(session)
        assert out == b"a OK [READ-ONLY] completed\r\n"
        assert session.readonly and session.state is State.SELECTED

    @pytest.mark.parametrize("line", [b"a CLOSE\r\n", b"a UNSELECT\r\n"])
    def test_close_and_unselect_leave_the_mailbox(self, line: bytes) -> None:
        """CLOSE/UNSELECT OK: back to the authenticated state."""
        session = selected()
        say(session, line)
        answer(session)
        assert session.state is State.AUTHENTICATED

    def test_refused_login_stays_unauthenticated(self) -> None:
        """A NO to a login attempt changes nothing."""
        session = new()
        say(session, b"a LOGIN joe wrong\r\n")
        out, _ = answer(session, r.Done(r.Status.NO, "Wrong", r.Code.AUTHENTICATIONFAILED))
        assert out == b"a NO [AUTHENTICATIONFAILED] Wrong\r\n"
        assert session.state is State.NOT_AUTHENTICATED

    def test_login_disabled_without_tls(self) -> None:
        """LOGINDISABLED: LOGIN and AUTHENTICATE are NO [PRIVACYREQUIRED], no event."""
        session = new(plaintext_auth=False)
        out, event = say(session, b"a LOGIN joe pw\r\nb AUTHENTICATE PLAIN\r\n")
        assert out == (b"a NO [PRIVACYREQUIRED] Plaintext login is disabled; use STARTTLS\r\n"
                       b"b NO [PRIVACYREQUIRED] Plaintext login is disabled; use STARTTLS\r\n")
        assert event is NEED_DATA

    def test_logout(self) -> None:
        """LOGOUT: untagged BYE, then the tagged OK, then Closed."""
        out, event = say(selected(), b"a LOGOUT\r\nb NOOP\r\n")
        assert out == b"* BYE Logging out\r\na OK LOGOUT completed\r\n"
        assert event == Closed(CloseReason.LOGOUT)

    def test_server_bye_closes(self) -> None:
        """An untagged BYE from the server (autologout) ends the session."""
        session = logged_in()
        session.send(r.Condition(r.Status.BYE, "Autologout; idle for too long"))
        assert session.data_to_send() == b"* BYE Autologout; idle for too long\r\n"
        assert session.next_event() == Closed(CloseReason.BYE)

    def test_eof_closes(self) -> None:
        """The client going away is Closed(EOF)."""
        assert say(logged_in(), b"")[1] == Closed(CloseReason.EOF)

    def test_unexpected_answer_is_a_protocol_error(self) -> None:
        """Done with nothing outstanding is a server bug, raised loudly."""
        with pytest.raises(ProtocolError):
            logged_in().send(OK)


class TestAppend:
    def test_synchronising_append(self) -> None:
        """Head event, '+' only after Proceed, the octets, AppendEnd, then the OK."""
        session = logged_in()
        out, event = say(session, b'a APPEND Sent (\\Seen) "30-Nov-2026 12:00:00 +0000" {5}\r\n')
        assert out == b""
        assert isinstance(event, c.Append) and event.size == 5 and event.flags == ("\\Seen",)
        session.send(r.Proceed())
        assert session.data_to_send() == b"+ Ready for the message\r\n"
        assert drain_until_decision(session, b"hel") == [AppendData(b"hel")]
        assert drain_until_decision(session, b"lo\r\n") == [AppendData(b"lo"), AppendEnd("a")]
        out, _ = answer(session, r.Done(r.Status.OK, "APPEND completed", r.AppendUid(3, 41)))
        assert out == b"a OK [APPENDUID 3 41] APPEND completed\r\n"

    def test_append_split_at_every_byte(self) -> None:
        """APPEND with a flag list, a date and the message, cut anywhere, arrives whole."""
        wire = b'a APPEND INBOX (\\Seen) " 1-Dec-2026 08:00:00 +0100" {8}\r\nhi\r\nyo\r\n\r\n'
        for cut in range(1, len(wire)):
            session = logged_in()
            seen: list[object] = []
            out = bytearray()
            for piece in (wire[:cut], wire[cut:]):
                session.receive_data(piece)
                while (event := session.next_event()) not in (NEED_DATA, PAUSED):
                    seen.append(event)
                    if isinstance(event, c.Append):
                        session.send(r.Proceed())
                out += session.data_to_send()
            data = b"".join(e.data for e in seen if isinstance(e, AppendData))
            assert (data, seen[-1], bytes(out)) == (
                b"hi\r\nyo\r\n", AppendEnd("a"), b"+ Ready for the message\r\n"), cut

    def test_refused_synchronising_append_reads_nothing(self) -> None:
        """A NO to the head (e.g. TRYCREATE): no '+', and the next line is a command."""
        session = logged_in()
        say(session, b"a APPEND Nope {5}\r\n")
        out, event = answer(session, r.Done(r.Status.NO, "No such mailbox", r.Code.TRYCREATE))
        assert out == b"a NO [TRYCREATE] No such mailbox\r\n"
        assert event is NEED_DATA
        assert served(session)

    def test_refused_nonsync_append_discards_the_message(self) -> None:
        """LITERAL+ APPEND refused: its octets are dropped, then the NO is sent."""
        session = logged_in()
        say(session, b"a APPEND Nope {12+}\r\n")
        session.send(r.Done(r.Status.NO, "Over quota", r.Code.OVERQUOTA))
        assert session.data_to_send() == b""
        out, event = say(session, b"b LOGOUT\r\n\r\n" + b"\r\n")
        assert out == b"a NO [OVERQUOTA] Over quota\r\n"
        assert event is NEED_DATA
        assert served(session)

    def test_message_above_appendlimit_is_refused_before_it_is_read(self) -> None:
        """Bigger than APPENDLIMIT: NO [TOOBIG] at once, no event, no '+'."""
        session = logged_in(max_append_size=1000)
        out, event = say(session, b"a APPEND INBOX {1001}\r\n")
        assert out == b"a NO [TOOBIG] Message too big\r\n"
        assert event is NEED_DATA
        assert served(session)

    def test_nonsync_append_streams_in_chunks(self) -> None:
        """A large {n+} message comes out as AppendData pieces of at most CHUNK_SIZE."""
        session = logged_in()
        size = 200_000
        _, event = say(session, b"a APPEND INBOX {%d+}\r\n" % size)
        assert isinstance(event, c.Append)
        session.send(r.Proceed())
        assert session.data_to_send() == b""
        events = drain_until_decision(session, b"m" * size + b"\r\n")
        pieces = [e for e in events if isinstance(e, AppendData)]
        assert sum(len(p.data) for p in pieces) == size
        assert max(len(p.data) for p in pieces) <= 64 * 1024
        assert events[-1] == AppendEnd("a")

    def test_mailbox_name_as_a_literal(self) -> None:
        """A literal before the message is part of the head, not the message."""
        session = logged_in()
        out, event = say(session, b"a APPEND {4}\r\nSent {3}\r\n")
        assert out == CONTINUE
        assert isinstance(event, c.Append) and event.mailbox == "Sent" and event.size == 3

    def test_malformed_head_with_a_big_message_is_bad_not_read(self) -> None:
        """APPEND whose head does not parse: BAD with the reason, the message never read."""
        session = logged_in()
        out, _ = say(session, b"a APPEND INBOX (\\Recent) {100000}\r\n")
        assert out == b"a BAD \\Recent cannot be set by a client\r\n"
        assert served(session)

    def test_literal_minus_limits_append_too(self) -> None:
        """Under LITERAL-, an APPEND message as {4097+} is refused and discarded."""
        session = logged_in(literal_plus=False)
        out, _ = say(session, b"a APPEND INBOX {4097+}\r\n" + b"m" * 4097 + b"\r\n")
        assert out.startswith(b"a BAD [TOOBIG] Non-synchronizing literals are limited")
        assert served(session)

    def test_literal8_message_may_hold_nul(self) -> None:
        """~{n} (RFC 3516): NUL octets are fine."""
        session = logged_in()
        _, event = say(session, b"a APPEND INBOX ~{3+}\r\n")
        assert isinstance(event, c.Append) and event.binary
        session.send(r.Proceed())
        assert drain_until_decision(session, b"a\0b\r\n")[-1] == AppendEnd("a")

    def test_nul_in_plain_literal_aborts(self) -> None:
        """NUL in a {n} message: AppendAborted and BAD."""
        session = logged_in()
        say(session, b"a APPEND INBOX {3+}\r\n")
        session.send(r.Proceed())
        session.receive_data(b"a\0b\r\n")
        events = drain(session)
        assert events[-1] == AppendAborted("a")
        assert session.data_to_send().startswith(b"a BAD NUL in the message")

    def test_multiappend_is_refused(self) -> None:
        """A second message in one APPEND (MULTIAPPEND) is refused and discarded."""
        session = logged_in()
        say(session, b"a APPEND INBOX {1+}\r\n")
        session.send(r.Proceed())
        session.receive_data(b"x {2+}\r\nyy\r\n")
        assert AppendAborted("a") in drain(session)
        assert session.data_to_send() == b"a BAD Only one message per APPEND\r\n"
        assert served(session)

    def test_bare_linefeed_after_the_message_aborts(self) -> None:
        """The APPEND line must end in CRLF after the message."""
        session = logged_in()
        say(session, b"a APPEND INBOX {1+}\r\n")
        session.send(r.Proceed())
        session.receive_data(b"x\n")
        assert AppendAborted("a") in drain(session)
        assert session.data_to_send() == b"a BAD Malformed line after the APPEND message\r\n"

    def test_eof_inside_the_message_aborts(self) -> None:
        """The client leaving mid-message: AppendAborted, then Closed."""
        session = logged_in()
        say(session, b"a APPEND INBOX {10+}\r\n")
        session.send(r.Proceed())
        session.receive_data(b"abc")
        session.receive_data(b"")
        assert drain(session)[-2:] == [AppendAborted("a"), Closed(CloseReason.EOF)]


def drain_until_decision(session: IMAPSession, data: bytes) -> list[object]:
    session.receive_data(data)
    events: list[object] = []
    while (event := session.next_event()) not in (NEED_DATA, PAUSED):
        events.append(event)
        if isinstance(event, AppendEnd):
            break
    return events


class TestIdle:
    def test_idle_then_done(self) -> None:
        """'+ idling', updates pushed meanwhile, DONE, the tagged OK."""
        session = selected()
        out, event = say(session, b"a IDLE\r\n")
        assert out == b"+ idling\r\n"
        assert event == c.Idle("a")
        assert session.next_event() is NEED_DATA
        session.send(r.Exists(4))
        session.send(r.Expunged(2))
        assert session.data_to_send() == b"* 4 EXISTS\r\n* 2 EXPUNGE\r\n"
        out, event = say(session, b"done\r\n")
        assert out == b"a OK IDLE terminated\r\n"
        assert event == IdleDone("a")
        assert served(session)

    def test_anything_but_done_ends_idle_with_bad(self) -> None:
        """A command instead of DONE: BAD and IDLE is over."""
        session = selected()
        say(session, b"a IDLE\r\n")
        out, event = say(session, b"b NOOP\r\n")
        assert out == b"a BAD Expected DONE\r\n"
        assert event == IdleDone("a")


class TestAuthenticate:
    def test_plain_with_initial_response(self) -> None:
        """SASL-IR: the credentials on the command line, no continuation."""
        out, event = say(new(), b"a AUTHENTICATE PLAIN " + b64(b"\0joe\0pw") + b"\r\n")
        assert out == b""
        assert event == LoginAttempt("a", "PLAIN", "", "joe", "pw")

    def test_plain_with_continuation(self) -> None:
        """Without an initial response: '+ ', then the client's line."""
        session = new()
        out, event = say(session, b"a AUTHENTICATE PLAIN\r\n")
        assert (out, event) == (b"+ \r\n", NEED_DATA)
        out, event = say(session, b64(b"admin\0joe\0pw") + b"\r\n")
        assert event == LoginAttempt("a", "PLAIN", "admin", "joe", "pw")
        out, _ = answer(session)
        assert out.startswith(b"a OK [CAPABILITY IMAP4rev1 ")
        assert session.state is State.AUTHENTICATED

    def test_login_mechanism_asks_twice(self) -> None:
        """AUTH=LOGIN: Username: then Password:."""
        session = new()
        assert say(session, b"a AUTHENTICATE LOGIN\r\n")[0] == b"+ VXNlcm5hbWU6\r\n"
        assert say(session, b64(b"joe") + b"\r\n")[0] == b"+ UGFzc3dvcmQ6\r\n"
        assert say(session, b64(b"pw") + b"\r\n")[1] == LoginAttempt("a", "LOGIN", "", "joe", "pw")

    def test_cancel(self) -> None:
        """'*' cancels: BAD, and the next line is a command again."""
        session = new()
        say(session, b"a AUTHENTICATE PLAIN\r\n")
        out, _ = say(session, b"*\r\n")
        assert out == b"a BAD Authentication cancelled\r\n"
        assert served(session)

    @pytest.mark.parametrize(("line", "reply"), [
        (b"a AUTHENTICATE PLAIN !!!\r\n", b"a BAD Invalid base64 in the SASL response\r\n"),
        (b"a AUTHENTICATE PLAIN " + b64(b"nonul") + b"\r\n", b"a BAD Malformed SASL response\r\n"),
        (b"a AUTHENTICATE CRAM-MD5\r\n", b"a NO Unsupported authentication mechanism\r\n"),
    ])
    def test_bad_exchanges(self, line: bytes, reply: bytes) -> None:
        """Broken base64, malformed PLAIN, unknown mechanism: clear replies."""
        session = new()
        assert say(session, line)[0] == reply
        assert served(session)

    def test_bare_linefeed_in_a_response_ends_the_exchange(self) -> None:
        """A SASL response line with a bare LF: BAD, and commands are read again."""
        session = new()
        say(session, b"a AUTHENTICATE PLAIN\r\n")
        out, _ = say(session, b"abc\nx\r\n")
        assert out.startswith(b"a BAD Malformed SASL response line\r\n")

    def test_empty_initial_response(self) -> None:
        """'=' is an empty initial response: PLAIN finds it malformed."""
        assert say(new(), b"a AUTHENTICATE PLAIN =\r\n")[0] == b"a BAD Malformed SASL response\r\n"


class TestStartTLS:
    def test_pipelined_input_after_starttls_is_dropped(self) -> None:
        """Commands injected after STARTTLS in plaintext are never obeyed (RFC 9051 §6.2.1)."""
        session = new(plaintext_auth=False)
        out, event = say(session, b"a STARTTLS\r\nb LOGIN joe pw\r\n")
        assert out == b"a OK Begin TLS negotiation now\r\n"
        assert event == c.StartTLS("a")
        assert session.next_event() is PAUSED
        session.send(r.TLSStarted())
        assert session.next_event() is NEED_DATA
        assert session.data_to_send() == b""
        assert session.tls_active
        out, _ = say(session, b"c CAPABILITY\r\n")
        assert b"STARTTLS" not in out and b"AUTH=PLAIN" in out

    def test_starttls_on_tls_is_bad(self) -> None:
        """STARTTLS twice is a client bug."""
        assert say(new(tls_active=True), b"a STARTTLS\r\n")[0] == b"a BAD TLS is already active\r\n"

    def test_starttls_unavailable(self) -> None:
        """No certificate: NO."""
        out, _ = say(new(starttls_available=False), b"a STARTTLS\r\n")
        assert out == b"a NO TLS is not available\r\n"


class TestEnableAndExtensions:
    def test_enable_tracks_and_reports(self) -> None:
        """ENABLE QRESYNC turns on CONDSTORE too; unknown names are ignored."""
        session = logged_in()
        out, event = say(session, b"a ENABLE QRESYNC X-FOO\r\n")
        assert out == b"* ENABLED CONDSTORE QRESYNC\r\na OK ENABLE completed\r\n"
        assert event == Enabled(("CONDSTORE", "QRESYNC"))
        assert session.enabled == {"CONDSTORE", "QRESYNC"}
        out, _ = say(session, b"b ENABLE CONDSTORE\r\n")
        assert out == b"* ENABLED\r\nb OK ENABLE completed\r\n"

    def test_rev2_makes_mailbox_names_utf8(self) -> None:
        """After ENABLE IMAP4rev2, names in and out are UTF-8."""
        session = logged_in()
        say(session, b"a ENABLE IMAP4rev2\r\n")
        assert session.utf8
        _, event = say(session, 'b STATUS "Entwürfe" (MESSAGES)\r\n'.encode())
        assert event == c.Status("b", "Entwürfe", (c.StatusItem.MESSAGES,))
        session.send(r.StatusData("Entwürfe", ((c.StatusItem.MESSAGES, 2),)))
        assert session.data_to_send() == '* STATUS "Entwürfe" (MESSAGES 2)\r\n'.encode()

    def test_rev1_names_go_out_in_modified_utf7(self) -> None:
        """Without IMAP4rev2, the same name is sent as modified UTF-7."""
        session = logged_in()
        session.send(r.ListData("Entwürfe", ("\\HasNoChildren",)))
        assert session.data_to_send() == b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\n'

    def test_qresync_parameters_need_qresync_enabled(self) -> None:
        """SELECT (QRESYNC ...) and VANISHED before ENABLE QRESYNC are BAD."""
        session = logged_in()
        out, _ = say(session, b"a SELECT INBOX (QRESYNC (1 2))\r\n")
        assert out == b"a BAD ENABLE QRESYNC first\r\n"

    def test_vanished_needs_qresync_enabled(self) -> None:
        """UID FETCH (CHANGEDSINCE n VANISHED) before ENABLE QRESYNC is BAD."""
        out, _ = say(selected(), b"a UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)\r\n")
        assert out == b"a BAD ENABLE QRESYNC first\r\n"

    def test_using_condstore_enables_it(self) -> None:
        """FETCH ... MODSEQ turns CONDSTORE on (RFC 7162 §3.1) and says so."""
        session = selected()
        _, event = say(session, b"a FETCH 1 (MODSEQ)\r\n")
        assert event == Enabled(("CONDSTORE",))
        assert isinstance(session.next_event(), c.Fetch)
        assert "CONDSTORE" in session.enabled

    def test_id_namespace_setquota(self) -> None:
        """Answered by the machine: ID, NAMESPACE, SETQUOTA (refused)."""
        session = logged_in()
        out, event = say(session, b'a ID ("name" "mutt")\r\n')
        assert out == b'* ID ("name" "postwarden")\r\na OK ID completed\r\n'
        assert event == c.Id("a", (("name", "mutt"),))
        out, _ = say(session, b"b NAMESPACE\r\n")
        assert out == b'* NAMESPACE (("" "/")) NIL NIL\r\nb OK NAMESPACE completed\r\n'
        out, _ = say(session, b'c SETQUOTA "" (STORAGE 1)\r\n')
        assert out == b"c NO [NOPERM] Quota limits are set by the administrator\r\n"

    def test_compress_hands_over_pending_input(self) -> None:
        """COMPRESS: OK in clear, then the rest of the input goes to the server to inflate."""
        session = logged_in()
        out, event = say(session, b"a COMPRESS DEFLATE\r\n\x78\x9c\x01\x02")
        assert out == b"a OK DEFLATE active\r\n"
        assert event == CompressionStarted(b"\x78\x9c\x01\x02")
        assert session.buffered == 0
        out, _ = say(session, b"b COMPRESS DEFLATE\r\n")
        assert out == b"b NO [COMPRESSIONACTIVE] Compression is already active\r\n"
        out, _ = say(session, b"c CAPABILITY\r\n")
        assert b"COMPRESS=DEFLATE" not in out

    def test_compress_with_another_mechanism(self) -> None:
        """Only DEFLATE: anything else is NO [CANNOT]."""
        out, _ = say(logged_in(), b"a COMPRESS BZIP2\r\n")
        assert out == b"a NO [CANNOT] Unsupported compression mechanism BZIP2\r\n"


class TestSelectedCommands:
    def test_commands_reach_the_server_as_values(self) -> None:
        """Message commands become events; the server's data and Done go out in order."""
        session = selected()
        _, event = say(session, b"a UID MOVE 4:6 Trash\r\n")
        assert isinstance(event, c.Copy) and event.move and event.uid
        session.send(r.Condition(r.Status.OK, "Moved", r.CopyUid(9, (4, 5, 6), (10, 11, 12))))
        session.send(r.Vanished((4, 5, 6)))
        out, _ = answer(session, r.Done(r.Status.OK, "MOVE completed"))
        assert out == (b"* OK [COPYUID 9 4:6 10:12] Moved\r\n* VANISHED 4:6\r\n"
                       b"a OK MOVE completed\r\n")

    def test_esearch_carries_the_command_tag(self) -> None:
        """ESEARCH responses name the tag of the SEARCH they answer (RFC 4731)."""
        session = selected()
        _, event = say(session, b"t7 UID SEARCH RETURN (COUNT MIN) UNSEEN\r\n")
        assert isinstance(event, c.Search) and event.returns == (
            c.SearchReturn.COUNT, c.SearchReturn.MIN)
        session.send(r.ESearchData(True, min=3, count=2))
        out, _ = answer(session)
        assert out == b'* ESEARCH (TAG "t7") UID MIN 3 COUNT 2\r\nt7 OK completed\r\n'

    def test_rev2_search_always_asks_for_esearch(self) -> None:
        """After ENABLE IMAP4rev2 a plain SEARCH comes with returns=() (ESEARCH ALL)."""
        session = logged_in()
        say(session, b"a ENABLE IMAP4rev2\r\n")
        say(session, b"s SELECT INBOX\r\n")
        answer(session)
        _, event = say(session, b"b SEARCH ALL\r\n")
        assert isinstance(event, c.Search) and event.returns == ()

    def test_qresync_select_and_vanished_fetch_after_enable(self) -> None:
        """With QRESYNC enabled, its SELECT parameter and FETCH modifier pass through."""
        session = logged_in()
        say(session, b"e ENABLE QRESYNC\r\n")
        _, event = say(session, b"a SELECT INBOX (QRESYNC (3 100 1:20))\r\n")
        assert isinstance(event, c.Select) and event.qresync is not None
        answer(session)
        _, event = say(session, b"b UID FETCH 1:* FLAGS (CHANGEDSINCE 100 VANISHED)\r\n")
        assert isinstance(event, c.Fetch) and event.vanished and event.changed_since == 100

    def test_store_unchangedsince_reports_modified(self) -> None:
        """STORE (UNCHANGEDSINCE) passes through; [MODIFIED] goes out in the tagged OK."""
        session = selected()
        _, first = say(session, b"a STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen)\r\n")
        assert first == Enabled(("CONDSTORE",))
        event = session.next_event()
        assert isinstance(event, c.Store) and event.unchanged_since == 5
        out, _ = answer(session, r.Done(r.Status.OK, "Conditional STORE failed", r.Modified((2,))))
        assert out == b"a OK [MODIFIED 2] Conditional STORE failed\r\n"
