"""Connection limits and timeouts, enforced on real sockets."""

from __future__ import annotations

import contextlib
import smtplib
import socket
from collections.abc import Callable

import pytest

from postwarden.mail import reply as R
from serverproc import DOMAIN, ServerProcess


def banner(server: ServerProcess, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(server.addr("smtp"), timeout=30,
                                    source_address=(source, 0))
    return sock, sock.makefile("rb").readline()


def test_per_ip_connection_limit(make_server: Callable[..., ServerProcess]) -> None:
    """Past max_connections_per_ip a client gets 421; another IP still gets in."""
    server = make_server(limits={"max_connections_per_ip": 2}).start()
    held = [banner(server, "127.0.0.3") for _ in range(2)]
    assert all(line.startswith(b"220 ") for _, line in held)
    extra, line = banner(server, "127.0.0.3")
    assert line == R.TOO_MANY_CONNECTIONS.encode()
    other, line = banner(server, "127.0.0.4")
    assert line.startswith(b"220 ")
    for sock, _ in [*held, (extra, b""), (other, b"")]:
        sock.close()
    server.stop()


def test_total_connection_limit(make_server: Callable[..., ServerProcess]) -> None:
    """Past max_connections every new client gets 421."""
    server = make_server(limits={"max_connections": 3}).start()
    held = [banner(server, f"127.0.0.{10 + i}") for i in range(3)]
    extra, line = banner(server, "127.0.0.20")
    assert line == R.TOO_MANY_CONNECTIONS.encode()
    for sock, _ in [*held, (extra, b"")]:
        sock.close()
    server.stop()


def test_idle_client_is_timed_out_with_421(make_server: Callable[..., ServerProcess]) -> None:
    """A client that says nothing is told 421 4.4.2 and disconnected."""
    server = make_server(limits={"command_timeout_seconds": 1}).start()
    sock, line = banner(server, "127.0.0.3")
    assert line.startswith(b"220 ")
    rest = sock.makefile("rb").read()  # blocks until the server closes (bounded by 30 s)
    assert rest == R.TIMEOUT.encode()
    sock.close()
    server.stop()


def test_idle_pop3_client_is_logged_out(make_server: Callable[..., ServerProcess]) -> None:
    """A POP3 client that says nothing gets -ERR and is disconnected, its slot freed."""
    server = make_server(limits={"command_timeout_seconds": 1}).start()
    sock = socket.create_connection(server.addr("pop3"), timeout=30,
                                    source_address=("127.0.0.3", 0))
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"+OK")
    rest = reader.read()  # blocks until the server closes (bounded by 30 s)
    assert rest.startswith(b"-ERR") and b"idle" in rest
    sock.close()
    server.stop()


def test_storage_failure_mid_data_is_452_and_service_goes_on(
    make_server: Callable[..., ServerProcess],
) -> None:
    """A message file that cannot grow (disk full) gets 452 4.3.1, leaves no file, and the
    next message is stored as usual."""
    server = make_server()
    user = server.add_user(f"big@{DOMAIN}")
    server.start(file_size_limit=4 * 1024 * 1024)
    with smtplib.SMTP(*server.addr("smtp"), timeout=30) as client:
        huge = b"Subject: huge\r\n\r\n" + (b"x" * 998 + b"\r\n") * 5000  # 5 MB
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@remote.test", [user], huge)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (452, b"4.3.1")
        client.sendmail("a@remote.test", [user], b"Subject: small\r\n\r\nok\r\n")
    assert [b"Subject: small" in m for m in server.inbox(user)] == [True]
    files = list((server.root / "var" / "messages").glob("*/*"))
    assert len(files) == 1
    server.stop()


def test_client_that_never_reads_its_replies_is_let_go(
    make_server: Callable[..., ServerProcess],
) -> None:
    """Pipelining without reading fills the server's buffers; the write waits only as long as
    a command may, then the session ends instead of holding its slot for ever."""
    server = make_server(limits={"command_timeout_seconds": 1}).start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.bind(("127.0.0.8", 0))
    sock.connect(server.addr("smtp"))
    sock.settimeout(2)
    sent = 0
    with contextlib.suppress(TimeoutError):
        for _ in range(400):  # bounded: 400 x 10,000 NOOPs, far past any buffer
            sock.sendall(b"NOOP\r\n" * 10_000)
            sent += 10_000
    assert sent < 4_000_000, "the server kept reading: its replies never backed up"
    server.wait_for_log("smtp timeout", "ip=127.0.0.8")
    sock.settimeout(30)
    received = b""
    with contextlib.suppress(ConnectionResetError):  # unread commands left: the close is a RST
        while chunk := sock.recv(65536):  # what the server wrote before it gave up, then EOF
            received += chunk
    sock.close()
    assert received.count(b"250 ") < sent
    server.stop()
