"""One line per connection event in the server's log: open, TLS, AUTH, close with counts."""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from serverproc import DOMAIN, PASSWORD, ServerProcess

CLIENT = "127.0.0.3"
BODY = "the-body-that-stays-out-of-the-log"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("connlog"), listen={"imap": ["127.0.0.1:0"]})
    srv.add_user(f"carol@{DOMAIN}")
    srv.start()
    yield srv
    srv.stop()


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def name(sock: socket.socket) -> str:
    """``ip:port`` of our end, as the server logs its client."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def fields(line: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))


def closed(server: ServerProcess, client: str) -> dict[str, str]:
    return fields(server.wait_for_log(" disconnect ", f"client={client} "))


class TestSMTP:
    def test_open_auth_and_close_with_exact_octets_in(self, server: ServerProcess) -> None:
        """A plaintext session by hand: every octet it sent is counted, one message, 7 lines."""
        host, port = server.addr("smtp")
        token = base64.b64encode(f"\0carol@{DOMAIN}\0{PASSWORD}".encode()).decode()
        wrong = base64.b64encode(f"\0carol@{DOMAIN}\0not-{PASSWORD}".encode()).decode()
        script = [b"EHLO client.test\r\n", f"AUTH PLAIN {wrong}\r\n".encode(),
                  f"AUTH PLAIN {token}\r\n".encode(), f"MAIL FROM:<carol@{DOMAIN}>\r\n".encode(),
                  f"RCPT TO:<carol@{DOMAIN}>\r\n".encode(), b"DATA\r\n",
                  f"Subject: hi\r\n\r\n{BODY}\r\n.\r\n".encode(), b"QUIT\r\n"]
        with socket.create_connection((host, port), timeout=30,
                                      source_address=(CLIENT, 0)) as sock:
            me = name(sock)
            replies = sock.makefile("rb")
            assert replies.readline().startswith(b"220")
            for line in script:
                sock.sendall(line)
                while (reply := replies.readline())[3:4] == b"-":  # bounded by the server
                    pass
                assert reply[:1] in b"23" or line.startswith(b"AUTH PLAIN " + wrong.encode())
        opened = fields(server.wait_for_log(" connect ", f"client={me} "))
        assert opened["listener"] == "smtp" and opened["local"] == f"{host}:{port}"
        auths = [fields(ln) for ln in server.output if "smtp auth" in ln and f"ip={CLIENT}" in ln]
        assert [(a["mechanism"], a["result"]) for a in auths] == [("PLAIN", "failed"),
                                                                  ("PLAIN", "ok")]
        close = closed(server, me)
        assert close["listener"] == "smtp" and close["messages"] == "1"
        assert close["commands"] == "7"  # the message's lines are not commands
        assert int(close["octets_in"]) == sum(len(line) for line in script)
        assert int(close["octets_out"]) > 0 and float(close["seconds"]) >= 0
        log = "".join(server.output)
        for secret in (PASSWORD, token, wrong, BODY):
            assert secret not in log

    def test_implicit_tls_logs_version_and_cipher(self, server: ServerProcess) -> None:
        """submissions: the TLS line follows the open line, naming what was agreed."""
        host, port = server.addr("submissions")
        with smtplib.SMTP_SSL(host, port, timeout=30, context=client_tls()) as client:
            me = name(client.sock)
            version, cipher = client.sock.version(), client.sock.cipher()[0]
            client.ehlo("client.test")
        tls = fields(server.wait_for_log(" tls ", f"client={me} "))
        assert (tls["listener"], tls["version"], tls["cipher"]) == (
            "submissions", version, cipher)
        assert closed(server, me)["messages"] == "0"


class TestMailboxes:
    def test_pop3_stls_login_retrieve_and_close(self, server: ServerProcess) -> None:
        """POP3 after STLS: TLS line, login line, and a close line counting the RETR."""
        with smtplib.SMTP(*server.addr("smtp"), timeout=30) as sender:
            sender.sendmail("x@remote.example", [f"carol@{DOMAIN}"], b"Subject: x\r\n\r\nx\r\n")
        host, port = server.addr("pop3")
        client = poplib.POP3(host, port, timeout=30)
        me = name(client.sock)
        client.stls(client_tls())
        client.user(f"carol@{DOMAIN}")
        client.pass_(PASSWORD)
        count = client.stat()[0]
        assert count >= 1
        client.retr(1)
        client.quit()
        assert fields(server.wait_for_log(" tls ", f"client={me} "))["listener"] == "pop3"
        assert "result=ok" in server.wait_for_log("pop3 login", f"user=carol@{DOMAIN}")
        close = closed(server, me)
        assert (close["listener"], close["messages"]) == ("pop3", "1")
        assert int(close["commands"]) == 7  # CAPA STLS USER PASS STAT RETR QUIT
        assert int(close["octets_out"]) > int(close["octets_in"]) > 0

    def test_imap_login_append_and_close(self, server: ServerProcess) -> None:
        """IMAP: the close line counts the APPEND; the password is in no line."""
        host, port = server.addr("imap")
        client = imaplib.IMAP4(host, port, timeout=30)
        me = name(client.sock)
        client.login(f"carol@{DOMAIN}", PASSWORD)
        message = f"Subject: x\r\n\r\n{BODY}\r\n".encode()
        assert client.append("INBOX", None, None, message)[0] == "OK"
        client.logout()
        assert "result=ok" in server.wait_for_log("imap-login", f"user=carol@{DOMAIN}")
        close = closed(server, me)
        assert (close["listener"], close["messages"]) == ("imap", "1")
        log = "".join(server.output)
        assert PASSWORD not in log and BODY not in log
