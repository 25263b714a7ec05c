"""Connection limits at the door of every listener: before any TLS handshake, per service.

The adversarial review held 6,000 silent connections open on pop3s (issue 8,
defect 3); here a scaled-down flood of 200 from one address shows the same
mechanism: a quick test, the memory figures are in ``bench/tls_flood.py``.
"""

from __future__ import annotations

import poplib
import select
import smtplib
import socket
import ssl
from collections.abc import Callable

import pytest

from postwarden.mail import reply as R
from serverproc import PASSWORD, ServerProcess

FLOOD = 200
PER_IP = 5


def client_tls(server: ServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cert))


def silent(server: ServerProcess, kind: str, source: str, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never send a byte (no ClientHello)."""
    return [socket.create_connection(server.addr(kind), timeout=30, source_address=(source, 0))
            for _ in range(count)]


def closed_by_server(sock: socket.socket) -> bool:
    """For a readable socket: True if the server closed it (EOF or reset), not sent data."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def wait_closed(socks: list[socket.socket], count: int) -> list[socket.socket]:
    """Wait (bounded: 30 s per step) until the server has closed ``count`` of ``socks``;
    returns the others."""
    pending = list(socks)
    for _ in range(count):  # each round sees at least one more socket closed
        if len(socks) - len(pending) >= count:
            break
        ready, _, _ = select.select(pending, [], [], 30)
        assert ready, f"only {len(socks) - len(pending)} of {len(socks)} closed, not {count}"
        for sock in ready:
            assert closed_by_server(sock)
            pending.remove(sock)
    assert len(socks) - len(pending) == count
    return pending


@pytest.mark.parametrize("kind", ["pop3s", "submissions"])
def test_silent_flood_on_a_tls_port_is_refused_before_any_handshake(
    make_server: Callable[..., ServerProcess], kind: str,
) -> None:
    """200 silent connections from one IP: all but max_connections_per_ip are closed at once,
    without a handshake; the admitted ones still get TLS and a greeting."""
    server = make_server(limits={"max_connections_per_ip": PER_IP,
                                 "handshake_timeout_seconds": 120}).start()
    flood = silent(server, kind, "127.0.3.1", FLOOD)
    held = wait_closed(flood, FLOOD - PER_IP)
    assert select.select(held, [], [], 0)[0] == []  # still open, nothing sent: no handshake yet
    tls = client_tls(server)
    for sock in held:
        with tls.wrap_socket(sock, server_hostname="localhost") as conn:
            greeting = conn.makefile("rb").readline()
            assert greeting.startswith(b"+OK" if kind == "pop3s" else b"220 ")
    server.stop()


def test_handshake_deadline_frees_the_slots(make_server: Callable[..., ServerProcess]) -> None:
    """Silent TLS clients are dropped after handshake_timeout_seconds, and the same address
    can log in over pop3s afterwards."""
    server = make_server(limits={"max_connections_per_ip": 3, "handshake_timeout_seconds": 1})
    user = server.add_user("alice@example.test")
    server.start()
    flood = silent(server, "pop3s", "127.0.3.2", 3)
    assert wait_closed(flood, 3) == []
    server.wait_for_log_count(3, "tls handshake-failed", "listener=pop3s", "ip=127.0.3.2")
    (again,) = silent(server, "pop3s", "127.0.3.2", 1)
    with client_tls(server).wrap_socket(again, server_hostname="localhost") as conn:
        reader = conn.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        conn.sendall(f"USER {user}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n".encode())
        replies = [reader.readline() for _ in range(4)]  # USER, PASS, STAT, QUIT
        assert all(r.startswith(b"+OK") for r in replies), replies
        assert replies[2] == b"+OK 0 0\r\n"
    for sock in flood:
        sock.close()
    server.stop()


def test_a_full_mx_budget_leaves_room_for_submission_and_pop3(
    make_server: Callable[..., ServerProcess],
) -> None:
    """max_connections_smtp reached: the next MX client gets 421, while submission and POP3
    clients still get their greeting (issue 8, defect 7: one budget per service)."""
    server = make_server(limits={"max_connections": 10, "max_connections_smtp": 3}).start()
    held = [smtplib.SMTP(*server.addr("smtp"), timeout=30, source_address=(f"127.0.4.{n}", 0))
            for n in range(1, 4)]
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(*server.addr("smtp"), timeout=30, source_address=("127.0.4.9", 0))
    assert refused.value.smtp_code == R.TOO_MANY_CONNECTIONS.code
    with smtplib.SMTP(*server.addr("submission"), timeout=30,
                      source_address=("127.0.4.10", 0)) as submission:
        assert submission.noop()[0] == 250
    pop3 = poplib.POP3(*server.addr("pop3"), timeout=30)
    assert pop3.getwelcome().startswith(b"+OK")
    pop3.quit()
    for client in held:
        client.quit()
    server.stop()
