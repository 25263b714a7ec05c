"""A flood of failing logins cannot queue ahead of a known client (issue 8, defect 6).

Logins from fresh addresses arrive at once at a server with one
password-hash worker; then a client that logged in before tries again. Its
check goes first (it is answered while some of the flood is still
waiting), and with a short queue deadline the flood's logins that cannot
start in time get a temporary failure instead of waiting without bound.
The speed under a sustained flood is measured by ``bench/auth_flood.py``.
"""

from __future__ import annotations

import base64
import io
import select
import socket
from collections.abc import Callable

from postwarden.mail import reply as R
from serverproc import PASSWORD, ServerProcess

USER = "alice@example.test"
KNOWN = "127.0.6.1"


def auth_line(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


def greeted(server: ServerProcess, source: str) -> tuple[socket.socket, io.BufferedReader]:
    """An SMTP connection past EHLO; the socket and its reader."""
    sock = socket.create_connection(server.addr("smtp"), timeout=30, source_address=(source, 0))
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    sock.sendall(b"EHLO client.test\r\n")
    while not reader.readline().startswith(b"250 "):  # bounded by the EHLO reply's lines
        pass
    return sock, reader


def flood_of_strangers(server: ServerProcess,
                       size: int) -> list[tuple[socket.socket, io.BufferedReader]]:
    """``size`` logins from fresh addresses, sent at once; returns once the first is answered."""
    flood = [greeted(server, f"127.0.6.{10 + n}") for n in range(size)]
    for n, (attacker, _) in enumerate(flood):
        attacker.sendall(auth_line(f"nobody{n}@example.test", "guess"))
    assert select.select([a for a, _ in flood], [], [], 30)[0], "no flood login answered"
    return flood


def known_client_login(server: ServerProcess) -> None:
    sock, reader = greeted(server, KNOWN)
    sock.sendall(auth_line(USER, PASSWORD))
    assert reader.readline() == R.AUTH_OK.encode()
    sock.close()


def test_known_client_is_checked_before_a_flood_of_strangers(
    make_server: Callable[..., ServerProcess],
) -> None:
    """A client that logged in before is answered 235 while flood logins still wait."""
    server = make_server(limits={"auth_workers": 1, "auth_queue_timeout_seconds": 60})
    server.add_user(USER)
    server.start()
    known_client_login(server)
    flood = flood_of_strangers(server, 12)  # first in, first served would answer all 12 first
    known_client_login(server)
    answered = select.select([a for a, _ in flood], [], [], 0)[0]
    assert len(answered) < len(flood), "every flood login was answered before the known one"
    assert {r.readline() for _, r in flood} == {R.AUTH_FAILED.encode()}
    server.stop()


def test_logins_that_cannot_start_in_time_get_a_temporary_failure(
    make_server: Callable[..., ServerProcess],
) -> None:
    """With one worker and a one-second queue, most of 40 simultaneous logins cannot start in
    time: they get 454 4.7.0 at the deadline, not an endless wait."""
    server = make_server(limits={"auth_workers": 1, "auth_queue_timeout_seconds": 1}).start()
    flood = flood_of_strangers(server, 40)  # 40 argon2 checks take far more than 1 s
    replies = [r.readline() for _, r in flood]  # every one answered (30 s socket timeout)
    assert R.AUTH_BUSY.encode() in replies
    assert set(replies) <= {R.AUTH_BUSY.encode(), R.AUTH_FAILED.encode()}
    server.stop()
