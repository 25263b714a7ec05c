"""Sender authentication over SMTP: SPF, DKIM and DMARC against a loopback DNS server.

The server runs as a child process with ``[dns] nameservers`` pointing at
``tests/delivery/dnsfake.py`` (in a thread of its own here); clients are
smtplib on 127.0.0.1, whose SPF result every domain below decides by its
record. Verdicts are read from the SMTP replies and the delivered headers.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from serverproc import DOMAIN, HOSTNAME, PASSWORD, ServerProcess

sys.path.insert(0, str(Path(__file__).parent.parent / "delivery"))
from dnsfake import ThreadedDNS

USER = f"alice@{DOMAIN}"
SPF_US = "v=spf1 ip4:127.0.0.1 -all"
SPF_NOT_US = "v=spf1 ip4:192.0.2.1 -all"


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    text = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    quoted = " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))
    return pem, quoted


KEY, KEY_RECORD = _key()


def _ed25519_key() -> tuple[bytes, str]:
    """A PKCS#8 PEM Ed25519 key (as OpenDKIM reads it) and its record (RFC 8463 §4)."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return pem, f'"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"'


ED_KEY, ED_KEY_RECORD = _ed25519_key()

RECORDS: dict[tuple[str, str], list[str]] = {
    ("pass.test", "TXT"): [f'"{SPF_US}"'],
    ("_dmarc.pass.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("none.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.none.test", "TXT"): ['"v=DMARC1; p=none"'],
    ("quar.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.quar.test", "TXT"): ['"v=DMARC1; p=quarantine"'],
    ("rej.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.rej.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("rej2.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("sub.rej2.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.rej2.test", "TXT"): ['"v=DMARC1; p=none; sp=reject"'],
    ("mail.rel.test", "TXT"): [f'"{SPF_US}"'],
    ("_dmarc.rel.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("mail.strict.test", "TXT"): [f'"{SPF_US}"'],
    ("_dmarc.strict.test", "TXT"): ['"v=DMARC1; p=reject; aspf=s"'],
    ("signed.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.signed.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("sel._domainkey.signed.test", "TXT"): [KEY_RECORD],
    (f"sel._domainkey.{DOMAIN}", "TXT"): [KEY_RECORD],
    ("ed._domainkey.signed.test", "TXT"): [ED_KEY_RECORD],
    ("bad._domainkey.signed.test", "TXT"): ['"v=DKIM1; k=rsa; p=!!notbase64!!"'],
    ("odd._domainkey.signed.test", "TXT"): ['"k=frob; p="'],
    # DKIM results seen in the header: p=none, SPF not ours, so DKIM alone decides DMARC
    ("dfail.test", "TXT"): [f'"{SPF_NOT_US}"'],
    ("_dmarc.dfail.test", "TXT"): ['"v=DMARC1; p=none"'],
    ("sel._domainkey.dfail.test", "TXT"): [KEY_RECORD],
    ("sel._domainkey.pass.test", "TXT"): [KEY_RECORD],
    ("slow._domainkey.pass.test", "TIMEOUT"): [],  # never answered
}


@pytest.fixture(scope="module")
def dns() -> Iterator[ThreadedDNS]:
    server = ThreadedDNS(RECORDS)
    yield server
    server.close()


def checking_server(root: Path, dns: ThreadedDNS, **checks: object) -> ServerProcess:
    srv = ServerProcess(root, dns={"nameservers": [f"127.0.0.1:{dns.port}"]},
                        auth_checks={"enabled": True, "dns_timeout_seconds": 3, **checks},
                        listen={"imap": ["127.0.0.1:0"]})
    srv.add_user(USER)
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: ThreadedDNS) -> Iterator[ServerProcess]:
    srv = checking_server(tmp_path_factory.mktemp("senderauth"), dns).start()
    yield srv
    srv.stop()


def imap_mailbox(server: ServerProcess, mailbox: str, subject: str) -> list[bytes]:
    """The messages in ``mailbox`` with that subject, fetched over IMAP."""
    host, port = server.addr("imap")
    with imaplib.IMAP4(host, port, timeout=30) as client:
        client.login(USER, PASSWORD)
        assert client.select(mailbox, readonly=True)[0] == "OK"
        _, [found] = client.search(None, "SUBJECT", subject)
        out = []
        for num in found.split():
            _, data = client.fetch(num, "(BODY.PEEK[])")
            item = data[0]
            assert isinstance(item, tuple)
            out.append(item[1])
        return out


def pop3_subjects(server: ServerProcess) -> list[str]:
    """Subject lines of every message POP3 offers (it sees INBOX only)."""
    host, port = server.addr("pop3")
    client = poplib.POP3(host, port, timeout=30)
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        return [line.decode() for i in range(1, count + 1)
                for line in client.top(i, 0)[1] if line.startswith(b"Subject:")]
    finally:
        client.quit()


def message(from_addr: str, subject: str, sign_domain: str = "", selector: str = "sel") -> bytes:
    data = (f"From: <{from_addr}>\r\nTo: <{USER}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@x>\r\n\r\nHello.\r\n").encode()
    if sign_domain:
        data = dkim.sign(data, selector.encode(), sign_domain.encode(), KEY,
                         include_headers=[b"from", b"to", b"subject"]) + data
    return data


def send(server: ServerProcess, mail_from: str, data: bytes, *,
         login: bool = False) -> tuple[int, bytes]:
    host, port = server.addr("smtp")
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.test")
        if login:
            client.login(USER, PASSWORD)
        code, _ = client.mail(mail_from)
        assert code == 250
        assert client.rcpt(USER)[0] == 250
        return client.data(data)


def delivered(server: ServerProcess, subject: str) -> bytes:
    found = [m for m in server.inbox(USER) if f"Subject: {subject}\r\n".encode() in m]
    assert len(found) == 1
    return found[0]


def auth_results(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = [f for f in head.replace("\r\n\t", " ").split("\r\n")
              if f.lower().startswith("authentication-results:")]
    assert len(fields) == 1, fields
    return fields[0]


class TestSpoofing:
    def test_stranger_sending_as_a_local_domain_is_refused(self, server: ServerProcess) -> None:
        code, text = send(server, f"ceo@{DOMAIN}", message(f"ceo@{DOMAIN}", "spoof1"))
        assert (code, text[:5]) == (550, b"5.7.1")
        server.wait_for_log("auth verdict", "rule=spoofing_protection")

    def test_local_domain_only_in_from_header_is_refused(self, server: ServerProcess) -> None:
        code, _ = send(server, "x@pass.test", message(f"ceo@{DOMAIN}", "spoof2"))
        assert code == 550

    def test_the_same_from_an_authenticated_user_is_accepted(self, server: ServerProcess) -> None:
        code, _ = send(server, USER, message(USER, "spoof3"), login=True)
        assert code == 250
        assert b"Authentication-Results:" not in delivered(server, "spoof3")

    def test_a_valid_dkim_signature_for_the_local_domain_vouches(
            self, server: ServerProcess) -> None:
        code, _ = send(server, f"ceo@{DOMAIN}", message(f"ceo@{DOMAIN}", "spoof4", DOMAIN))
        assert code == 250
        assert "dkim=pass header.d=example.test" in auth_results(delivered(server, "spoof4"))


class TestDMARC:
    def test_pass_by_aligned_spf(self, server: ServerProcess) -> None:
        assert send(server, "a@pass.test", message("a@pass.test", "d-pass"))[0] == 250
        ar = auth_results(delivered(server, "d-pass"))
        assert ar.startswith(f"Authentication-Results: {HOSTNAME};")
        assert "spf=pass smtp.mailfrom=a@pass.test" in ar
        assert "dmarc=pass policy.dmarc=reject header.from=pass.test" in ar

    def test_fail_with_p_none_is_delivered_and_marked(self, server: ServerProcess) -> None:
        assert send(server, "a@none.test", message("a@none.test", "d-none"))[0] == 250
        ar = auth_results(delivered(server, "d-none"))
        assert "spf=fail" in ar and "dmarc=fail policy.dmarc=none" in ar

    def test_fail_with_p_quarantine_is_delivered_to_junk(self, server: ServerProcess) -> None:
        """dmarc_quarantine = "junk" (the default): IMAP finds it in Junk; INBOX and POP3 do not."""
        assert send(server, "a@quar.test", message("a@quar.test", "d-quar"))[0] == 250
        server.wait_for_log("auth verdict", "action=quarantine")
        [junk] = imap_mailbox(server, "Junk", "d-quar")
        assert "dmarc=fail policy.dmarc=quarantine" in auth_results(junk)
        assert imap_mailbox(server, "INBOX", "d-quar") == []
        assert send(server, "a@pass.test", message("a@pass.test", "q-control"))[0] == 250
        subjects = pop3_subjects(server)
        assert "Subject: q-control" in subjects and "Subject: d-quar" not in subjects

    def test_fail_with_p_reject_is_refused_after_data(self, server: ServerProcess) -> None:
        code, text = send(server, "a@rej.test", message("a@rej.test", "d-rej"))
        assert (code, text[:5]) == (550, b"5.7.1")
        server.wait_for_log("auth verdict", "rule=dmarc_reject")

    def test_subdomain_policy_applies_to_subdomains_only(self, server: ServerProcess) -> None:
        code, _ = send(server, "a@sub.rej2.test", message("a@sub.rej2.test", "d-sub"))
        assert code == 550  # sp=reject
        assert send(server, "a@rej2.test", message("a@rej2.test", "d-org"))[0] == 250  # p=none

    def test_relaxed_spf_alignment_accepts_a_subdomain(self, server: ServerProcess) -> None:
        assert send(server, "b@mail.rel.test", message("a@rel.test", "d-rel"))[0] == 250
        assert "dmarc=pass" in auth_results(delivered(server, "d-rel"))

    def test_strict_spf_alignment_refuses_a_subdomain(self, server: ServerProcess) -> None:
        assert send(server, "b@mail.strict.test", message("a@strict.test", "d-strict"))[0] == 550

    def test_aligned_dkim_passes_where_spf_fails(self, server: ServerProcess) -> None:
        data = message("a@signed.test", "d-dkim", "signed.test")
        assert send(server, "a@signed.test", data)[0] == 250
        ar = auth_results(delivered(server, "d-dkim"))
        assert "spf=fail" in ar and "dkim=pass header.d=signed.test" in ar and "dmarc=pass" in ar

    def test_a_broken_signature_fails_dmarc(self, server: ServerProcess) -> None:
        data = message("a@signed.test", "d-broken", "signed.test").replace(b"Hello.", b"Bye.")
        assert send(server, "a@signed.test", data)[0] == 550

    def test_forged_results_claiming_our_name_are_removed(self, server: ServerProcess) -> None:
        forged = (f"Authentication-Results: {HOSTNAME}; dmarc=pass header.from=pass.test\r\n"
                  "Authentication-Results: other.example; spf=pass\r\n").encode()
        data = forged + message("a@pass.test", "d-forged")
        assert send(server, "a@pass.test", data)[0] == 250
        got = delivered(server, "d-forged")
        assert got.count(f"Authentication-Results: {HOSTNAME};".encode()) == 1
        assert b"Authentication-Results: other.example; spf=pass" in got


class TestDKIMResults:
    """RFC 8601 §2.7.1: fail for a signature checked and found wrong, permerror for one that
    cannot be checked, temperror for a key lookup that got no answer."""

    def test_a_body_edited_after_signing_is_fail_and_dmarc_fails(
            self, server: ServerProcess) -> None:
        data = message("a@dfail.test", "k-body", "dfail.test").replace(b"Hello.", b"Hullo.")
        assert send(server, "a@dfail.test", data)[0] == 250  # p=none
        ar = auth_results(delivered(server, "k-body"))
        assert "dkim=fail header.d=dfail.test header.s=sel" in ar
        assert "dmarc=fail policy.dmarc=none" in ar

    def test_a_body_edited_after_signing_with_aligned_spf_passes_dmarc(
            self, server: ServerProcess) -> None:
        data = message("a@pass.test", "k-body-spf", "pass.test").replace(b"Hello.", b"Hullo.")
        assert send(server, "a@pass.test", data)[0] == 250
        ar = auth_results(delivered(server, "k-body-spf"))
        assert "dkim=fail header.d=pass.test header.s=sel" in ar and "dmarc=pass" in ar

    def test_a_malformed_tag_list_is_permerror(self, server: ServerProcess) -> None:
        broken = (b"DKIM-Signature: v=1; a=rsa-sha256; d=dfail.test; s=sel; h=from;"
                  b" bh=AA==; b=AA==; =orphan\r\n")
        assert send(server, "a@dfail.test", broken + message("a@dfail.test", "k-tags"))[0] == 250
        ar = auth_results(delivered(server, "k-tags"))
        assert "dkim=permerror header.d=dfail.test header.s=sel" in ar and "dmarc=fail" in ar

    def test_a_missing_key_record_is_permerror(self, server: ServerProcess) -> None:
        data = message("a@dfail.test", "k-nokey", "dfail.test", "missing")
        assert send(server, "a@dfail.test", data)[0] == 250
        ar = auth_results(delivered(server, "k-nokey"))
        assert "dkim=permerror header.d=dfail.test header.s=missing" in ar

    def test_a_header_line_without_a_colon_is_permerror_not_a_retry(
            self, server: ServerProcess) -> None:
        """RFC 5322 has no such line in a header section, so no signature can be checked
        (dkimpy's parser refuses it): permerror, which a retry cannot change; SPF
        aligns, so it is delivered. It was a 451 4.7.0 on every retry."""
        data = message("a@pass.test", "k-nocolon", "pass.test").replace(
            b"\r\n\r\n", b"\r\nNot a header field\r\n\r\n", 1)
        assert send(server, "a@pass.test", data)[0] == 250
        ar = auth_results(delivered(server, "k-nocolon"))
        assert "dkim=permerror header.d=pass.test header.s=sel" in ar and "dmarc=pass" in ar

    def test_a_key_lookup_timeout_is_temperror(self, server: ServerProcess) -> None:
        """The key's name is never answered (dns_timeout_seconds = 3); SPF aligns, so the
        message is accepted, and the header says what happened to the signature."""
        data = message("a@pass.test", "k-slow", "pass.test", "slow")
        assert send(server, "a@pass.test", data)[0] == 250
        ar = auth_results(delivered(server, "k-slow"))
        assert "dkim=temperror header.d=pass.test header.s=slow" in ar and "dmarc=pass" in ar


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, dns: ThreadedDNS) -> Iterator[ServerProcess]:
    """dmarc_reject = "quarantine", dmarc_quarantine = "inbox", and no Junk mailbox yet."""
    srv = checking_server(tmp_path_factory.mktemp("lenient"), dns,
                          dmarc_reject="quarantine", dmarc_quarantine="inbox")
    srv.store.mailboxes.delete_mailbox(USER, "Junk")  # made again when first needed
    srv.start()
    yield srv
    srv.stop()


class TestTiming:
    def test_spf_starts_at_the_first_accepted_recipient_before_data(
            self, server: ServerProcess, dns: ThreadedDNS) -> None:
        """MAIL FROM's SPF record is asked for while the client still has to send DATA; a
        transaction then abandoned (RSET) leaves the server answering as before."""
        host, port = server.addr("smtp")
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.mail("a@early.test")[0] == 250
            assert ("early.test", "TXT") not in dns.server.queries
            assert client.rcpt(USER)[0] == 250
            deadline = time.monotonic() + 10
            while ("early.test", "TXT") not in dns.server.queries:
                assert time.monotonic() < deadline, "no SPF lookup before DATA"
                time.sleep(0.01)
            assert client.rset()[0] == 250
        assert send(server, "a@pass.test", message("a@pass.test", "after-rset"))[0] == 250


class TestQuarantineSettings:
    """dmarc_reject = "quarantine" and dmarc_quarantine = "inbox", on a second server."""

    def test_p_reject_failing_goes_to_a_junk_mailbox_made_for_it(
            self, lenient: ServerProcess) -> None:
        """Accepted, not refused; Junk is created with its \\Junk special use; INBOX stays empty."""
        assert send(lenient, "a@rej.test", message("a@rej.test", "l-rej"))[0] == 250
        lenient.wait_for_log("auth verdict", "rule=dmarc_quarantine")
        [junk] = imap_mailbox(lenient, "Junk", "l-rej")
        assert "dmarc=fail policy.dmarc=reject" in auth_results(junk)
        host, port = lenient.addr("imap")
        with imaplib.IMAP4(host, port, timeout=30) as client:
            client.login(USER, PASSWORD)
            _, listed = client.list('""', "Junk")
        assert listed == [b'(\\HasNoChildren \\Junk) "/" Junk']
        assert imap_mailbox(lenient, "INBOX", "l-rej") == []

    def test_p_quarantine_failing_goes_to_inbox_when_so_configured(
            self, lenient: ServerProcess) -> None:
        """dmarc_quarantine = "inbox": delivered to INBOX, marked by the header only."""
        assert send(lenient, "a@quar.test", message("a@quar.test", "l-quar"))[0] == 250
        assert "dmarc=fail policy.dmarc=quarantine" in auth_results(delivered(lenient, "l-quar"))
        assert imap_mailbox(lenient, "Junk", "l-quar") == []


class TestBadInput:
    def test_five_thousand_headers_and_malformed_signatures(self, server: ServerProcess) -> None:
        junk = b"".join(b"X-Filler-%d: v\r\n" % i for i in range(5000))
        bad = (b"DKIM-Signature: v=1; a=rsa-sha256; d=signed.test; s=sel; b=!!!; bh=;\r\n"
               b"DKIM-Signature: garbage without tags\r\n"
               b"DKIM-Signature: v=1; d=; s=\r\n")
        data = bad + junk + message("a@pass.test", "bad-1")
        assert send(server, "a@pass.test", data)[0] == 250  # SPF still aligns: DMARC pass
        ar = auth_results(delivered(server, "bad-1"))
        assert "dkim=permerror header.d=signed.test" in ar
        assert "dmarc=pass" in ar

    @pytest.mark.parametrize("selector", ["bad", "odd", "missing"])
    def test_malformed_or_missing_key_records_fail_dmarc_cleanly(
            self, server: ServerProcess, selector: str) -> None:
        data = message("a@signed.test", f"key-{selector}", "signed.test", selector)
        code, text = send(server, "a@signed.test", data)
        assert (code, text[:5]) == (550, b"5.7.1")  # no DKIM pass, SPF fails: p=reject
        server.wait_for_log("auth verdict", "rule=dmarc_reject")


def test_dns_timeout_is_a_temporary_refusal(make_server: object, tmp_path: Path) -> None:
    """A nameserver that never answers: 451 4.7.x, not a pass."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        srv = make_server(dns={"nameservers": [f"127.0.0.1:{silent.getsockname()[1]}"]},  # type: ignore[operator]
                          auth_checks={"enabled": True, "dns_timeout_seconds": 1,
                                       "check_timeout_seconds": 2})
        srv.add_user(USER)
        srv.start()
        code, text = send(srv, "a@pass.test", message("a@pass.test", "t-out"))
        assert code == 451 and text.startswith(b"4.7.")
    finally:
        silent.close()


class TestCLI:
    """``postwarden auth check`` reaches the same verdicts through the same code."""

    def test_explains_a_dmarc_reject(self, server: ServerProcess) -> None:
        out = server.cli("auth", "check", "--client", "127.0.0.1", "--helo", "client.test",
                         "--from", "a@rej.test")
        assert out.returncode == 1
        assert out.stdout.startswith("REJECT  550 5.7.1")
        assert "rule: dmarc_reject" in out.stdout
        assert "dmarc=fail policy.dmarc=reject header.from=rej.test" in out.stdout

    def test_explains_spoofing_and_a_pass(self, server: ServerProcess, tmp_path: Path) -> None:
        out = server.cli("auth", "check", "--client", "127.0.0.1", "--helo", "client.test",
                         "--from", f"ceo@{DOMAIN}")
        assert (out.returncode, "rule: spoofing_protection" in out.stdout) == (1, True)
        path = tmp_path / "m.eml"
        path.write_bytes(message("a@signed.test", "cli", "signed.test"))
        out = server.cli("auth", "check", "--client", "127.0.0.1", "--helo", "client.test",
                         "--from", "a@signed.test", "--message", str(path))
        assert out.returncode == 0 and out.stdout.startswith("ACCEPT")
        assert "dkim=pass header.d=signed.test" in out.stdout

    def test_a_message_file_starting_with_a_folded_line_is_permerror(
            self, server: ServerProcess, tmp_path: Path) -> None:
        """A file can start where SMTP mail cannot (our Received field comes first):
        a continuation line with no field to continue. dkimpy's parser fails on it
        (IndexError): permerror, not a traceback and a "try again later"."""
        path = tmp_path / "m.eml"
        path.write_bytes(b" folded\r\n" + message("a@pass.test", "cli-fold", "pass.test"))
        out = server.cli("auth", "check", "--client", "127.0.0.1", "--helo", "client.test",
                         "--from", "a@pass.test", "--message", str(path))
        assert out.returncode == 0 and out.stdout.startswith("ACCEPT"), out.stdout
        assert "dkim=permerror header.d=pass.test" in out.stdout
        assert "Traceback" not in out.stderr

    def test_bad_client_address_is_a_one_line_error(self, server: ServerProcess) -> None:
        out = server.cli("auth", "check", "--client", "nope", "--helo", "h", "--from", "a@b.test")
        assert out.returncode == 2
        assert out.stderr.strip() == "postwarden: error: bad client address 'nope'"


def opendkim_sign(tmp_path: Path, data: bytes, domain: str, selector: str,
                  algorithm: str = "rsa-sha256") -> bytes:
    """``data`` with a DKIM-Signature made by the OpenDKIM filter itself.

    The signer is Debian's ``opendkim`` (libopendkim, C) in its test mode
    (``-t FILE``: one message through the filter's own code, no MTA), not
    dkimpy: so this checks our verifier against an independent signer.
    ``RequireSafeKeys no``: the key sits in a pytest folder under /tmp.
    For ed25519-sha256 (``SignatureAlgorithm``, which Debian's 2.11 build
    lists in ``opendkim -V``) it reads a PKCS#8 PEM Ed25519 key.
    """
    (tmp_path / "key.pem").write_bytes(ED_KEY if algorithm == "ed25519-sha256" else KEY)
    (tmp_path / "opendkim.conf").write_text("Syslog no\nRequireSafeKeys no\n"
                                            f"SignatureAlgorithm {algorithm}\n")
    (tmp_path / "msg.eml").write_bytes(data)
    out = subprocess.run(
        ["opendkim", "-x", str(tmp_path / "opendkim.conf"), "-b", "s", "-d", domain,
         "-s", selector, "-k", str(tmp_path / "key.pem"), "-c", "relaxed/relaxed",
         "-t", str(tmp_path / "msg.eml")],
        capture_output=True, timeout=30, check=True)
    # Prints "opendkim: FILE:", LF, then the field (folded with CRLF) and LF.
    field = out.stdout.decode().split(":\n", 1)[1].rstrip("\n").replace("\r\n", "\n")
    assert field.startswith(f"DKIM-Signature: v=1; a={algorithm}; c=relaxed/relaxed;"), field
    return field.replace("\n", "\r\n").encode() + b"\r\n" + data


@pytest.mark.skipif(shutil.which("opendkim") is None or shutil.which("opendkim-testmsg") is None,
                    reason="Debian opendkim or opendkim-tools missing (.ci/run installs them)")
class TestOpenDKIMSignatures:
    def test_a_signature_made_by_opendkim_verifies(self, server: ServerProcess,
                                                   tmp_path: Path) -> None:
        """OpenDKIM signs for signed.test (key in the loopback DNS); over SMTP: dkim=pass."""
        data = message("a@signed.test", "odk-pass").replace(
            b"\r\n\r\n", b"\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n", 1)
        signed = opendkim_sign(tmp_path, data, "signed.test", "sel")
        assert send(server, "a@signed.test", signed)[0] == 250  # SPF fails: DKIM carries DMARC
        ar = auth_results(delivered(server, "odk-pass"))
        assert "dkim=pass header.d=signed.test header.s=sel" in ar and "dmarc=pass" in ar

    def test_an_ed25519_signature_made_by_opendkim_verifies(self, server: ServerProcess,
                                                           tmp_path: Path) -> None:
        """OpenDKIM signs ed25519-sha256 (RFC 8463) with selector ed; over SMTP: dkim=pass,
        and DMARC passes on it alone (SPF fails for signed.test)."""
        data = message("a@signed.test", "odk-ed").replace(
            b"\r\n\r\n", b"\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n", 1)
        signed = opendkim_sign(tmp_path, data, "signed.test", "ed", "ed25519-sha256")
        assert send(server, "a@signed.test", signed)[0] == 250
        ar = auth_results(delivered(server, "odk-ed"))
        assert "dkim=pass header.d=signed.test header.s=ed" in ar and "dmarc=pass" in ar
        broken = opendkim_sign(tmp_path, data.replace(b"odk-ed", b"odk-ed-broken"),
                               "signed.test", "ed", "ed25519-sha256").replace(b"Hello.", b"Hullo")
        code, text = send(server, "a@signed.test", broken)
        assert (code, text[:5]) == (550, b"5.7.1")  # dkim=fail: p=reject applies

    def test_an_opendkim_signature_broken_in_transit_fails(self, server: ServerProcess,
                                                           tmp_path: Path) -> None:
        """The same signature over an edited body: dkim=fail, so p=reject refuses it."""
        data = message("a@signed.test", "odk-fail").replace(
            b"\r\n\r\n", b"\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n", 1)
        signed = opendkim_sign(tmp_path, data, "signed.test", "sel").replace(b"Hello.", b"Hullo")
        code, text = send(server, "a@signed.test", signed)
        assert (code, text[:5]) == (550, b"5.7.1")

    def test_an_rsa_sha1_signature_is_not_a_pass(self, server: ServerProcess,
                                                 tmp_path: Path) -> None:
        """opendkim-testmsg signs rsa-sha1 only; RFC 8301 forbids counting it: dkim=policy."""
        data = message("a@none.test", "odk-sha1").replace(
            b"\r\n\r\n", b"\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n", 1)
        (tmp_path / "key.pem").write_bytes(KEY)
        out = subprocess.run(["opendkim-testmsg", "-C", "-d", "signed.test", "-s", "sel", "-k",
                              str(tmp_path / "key.pem")],
                             input=data, capture_output=True, timeout=30, check=True)
        assert b"a=rsa-sha1;" in out.stdout  # a valid signature, by dkimpy's lights
        assert send(server, "a@none.test", out.stdout)[0] == 250  # p=none
        ar = auth_results(delivered(server, "odk-sha1"))
        assert "dkim=policy header.d=signed.test header.s=sel" in ar
