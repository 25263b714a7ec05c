"""The SMTP machine, bytes in and bytes out: no sockets."""

from __future__ import annotations

import base64

import pytest
from smtp_driver import BANNER, HOST, QUEUED, Driver, replies

from postwarden.mail.address import Address, ReversePath
from postwarden.mail.reply import (
    ALREADY_AUTHENTICATED,
    AUTH_BAD_BASE64,
    AUTH_CANCELLED,
    AUTH_CONTINUE_EMPTY,
    AUTH_FAILED,
    AUTH_OK,
    BAD_ADDRESS,
    BAD_SENDER_ADDRESS,
    BAD_SEQUENCE,
    BARE_LINEFEED,
    BDAT_AFTER_DATA,
    BYE,
    ENCRYPTION_REQUIRED,
    HELP,
    LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    NEED_HELO,
    NEED_MAIL,
    NEED_RCPT,
    NOOP_OK,
    NOT_IMPLEMENTED,
    OK,
    PARAM_NOT_RECOGNISED,
    PARAM_SYNTAX,
    READY_TLS,
    RECIPIENT_OK,
    RELAY_DENIED,
    RESET_OK,
    SENDER_NOT_OWNED,
    SENDER_OK,
    SERVICE_UNAVAILABLE,
    SMTPUTF8_REQUIRED,
    START_DATA,
    SYNTAX_ERROR,
    TLS_ALREADY,
    TOO_MANY_ERRORS,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_AUTH_MECHANISM,
    UNKNOWN_USER,
    VRFY_CANNOT,
    Reply,
)
from postwarden.protocol.smtp import (
    CHUNK_SIZE,
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataAborted,
    DataChunk,
    DataEnd,
    Event,
    Hello,
    MailFrom,
    MailRefused,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
)
from postwarden.protocol.smtp.machine import State

EHLO_BASE = [
    f"250-{HOST}",
    "250-PIPELINING",
    "250-SIZE 10000",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-ENHANCEDSTATUSCODES",
    "250-CHUNKING",
]
HELLO_REPLY_LEN = len(EHLO_BASE) + 2


def ehlo_lines(output: bytes) -> list[str]:
    return output.decode().split("\r\n")[:-1]


def greeted(**settings: object) -> Driver:
    driver = Driver(**settings)  # type: ignore[arg-type]
    driver.feed(b"EHLO client.example\r\n")
    return driver


def in_transaction(**settings: object) -> Driver:
    driver = greeted(**settings)
    assert driver.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n") == replies(
        SENDER_OK, RECIPIENT_OK
    )
    return driver


def sasl_line(data: bytes, prefix: bytes = b"") -> bytes:
    """A base64 SASL response (or command with initial response) as a line."""
    return prefix + base64.b64encode(data) + b"\r\n"


class TestGreeting:
    def test_sends_the_banner_at_once(self) -> None:
        """The 220 banner is queued before any input."""
        assert Driver().banner == BANNER

    def test_ehlo_without_tls_offers_starttls_and_no_auth(self) -> None:
        """Plaintext auth is off: STARTTLS yes, AUTH no, no enhanced codes."""
        out = Driver().feed(b"EHLO client.example\r\n")
        assert ehlo_lines(out) == [*EHLO_BASE, "250-DSN", "250 STARTTLS"]

    def test_ehlo_offers_auth_where_plaintext_auth_is_allowed(self) -> None:
        """auth_without_tls adds AUTH PLAIN LOGIN before TLS."""
        out = Driver(auth_without_tls=True).feed(b"EHLO c\r\n")
        assert ehlo_lines(out)[-2:] == ["250-STARTTLS", "250 AUTH PLAIN LOGIN"]

    def test_ehlo_on_implicit_tls_offers_auth_not_starttls(self) -> None:
        """With TLS active STARTTLS disappears and AUTH appears."""
        out = Driver(tls_active=True).feed(b"EHLO c\r\n")
        assert ehlo_lines(out) == [*EHLO_BASE, "250-DSN", "250 AUTH PLAIN LOGIN"]

    def test_ehlo_without_any_tls_or_auth(self) -> None:
        """A listener with neither ends the list at DSN."""
        out = Driver(starttls_available=False, auth_available=False).feed(b"ehlo c\r\n")
        assert ehlo_lines(out) == [*EHLO_BASE, "250 DSN"]

    def test_helo_answers_with_the_hostname(self) -> None:
        """HELO gets a one-line 250 and a Hello event."""
        driver = Driver()
        assert driver.feed(b"HELO client\r\n") == f"250 {HOST}\r\n".encode()
        assert driver.events == [Hello("client", extended=False)]

    @pytest.mark.parametrize("line", [b"EHLO\r\n", b"HELO \r\n"])
    def test_hello_needs_a_name(self, line: bytes) -> None:
        """EHLO/HELO without argument is a 501."""
        assert Driver().feed(line) == PARAM_SYNTAX.encode()

    def test_mail_before_hello_is_refused(self) -> None:
        """MAIL needs EHLO/HELO first."""
        assert Driver().feed(b"MAIL FROM:<a@b.test>\r\n") == NEED_HELO.encode()

    def test_ehlo_resets_the_transaction(self) -> None:
        """A second EHLO ends the transaction: DATA then needs MAIL."""
        driver = in_transaction()
        driver.feed(b"EHLO again\r\n")
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()


class TestTransaction:
    def test_happy_path(self) -> None:
        """MAIL, RCPT, DATA, body, QUIT: events and replies in order."""
        driver = greeted()
        out = driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert out == SENDER_OK.encode()
        assert driver.feed(b"RCPT TO:<b@example.test>\r\n") == RECIPIENT_OK.encode()
        assert driver.feed(b"DATA\r\n") == START_DATA.encode()
        assert driver.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n") == QUEUED.encode()
        assert driver.feed(b"QUIT\r\n") == BYE.encode()
        kinds = [type(event) for event in driver.events]
        assert kinds == [Hello, MailFrom, RcptTo, DataChunk, DataEnd, Quit, Closed]
        assert driver.body == b"Subject: hi\r\n\r\nbody\r\n"
        assert driver.events[1] == MailFrom(
            ReversePath(Address("a", "example.org")), None, None, False, None, None, None
        )
        assert driver.events[2] == RcptTo(Address("b", "example.test"), (), None)
        assert driver.events[-1] == Closed("quit")

    def test_pipelined_session_in_one_read(self) -> None:
        """Everything in one receive_data: every reply, in order."""
        driver = Driver()
        out = driver.feed(
            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n"
            b"RCPT TO:<c@example.test>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"
        )
        assert out.endswith(replies(SENDER_OK, RECIPIENT_OK, RECIPIENT_OK, START_DATA, QUEUED, BYE))
        assert driver.body == b"hello\r\n"

    def test_rejected_mail_makes_pipelined_commands_fail(self) -> None:
        """The machine pauses at MAIL, so the RCPT behind it sees no transaction."""

        def refuse_sender(event: Event) -> Reply:
            return SENDER_NOT_OWNED if isinstance(event, MailFrom) else RECIPIENT_OK

        driver = Driver(refuse_sender)
        out = driver.feed(
            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
            b"body\r\n.\r\nQUIT\r\n"
        )
        assert out.split(b"250 STARTTLS\r\n")[1] == replies(
            SENDER_NOT_OWNED, NEED_MAIL, NEED_MAIL, SYNTAX_ERROR, SYNTAX_ERROR, BYE
        )
        assert driver.of(RcptTo) == []

    def test_pauses_until_the_decision_is_sent(self) -> None:
        """No further input is parsed while MailFrom awaits its reply."""
        driver = greeted()
        session = driver.session
        session.receive_data(b"MAIL FROM:<a@example.org>\r\nNOOP\r\n")
        assert isinstance(session.next_event(), MailFrom)
        assert session.next_event() is PAUSED
        assert session.data_to_send() == b""
        session.send(SENDER_OK)
        assert session.next_event() is NEED_DATA
        assert session.data_to_send() == replies(SENDER_OK, NOOP_OK)

    def test_send_without_a_decision_is_a_bug(self) -> None:
        """send() outside a decision raises: the server glue is wrong."""
        with pytest.raises(RuntimeError):
            Driver().session.send(OK)

    def test_refused_recipient_does_not_count(self) -> None:
        """After every RCPT was refused, DATA is a 503."""
        driver = greeted(decide=lambda e: SENDER_OK if isinstance(e, MailFrom) else RELAY_DENIED)
        out = driver.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\n")
        assert out == replies(SENDER_OK, RELAY_DENIED, NEED_RCPT)

    def test_refused_recipients_slow_down_then_close(self) -> None:
        """Past the soft limit replies are to be delayed; at the hard limit, 421."""
        driver = greeted(decide=lambda event: SENDER_OK if isinstance(event, MailFrom)
                         else UNKNOWN_USER, rcpt_error_soft_limit=1, rcpt_error_hard_limit=3)
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert driver.feed(b"RCPT TO:<x@example.test>\r\n") == UNKNOWN_USER.encode()
        assert not driver.session.delay_replies
        assert driver.feed(b"RCPT TO:<y@example.test>\r\n") == UNKNOWN_USER.encode()
        assert driver.session.delay_replies
        out = driver.feed(b"RCPT TO:<z@example.test>\r\nRCPT TO:<w@example.test>\r\n")
        assert out == replies(UNKNOWN_USER, TOO_MANY_ERRORS)
        assert driver.events[-1] == Closed("too many refused recipients")
        assert len(driver.of(RcptTo)) == 3

    def test_accepted_recipients_do_not_count_as_errors(self) -> None:
        """Only refusals count toward the limits."""
        driver = greeted(rcpt_error_soft_limit=1, rcpt_error_hard_limit=2, max_recipients=50)
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        out = driver.feed(b"RCPT TO:<b@example.test>\r\n" * 10)
        assert out == replies(*[RECIPIENT_OK] * 10) and not driver.session.delay_replies

    def test_sequence_errors(self) -> None:
        """RCPT before MAIL, DATA before RCPT, MAIL inside a transaction."""
        driver = greeted()
        assert driver.feed(b"RCPT TO:<b@example.test>\r\n") == NEED_MAIL.encode()
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert driver.feed(b"DATA\r\n") == NEED_RCPT.encode()
        assert driver.feed(b"MAIL FROM:<a@example.org>\r\n") == BAD_SEQUENCE.encode()

    def test_rset_ends_the_transaction(self) -> None:
        """RSET answers 250 2.0.0 and DATA then needs MAIL."""
        driver = in_transaction()
        assert driver.feed(b"RSET\r\n") == RESET_OK.encode()
        assert driver.of(Reset) == [Reset()]
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()

    def test_too_many_recipients_is_answered_by_the_machine(self) -> None:
        """The recipient after max_recipients gets 452 4.5.3 without an event."""
        driver = greeted(max_recipients=2)
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        out = driver.feed(b"RCPT TO:<b@example.test>\r\n" * 3)
        assert out == replies(RECIPIENT_OK, RECIPIENT_OK, TOO_MANY_RECIPIENTS)
        assert len(driver.of(RcptTo)) == 2

    def test_command_words_are_case_insensitive(self) -> None:
        """``mail from: <...>`` with a space after the colon is tolerated."""
        driver = greeted()
        out = driver.feed(b"mail from: <a@example.org>\r\nrcpt To:<b@example.test>\r\n")
        assert out == replies(SENDER_OK, RECIPIENT_OK)

    def test_a_positive_data_reply_ends_the_transaction(self) -> None:
        """After the message, DATA again needs a new MAIL."""
        driver = in_transaction()
        driver.feed(b"DATA\r\nx\r\n.\r\n")
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()

    def test_data_with_an_argument_is_refused(self) -> None:
        """DATA takes no parameters."""
        assert in_transaction().feed(b"DATA x\r\n") == PARAM_SYNTAX.encode()


class TestAddresses:
    def test_null_sender(self) -> None:
        """``MAIL FROM:<>`` is the null sender."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<>\r\n")
        assert driver.of(MailFrom)[0].sender == ReversePath(None)

    @pytest.mark.parametrize(
        "arg", [b"<a@@b>", b"a@example.org", b"<a@example.org", b"<a@example.org>x", b"<>>"]
    )
    def test_bad_sender(self, arg: bytes) -> None:
        """A sender that is not a path is 501 5.1.7."""
        assert greeted().feed(b"MAIL FROM:" + arg + b"\r\n") == BAD_SENDER_ADDRESS.encode()

    @pytest.mark.parametrize(
        "line", [b"MAIL\r\n", b"MAIL TO:<a@b.test>\r\n", b"MAIL FROM <a@b>\r\n"]
    )
    def test_mail_without_from_keyword(self, line: bytes) -> None:
        """MAIL without ``FROM:`` is a parameter syntax error."""
        assert greeted().feed(line) == PARAM_SYNTAX.encode()

    @pytest.mark.parametrize("arg", [b"<>", b"<no-domain@>", b"<a b@c.test>", b"<@x:>"])
    def test_bad_recipient(self, arg: bytes) -> None:
        """Null and malformed recipients are 501 5.1.3."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert driver.feed(b"RCPT TO:" + arg + b"\r\n") == BAD_ADDRESS.encode()

    def test_rcpt_without_to_keyword(self) -> None:
        """RCPT without ``TO:`` is a parameter syntax error."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert driver.feed(b"RCPT <b@example.test>\r\n") == PARAM_SYNTAX.encode()

    def test_escaped_quote_in_a_quoted_local_part(self) -> None:
        """An escaped quote does not end the quoted string."""
        driver = greeted()
        assert driver.feed(b'MAIL FROM:<"a\\">x"@example.org>\r\n') == SENDER_OK.encode()

    def test_postmaster_without_domain(self) -> None:
        """``<postmaster>`` is a recipient with an empty domain."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<Postmaster>\r\n")
        assert driver.of(RcptTo)[0].address == Address("postmaster", "")

    def test_quoted_local_part_with_spaces_and_angle_bracket(self) -> None:
        """A quoted ``>`` does not end the path."""
        driver = greeted()
        out = driver.feed(b'MAIL FROM:<"a >b"@example.org> SIZE=5\r\n')
        assert out == SENDER_OK.encode()
        assert driver.of(MailFrom)[0].size == 5

    def test_smtputf8_address_with_parameter(self) -> None:
        """Non-ASCII addresses are accepted with SMTPUTF8."""
        driver = greeted()
        out = driver.feed(
            "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<ñ@example.test>\r\n".encode()
        )
        assert out == replies(SENDER_OK, RECIPIENT_OK)
        mail = driver.of(MailFrom)[0]
        assert mail.smtputf8
        assert mail.sender == ReversePath(Address("jörg", "xn--bcher-kva.example"))
        assert driver.of(RcptTo)[0].address == Address("ñ", "example.test")

    def test_smtputf8_address_without_parameter(self) -> None:
        """Without SMTPUTF8 a non-ASCII sender or recipient is 553 5.6.7."""
        driver = greeted()
        assert driver.feed("MAIL FROM:<jörg@example.org>\r\n".encode()) == (
            SMTPUTF8_REQUIRED.encode()
        )
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        out = driver.feed("RCPT TO:<ñ@example.test>\r\n".encode())
        assert out == SMTPUTF8_REQUIRED.encode()


class TestParameters:
    def test_all_mail_parameters(self) -> None:
        """SIZE, BODY, SMTPUTF8, RET, ENVID (xtext) and AUTH are parsed."""
        driver = greeted()
        driver.feed(
            b"MAIL FROM:<a@example.org> size=100 BODY=8bitmime SMTPUTF8 RET=hdrs "
            b"ENVID=QQ+2B+3D1 AUTH=<>\r\n"
        )
        assert driver.of(MailFrom)[0] == MailFrom(
            ReversePath(Address("a", "example.org")), 100, "8BITMIME", True, "HDRS", "QQ+=1", "<>"
        )

    def test_rcpt_dsn_parameters(self) -> None:
        """NOTIFY is a tuple; ORCPT keeps its type and decodes the xtext."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        driver.feed(b"RCPT TO:<b@example.test> NOTIFY=success,DELAY ORCPT=rfc822;b+2Bx@ex.test\r\n")
        assert driver.of(RcptTo)[0] == RcptTo(
            Address("b", "example.test"), ("SUCCESS", "DELAY"), "rfc822;b+x@ex.test"
        )

    def test_notify_never(self) -> None:
        """NEVER alone is allowed."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test> NOTIFY=NEVER\r\n")
        assert driver.of(RcptTo)[0].notify == ("NEVER",)

    @pytest.mark.parametrize(
        "params",
        [
            b"NOTIFY=NEVER,SUCCESS",
            b"NOTIFY=",
            b"NOTIFY=SOMETIMES",
            b"NOTIFY=DELAY,DELAY",
            b"ORCPT=rfc822",
            b"ORCPT=rfc822;a+zz",
            b"ORCPT=;a",
            b"NOTIFY=DELAY NOTIFY=DELAY",
        ],
    )
    def test_bad_rcpt_parameters(self, params: bytes) -> None:
        """Malformed DSN parameters are 501 5.5.4."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        assert driver.feed(b"RCPT TO:<b@example.test> " + params + b"\r\n") == (
            PARAM_SYNTAX.encode()
        )

    @pytest.mark.parametrize(
        "params",
        [
            b"SIZE=abc",
            b"SIZE",
            b"BODY=BINARYMIME",
            b"SMTPUTF8=yes",
            b"RET=ALL",
            b"ENVID=a+2",
            b"ENVID=" + b"x" * 101,
            b"ENVID=a=b",
            b"=x",
        ],
    )
    def test_bad_mail_parameters(self, params: bytes) -> None:
        """Malformed MAIL parameters are 501 5.5.4."""
        assert greeted().feed(b"MAIL FROM:<a@example.org> " + params + b"\r\n") == (
            PARAM_SYNTAX.encode()
        )

    def test_xtext_must_decode_to_utf8(self) -> None:
        """``+FF`` alone is not UTF-8: refused."""
        out = greeted().feed(b"MAIL FROM:<a@example.org> ENVID=+FF\r\n")
        assert out == PARAM_SYNTAX.encode()

    def test_unknown_parameters(self) -> None:
        """Unknown keywords are 555 on MAIL and RCPT."""
        driver = greeted()
        assert driver.feed(b"MAIL FROM:<a@example.org> FOO=1\r\n") == PARAM_NOT_RECOGNISED.encode()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        out = driver.feed(b"RCPT TO:<b@example.test> SIZE=1\r\n")
        assert out == PARAM_NOT_RECOGNISED.encode()

    def test_declared_size_over_the_limit(self) -> None:
        """SIZE above the limit is refused at MAIL, without asking the server."""
        driver = greeted()
        assert driver.feed(b"MAIL FROM:<a@example.org> SIZE=10001\r\n") == (
            MESSAGE_TOO_BIG.encode()
        )
        assert driver.of(MailFrom) == []
        assert driver.of(MailRefused) == [MailRefused(MESSAGE_TOO_BIG)]


class TestData:
    def test_dot_unstuffing(self) -> None:
        """A leading dot is removed; other dots stay."""
        driver = in_transaction()
        driver.feed(b"DATA\r\n..one\r\n.two\r\nthree.\r\n...\r\n.\r\n")
        assert driver.body == b".one\r\ntwo\r\nthree.\r\n..\r\n"

    def test_terminator_split_across_reads(self) -> None:
        """CRLF.CRLF cut at every point still ends the message, and only once."""
        stream = b"DATA\r\nbody\r\n.\r\nNOOP\r\n"
        for cut in range(6, 17):
            driver = in_transaction()
            out = driver.feed(stream[:cut]) + driver.feed(stream[cut:])
            assert out == replies(START_DATA, QUEUED, NOOP_OK)
            assert driver.body == b"body\r\n"

    def test_a_first_line_of_a_single_dot_ends_the_message(self) -> None:
        """``.CRLF`` right after 354 is an empty message."""
        driver = in_transaction()
        out = driver.feed(b"DATA\r\n.\r\n")
        assert out == replies(START_DATA, QUEUED)
        assert driver.body == b""
        assert driver.of(DataEnd) == [DataEnd()]

    def test_byte_by_byte_input(self) -> None:
        """Split anywhere, the terminator and dot-stuffing still work."""
        driver = Driver()
        stream = (
            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n"
            b"DATA\r\n..x\r\n.\r.\r\ny\r\n.\r\nQUIT\r\n"
        )
        out = b"".join(driver.feed(stream[i : i + 1]) for i in range(len(stream)))
        assert out.endswith(replies(START_DATA, BARE_LINEFEED, BYE))
        driver = Driver()
        stream = stream.replace(b".\r.\r\n", b"")
        out = b"".join(driver.feed(stream[i : i + 1]) for i in range(len(stream)))
        assert out.endswith(replies(START_DATA, QUEUED, BYE))
        assert driver.body == b".x\r\ny\r\n"

    def test_large_message_streams_in_bounded_chunks(self) -> None:
        """50 MB of dot-stuffed lines come out unstuffed, in chunks of at most CHUNK_SIZE."""
        driver = in_transaction(max_message_size=60_000_000)
        driver.feed(b"DATA\r\n")
        line = b"..a line of text, not very long at all, with a stuffed dot\r\n"
        piece = line * 20_000
        received = 0
        for _ in range(50):
            driver.feed(piece)
            assert driver.session.buffered < 8
            assert all(0 < len(c.data) <= CHUNK_SIZE for c in driver.of(DataChunk))
            received += len(driver.body)
            assert driver.body.count(b"\r\n.a line") >= 19_999
            driver.events.clear()
        assert driver.feed(b".\r\n") == QUEUED.encode()
        received += len(driver.body)
        assert received == 50 * 20_000 * (len(line) - 1)

    def test_a_10mb_line_without_crlf_streams(self) -> None:
        """A huge unterminated line is passed on, never accumulated."""
        driver = in_transaction(max_message_size=20_000_000)
        driver.feed(b"DATA\r\n")
        for _ in range(10):
            driver.feed(b"x" * 1_000_000)
            assert driver.session.buffered == 0
        assert driver.feed(b"\r\n.\r\n") == QUEUED.encode()
        assert len(driver.body) == 10_000_002

    def test_oversize_data_is_aborted_at_once_and_answered_at_the_end(self) -> None:
        """DataAborted(552) as soon as the limit is crossed; 552 after CRLF.CRLF."""
        driver = in_transaction(max_message_size=100)
        driver.feed(b"DATA\r\n")
        assert driver.feed(b"x" * 200 + b"\r\n") == b""
        assert driver.of(DataAborted) == [DataAborted(MESSAGE_TOO_BIG)]
        assert driver.feed(b"more\r\n.\r\n") == MESSAGE_TOO_BIG.encode()
        assert driver.of(DataEnd) == []
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()

    def test_message_of_exactly_the_limit_is_accepted(self) -> None:
        """The limit counts the octets of the message itself."""
        driver = in_transaction(max_message_size=10)
        assert driver.feed(b"DATA\r\n12345678\r\n.\r\n") == replies(START_DATA, QUEUED)

    @pytest.mark.parametrize(
        "fake_end",
        [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r.\n"],
    )
    def test_only_crlf_dot_crlf_ends_data(self, fake_end: bytes) -> None:
        """Smuggling: a fake terminator never ends DATA; the message is refused."""
        driver = in_transaction()
        out = driver.feed(
            b"DATA\r\nSubject: x\r\n\r\nbody"
            + fake_end
            + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
            + b"smuggled\r\n.\r\nQUIT\r\n"
        )
        assert out == replies(START_DATA, BARE_LINEFEED, BYE)
        assert driver.of(DataAborted) == [DataAborted(BARE_LINEFEED)]
        assert len(driver.of(MailFrom)) == 1
        assert driver.of(DataEnd) == []

    @pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n\r\n", b"\r\r\n"])
    def test_bare_cr_or_lf_in_data_is_refused(self, body: bytes) -> None:
        """Bare line endings anywhere in DATA: 500 5.5.2 after the terminator."""
        driver = in_transaction()
        out = driver.feed(b"DATA\r\n" + body + b".\r\n")
        assert out == replies(START_DATA, BARE_LINEFEED)
        assert driver.feed(b"DATA\r\n") == NEED_MAIL.encode()

    def test_eof_in_data(self) -> None:
        """EOF mid-DATA closes with "eof in data" and no DataEnd."""
        driver = in_transaction()
        driver.feed(b"DATA\r\npartial\r\n.")
        assert driver.feed(b"") == b""
        assert driver.events[-1] == Closed("eof in data")
        assert driver.of(DataEnd) == []


class TestBdat:
    def test_single_last_chunk(self) -> None:
        """BDAT n LAST: the octets raw, then DataEnd."""
        driver = in_transaction()
        out = driver.feed(b"BDAT 12 LAST\r\n.\r\nline\r\n.\r\n")
        assert out == QUEUED.encode()
        assert driver.body == b".\r\nline\r\n.\r\n"

    def test_several_chunks(self) -> None:
        """Each non-LAST chunk is acknowledged with its size."""
        driver = in_transaction()
        out = driver.feed(b"BDAT 3\r\nabcBDAT 4\r\nd\r\neBDAT 0 last\r\n")
        assert out == replies(
            OK.with_text("3 octets received"), OK.with_text("4 octets received"), QUEUED
        )
        assert driver.body == b"abcd\r\ne"

    def test_chunk_split_across_reads(self) -> None:
        """Octets arrive over many reads; pipelined commands follow."""
        driver = in_transaction()
        assert driver.feed(b"BDAT 6 LAST\r\nab") == b""
        assert driver.feed(b"cd\r\nNOOP\r\n") == replies(QUEUED, NOOP_OK)
        assert driver.body == b"abcd\r\n"

    @pytest.mark.parametrize("arg", [b"", b" x", b" -1", b" 5 FIRST", b" 5LAST"])
    def test_bad_size_consumes_nothing(self, arg: bytes) -> None:
        """A malformed BDAT is 501 and the next bytes are a command."""
        driver = in_transaction()
        assert driver.feed(b"BDAT" + arg + b"\r\nNOOP\r\n") == replies(PARAM_SYNTAX, NOOP_OK)

    def test_without_recipients_still_consumes_the_octets(self) -> None:
        """RFC 3030: refused chunks are read, not taken for commands."""
        driver = greeted()
        driver.feed(b"MAIL FROM:<a@example.org>\r\n")
        out = driver.feed(b"BDAT 6\r\nNOOP\r\nNOOP\r\n")
        assert out == replies(NEED_RCPT, NOOP_OK)
        assert driver.of(DataChunk) == []
        assert greeted().feed(b"BDAT 4 LAST\r\nQUITNOOP\r\n") == replies(NEED_MAIL, NOOP_OK)

    def test_bare_lf_in_a_chunk(self) -> None:
        """Bare LF: DataAborted, the chunk is read, 500, transaction gone."""
        driver = in_transaction()
        out = driver.feed(b"BDAT 5\r\na\nbcdBDAT 1 LAST\r\nxNOOP\r\n")
        assert out == replies(BARE_LINEFEED, NEED_MAIL, NOOP_OK)
        assert driver.of(DataAborted) == [DataAborted(BARE_LINEFEED)]

    def test_crlf_may_straddle_chunks(self) -> None:
        """CR ending one chunk and LF starting the next make a CRLF."""
        driver = in_transaction()
        out = driver.feed(b"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb")
        assert out == replies(OK.with_text("2 octets received"), QUEUED)
        assert driver.body == b"a\r\nb"

    def test_cr_ending_a_chunk_then_no_lf(self) -> None:
        """A CR at a chunk's end followed by anything but LF is bare."""
        driver = in_transaction()
        out = driver.feed(b"BDAT 2\r\na\rBDAT 1 LAST\r\nx")
        assert out == replies(OK.with_text("2 octets received"), BARE_LINEFEED)

    def test_cr_ending_the_last_chunk_is_bare(self) -> None:
        """A CR with no LF to follow is refused."""
        driver = in_transaction()
        assert driver.feed(b"BDAT 2 LAST\r\na\r") == BARE_LINEFEED.encode()
        assert driver.of(DataAborted) == [DataAborted(BARE_LINEFEED)]

    def test_oversize_chunk(self) -> None:
        """Too big: aborted at once, octets swallowed, then 552."""
        driver = in_transaction(max_message_size=10)
        out = driver.feed(b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678NOOP\r\n")
        assert out == replies(OK.with_text("8 octets received"), MESSAGE_TOO_BIG, NOOP_OK)
        assert driver.of(DataAborted) == [DataAborted(MESSAGE_TOO_BIG)]

    def test_data_after_bdat(self) -> None:
        """Mixing DATA into a BDAT transaction is 503."""
        driver = in_transaction()
        assert driver.feed(b"BDAT 1\r\nxDATA\r\n") == replies(
            OK.with_text("1 octets received"), BDAT_AFTER_DATA
        )

    def test_eof_in_chunk(self) -> None:
        """EOF before the announced octets arrived."""
        driver = in_transaction()
        driver.feed(b"BDAT 10\r\nabc")
        driver.feed(b"")
        assert driver.events[-1] == Closed("eof in data")


class TestCommandLines:
    def test_simple_commands(self) -> None:
        """NOOP, VRFY, EXPN, HELP, unknown."""
        out = greeted().feed(b"NOOP\r\nVRFY x\r\nEXPN x\r\nHELP\r\nFOO\r\n")
        assert out == replies(NOOP_OK, VRFY_CANNOT, NOT_IMPLEMENTED, HELP, SYNTAX_ERROR)

    def test_bare_lf_in_a_command_line(self) -> None:
        """``MAIL ...\\nRCPT ...``: the MAIL line is refused, so RCPT has no transaction."""
        driver = greeted()
        out = driver.feed(b"MAIL FROM:<a@example.org>\nRCPT TO:<b@example.test>\r\n")
        assert out == replies(BARE_LINEFEED, NEED_MAIL)
        assert driver.of(MailFrom) == []

    def test_bare_cr_in_a_command_line(self) -> None:
        """A CR inside a line poisons it."""
        driver = greeted()
        assert driver.feed(b"MAIL FROM:<a@example.org>\rNOOP\r\n") == BARE_LINEFEED.encode()
        assert driver.of(MailFrom) == []

    @pytest.mark.parametrize("line", [b"NO\0OP\r\n", b"NOOP \xff\r\n", b"\xc3\xa9HLO x\r\n"])
    def test_nul_and_invalid_utf8(self, line: bytes) -> None:
        """NUL or undecodable bytes make a syntax error."""
        assert greeted().feed(line) == SYNTAX_ERROR.encode()

    def test_line_length_limit_counts_crlf(self) -> None:
        """510 octets + CRLF is fine; one more is 500 5.5.2."""
        driver = greeted()
        assert driver.feed(b"NOOP " + b"x" * 505 + b"\r\n") == NOOP_OK.encode()
        assert driver.feed(b"NOOP " + b"x" * 506 + b"\r\n") == LINE_TOO_LONG.encode()

    def test_10mb_command_line_is_never_buffered(self) -> None:
        """A 10 MB line fed in 1 MB pieces: tiny buffer, one 500, then normal service."""
        driver = greeted()
        for _ in range(10):
            assert driver.feed(b"x" * 1_000_000) == b""
            assert driver.session.buffered <= 512
        assert driver.feed(b"\r\nNOOP\r\n") == replies(LINE_TOO_LONG, NOOP_OK)

    def test_too_many_errors_closes(self) -> None:
        """The tenth syntax error is followed by 421 and Closed; input is ignored."""
        driver = greeted()
        out = driver.feed(b"BAD\r\n" * 12)
        assert out == replies(*[SYNTAX_ERROR] * 10, TOO_MANY_ERRORS)
        assert driver.events[-1] == Closed("too many errors")
        assert driver.feed(b"NOOP\r\n") == b""

    def test_quit(self) -> None:
        """QUIT: 221, Quit, then Closed; later input is ignored."""
        driver = greeted()
        assert driver.feed(b"QUIT\r\nNOOP\r\n") == BYE.encode()
        assert driver.events[-2:] == [Quit(), Closed("quit")]
        assert driver.session.next_event() == Closed("quit")

    def test_eof(self) -> None:
        """EOF between commands, after the complete lines are answered."""
        driver = greeted()
        driver.session.receive_data(b"NOOP\r\nNOO")
        assert driver.feed(b"") == NOOP_OK.encode()
        assert driver.events[-1] == Closed("eof")

    def test_server_421_closes(self) -> None:
        """A 421 decision ends the session after it is sent."""
        driver = greeted(decide=lambda event: SERVICE_UNAVAILABLE)
        out = driver.feed(b"MAIL FROM:<a@example.org>\r\nNOOP\r\n")
        assert out == SERVICE_UNAVAILABLE.encode()
        assert driver.events[-1] == Closed("closed by server")


class TestProgress:
    def test_lines_read_and_in_message_mark_finished_input(self) -> None:
        """The glue's deadlines restart only when a line or a body is complete."""
        driver = in_transaction()
        session = driver.session
        lines = session.lines_read
        driver.feed(b"DA")
        assert session.lines_read == lines and not session.in_message
        driver.feed(b"TA\r\nSubject: x\r\n")
        assert session.lines_read == lines + 1 and session.in_message
        driver.feed(b"\r\nbody\r\n.\r\n")
        assert session.lines_read == lines + 1 and not session.in_message


class TestStartTLS:
    def test_starttls_discards_injected_plaintext(self) -> None:
        """Bytes pipelined after STARTTLS are dropped at tls_started()."""
        driver = greeted()
        out = driver.feed(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        assert out == READY_TLS.encode()
        assert driver.events[-1] == StartTLS()
        assert driver.session.next_event() is PAUSED
        driver.session.tls_started()
        assert driver.session.tls_active
        assert driver.feed(b"") == b""  # nothing of the injected MAIL was parsed
        assert driver.of(MailFrom) == []

    def test_after_tls_the_session_starts_over(self) -> None:
        """Pre-EHLO state; EHLO now offers AUTH and not STARTTLS."""
        driver = in_transaction()
        driver.feed(b"RSET\r\nSTARTTLS\r\n")
        driver.session.tls_started()
        assert driver.session.state is State.GREETED
        assert driver.feed(b"MAIL FROM:<a@example.org>\r\n") == NEED_HELO.encode()
        out = driver.feed(b"EHLO c\r\n")
        assert ehlo_lines(out)[-2:] == ["250-DSN", "250 AUTH PLAIN LOGIN"]

    def test_a_login_before_starttls_is_forgotten(self) -> None:
        """RFC 3207 §4.2: AUTH, STARTTLS: no login, no EHLO, AUTH may run again."""
        driver = greeted(auth_without_tls=True)
        assert driver.feed(sasl_line(b"\0alice\0pw", b"AUTH PLAIN ")) == AUTH_OK.encode()
        assert driver.session.login == "alice" and driver.session.hello is not None
        driver.feed(b"STARTTLS\r\n")
        driver.session.tls_started()
        assert driver.session.login is None and not driver.session.authenticated
        assert driver.session.hello is None
        driver.feed(b"EHLO c\r\n")
        assert driver.session.hello == Hello("c", True)
        assert driver.feed(sasl_line(b"\0bob\0pw", b"AUTH PLAIN ")) == AUTH_OK.encode()
        assert driver.session.login == "bob"

    def test_a_positive_auth_answer_names_the_login(self) -> None:
        """The glue cannot log a session in without saying as whom."""
        driver = Driver(tls_active=True)
        driver.session.receive_data(b"EHLO c\r\n" + sasl_line(b"\0u\0p", b"AUTH PLAIN "))
        assert isinstance(driver.session.next_event(), Hello)
        assert isinstance(driver.session.next_event(), AuthCredentials)
        with pytest.raises(RuntimeError):
            driver.session.send(AUTH_OK)

    def test_starttls_refusals(self) -> None:
        """Already on TLS, not offered, with arguments, or inside a transaction."""
        assert greeted(tls_active=True).feed(b"STARTTLS\r\n") == TLS_ALREADY.encode()
        out = greeted(starttls_available=False).feed(b"STARTTLS\r\n")
        assert out == NOT_IMPLEMENTED.encode()
        assert greeted().feed(b"STARTTLS now\r\n") == PARAM_SYNTAX.encode()
        assert in_transaction().feed(b"STARTTLS\r\n") == BAD_SEQUENCE.encode()
        assert Driver().feed(b"STARTTLS\r\n") == NEED_HELO.encode()

    def test_tls_started_without_starttls_is_a_bug(self) -> None:
        """The glue may only call tls_started() after StartTLS."""
        with pytest.raises(RuntimeError):
            Driver().session.tls_started()


class TestAuth:
    def test_plain_with_initial_response(self) -> None:
        """AUTH PLAIN <ir>: one decision, then authenticated."""
        driver = greeted(tls_active=True)
        out = driver.feed(sasl_line(b"\0user\0pass", b"AUTH PLAIN "))
        assert out == AUTH_OK.encode()
        assert driver.of(AuthCredentials) == [AuthCredentials("PLAIN", "", "user", "pass")]
        assert driver.session.authenticated
        assert driver.feed(b"AUTH PLAIN =\r\n") == ALREADY_AUTHENTICATED.encode()

    def test_plain_with_a_challenge(self) -> None:
        """AUTH PLAIN, empty 334, then the response."""
        driver = greeted(tls_active=True)
        assert driver.feed(b"auth plain\r\n") == AUTH_CONTINUE_EMPTY.encode() == b"334 \r\n"
        assert driver.feed(sasl_line(b"z\0user\0pass")) == AUTH_OK.encode()
        assert driver.of(AuthCredentials) == [AuthCredentials("PLAIN", "z", "user", "pass")]

    def test_plain_with_empty_initial_response(self) -> None:
        """``AUTH PLAIN =`` is an empty response: not decodable credentials."""
        assert greeted(tls_active=True).feed(b"AUTH PLAIN =\r\n") == AUTH_BAD_BASE64.encode()

    def test_login(self) -> None:
        """AUTH LOGIN: username and password challenges."""
        driver = greeted(tls_active=True)
        assert driver.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
        assert driver.feed(sasl_line(b"user")) == b"334 UGFzc3dvcmQ6\r\n"
        assert driver.feed(sasl_line(b"pass")) == AUTH_OK.encode()
        assert driver.of(AuthCredentials) == [AuthCredentials("LOGIN", "", "user", "pass")]

    def test_login_with_initial_username(self) -> None:
        """AUTH LOGIN <user> goes straight to the password."""
        driver = greeted(tls_active=True)
        assert driver.feed(sasl_line(b"user", b"AUTH LOGIN ")) == b"334 UGFzc3dvcmQ6\r\n"
        assert driver.feed(sasl_line(b"pass")) == AUTH_OK.encode()

    def test_cancel(self) -> None:
        """``*`` cancels with 501 and the session goes on."""
        driver = greeted(tls_active=True)
        driver.feed(b"AUTH LOGIN\r\n")
        assert driver.feed(b"*\r\nNOOP\r\n") == replies(AUTH_CANCELLED, NOOP_OK)
        assert not driver.session.authenticated

    @pytest.mark.parametrize("response", [b"not base64", b"\xff\xfe", b"dXNlcg"])
    def test_bad_base64(self, response: bytes) -> None:
        """Undecodable responses are 501 5.5.2."""
        driver = greeted(tls_active=True)
        driver.feed(b"AUTH PLAIN\r\n")
        assert driver.feed(response + b"\r\n") == AUTH_BAD_BASE64.encode()

    def test_failed_credentials(self) -> None:
        """A 535 leaves the session unauthenticated and AUTH may be retried."""
        driver = greeted(decide=lambda event: AUTH_FAILED, tls_active=True)
        assert driver.feed(sasl_line(b"\0u\0p", b"AUTH PLAIN ")) == AUTH_FAILED.encode()
        assert not driver.session.authenticated
        assert driver.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"

    def test_refusals(self) -> None:
        """Unknown mechanism, no TLS, no auth at all, mid-transaction, before EHLO."""
        secure = greeted(tls_active=True)
        assert secure.feed(b"AUTH CRAM-MD5\r\n") == UNKNOWN_AUTH_MECHANISM.encode()
        assert secure.feed(b"AUTH\r\n") == PARAM_SYNTAX.encode()
        assert greeted().feed(b"AUTH PLAIN\r\n") == ENCRYPTION_REQUIRED.encode()
        out = greeted(auth_available=False).feed(b"AUTH PLAIN\r\n")
        assert out == NOT_IMPLEMENTED.encode()
        assert in_transaction(tls_active=True).feed(b"AUTH PLAIN\r\n") == BAD_SEQUENCE.encode()
        assert Driver(tls_active=True).feed(b"AUTH PLAIN\r\n") == NEED_HELO.encode()

    def test_auth_lines_may_exceed_the_command_limit(self) -> None:
        """A long initial response uses max_auth_line_length, not 512."""
        driver = greeted(tls_active=True)
        creds = b"\0user\0" + b"p" * 2000
        assert driver.feed(sasl_line(creds, b"AUTH PLAIN ")) == AUTH_OK.encode()
        driver = greeted(tls_active=True)
        driver.feed(b"AUTH PLAIN\r\n")
        assert driver.feed(b"A" * 13_000 + b"\r\nNOOP\r\n") == replies(LINE_TOO_LONG, NOOP_OK)

    def test_bare_lf_in_an_auth_response(self) -> None:
        """The SASL exchange ends with 500 5.5.2."""
        driver = greeted(tls_active=True)
        driver.feed(b"AUTH PLAIN\r\n")
        assert driver.feed(b"AAAA\nNOOP\r\n") == replies(BARE_LINEFEED, NOOP_OK)

    def test_password_is_not_in_event_repr(self) -> None:
        """Events never print the password."""
        assert "pass" not in repr(AuthCredentials("PLAIN", "", "u", "pass"))
