"""The SMTP listener over real sockets: bad input, pipelining, BDAT, headers, clients."""

from __future__ import annotations

import email
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from postwarden.mail import reply as R
from serverproc import DOMAIN, PASSWORD, ServerProcess

USER = f"bob@{DOMAIN}"
MAX_SIZE = 20_000
RCPT_ERROR_LIMIT = 5
MAX_HEADER = 4000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("smtp")
    srv = ServerProcess(root, limits={"max_message_size": MAX_SIZE, "max_recipients": 3,
                                      "max_bad_commands": 5, "rcpt_error_soft_limit": 2,
                                      "rcpt_error_hard_limit": RCPT_ERROR_LIMIT,
                                      "rcpt_error_delay_ms": 1,
                                      "max_header_size": MAX_HEADER})
    srv.add_user(USER)
    for name in ("r1", "r2", "r3", "r4"):
        srv.add_user(f"{name}@{DOMAIN}")
    srv.start()
    yield srv
    srv.stop()


class Raw:
    """A line-level SMTP client over a plain socket, for input no library sends."""

    def __init__(self, server: ServerProcess, kind: str = "smtp") -> None:
        self.sock = socket.create_connection(server.addr(kind), timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline(100_000)
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_data(raw: Raw, rcpt: str = USER) -> None:
    assert raw.cmd(b"EHLO raw.test").startswith(b"250")
    assert raw.cmd(b"MAIL FROM:<a@sender.example>") == R.SENDER_OK.encode()
    assert raw.cmd(f"RCPT TO:<{rcpt}>".encode()) == R.RECIPIENT_OK.encode()
    assert raw.cmd(b"DATA") == R.START_DATA.encode()


def inbox_count(server: ServerProcess, account: str = USER) -> int:
    return len(server.inbox(account))


def queued_id(reply: bytes) -> str:
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    return reply.split()[-1].decode()


class TestProtocol:
    def test_banner_and_ehlo_keywords(self, server: ServerProcess) -> None:
        """The banner names the host; EHLO lists the extensions of SPEC §3."""
        with smtplib.SMTP(*server.addr("smtp")) as c:
            code, _ = c.ehlo("x")
            assert code == 250
            for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                        "chunking", "dsn", "starttls", "auth"):
                assert c.has_extn(ext), ext
            assert c.esmtp_features["size"] == str(MAX_SIZE)

    def test_pipelined_commands_in_one_packet(self, server: ServerProcess) -> None:
        """A whole transaction in one write gets every reply, in order."""
        before = inbox_count(server)
        with Raw(server) as raw:
            raw.send(b"EHLO p.test\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<" + USER.encode()
                     + b">\r\nRCPT TO:<nobody@" + DOMAIN.encode() + b">\r\nDATA\r\n"
                     b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            assert raw.reply().startswith(b"250-")
            assert raw.reply() == R.SENDER_OK.encode()
            assert raw.reply() == R.RECIPIENT_OK.encode()
            assert raw.reply() == R.UNKNOWN_USER.encode()
            assert raw.reply() == R.START_DATA.encode()
            queued_id(raw.reply())
            assert raw.reply() == R.BYE.encode()
        assert inbox_count(server) == before + 1

    def test_rejected_mail_makes_pipelined_rcpt_fail(self, server: ServerProcess) -> None:
        """After a refused MAIL, pipelined RCPT/DATA get sequence errors, nothing stored."""
        with Raw(server, "submission") as raw:
            raw.send(b"EHLO p.test\r\nMAIL FROM:<" + USER.encode() + b">\r\nRCPT TO:<"
                     + USER.encode() + b">\r\nDATA\r\n")
            raw.reply()
            assert raw.reply() == R.AUTH_REQUIRED.encode()
            assert raw.reply() == R.NEED_MAIL.encode()
            assert raw.reply() == R.NEED_MAIL.encode()

    def test_received_header_and_dot_unstuffing(self, server: ServerProcess) -> None:
        """Stored message starts with our Received header; dots are unstuffed."""
        with Raw(server) as raw:
            start_data(raw, f"r4@{DOMAIN}")
            raw.send(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n")
            qid = queued_id(raw.reply())
        stored = server.inbox(f"r4@{DOMAIN}")[-1]
        assert stored.startswith(b"Received: from raw.test ([127.0.0.1])\r\n")
        assert f"with ESMTP id {qid}".encode() in stored
        assert stored.endswith(b"\r\n.leading dot\r\n")

    def test_authenticated_submission_gets_message_id_and_date(
        self, server: ServerProcess
    ) -> None:
        """ESMTPSA in Received; Message-ID and Date added when missing."""
        with smtplib.SMTP(*server.addr("submission")) as c:
            c.starttls(context=ssl._create_unverified_context())
            c.login(USER, PASSWORD)
            c.sendmail(USER, [f"r3@{DOMAIN}"], b"Subject: no ids\r\n\r\nhello\r\n")
        msg = email.message_from_bytes(server.inbox(f"r3@{DOMAIN}")[-1])
        assert "with ESMTPSA id" in msg["Received"]
        assert msg["Message-ID"] and msg["Date"]

    def test_too_many_recipients(self, server: ServerProcess) -> None:
        """The recipient after max_recipients gets 452 4.5.3."""
        with Raw(server) as raw:
            raw.cmd(b"EHLO x")
            raw.cmd(b"MAIL FROM:<a@sender.example>")
            for name in ("r1", "r2", "r3"):
                assert raw.cmd(f"RCPT TO:<{name}@{DOMAIN}>".encode()) == R.RECIPIENT_OK.encode()
            assert raw.cmd(f"RCPT TO:<r4@{DOMAIN}>".encode()) == R.TOO_MANY_RECIPIENTS.encode()


class TestBadInput:
    def test_recipient_probing_is_cut_off(self, server: ServerProcess) -> None:
        """A pipelined burst of unknown recipients (issue 8, defect 8): each is
        refused, the ones past the soft limit slowly, and at the hard limit the
        server says 421 and closes; the probe is logged with its decisions."""
        with Raw(server) as raw:
            raw.send(b"EHLO probe.test\r\nMAIL FROM:<a@sender.example>\r\n" + b"".join(
                b"RCPT TO:<guess%d@%s>\r\n" % (i, DOMAIN.encode()) for i in range(50)))
            assert raw.reply().startswith(b"250-")
            assert raw.reply() == R.SENDER_OK.encode()
            for _ in range(RCPT_ERROR_LIMIT):
                assert raw.reply() == R.UNKNOWN_USER.encode()
            assert raw.reply() == R.TOO_MANY_ERRORS.encode()
            assert raw.file.read() == b""  # closed, the rest of the burst unread
        line = server.wait_for_log("smtp transaction", "guess4@")
        assert "guess5@" not in line

    def test_bare_lf_in_command(self, server: ServerProcess) -> None:
        """A command ended by bare LF is refused with 500 5.5.2."""
        with Raw(server) as raw:
            raw.send(b"EHLO x\n")
            assert raw.reply() == R.BARE_LINEFEED.encode()
            assert raw.cmd(b"NOOP") == R.NOOP_OK.encode()

    @pytest.mark.parametrize("body", [
        b"Subject: a\r\n\r\nline\nbare lf\r\n.\r\n",
        b"Subject: a\r\n\r\nline\rbare cr\r\n.\r\n",
    ])
    def test_bare_lf_or_cr_in_data(self, server: ServerProcess, body: bytes) -> None:
        """Bare CR/LF in DATA: 500 5.5.2 after the terminator, nothing stored."""
        before = inbox_count(server)
        with Raw(server) as raw:
            start_data(raw)
            raw.send(body)
            assert raw.reply() == R.BARE_LINEFEED.encode()
            assert raw.cmd(b"NOOP") == R.NOOP_OK.encode()
        assert inbox_count(server) == before

    def test_smuggling_with_lf_dot_lf(self, server: ServerProcess) -> None:
        """`<LF>.<LF>` does not end DATA; the smuggled transaction never runs."""
        before = inbox_count(server), inbox_count(server, f"r1@{DOMAIN}")
        smuggled = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<evil@sender.example>\r\n"
                    b"RCPT TO:<r1@" + DOMAIN.encode() + b">\r\nDATA\r\nSubject: smuggled\r\n"
                    b"\r\nevil\r\n.\r\n")
        with Raw(server) as raw:
            start_data(raw)
            raw.send(smuggled)
            assert raw.reply() == R.BARE_LINEFEED.encode()
            assert raw.cmd(b"NOOP") == R.NOOP_OK.encode()
        assert (inbox_count(server), inbox_count(server, f"r1@{DOMAIN}")) == before

    def test_ten_megabyte_command_line(self, server: ServerProcess) -> None:
        """A 10 MB line gets 500 5.5.2 and the session goes on."""
        with Raw(server) as raw:
            raw.send(b"NOOP " + b"x" * 10_000_000 + b"\r\n")
            assert raw.reply() == R.LINE_TOO_LONG.encode()
            assert raw.cmd(b"NOOP") == R.NOOP_OK.encode()

    def test_oversize_message(self, server: ServerProcess) -> None:
        """Over max_message_size: 552 5.3.4, nothing stored; SIZE= refused up front."""
        before = inbox_count(server)
        with Raw(server) as raw:
            start_data(raw)
            raw.send(b"Subject: big\r\n\r\n" + b"y" * 100 + (b"z" * 998 + b"\r\n") * 30
                     + b".\r\n")
            assert raw.reply() == R.MESSAGE_TOO_BIG.encode()
            assert raw.cmd(b"MAIL FROM:<a@b.example> SIZE=999999") == R.MESSAGE_TOO_BIG.encode()
        assert inbox_count(server) == before

    @pytest.mark.parametrize("blank_line", [True, False])
    def test_oversize_header_section(self, server: ServerProcess, blank_line: bool) -> None:
        """A header section over max_header_size (issue 8, defect 9): the data is
        read to its end and dropped, 552 5.3.4, nothing stored, and the session
        goes on to deliver the next message."""
        before = inbox_count(server)
        with Raw(server) as raw:
            start_data(raw)
            head = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"h" * 80) for i in range(60))
            assert len(head) > MAX_HEADER
            raw.send(head + (b"\r\nbody\r\n" if blank_line else b"") + b"more\r\n" * 500
                     + b".\r\n")
            assert raw.reply() == R.HEADER_TOO_BIG.encode()
            assert raw.cmd(b"MAIL FROM:<a@sender.example>") == R.SENDER_OK.encode()
            assert raw.cmd(f"RCPT TO:<{USER}>".encode()) == R.RECIPIENT_OK.encode()
            assert raw.cmd(b"DATA") == R.START_DATA.encode()
            raw.send(b"Subject: fits\r\n\r\nfits\r\n.\r\n")
            queued_id(raw.reply())
        assert inbox_count(server) == before + 1
        server.wait_for_log("smtp header-too-large")

    def test_binary_garbage_then_421(self, server: ServerProcess) -> None:
        """Garbage lines are refused, and too many of them close with 421."""
        with Raw(server) as raw:
            raw.send(b"\x00\xff\xfe garbage\r\n" * 10)
            replies = []
            with pytest.raises(ConnectionError):
                for _ in range(10):
                    replies.append(raw.reply())
        assert replies[0].startswith(b"500 5.5.2")
        assert replies[-1] == R.TOO_MANY_ERRORS.encode()

    def test_disconnect_mid_data_stores_nothing(self, server: ServerProcess) -> None:
        """A client that vanishes in DATA leaves nothing, and others keep being served."""
        before = inbox_count(server)
        with Raw(server) as raw:
            start_data(raw)
            raw.send(b"Subject: cut\r\n\r\nhalf a message")
        with Raw(server) as other:  # the server still serves; and the next one lands
            start_data(other)
            other.send(b"Subject: whole\r\n\r\nok\r\n.\r\n")
            queued_id(other.reply())
        messages = server.inbox(USER)
        assert len(messages) == before + 1
        assert b"half a message" not in messages[-1]

    def test_bdat_happy_and_wrong_sizes(self, server: ServerProcess) -> None:
        """BDAT chunks assemble a message; bad sizes get 501, BDAT w/o RCPT 503."""
        with Raw(server) as raw:
            raw.cmd(b"EHLO x")
            raw.send(b"BDAT 5\r\nxxxxx")  # refused, but its octets are still consumed
            assert raw.reply() == R.NEED_MAIL.encode()
            assert raw.cmd(b"BDAT abc") == R.PARAM_SYNTAX.encode()
            assert raw.cmd(b"MAIL FROM:<a@sender.example>") == R.SENDER_OK.encode()
            assert raw.cmd(f"RCPT TO:<{USER}>".encode()) == R.RECIPIENT_OK.encode()
            raw.send(b"BDAT 17\r\nSubject: bdat\r\n\r\n")
            assert raw.reply().startswith(b"250 2.0.0 17 octets")
            raw.send(b"BDAT 7 LAST\r\nchunky\n")
            assert raw.reply() == R.BARE_LINEFEED.encode()
            raw.cmd(b"MAIL FROM:<a@sender.example>")
            raw.cmd(f"RCPT TO:<{USER}>".encode())
            raw.send(b"BDAT 25 LAST\r\nSubject: bdat\r\n\r\nchunky\r\n")
            queued_id(raw.reply())
        assert server.inbox(USER)[-1].endswith(b"Subject: bdat\r\n\r\nchunky\r\n")

    def test_other_clients_unaffected_by_garbage(self, server: ServerProcess) -> None:
        """A session in progress completes while another client sends garbage."""
        with Raw(server) as good, Raw(server) as bad:
            start_data(good)
            bad.send(b"\xff" * 100_000 + b"\r\n")
            good.send(b"Subject: fine\r\n\r\nok\r\n.\r\n")
            queued_id(good.reply())
            assert bad.reply() == R.LINE_TOO_LONG.encode()


class TestRealClients:
    def test_smtplib_starttls_login(self, server: ServerProcess) -> None:
        """smtplib: STARTTLS + AUTH LOGIN/PLAIN on submission, message delivered."""
        before = inbox_count(server, f"r2@{DOMAIN}")
        with smtplib.SMTP(*server.addr("submission")) as c:
            c.starttls(context=ssl._create_unverified_context())
            c.login(USER, PASSWORD)
            assert c.sendmail(USER, [f"r2@{DOMAIN}"], b"Subject: smtplib\r\n\r\nhi\r\n") == {}
        assert inbox_count(server, f"r2@{DOMAIN}") == before + 1

    def test_smtplib_implicit_tls(self, server: ServerProcess) -> None:
        """smtplib.SMTP_SSL on the submissions port."""
        with smtplib.SMTP_SSL(*server.addr("submissions"),
                              context=ssl._create_unverified_context()) as c:
            c.login(USER, PASSWORD)
            assert c.sendmail(USER, [f"r2@{DOMAIN}"], b"Subject: smtps\r\n\r\nhi\r\n") == {}

    async def test_aiosmtplib(self, server: ServerProcess) -> None:
        """aiosmtplib with STARTTLS and login."""
        host, port = server.addr("submission")
        errors, text = await aiosmtplib.send(
            b"Subject: aiosmtplib\r\n\r\nhi\r\n", sender=USER, recipients=[f"r2@{DOMAIN}"],
            hostname=host, port=port, start_tls=True, validate_certs=False,
            username=USER, password=PASSWORD,
        )
        assert errors == {} and text.startswith("2.0.0 Ok: queued as")

    def test_swaks(self, server: ServerProcess) -> None:
        """swaks, the admin's favourite SMTP test tool, sends with TLS and AUTH."""
        swaks = shutil.which("swaks")
        if swaks is None:
            pytest.skip("swaks not installed: apt-get install swaks (.ci/run does this)")
        host, port = server.addr("submission")
        result = subprocess.run(
            [swaks, "--server", host, "--port", str(port), "--tls", "--auth", "PLAIN",
             "--auth-user", USER, "--auth-password", PASSWORD, "--from", USER,
             "--to", f"r2@{DOMAIN}", "--header", "Subject: swaks"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "250 2.0.0 Ok: queued as" in result.stdout


class TestStartTLSForgetsThePlaintextSession:
    """RFC 3207 §4.2: nothing said before STARTTLS survives it (issue 8, defect 1)."""

    def test_a_login_made_before_starttls_does_not_relay(self, server: ServerProcess) -> None:
        """MX port, loopback (plaintext AUTH allowed): AUTH, STARTTLS, EHLO; relaying
        is refused because the login is gone, a wrong password after TLS changes
        nothing, and logging in again over TLS works."""
        with smtplib.SMTP(*server.addr("smtp"), source_address=("127.0.0.71", 0)) as c:
            c.ehlo("attacker.test")
            assert c.login(USER, PASSWORD)[0] == 235
            c.starttls(context=ssl._create_unverified_context())
            c.ehlo("attacker.test")
            assert c.mail(USER) == (250, b"2.1.0 Ok")
            code, text = c.rcpt("x@gmail.example")
            assert (code, text[:21]) == (550, b"5.7.1 Unable to relay")
            c.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login(USER, "wrong password")
            assert c.mail(USER)[0] == 250
            assert c.rcpt("x@gmail.example")[0] == 550
            c.rset()
            assert c.login(USER, PASSWORD)[0] == 235
            assert c.mail(USER)[0] == 250
            assert c.rcpt("x@gmail.example")[0] == 250

    def test_ehlo_and_transaction_are_forgotten(self, server: ServerProcess) -> None:
        """After the handshake MAIL needs a new EHLO, and the Received header
        names the EHLO given over TLS, not the one before."""
        with smtplib.SMTP(*server.addr("smtp"), source_address=("127.0.0.72", 0)) as c:
            c.ehlo("before-tls.test")
            c.starttls(context=ssl._create_unverified_context())
            assert c.docmd("MAIL FROM:<a@sender.example>") == (503, b"5.5.1 Send EHLO/HELO first")
            c.ehlo("after-tls.test")
            message = b"Subject: t\r\n\r\nx\r\n"
            assert c.sendmail("a@sender.example", [f"r3@{DOMAIN}"], message) == {}
        stored = server.inbox(f"r3@{DOMAIN}")[-1]
        assert stored.startswith(b"Received: from after-tls.test ([127.0.0.72])\r\n")
        assert b"with ESMTPS id" in stored
