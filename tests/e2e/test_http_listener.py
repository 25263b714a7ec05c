"""The [listen] http listener over real sockets: metrics after SMTP traffic, health, autoconfig."""

from __future__ import annotations

import asyncio
import base64
import http.client
import plistlib
import signal
import smtplib
import socket
import sqlite3
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_outbound import submit

from delivery.smtppeers import Peer
from postwarden.mail import reply as R
from serverproc import DOMAIN, HOSTNAME, PASSWORD, ServerProcess

USER = f"bob@{DOMAIN}"
HOSTILE = f'"a<b>&\'c"@{DOMAIN}'  # a valid quoted local part, full of XML metacharacters
MAX_HEADER = 2048
MAX_BODY = 1024
MAX_MESSAGE = 4096
AUTODISCOVER_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("http")
    srv = ServerProcess(root, listen={"http": ["127.0.0.1:0"]},
                        limits={"http_max_header_size": MAX_HEADER, "http_max_body_size": MAX_BODY,
                                "http_timeout_seconds": 1, "auth_failure_delay_seconds": 1,
                                "max_message_size": MAX_MESSAGE})
    srv.add_user(USER)
    srv.start()
    yield srv
    srv.stop()


def get(server: ServerProcess, path: str, method: str = "GET", body: bytes | None = None,
        ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*server.addr("http"), timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw(server: ServerProcess, data: bytes) -> bytes:
    """Send bytes no library would, read the whole answer (the server closes)."""
    with socket.create_connection(server.addr("http"), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def samples(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, headers, body = get(server, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class TestMetrics:
    def test_counters_match_the_smtp_traffic(self, server: ServerProcess) -> None:
        """One accepted message, one refused relay attempt, one failed login: each counted."""
        before = samples(server)
        with smtplib.SMTP(*server.addr("smtp"), timeout=30) as c:
            c.ehlo("client.test")
            plain = base64.b64encode(f"\0{USER}\0wrong password".encode()).decode()
            assert c.docmd("AUTH", f"PLAIN {plain}")[0] == R.AUTH_FAILED.code
            c.sendmail("alice@remote.test", [USER], b"Subject: hi\r\n\r\nhello\r\n")
            assert c.mail("alice@remote.test")[0] == 250
            assert c.rcpt("stranger@elsewhere.test")[0] == R.RELAY_DENIED.code
            c.rset()
        server.wait_for_log("smtp transaction", "result=queued")
        after = samples(server)

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert grew("postwarden_messages_accepted_total", listener="smtp") == 1
        assert grew("postwarden_relay_decisions_total", verdict="accept",
                    rule="local_recipient") == 1
        assert grew("postwarden_relay_decisions_total", verdict="reject",
                    rule="no_relay_rule") == 1
        assert grew("postwarden_auth_total", service="smtp", result="failed") == 1
        assert grew("postwarden_connections_total", listener="smtp", service="smtp") == 1
        assert grew("postwarden_store_latency_seconds_count", operation="commit") == 1

    def test_refused_messages_are_counted_per_rule(self, server: ServerProcess) -> None:
        """Each refused message counts once under the rule that refused it, none as accepted."""
        before = samples(server)
        big = b"Subject: big\r\n\r\n" + b"x" * MAX_MESSAGE + b"\r\n"
        with smtplib.SMTP(*server.addr("smtp"), timeout=30) as c:
            with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # MAIL ... SIZE= too big
                c.sendmail("alice@remote.test", [USER], big)
            assert declared.value.smtp_code == R.MESSAGE_TOO_BIG.code
            c.rset()
            assert c.docmd("MAIL", "FROM:<alice@remote.test>")[0] == 250  # no SIZE declared
            assert c.rcpt(USER)[0] == 250
            assert c.data(big)[0] == R.MESSAGE_TOO_BIG.code
        with smtplib.SMTP(*server.addr("submission"), timeout=30) as c:
            c.starttls(context=ssl._create_unverified_context())  # our self-signed certificate
            c.login(USER, PASSWORD)
            assert c.mail(f"someone-else@{DOMAIN}")[0] == R.SENDER_NOT_OWNED.code
            c.rset()
            assert c.mail(USER)[0] == 250 and c.rcpt(USER)[0] == 250
            code, _ = c.data(f"From: ceo@{DOMAIN}\r\nSubject: x\r\n\r\nhi\r\n".encode())
            assert code == R.FROM_NOT_OWNED.code
        after = samples(server)

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert grew("postwarden_messages_refused_total", listener="smtp",
                    rule=f"status-{R.MESSAGE_TOO_BIG.status}") == 2
        assert grew("postwarden_messages_refused_total", listener="submission",
                    rule="sender_must_match_login") == 2
        assert grew("postwarden_messages_accepted_total", listener="smtp") == 0
        assert grew("postwarden_messages_accepted_total", listener="submission") == 0

    def test_queue_gauges_and_latency_histogram_are_exported(self, server: ServerProcess) -> None:
        """Queue size and age are read at scrape time; histograms carry their buckets."""
        found = samples(server)
        assert ("postwarden_queue_messages", frozenset()) in found
        assert found[("postwarden_queue_oldest_age_seconds", frozenset())] >= 0
        assert value(found, "postwarden_store_latency_seconds_count", operation="queue_count") >= 1
        names = {name for name, _ in found}
        assert "postwarden_sessions" in names  # the scrape's own connection is a session
        assert all(n.startswith("postwarden_") for n in names)  # our registry, not the global


class TestHealth:
    def test_healthz_answers_while_alive(self, server: ServerProcess) -> None:
        """The process is alive: 200."""
        assert get(server, "/healthz")[::2] == (200, b"ok\n")

    def test_readyz_checks_listeners_and_store(self, server: ServerProcess) -> None:
        """Every listener bound and the store answering: 200 ready."""
        assert get(server, "/readyz")[::2] == (200, b"ready\n")

    def test_readyz_is_503_while_the_store_fails(self, server: ServerProcess) -> None:
        """A store whose queries fail is not ready, with why; once it answers again, ready."""
        db = sqlite3.connect(server.root / "var" / "postwarden.sqlite3", isolation_level=None)
        try:
            db.execute("ALTER TABLE domains RENAME TO domains_away")  # the probe's table
            try:
                status, _, body = get(server, "/readyz")
            finally:
                db.execute("ALTER TABLE domains_away RENAME TO domains")
        finally:
            db.close()
        assert (status, body) == (503, b"not ready: store not answering: OperationalError\n")
        assert get(server, "/readyz")[::2] == (200, b"ready\n")


class TestAutoconfig:
    def test_thunderbird_config_names_our_servers(self, server: ServerProcess) -> None:
        """config-v1.1.xml parses; pop3s and submissions (implicit TLS) come first."""
        for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
            status, headers, body = get(server, f"{path}?emailaddress={quote(USER)}")
            assert status == 200 and headers["Content-Type"].startswith("application/xml")
            provider = ET.fromstring(body).find("emailProvider")
            assert provider is not None and provider.get("id") == DOMAIN
            incoming = provider.findall("incomingServer")
            assert [(s.get("type"), s.findtext("port"), s.findtext("socketType"))
                    for s in incoming] == [("pop3", str(server.port("pop3s")), "SSL"),
                                           ("pop3", str(server.port("pop3")), "STARTTLS")]
            outgoing = provider.findall("outgoingServer")
            assert outgoing[0].findtext("port") == str(server.port("submissions"))
            assert outgoing[0].findtext("hostname") == HOSTNAME
            assert {s.findtext("username") for s in incoming + outgoing} == {USER}

    def test_thunderbird_escapes_a_hostile_address(self, server: ServerProcess) -> None:
        """Markup in the address comes back as text, not as elements."""
        status, _, body = get(server, f"/mail/config-v1.1.xml?emailaddress={quote(HOSTILE)}")
        assert status == 200
        usernames = {e.text for e in ET.fromstring(body).iter("username")}
        assert usernames == {HOSTILE}

    def test_autodiscover_answers_the_posted_address(self, server: ServerProcess) -> None:
        """Outlook's POX request: the response parses and names the hostile address escaped."""
        request = (
            '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
            'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
            f"<EMailAddress>{HOSTILE.replace('&', '&amp;').replace('<', '&lt;')}</EMailAddress>"
            "</Request></Autodiscover>").encode()
        status, _, body = get(server, "/autodiscover/autodiscover.xml", "POST", request)
        assert status == 200
        account = ET.fromstring(body).find(f"{AUTODISCOVER_NS}Response/{AUTODISCOVER_NS}Account")
        assert account is not None
        protocols = [(p.findtext(f"{AUTODISCOVER_NS}Type"), p.findtext(f"{AUTODISCOVER_NS}Port"),
                      p.findtext(f"{AUTODISCOVER_NS}LoginName"))
                     for p in account.findall(f"{AUTODISCOVER_NS}Protocol")]
        assert ("SMTP", str(server.port("submissions")), HOSTILE) in protocols
        assert ("POP3", str(server.port("pop3s")), HOSTILE) in protocols

    def test_autodiscover_refuses_a_doctype_and_junk(self, server: ServerProcess) -> None:
        """No entity is expanded: a DOCTYPE gets 400, as does a body that is not XML."""
        bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
        assert get(server, "/autodiscover/autodiscover.xml", "POST", bomb)[0] == 400
        assert get(server, "/autodiscover/autodiscover.xml", "POST", b"<a")[0] == 400
        assert get(server, "/Autodiscover/Autodiscover.xml", "GET")[0] == 405

    def test_mobileconfig_is_a_profile_for_the_address(self, server: ServerProcess) -> None:
        """The .mobileconfig download is a plist with one mail account for the user."""
        status, headers, body = get(server, f"/apple/{quote(USER)}.mobileconfig")
        assert status == 200 and headers["Content-Type"] == "application/x-apple-aspen-config"
        profile = plistlib.loads(body)
        assert profile["PayloadType"] == "Configuration"
        (account,) = profile["PayloadContent"]
        assert account["EmailAddress"] == USER
        assert account["IncomingMailServerPortNumber"] == server.port("pop3s")
        assert account["OutgoingMailServerPortNumber"] == server.port("submissions")
        assert account["EmailAccountType"] == "EmailTypePOP"
        assert get(server, f"/mobileconfig?email={quote(USER)}")[2] == body

    def test_a_bad_address_gets_400(self, server: ServerProcess) -> None:
        """An address that does not parse is refused, with the reason."""
        status, _, body = get(server, "/mobileconfig?email=no-at-sign")
        assert status == 400 and body.startswith(b"bad email address")
        assert get(server, "/mobileconfig")[0] == 400


class TestBadRequests:
    def test_bad_method_gets_405_with_allow(self, server: ServerProcess) -> None:
        """DELETE is not served; the answer says what is."""
        status, headers, _ = get(server, "/metrics", "DELETE")
        assert status == 405 and headers["Allow"] == "GET"

    def test_oversized_header_gets_431(self, server: ServerProcess) -> None:
        """A header section past http_max_header_size is refused, not buffered."""
        answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"a" * (MAX_HEADER * 2) + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ")

    def test_oversized_body_gets_413(self, server: ServerProcess) -> None:
        """A declared body past http_max_body_size is refused before it is read."""
        status, _, _ = get(server, "/autodiscover/autodiscover.xml", "POST",
                           b"x" * (MAX_BODY + 1))
        assert status == 413

    def test_garbage_gets_400_and_unknown_path_404(self, server: ServerProcess) -> None:
        """Not HTTP: 400; a path we do not serve: 404."""
        assert raw(server, b"HELLO THERE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert get(server, "/etc/passwd")[0] == 404

    def test_a_silent_client_gets_408(self, server: ServerProcess) -> None:
        """A request not finished within http_timeout_seconds is answered 408 and closed."""
        assert raw(server, b"GET /healthz HTTP/1.1\r\n").startswith(b"HTTP/1.1 408 ")

    def test_server_keeps_serving_after_bad_requests(self, server: ServerProcess) -> None:
        """After every refusal above, a good request still gets its answer."""
        raw(server, b"\x00\xff" * 100 + b"\r\n\r\n")
        assert get(server, "/healthz")[0] == 200
        with smtplib.SMTP(*server.addr("smtp"), timeout=30) as c:
            assert c.noop()[0] == 250


def test_readyz_is_503_while_draining(make_server: Callable[..., ServerProcess]) -> None:
    """After SIGTERM the server drains: a probe already connected is told it is not ready."""
    server = make_server(listen={"http": ["127.0.0.1:0"]}, limits={"http_timeout_seconds": 30})
    server.start()
    with socket.create_connection(server.addr("http"), timeout=30) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # admitted, not yet complete
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log("shutdown", "sessions=")
        sock.sendall(b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert answer.endswith(b"\r\n\r\nnot ready: shutting down\n")
    assert server.proc.wait(timeout=60) == 0  # the drain ends by itself: no second signal
    server.stop()


def greeting(server: ServerProcess, kind: str, source: str) -> tuple[socket.socket, bytes]:
    """A connection to ``kind`` from the loopback address ``source``, and its first line."""
    sock = socket.create_connection(server.addr(kind), timeout=30, source_address=(source, 0))
    line = b""
    while not line.endswith(b"\n") and (chunk := sock.recv(1)):  # bounded by the line's end
        line += chunk
    return sock, line


def test_connections_refused_by_limits_are_counted(
        make_server: Callable[..., ServerProcess]) -> None:
    """One refusal by a service budget and one by the per-IP limit, each counted once."""
    server = make_server(listen={"http": ["127.0.0.1:0"]},
                         limits={"max_connections_smtp": 1, "max_connections_per_ip": 3})
    server.start()
    held: list[socket.socket] = []
    try:
        sock, line = greeting(server, "smtp", "127.0.0.2")
        held.append(sock)
        assert line.startswith(b"220 ")
        sock, line = greeting(server, "smtp", "127.0.0.3")  # the smtp budget is spent
        sock.close()
        assert line == R.TOO_MANY_CONNECTIONS.encode()
        for _ in range(3):
            sock, line = greeting(server, "pop3", "127.0.0.4")
            held.append(sock)
            assert line.startswith(b"+OK")
        sock, line = greeting(server, "pop3", "127.0.0.4")  # 127.0.0.4 has its three
        sock.close()
        assert line == b"-ERR [SYS/TEMP] too many connections\r\n"
        found = samples(server)
    finally:
        for sock in held:
            sock.close()
    assert value(found, "postwarden_connections_refused_total",
                 listener="smtp", service="smtp") == 1
    assert value(found, "postwarden_connections_refused_total",
                 listener="pop3", service="pop3") == 1
    assert value(found, "postwarden_connections_total", listener="smtp", service="smtp") == 1
    assert value(found, "postwarden_connections_total", listener="pop3", service="pop3") == 3


def test_http_listener_is_off_by_default(tmp_path: Path) -> None:
    """An empty [listen] http binds nothing."""
    srv = ServerProcess(tmp_path).start()
    try:
        assert "http" not in srv.ports
    finally:
        srv.stop()


async def test_deliveries_are_counted_by_outcome(make_server: Callable[..., ServerProcess]) -> None:
    """A routed delivery shows as one sent delivery, its latency observed, the queue empty."""
    peer = Peer()
    port = await peer.start()
    server = make_server(listen={"http": ["127.0.0.1:0"]},
                         routes=[{"domain": "partner.example", "to": f"127.0.0.1:{port}"}])
    server.add_user(f"olga@{DOMAIN}")
    server.start()
    try:
        queue_id = await submit(server, "ann@partner.example", subject="counted")
        await peer.wait_messages(1, timeout=30)
        await asyncio.to_thread(server.wait_for_log, "delivery", queue_id, "outcome=sent")
        found = await asyncio.to_thread(samples, server)
    finally:
        await asyncio.to_thread(server.stop)  # the peer lives on this loop: keep it running
        await peer.close()
    assert value(found, "postwarden_deliveries_total", outcome="sent") == 1
    assert value(found, "postwarden_delivery_latency_seconds_count", outcome="sent") == 1
    assert value(found, "postwarden_auth_total", service="submission", result="ok") == 1
    assert value(found, "postwarden_messages_accepted_total", listener="submission") == 1
