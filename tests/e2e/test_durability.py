"""Acknowledged means stored: SIGKILL right after 250, and graceful SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

from postwarden.mail import reply as R
from serverproc import DOMAIN, ServerProcess

USER = f"dora@{DOMAIN}"
REMOTE_USER = "far@remote.example"


class Session:
    """Minimal raw SMTP client: every step asserts its reply."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(server.addr("smtp"), timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return b"".join(lines)
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def begin(self, *rcpts: str) -> None:
        assert self.cmd(b"EHLO durable.test").startswith(b"250")
        assert self.cmd(b"MAIL FROM:<s@sender.example>") == R.SENDER_OK.encode()
        for rcpt in rcpts:
            assert self.cmd(f"RCPT TO:<{rcpt}>".encode()) == R.RECIPIENT_OK.encode()
        assert self.cmd(b"DATA") == R.START_DATA.encode()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_for_partial_file(server: ServerProcess) -> bool:
    """Bounded poll of observable state: the message file being written."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in (server.root / "var/messages").glob("*/*")):
            return True
        time.sleep(0.01)
    return False


def bodies(server: ServerProcess) -> list[bytes]:
    return server.inbox(USER)


def test_sigkill_after_each_250_loses_nothing(make_server: Callable[..., ServerProcess]) -> None:
    """Kill -9 right after every 250: after restart, every acknowledged message is there."""
    server = make_server(relay={"trusted_networks": ["127.0.0.1/32"]},
                         delivery={"smarthost": "127.0.0.1:9"})
    server.add_user(USER)
    acknowledged = []
    for i in range(5):
        server.start()
        s = Session(server)
        s.begin(USER, REMOTE_USER)
        s.sock.sendall(f"Subject: durable {i}\r\n\r\nmarker-{i}\r\n.\r\n".encode())
        reply = s.reply()
        server.kill()  # SIGKILL, the instant the 250 is read
        assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
        acknowledged.append((f"marker-{i}".encode(), reply.split()[-1].decode()))
        s.close()
    server.start()
    stored = bodies(server)
    for marker, _ in acknowledged:
        assert sum(marker in body for body in stored) == 1
    queued = server.cli("queue", "list").stdout
    for _, queue_id in acknowledged:  # the remote copy survives too
        assert queue_id in queued
    server.stop()


def test_message_cut_mid_data_is_not_stored(make_server: Callable[..., ServerProcess]) -> None:
    """A kill mid-DATA stores no message; its partial file is reported, removed on request."""
    server = make_server()
    server.add_user(USER)
    server.start()
    s = Session(server)
    s.begin(USER)
    s.sock.sendall(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 1000)
    assert wait_for_partial_file(server)  # the server is mid-message: a file, no commit
    server.kill()
    s.close()
    server.start()
    assert not any(b"partial line" in body for body in bodies(server))
    files = list((server.root / "var/messages").glob("*/*"))
    assert len(files) == 1  # kept: nothing is deleted unasked
    check = server.cli("blobs", "check")
    assert check.returncode == 1 and f"unknown  {files[0].name}" in check.stdout
    assert server.cli("blobs", "remove", "--all").returncode == 0
    assert list((server.root / "var/messages").glob("*/*")) == []
    server.stop()


def test_sigterm_lets_transaction_finish(make_server: Callable[..., ServerProcess]) -> None:
    """SIGTERM mid-DATA: the transaction completes with 250, idle clients get 421."""
    server = make_server()
    server.add_user(USER)
    server.start()
    idle = Session(server)
    busy = Session(server)
    busy.begin(USER)
    busy.sock.sendall(b"Subject: graceful\r\n\r\nfirst half\r\n")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert idle.reply() == R.SERVICE_UNAVAILABLE.encode()
    busy.sock.sendall(b"second half\r\n.\r\n")
    assert busy.reply().startswith(b"250 2.0.0 Ok: queued as ")
    assert busy.cmd(b"NOOP") == R.SERVICE_UNAVAILABLE.encode()
    assert server.proc.wait(timeout=60) == 0
    server.proc = None
    idle.close()
    busy.close()
    assert any(b"second half" in body for body in bodies(server))
