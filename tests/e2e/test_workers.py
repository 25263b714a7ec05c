"""``serve --workers N``: worker processes sharing the listeners (SO_REUSEPORT) and the store.

Each log line of a worker carries ``[wN/PID]``, so a test learns which
process served a connection from the ``connect`` line naming the client's
own port. The kernel picks the worker by a hash of the client's address and
port, so the tests open connections until both workers have served one
(bounded loops, no sleeps).
"""

from __future__ import annotations

import imaplib
import os
import re
import select
import signal
import smtplib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pgcluster import PgCluster
from serverproc import DOMAIN, PASSWORD, ServerProcess
from servers.pop3_fixtures import RawClient

TIMEOUT = 10
APPENDS = 10  # per worker, at the same time
TRIES = 64  # connections before giving up on reaching a given worker (each is 1/2 likely)
CLIENT_IP = "127.0.0.7"  # the POP3 user's address
WATCHDOG_USEC = 400_000  # the workers ping every 0.2 s, and the supervisor passes it on
TAG = re.compile(r"\[w(\d+)/(\d+)\]")

pytestmark = pytest.mark.slow


def message(n: int) -> bytes:
    return f"From: a@remote.test\r\nSubject: number {n}\r\n\r\nbody {n}\r\n".encode()


def exited(pid: int) -> bool:
    """Whether ``pid`` (not our child) is gone within TIMEOUT, polled via pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], TIMEOUT)[0])  # readable once it exits
    finally:
        os.close(fd)


def served_by(server: ServerProcess, listener: str, sock: socket.socket) -> int:
    """The pid of the worker whose log has the connect line for this client socket."""
    host, port = sock.getsockname()[:2]
    line = server.wait_for_log("connect", f"listener={listener}", f"client={host}:{port} ")
    found = TAG.search(line)
    assert found is not None, line
    return int(found.group(2))


def send(server: ServerProcess, n: int, to: str) -> int:
    """Message ``n`` over SMTP; the pid of the worker that acknowledged it."""
    with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@remote.test", [to], message(n))
        assert smtp.sock is not None
        return served_by(server, "smtp", smtp.sock)


def worker_pids(server: ServerProcess, count: int) -> dict[int, int]:
    """Worker index -> pid of the latest ``worker-ready`` line of each."""
    lines = server.wait_for_log_count(count, "worker-ready")
    pids: dict[int, int] = {}
    for line in lines:
        found = re.search(r"worker=(\d+) pid=(\d+)", line)
        assert found is not None, line
        pids[int(found.group(1))] = int(found.group(2))
    return pids


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, object]:
    """The ``[storage]`` table: SQLite in the data directory, or a throwaway PostgreSQL."""
    if request.param == "sqlite":
        return {}
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return {"backend": "postgresql", "dsn": cluster.schema(), "pool_size": 4}


class TestTwoWorkers:
    def test_connections_reach_both_workers_and_share_one_store(
            self, make_server: Callable[..., ServerProcess], backend: dict[str, object],
            notify_socket: socket.socket) -> None:
        """Two pids accept SMTP; a message one accepted is read over IMAP via the other."""
        server = make_server(listen={"imap": ["127.0.0.1:0"]}, storage=backend)
        bob = server.add_user(f"bob@{DOMAIN}")
        server.start(serve_args=["--workers", "2"],
                     env={"NOTIFY_SOCKET": notify_socket.getsockname(),
                          "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        first = notify_socket.recv(4096).decode().splitlines()
        assert "READY=1" in first and "STATUS=2 workers serving" in first
        assert any("WATCHDOG=1" in notify_socket.recv(4096).decode() for _ in range(20))
        assert len(server.wait_for_log_count(2, "worker-ready")) == 2  # all ready before READY
        pids = set(worker_pids(server, 2).values())
        by_pid: dict[int, int] = {}
        for n in range(TRIES):
            by_pid.setdefault(send(server, n, bob), n)
            if len(by_pid) == 2:
                break
        assert set(by_pid) == pids, "SMTP did not reach both workers"
        for imap_pid in pids:  # read each worker's message through the *other* worker
            wanted = next(n for pid, n in by_pid.items() if pid != imap_pid)
            for _ in range(TRIES):
                client = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
                if served_by(server, "imap", client.sock) == imap_pid:
                    break
                client.logout()
            else:
                raise AssertionError(f"no IMAP connection reached worker {imap_pid}")
            try:
                client.login(bob, PASSWORD)
                client.select("INBOX", readonly=True)
                _, hits = client.search(None, "SUBJECT", f'"number {wanted}"')
                assert hits[0].split(), f"message {wanted} not seen by worker {imap_pid}"
            finally:
                client.logout()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)  # forwarded: each worker reloads
        assert len(server.wait_for_log_count(2, "reloaded")) == 2
        assert server.stop() == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), "a worker outlived SIGTERM"

    def test_a_killed_worker_is_restarted_and_no_acknowledged_message_is_lost(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """kill -9 of a worker mid-stream: restarted, the others go on, 250 means stored."""
        server = make_server()
        bob = server.add_user(f"bob@{DOMAIN}")
        server.start(serve_args=["--workers", "2"])
        victim = worker_pids(server, 2)[1]
        acknowledged: list[int] = []
        sent = threading.Event()

        def stream() -> None:
            for n in range(40):
                try:
                    send(server, n, bob)
                    acknowledged.append(n)
                except (OSError, smtplib.SMTPException):
                    pass  # cut off by the kill: not acknowledged, so nothing is promised
                if n == 10:
                    sent.set()

        sender = threading.Thread(target=stream)
        sender.start()
        assert sent.wait(60)
        os.kill(victim, signal.SIGKILL)
        sender.join(120)
        died = server.wait_for_log("worker-died", "worker=1")
        assert "killed by SIGKILL" in died
        replacement = worker_pids(server, 3)[1]
        assert replacement != victim
        for n in range(TRIES):
            if send(server, 100 + n, bob) == replacement:
                break
        else:
            raise AssertionError("the restarted worker took no connection")
        os.kill(replacement, signal.SIGKILL)  # dying young again: a longer pause
        again = server.wait_for_log_count(2, "worker-died", "worker=1")[1]
        assert "restart_in=0.5s" in again and "restart_in=0.25s" in died
        assert worker_pids(server, 4)[1] not in (victim, replacement)
        assert server.stop() == 0
        stored = {int(m.split(b"body ")[1]) for m in server.inbox(bob)}
        assert set(acknowledged) <= stored
        assert len(acknowledged) >= 30  # most of the stream went on beside the kill


    def test_appends_through_both_workers_get_unique_increasing_uids(
            self, make_server: Callable[..., ServerProcess], backend: dict[str, object]) -> None:
        """Two workers APPEND to one mailbox at once: UIDs unique, each worker's increasing."""
        server = make_server(listen={"imap": ["127.0.0.1:0"]}, storage=backend)
        bob = server.add_user(f"bob@{DOMAIN}")
        server.start(serve_args=["--workers", "2"])
        sessions: dict[int, imaplib.IMAP4] = {}
        for _ in range(TRIES):  # one session on each worker
            client = imaplib.IMAP4(*server.addr("imap"), timeout=TIMEOUT)
            pid = served_by(server, "imap", client.sock)
            if pid in sessions:
                client.logout()
                continue
            client.login(bob, PASSWORD)
            sessions[pid] = client
            if len(sessions) == 2:
                break
        assert len(sessions) == 2, "IMAP did not reach both workers"
        uids: dict[int, list[int]] = {pid: [] for pid in sessions}

        def append(pid: int) -> None:
            for n in range(APPENDS):
                _, data = sessions[pid].append("INBOX", "", None, message(n))
                found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                assert found is not None, data
                uids[pid].append(int(found.group(1)))

        threads = [threading.Thread(target=append, args=(pid,)) for pid in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for client in sessions.values():
            client.logout()
        every = [uid for got in uids.values() for uid in got]
        assert sorted(every) == list(range(1, 2 * APPENDS + 1))
        assert all(got == sorted(got) for got in uids.values())
        assert server.stop() == 0


    def test_a_pop3_login_through_one_worker_opens_relaying_through_the_other(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """POP-before-SMTP records are in the store, so every worker sees them."""
        server = make_server(relay={"pop_before_smtp_minutes": 10}, service={"workers": 2})
        bob = server.add_user(f"bob@{DOMAIN}")
        server.start()  # [service] workers, no option
        assert len(server.wait_for_log_count(2, "worker-ready")) == 2

        def relay_reply() -> tuple[int, int]:
            """(worker pid, RCPT reply code) for an outside recipient, nothing sent."""
            with smtplib.SMTP(*server.addr("smtp"), timeout=TIMEOUT,
                              source_address=(CLIENT_IP, 0)) as smtp:
                smtp.ehlo("client.test")
                smtp.mail("a@remote.test")
                code, _ = smtp.rcpt("someone@external.example")
                smtp.rset()
                assert smtp.sock is not None
                return served_by(server, "smtp", smtp.sock), code

        assert relay_reply()[1] == 550
        sock = socket.create_connection(server.addr("pop3"), timeout=TIMEOUT,
                                        source_address=(CLIENT_IP, 0))
        pop = RawClient(sock)
        assert pop.command(f"USER {bob}".encode()).startswith(b"+OK")
        assert pop.command(f"PASS {PASSWORD}".encode()).startswith(b"+OK")
        logged_in_at = served_by(server, "pop3", sock)
        assert pop.command(b"QUIT").startswith(b"+OK")
        pop.close()
        for _ in range(TRIES):
            pid, code = relay_reply()
            if pid != logged_in_at:
                assert code == 250
                break
        else:
            raise AssertionError("SMTP never reached the other worker")


    def test_a_worker_killed_by_a_signal_without_a_name_is_restarted(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """A real-time signal (no ``signal.Signals`` member) ends a worker: the supervisor
        says which number and restarts it, rather than failing on the name."""
        server = make_server()
        server.start(serve_args=["--workers", "2"])
        victim = worker_pids(server, 2)[2]
        number = signal.SIGRTMIN + 6  # its default action ends the process
        os.kill(victim, number)
        died = server.wait_for_log("worker-died", "worker=2")
        assert f"killed by signal {number}" in died
        assert worker_pids(server, 3)[2] != victim
        assert server.stop() == 0

    def test_workers_end_when_the_supervisor_is_killed(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """kill -9 of the supervisor: its workers drain and exit, no orphan serves on."""
        server = make_server()
        server.start(serve_args=["--workers", "2"])
        pids = list(worker_pids(server, 2).values())
        server.kill()
        for pid in pids:
            assert exited(pid), f"worker {pid} outlived its supervisor"

    def test_a_worker_that_does_not_drain_is_killed_and_serve_still_ends(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """SIGTERM with one worker stopped (SIGSTOP): killed after the grace, exit 0."""
        server = make_server(limits={"shutdown_grace_seconds": 1})
        server.start(serve_args=["--workers", "2"])
        stuck = worker_pids(server, 2)[2]
        os.kill(stuck, signal.SIGSTOP)
        assert server.stop() == 0
        assert f"pid={stuck} " in server.wait_for_log("worker-killed", "worker=2") + " "
        assert not Path(f"/proc/{stuck}").exists()


class TestBadInput:
    def test_a_broken_config_on_sighup_keeps_every_process_serving(
            self, make_server: Callable[..., ServerProcess]) -> None:
        """SIGHUP after the config stopped parsing: the supervisor and each worker say so
        in one line and go on with the previous one; mail is still taken."""
        server = make_server()
        bob = server.add_user(f"bob@{DOMAIN}")
        server.start(serve_args=["--workers", "2"])
        worker_pids(server, 2)
        good = server.config_path.read_text(encoding="utf-8")
        server.config_path.write_text("hostname = [\n", encoding="utf-8")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert len(server.wait_for_log_count(2, "reload-failed", "not valid TOML")) == 2
        assert "not valid TOML" in server.wait_for_log("reload-log-failed")
        server.config_path.write_text(good, encoding="utf-8")  # for the test's own reads
        send(server, 1, bob)
        assert server.stop() == 0
        assert "Traceback" not in "".join(server.output)
        assert len(server.inbox(bob)) == 1


    @pytest.mark.parametrize("value", ["0", "-1", "abc", "", "2.5", "\u00b2"])
    def test_bad_worker_counts_are_one_line_errors(self, tmp_path: Path, value: str) -> None:
        """``--workers`` must be a whole number of at least one."""
        result = ServerProcess(tmp_path).cli("serve", "--workers", value)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"postwarden: error: --workers: expected a whole number of at least 1, got {value!r}"]

    def test_a_bad_config_value_names_the_key(self, tmp_path: Path) -> None:
        """``[service] workers = 0`` stops serve with the key's name."""
        server = ServerProcess(tmp_path)
        with server.config_path.open("a", encoding="utf-8") as config:
            config.write("\n[service]\nworkers = 0\n")
        result = server.cli("serve")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "postwarden: error: service.workers: must be at least 1"]

    def test_acme_with_several_workers_is_refused(self, tmp_path: Path) -> None:
        """A CA's validation could reach a worker that holds no challenge: said at start."""
        server = ServerProcess(tmp_path, acme={"directory": "https://127.0.0.1:1/dir"})
        result = server.cli("serve", "--workers", "2")
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("postwarden: error: acme: not available with several workers")

    def test_a_corrupt_database_is_one_line_before_any_worker_starts(
            self, tmp_path: Path) -> None:
        """The store is opened (and migrated) once by the supervisor: one error, no workers."""
        server = ServerProcess(tmp_path)
        server.store.close()
        for suffix in ("-wal", "-shm"):
            (server.root / "var" / f"postwarden.sqlite3{suffix}").unlink(missing_ok=True)
        (server.root / "var" / "postwarden.sqlite3").write_bytes(b"garbage" * 1000)
        result = server.cli("serve", "--workers", "2")
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "worker-started" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("postwarden: error:")
        assert "not a usable SQLite database" in result.stderr
