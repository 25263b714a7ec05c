"""Relay control against a real server process, with clients on many 127.x addresses."""

from __future__ import annotations

import base64
import email
import smtplib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postwarden.mail import reply as R
from serverproc import DOMAIN, HOSTNAME, PASSWORD, ServerProcess

EXTERNAL = "someone@remote.example"
STRANGER = "127.0.0.3"
TRUSTED = "127.0.0.2"
DENIED = "127.0.0.6"
POP_CLIENT = "127.0.0.7"
INTERNAL = "127.0.0.5"
USER = f"bob@{DOMAIN}"


def code_status(reply: R.Reply) -> tuple[int, bytes]:
    """What smtplib returns for a reply: the code and the text after it."""
    return reply.code, f"{reply.status} {reply.text}".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("relay")
    srv = ServerProcess(
        root,
        listen={"smtp": ["127.0.0.1:0", f"{INTERNAL}:0"]},
        relay={
            "trusted_networks": [f"{TRUSTED}/32"],
            "internal_addresses": [INTERNAL],
            "denied_networks": [f"{DENIED}/32"],
            "pop_before_smtp_minutes": 10,
        },
        limits={"auth_failures_per_ip": 3},
        # Anything wrongly accepted for the outside world goes to a closed loopback port.
        routes=[{"domain": "remote.example", "to": "127.0.0.1:9"}],
    )
    srv.add_user(USER)
    srv.add_user(f"carol@{DOMAIN}")
    srv.store.directory.add_alias(f"sales@{DOMAIN}", [USER])
    srv.start()
    yield srv
    srv.stop()


def connect(server: ServerProcess, source: str, kind: str = "smtp", index: int = 0) -> smtplib.SMTP:
    host, port = server.addr(kind, index)
    client = smtplib.SMTP(host, port, source_address=(source, 0), timeout=30)
    client.ehlo("client.test")
    return client


def rcpt(client: smtplib.SMTP, address: str, sender: str = "x@sender.example") -> tuple[int, bytes]:
    client.rset()
    code, _ = client.mail(sender)
    assert code == 250
    return client.rcpt(address)


def login(client: smtplib.SMTP, user: str = USER, password: str = PASSWORD) -> None:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, text = client.docmd("AUTH", f"PLAIN {token}")
    assert (code, text) == code_status(R.AUTH_OK)


class TestRelayRules:
    def test_refuses_unauthenticated_external_recipient(self, server: ServerProcess) -> None:
        """A stranger gets 550 5.7.1 Unable to relay."""
        with connect(server, STRANGER) as c:
            code, text = rcpt(c, EXTERNAL)
        assert code == 550
        assert text.startswith(b"5.7.1 Unable to relay")

    def test_accepts_same_client_after_auth(self, server: ServerProcess) -> None:
        """The same stranger address relays once it has authenticated."""
        with connect(server, STRANGER) as c:
            login(c)
            assert rcpt(c, EXTERNAL, sender=USER) == code_status(R.RECIPIENT_OK)

    def test_accepts_trusted_network_without_auth(self, server: ServerProcess) -> None:
        """A client inside trusted_networks relays without AUTH."""
        with connect(server, TRUSTED) as c:
            assert rcpt(c, EXTERNAL) == code_status(R.RECIPIENT_OK)

    def test_accepts_client_on_internal_address(self, server: ServerProcess) -> None:
        """A stranger connecting to an internal server address relays."""
        with connect(server, STRANGER, index=1) as c:
            assert c.sock.getpeername()[0] == INTERNAL
            assert rcpt(c, EXTERNAL) == code_status(R.RECIPIENT_OK)

    def test_refuses_denied_network_even_when_authenticated(self, server: ServerProcess) -> None:
        """denied_networks wins over every permit."""
        with connect(server, DENIED) as c:
            login(c)
            code, text = rcpt(c, EXTERNAL, sender=USER)
        assert code == 550 and text.startswith(b"5.7.1")

    def test_pop_before_smtp_window(self, server: ServerProcess) -> None:
        """A recent POP3/IMAP login from the IP permits relay; an expired one does not."""
        db = sqlite3.connect(server.root / "var/postwarden.sqlite3")
        with db:
            db.execute("INSERT OR REPLACE INTO login_records VALUES (?, ?)",
                       (POP_CLIENT, time.time() - 60))
        with connect(server, POP_CLIENT) as c:
            assert rcpt(c, EXTERNAL) == code_status(R.RECIPIENT_OK)
        with db:
            db.execute("UPDATE login_records SET at = ? WHERE ip = ?",
                       (time.time() - 11 * 60, POP_CLIENT))
        with connect(server, POP_CLIENT) as c:
            assert rcpt(c, EXTERNAL)[0] == 550
        db.close()

    def test_local_recipient_needs_no_relay_rule(self, server: ServerProcess) -> None:
        """Mail for our own users is accepted from anyone."""
        with connect(server, STRANGER) as c:
            assert rcpt(c, USER) == code_status(R.RECIPIENT_OK)
            assert rcpt(c, f"sales@{DOMAIN}") == code_status(R.RECIPIENT_OK)
            assert rcpt(c, "<postmaster>") == code_status(R.RECIPIENT_OK)
            assert rcpt(c, f"postmaster@{DOMAIN}") == code_status(R.RECIPIENT_OK)

    def test_alias_loop_reply_names_no_address(self, server: ServerProcess) -> None:
        """A loop (made behind the CLI's back) refuses the message with a generic
        reply: a stranger learns none of the loop's addresses."""
        server.store.directory.add_alias(f"ring1@{DOMAIN}", [f"ring2@{DOMAIN}"])
        server.store.directory.add_alias(f"ring2@{DOMAIN}", [f"ring1@{DOMAIN}"])
        with connect(server, STRANGER) as c:
            assert rcpt(c, f"ring1@{DOMAIN}") == code_status(R.RECIPIENT_OK)
            code, text = c.data(b"Subject: x\r\n\r\nhi\r\n")
        assert code == 554
        assert text == b"5.4.6 Mail loop in local forwarding"

    def test_unknown_local_user_is_refused_at_rcpt(self, server: ServerProcess) -> None:
        """550 5.1.1 at RCPT time, never accept-then-bounce."""
        with connect(server, STRANGER) as c:
            assert rcpt(c, f"nobody@{DOMAIN}") == code_status(R.UNKNOWN_USER)

    def test_own_hostname_is_a_local_domain(self, server: ServerProcess) -> None:
        """postmaster@<hostname> is ours; anyone else there is unknown, even to a trusted client."""
        with connect(server, TRUSTED) as c:
            assert rcpt(c, f"nobody@{HOSTNAME}") == code_status(R.UNKNOWN_USER)
            assert rcpt(c, f"PostMaster@{HOSTNAME.upper()}") == code_status(R.RECIPIENT_OK)
        with connect(server, STRANGER) as c:
            assert rcpt(c, f"nobody@{HOSTNAME}") == code_status(R.UNKNOWN_USER)
            c.rset()
            assert c.sendmail("x@sender.example", [f"postmaster@{HOSTNAME}"],
                              b"Subject: to the hostname\r\n\r\nhello\r\n") == {}
        deadline = time.monotonic() + 30
        while not any(b"to the hostname" in m for m in server.inbox(f"postmaster@{DOMAIN}")):
            assert time.monotonic() < deadline, "postmaster@hostname did not reach postmaster"
            time.sleep(0.05)

    def test_log_names_the_rule(self, server: ServerProcess) -> None:
        """The transaction log line names the rule that decided each recipient."""
        with connect(server, TRUSTED) as c:
            rcpt(c, EXTERNAL)
            c.rset()
        server.wait_for_log("smtp transaction", "trusted_networks")


# Address tricks, from an unauthenticated stranger: each is refused, or is the
# local address it really is. (mailbox, expected reply code)
TRICKS = [
    (f"<someone%remote.example@{DOMAIN}>", 550, b"5.1.1"),  # percent hack: local, no such user
    (f"<remote.example!someone@{DOMAIN}>", 550, b"5.1.1"),  # bang path
    (f"<@{DOMAIN}:someone@remote.example>", 550, b"5.7.1"),  # source route to a remote mailbox
    (f"<@remote.example:{USER}>", 250, b"2.1.5"),  # source route ignored: really local bob
    (f'<"someone@remote.example"@{DOMAIN}>', 550, b"5.1.1"),  # quoted local part with @
    ('<"someone@remote.example">', 501, b"5.1.3"),  # quoted @ and no domain
    ("<someone@[192.0.2.1]>", 550, b"5.7.1"),  # address literal
    ("<someone@remote.example.>", 550, b"5.7.1"),  # trailing dot: still remote
    (f"<BOB@{DOMAIN.upper()}.>", 250, b"2.1.5"),  # case and trailing dot: local bob
    (f"<someone@remote.example@{DOMAIN}>", 501, b"5.1.3"),  # double @
    (f"<someone@{DOMAIN}@remote.example>", 501, b"5.1.3"),  # double @, the other way
    (f'<"bob"@{DOMAIN}>', 250, b"2.1.5"),  # needless quotes: local bob
    (f"<someone@remote.example%{DOMAIN}>", 501, b"5.1.3"),  # % in the domain
    (f"<someone@{DOMAIN}..>", 501, b"5.1.3"),  # two trailing dots
    ("<someone@remote.example\\@example.test>", 501, b"5.1.3"),  # escaped @ outside quotes
]


class TestAddressTricks:
    @pytest.mark.parametrize(("path", "code", "status"), TRICKS)
    def test_trick_never_relays(self, server: ServerProcess, path: str, code: int,
                                status: bytes) -> None:
        """Source routes, %, !, quoted @, literals, dots and case never smuggle a relay."""
        with connect(server, STRANGER) as c:
            c.mail("x@sender.example")
            got_code, text = c.docmd("RCPT", f"TO:{path}")
        assert (got_code, text[:5]) == (code, status)


class TestSubmission:
    def test_submission_requires_auth_before_mail(self, server: ServerProcess) -> None:
        """530 5.7.0 on the submission port without AUTH."""
        with connect(server, STRANGER, "submission") as c:
            assert c.mail(USER) == code_status(R.AUTH_REQUIRED)

    def test_submission_offers_auth_only_after_starttls(self, server: ServerProcess) -> None:
        """No AUTH in EHLO and AUTH refused before STARTTLS on submission."""
        with connect(server, STRANGER, "submission") as c:
            assert not c.has_extn("auth")
            token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {token}") == code_status(R.ENCRYPTION_REQUIRED)
            c.starttls()
            c.ehlo("client.test")
            assert "PLAIN" in c.esmtp_features["auth"]
            c.login(USER, PASSWORD)
            assert c.mail(USER) == code_status(R.SENDER_OK)

    def test_wrong_password_then_throttled(self, server: ServerProcess) -> None:
        """535 5.7.8 for a wrong password; after the limit the IP gets 454 4.7.0."""
        source = "127.0.0.9"
        with connect(server, source) as c:
            bad = base64.b64encode(f"\0{USER}\0wrong".encode()).decode()
            for _ in range(3):
                assert c.docmd("AUTH", f"PLAIN {bad}") == code_status(R.AUTH_FAILED)
            good = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {good}") == code_status(R.AUTH_THROTTLED)
        with connect(server, "127.0.0.10") as other:  # another IP is not affected
            login(other)

    def test_unknown_user_is_an_ordinary_failure(self, server: ServerProcess) -> None:
        """An unknown user gets the same 535 as a wrong password."""
        with connect(server, "127.0.0.11") as c:
            token = base64.b64encode(f"\0ghost@{DOMAIN}\0{PASSWORD}".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {token}") == code_status(R.AUTH_FAILED)

    def test_acting_for_another_user_is_refused(self, server: ServerProcess) -> None:
        """A right password with someone else's authzid gets no session; an own authzid does."""
        with connect(server, "127.0.0.12") as c:
            foreign = base64.b64encode(f"carol@{DOMAIN}\0{USER}\0{PASSWORD}".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {foreign}") == code_status(R.AUTH_FAILED)
            own = base64.b64encode(f"{USER.upper()}\0{USER}\0{PASSWORD}".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {own}") == code_status(R.AUTH_OK)
        server.wait_for_log("smtp auth", "127.0.0.12", "result=authzid-refused")

    def test_sender_must_be_owned(self, server: ServerProcess) -> None:
        """553 5.7.1 for a MAIL FROM the user does not own; own aliases are fine."""
        with connect(server, STRANGER) as c:
            login(c)
            assert c.mail(f"carol@{DOMAIN}") == code_status(R.SENDER_NOT_OWNED)
            c.rset()
            assert c.mail(f"sales@{DOMAIN}") == code_status(R.SENDER_OK)
            c.rset()
            assert c.mail(USER.upper()) == code_status(R.SENDER_OK)

    def test_auth_login_mechanism_used_by_outlook(self, server: ServerProcess) -> None:
        """AUTH LOGIN works (smtplib's login falls back to it)."""
        with connect(server, STRANGER) as c:
            c.user, c.password = USER, PASSWORD
            assert c.auth("LOGIN", c.auth_login) == code_status(R.AUTH_OK)


def letter(from_header: str, subject: str = "hello") -> bytes:
    return (f"From: {from_header}\r\nTo: <carol@{DOMAIN}>\r\nSubject: {subject}\r\n"
            f"\r\nbody\r\n").encode()


def transaction(c: smtplib.SMTP, sender: str, rcpts: list[str],
                data: bytes) -> tuple[int, bytes]:
    """MAIL, RCPTs (each must be accepted), DATA: the reply to the end of the data."""
    c.rset()
    assert c.mail(sender)[0] == 250
    for address in rcpts:
        assert c.rcpt(address) == code_status(R.RECIPIENT_OK)
    return c.data(data)


class TestSenderMatchesLogin:
    """sender_must_match_login: the envelope and the From: header both belong to the login."""

    def test_null_sender_may_not_relay_for_a_logged_in_user(self, server: ServerProcess) -> None:
        """The attack: bob logged in, MAIL FROM:<> to an outside address is refused 553 5.7.1."""
        with connect(server, STRANGER) as c:
            login(c)
            assert c.mail("<>") == code_status(R.SENDER_OK)
            assert c.rcpt(EXTERNAL) == code_status(R.SENDER_NOT_OWNED)
            assert c.rcpt(f"carol@{DOMAIN}") == code_status(R.RECIPIENT_OK)
        server.wait_for_log("smtp transaction", EXTERNAL, "reject:null_sender_relay")

    def test_null_sender_still_relays_for_a_trusted_client_without_login(
        self, server: ServerProcess
    ) -> None:
        """The rule binds logins only: a trusted network's bounces (MAIL FROM:<>) go out."""
        with connect(server, TRUSTED) as c:
            assert c.mail("<>") == code_status(R.SENDER_OK)
            assert c.rcpt(EXTERNAL) == code_status(R.RECIPIENT_OK)

    def test_forged_from_header_is_refused_after_data(self, server: ServerProcess) -> None:
        """Own envelope sender, someone else's From: -> 550 5.7.1 at the end of DATA."""
        with connect(server, STRANGER) as c:
            login(c)
            forged = letter(f'"Carol" <carol@{DOMAIN}>', "forged from")
            assert transaction(c, USER, [EXTERNAL], forged) == code_status(R.FROM_NOT_OWNED)
            # Local delivery with a forged From is refused too, and a name alone is no address.
            assert transaction(c, USER, [f"carol@{DOMAIN}"], forged) == (
                code_status(R.FROM_NOT_OWNED))
            assert transaction(c, USER, [f"carol@{DOMAIN}"], letter("Bob")) == (
                code_status(R.FROM_NOT_OWNED))
            # The session goes on: a good message after the refusals is taken.
            assert transaction(c, USER, [f"carol@{DOMAIN}"], letter(f"<{USER}>"))[0] == 250
        assert not any(b"forged from" in m for m in server.inbox(f"carol@{DOMAIN}"))

    def test_own_address_and_aliases_leading_to_it_are_fine(self, server: ServerProcess) -> None:
        """From: the login (any case), an alias of it, or an alias of that alias is accepted."""
        server.store.directory.add_alias(f"chain@{DOMAIN}", [f"sales@{DOMAIN}"])
        with connect(server, STRANGER) as c:
            login(c)
            for header in (f'"Bob" <{USER.upper()}>', f"Sales <sales@{DOMAIN}>",
                           f"chain@{DOMAIN}"):
                reply = transaction(c, f"chain@{DOMAIN}", [f"carol@{DOMAIN}"], letter(header))
                assert reply[0] == 250
            # <> with a local recipient and the user's own From: a receipt, say.
            assert transaction(c, "<>", [f"carol@{DOMAIN}"], letter(f"<{USER}>"))[0] == 250

    def test_strangers_are_not_bound_by_the_login_rule(self, server: ServerProcess) -> None:
        """Without a login, mail to our users may carry any From: (inbound mail)."""
        with connect(server, STRANGER) as c:
            reply = transaction(c, "x@sender.example", [f"carol@{DOMAIN}"],
                                letter(f"<{USER}>"))
            assert reply[0] == 250


def received_of(server: ServerProcess, account: str, subject: str) -> str:
    """Our Received header on the message with this subject (bounded poll of the INBOX)."""
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in server.inbox(account) if f"Subject: {subject}".encode() in m]
        if found:
            return str(email.message_from_bytes(found[0])["Received"])
        assert time.monotonic() < deadline, f"{subject!r} did not arrive"
        time.sleep(0.05)


class TestReceivedHeader:
    def test_login_is_not_named_by_default(self, server: ServerProcess) -> None:
        """[auth] received_header_shows_login is off: ESMTPA says a login happened, not whose."""
        with connect(server, STRANGER) as c:
            login(c)
            transaction(c, USER, [f"carol@{DOMAIN}"], letter(f"<{USER}>", "trace default"))
        received = received_of(server, f"carol@{DOMAIN}", "trace default")
        assert "with ESMTPA" in received
        assert "Authenticated sender" not in received and USER not in received

    def test_login_is_named_when_configured(
        self, make_server: Callable[..., ServerProcess]
    ) -> None:
        """With received_header_shows_login = true the header names the login."""
        srv = make_server(auth={"received_header_shows_login": True})
        srv.add_user(USER)
        srv.add_user(f"carol@{DOMAIN}")
        srv.start()
        with connect(srv, STRANGER) as c:
            login(c)
            transaction(c, USER, [f"carol@{DOMAIN}"], letter(f"<{USER}>", "trace shown"))
        received = received_of(srv, f"carol@{DOMAIN}", "trace shown")
        assert f"(Authenticated sender: {USER})" in received


class TestRelayCheckCLI:
    def test_cli_explains_the_same_decision(self, server: ServerProcess) -> None:
        """`relay check` prints the rule the server used and exits 1 on refusal."""
        out = server.cli("relay", "check", "--client", STRANGER, EXTERNAL, USER)
        assert out.returncode == 1
        assert "550 5.7.1 Unable to relay" in out.stdout
        assert "no_relay_rule" in out.stdout
        ok = server.cli("relay", "check", "--client", TRUSTED, EXTERNAL)
        assert ok.returncode == 0 and "trusted_networks" in ok.stdout
        internal = server.cli("relay", "check", "--client", STRANGER, "--local-addr", INTERNAL,
                              EXTERNAL)
        assert internal.returncode == 0 and "internal_addresses" in internal.stdout

    def test_cli_sender_check(self, server: ServerProcess) -> None:
        """--user/--sender apply sender_must_match_login."""
        out = server.cli("relay", "check", "--client", STRANGER, "--user", USER,
                         "--sender", f"carol@{DOMAIN}", EXTERNAL)
        assert out.returncode == 1 and "553 5.7.1" in out.stdout

    def test_cli_null_sender_of_a_login(self, server: ServerProcess) -> None:
        """--sender '<>' with --user: outside recipients are refused, local ones are not."""
        out = server.cli("relay", "check", "--client", STRANGER, "--user", USER,
                         "--sender", "<>", EXTERNAL, f"carol@{DOMAIN}")
        assert out.returncode == 1
        assert f"{EXTERNAL}: REJECT  553 5.7.1" in out.stdout and "null_sender_relay" in out.stdout
        assert f"carol@{DOMAIN}: ACCEPT" in out.stdout

    def test_cli_bad_ip_is_one_line(self, server: ServerProcess) -> None:
        """A bad client address is a one-line error, no traceback."""
        out = server.cli("relay", "check", "--client", "not-an-ip", EXTERNAL)
        assert out.returncode == 2
        assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
