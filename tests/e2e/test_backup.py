"""`postwarden backup` of a server under SMTP load, and `restore` into a fresh data_dir."""

from __future__ import annotations

import hashlib
import json
import poplib
import smtplib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from serverproc import DOMAIN, PASSWORD, ServerProcess

USER = f"bea@{DOMAIN}"
SENDERS = 2  # concurrent SMTP clients
BEFORE = 12  # messages acknowledged before the backup starts (scaled down for 2 cores)
MAX_EACH = 200  # bound on each sender's loop


def message(n: int) -> bytes:
    body = "\r\n".join([hashlib.sha256(str(n).encode()).hexdigest()] * 40)
    return f"Subject: load {n}\r\nMessage-ID: <load{n}@test>\r\n\r\n{body}\r\n".encode()


class Load:
    """Clients sending numbered messages until told to stop; what got 250, in order."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.acked: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.grew = threading.Condition()
        self.threads = [threading.Thread(target=self.send, args=(i,)) for i in range(SENDERS)]

    def send(self, first: int) -> None:
        try:
            with smtplib.SMTP(*self.server.addr("smtp"), timeout=30) as client:
                for n in range(first, first + SENDERS * MAX_EACH, SENDERS):
                    if self.stop.is_set():
                        return
                    client.sendmail("far@remote.test", [USER], message(n))  # raises unless 250
                    with self.grew:
                        self.acked.append(n)
                        self.grew.notify_all()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
            with self.grew:
                self.grew.notify_all()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def wait_for(self, count: int) -> list[int]:
        with self.grew:
            assert self.grew.wait_for(lambda: len(self.acked) >= count or self.errors, 60)
        assert not self.errors, self.errors
        with self.grew:
            return list(self.acked)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def pop3_messages(server: ServerProcess) -> dict[int, bytes]:
    """Every message of USER by its load number, read over POP3."""
    pop = poplib.POP3(*server.addr("pop3"), timeout=30)
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)
        found = {}
        for i in range(1, len(pop.list()[1]) + 1):
            data = b"\r\n".join(pop.retr(i)[1]) + b"\r\n"
            subject = next(ln for ln in data.split(b"\r\n") if ln.startswith(b"Subject: load "))
            found[int(subject.split()[-1])] = data
        return found
    finally:
        pop.quit()


def restored_twin(server: ServerProcess, folder: str) -> ServerProcess:
    """A second server config like ``server``'s, on the empty data_dir ``folder``."""
    twin = server.sharing("restored.example.test")
    text = twin.config_path.read_text(encoding="utf-8")
    twin.config_path.write_text(text.replace('data_dir = "var"', f'data_dir = "{folder}"', 1),
                                encoding="utf-8")
    return twin


class TestBackupUnderLoad:
    def test_every_message_acknowledged_before_the_backup_is_restored_intact(
            self, make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
        """Backup while two clients send; the restored server serves each earlier 250."""
        server = make_server()
        server.add_user(USER)
        server.start()
        dest = tmp_path / "backup"
        with Load(server) as load:
            before = load.wait_for(BEFORE)
            result = server.cli("backup", str(dest))
            during = load.wait_for(len(before) + SENDERS)  # the load went on meanwhile
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("backed up ")
        assert len(during) > len(before)
        server.stop()

        twin = restored_twin(server, "restored")
        result = twin.cli("restore", str(dest))
        assert result.returncode == 0, result.stderr
        twin.start()
        try:
            found = pop3_messages(twin)
        finally:
            twin.stop()
        for n in before:
            assert n in found, f"message {n} was acknowledged before the backup but is gone"
        for n, data in found.items():  # before or during: whatever is there is whole
            assert data.endswith(message(n)), f"message {n} is not intact"
        check = twin.cli("blobs", "check")
        assert check.returncode == 0, check.stdout
        assert "0 unknown file(s), 0 missing file(s)" in check.stdout


class TestRestoreRefusals:
    def test_restore_refuses_a_data_dir_with_a_running_server(
            self, make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
        """Not even --force restores under a server's feet."""
        server = make_server()
        assert server.cli("backup", str(tmp_path / "b")).returncode == 0
        server.start()
        result = server.cli("restore", "--force", str(tmp_path / "b"))
        server.stop()
        assert result.returncode == 2
        assert result.stderr.strip() == ("postwarden: error: a server is running on data_dir"
                                          f" {server.root / 'var'}: stop it first")

    def test_a_corrupt_message_file_stops_restore_and_leaves_no_database(
            self, make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
        """A flipped byte in a backed-up file is found; no half-restored server can start."""
        server = make_server()
        server.add_user(USER)
        server.start()
        with smtplib.SMTP(*server.addr("smtp"), timeout=30) as client:
            assert client.sendmail("far@remote.test", [USER], message(1)) == {}
        server.stop()
        dest = tmp_path / "b"
        assert server.cli("backup", str(dest)).returncode == 0
        assert json.loads((dest / "postwarden-backup.json").read_text())["messages"] == 1
        conn = sqlite3.connect(dest / "postwarden.sqlite3")
        (name,) = conn.execute("SELECT name FROM blobs").fetchone()
        conn.close()
        path = dest / "messages" / name[:2] / name
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))

        twin = restored_twin(server, "restored")
        result = twin.cli("restore", str(dest))
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"postwarden: error: message file {name} in {dest / 'messages'} is corrupt"
            " (its size or SHA-256 differs from the database's)")
        assert not (server.root / "restored" / "postwarden.sqlite3").exists()
