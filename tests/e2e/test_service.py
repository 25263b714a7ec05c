"""`serve` as a system service: sd_notify to a real socket, and dropping root after binding."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.service import Notifier
from serverproc import DOMAIN, ServerProcess

NOTIFY_TIMEOUT = 30.0  # as conftest.notify_socket waits
FULL_SOCKET_PINGS = 10_000
WATCHDOG_USEC = 400_000  # pings every 0.2 s: the test sees several without waiting long


def receive_until(sock: socket.socket, wanted: str, limit: int = 200) -> list[str]:
    """Datagrams up to and including the first holding the line ``wanted``."""
    seen: list[str] = []
    for _ in range(limit):
        seen.append(sock.recv(4096).decode())
        if wanted in seen[-1].splitlines():
            return seen
    raise AssertionError(f"no {wanted} in {limit} datagrams: {seen[-5:]}")


class TestSdNotify:
    def test_ready_watchdog_reload_and_stopping_reach_systemd(
            self, tmp_path: Path, notify_socket: socket.socket) -> None:
        """A real serve tells a real NOTIFY_SOCKET each state change, and pings the watchdog."""
        server = ServerProcess(tmp_path)
        server.start(env={"NOTIFY_SOCKET": notify_socket.getsockname(),
                          "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            ready = receive_until(notify_socket, "READY=1")
            assert any(line.startswith("STATUS=serving") for line in ready[-1].splitlines())
            pings = receive_until(notify_socket, "WATCHDOG=1")
            pings += receive_until(notify_socket, "WATCHDOG=1")
            assert sum("WATCHDOG=1" in d for d in pings) >= 2
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            reloading = receive_until(notify_socket, "RELOADING=1")
            assert any(line.startswith("MONOTONIC_USEC=") for line in reloading[-1].splitlines())
            receive_until(notify_socket, "READY=1")
            server.proc.send_signal(signal.SIGTERM)
            receive_until(notify_socket, "STOPPING=1")
            assert server.proc.wait(timeout=60) == 0  # stop() below then sends no second TERM
        finally:
            assert server.stop() == 0

    def test_abstract_socket_names_start_with_at(self) -> None:
        """``@name`` is Linux's abstract namespace: the leading @ becomes a NUL byte."""
        name = f"postwarden-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind("\0" + name)
            listener.settimeout(NOTIFY_TIMEOUT)
            notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"})
            notifier.send(READY=1, STATUS="up")
            notifier.close()
            assert listener.recv(4096) == b"READY=1\nSTATUS=up"
        assert notifier.watchdog_seconds == 1.5

    def test_a_reader_that_stops_reading_never_blocks_the_sender(self, tmp_path: Path) -> None:
        """Pings to a full socket are dropped: the server's loop (or supervisor) goes on."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(tmp_path / "full"))
            notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "full")})
            for _ in range(FULL_SOCKET_PINGS):  # far more than a socket buffer holds
                notifier.send(WATCHDOG=1)
            notifier.close()
            assert listener.recv(4096) == b"WATCHDOG=1"

    def test_no_socket_and_a_foreign_watchdog_do_nothing(self) -> None:
        """Not under systemd, or a watchdog meant for another process: no pings, no errors."""
        quiet = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
        quiet.send(READY=1)
        assert quiet.sock is None and quiet.watchdog_seconds is None and quiet.problem is None

    def test_an_unusable_notify_socket_is_logged(self, tmp_path: Path) -> None:
        """A NOTIFY_SOCKET nobody listens on: serve runs, and the log says why systemd waits."""
        server = ServerProcess(tmp_path)
        server.start(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-here")})
        try:
            line = server.wait_for_log("notify-socket-unusable")
            assert "nobody-here" in line and "WARNING" in line
        finally:
            assert server.stop() == 0


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"
                                " (CI runs as root, so there it runs)")


@pytest.fixture
def public_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder ``nobody`` can reach (pytest's tmp_path sits under a 0700 folder of root's).

    The server there runs without coverage: once it is nobody, it could not
    write its coverage data into the checkout, and would print an error.
    """
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    root = Path(tempfile.mkdtemp(prefix="postwarden-service-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def proc_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {key: [int(n) for n in fields[key].split()] for key in ("Uid", "Gid", "Groups")}


def nobodys_server(root: Path) -> tuple[ServerProcess, str]:
    """A server to run as nobody, its data directory nobody's, and one user."""
    nobody = pwd.getpwnam("nobody")
    server = ServerProcess(root, service={"user": "nobody", "group": "nogroup"})
    user = server.add_user(f"bob@{DOMAIN}")
    for path in [root / "var", *(root / "var").rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return server, user


@needs_root
class TestPrivilegeDrop:
    def test_serve_binds_as_root_then_runs_as_nobody_and_still_takes_mail(
            self, public_root: Path) -> None:
        """Uid and Gid (real, effective, saved, fs) all become nobody's; mail is stored."""
        nobody = pwd.getpwnam("nobody")
        server, user = nobodys_server(public_root)
        server.start()
        try:
            assert server.proc is not None
            ids = proc_ids(server.proc.pid)
            assert ids["Uid"] == [nobody.pw_uid] * 4
            assert ids["Gid"] == [nobody.pw_gid] * 4
            assert ids["Groups"] == [nobody.pw_gid]
            assert "privileges-dropped" in server.wait_for_log("user=nobody")
            host, port = server.addr("smtp")
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.sendmail("someone@remote.example", [user], b"Subject: hi\r\n\r\nhello\r\n")
            server.wait_for_log("smtp transaction", "queued")
            server.proc.send_signal(signal.SIGHUP)  # as nobody: config and key still readable
            assert "reloaded" in server.wait_for_log("reloaded")
        finally:
            assert server.stop() == 0
        assert [m.endswith(b"hello\r\n") for m in server.inbox(user)] == [True]
        files = [p for p in (public_root / "var/messages").rglob("*") if p.is_file()]
        assert files and all(p.stat().st_uid == nobody.pw_uid for p in files)

    def test_workers_become_nobody_before_they_start(self, public_root: Path) -> None:
        """``serve --workers 2``: the supervisor drops root before forking; every process is
        nobody's, and the sockets root bound still take mail."""
        nobody = pwd.getpwnam("nobody")
        server, user = nobodys_server(public_root)
        server.start(serve_args=["--workers", "2"])
        try:
            assert server.proc is not None
            lines = server.wait_for_log_count(2, "worker-ready")
            pids = [server.proc.pid, *(int(ln.rsplit("pid=", 1)[1]) for ln in lines)]
            for pid in pids:
                assert proc_ids(pid)["Uid"] == [nobody.pw_uid] * 4, pid
            host, port = server.addr("smtp")
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.sendmail("someone@remote.example", [user], b"Subject: hi\r\n\r\nhello\r\n")
        finally:
            assert server.stop() == 0
        assert [m.endswith(b"hello\r\n") for m in server.inbox(user)] == [True]

    def test_a_data_dir_the_user_cannot_write_is_one_line_error(self, public_root: Path) -> None:
        """Root's data directory and user=nobody: serve refuses at start, saying what to do."""
        server = ServerProcess(public_root, service={"user": "nobody"})
        result = server.cli("serve")
        assert result.returncode == 2
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("postwarden: error: data_dir:")
        assert "not writable" in error and "chown" in error
        assert "Traceback" not in result.stderr

    def test_root_without_a_service_user_is_warned(self, tmp_path: Path) -> None:
        """Running as root is allowed (tests, containers) but logged as a warning."""
        server = ServerProcess(tmp_path).start()
        try:
            assert "WARNING" in server.wait_for_log("running-as-root")
        finally:
            server.stop()


def test_an_unknown_service_user_is_one_line_error(tmp_path: Path) -> None:
    """A typo in [service] user stops serve before it listens, naming the key."""
    server = ServerProcess(tmp_path, service={"user": "no-such-user-here"})
    result = server.cli("serve")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "postwarden: error: service.user: no such user 'no-such-user-here'")
