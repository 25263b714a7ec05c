"""Connection limits and timeouts, enforced on real sockets."""

from __future__ import annotations

import socket
from collections.abc import Callable

from postwarden.mail import reply as R
from serverproc import ServerProcess


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
