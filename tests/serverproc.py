"""A real postwarden server in a child process, on loopback ports chosen by the OS.

The server prints ``listening KIND HOST:PORT`` lines and ``postwarden ready``
once every socket is bound; the fixture waits for that line (no sleeps) and
reads the ports from it.
"""

from __future__ import annotations

import copy
import functools
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from postwarden.cli import add_local_domain
from postwarden.config import load
from postwarden.policy.passwords import hash_password
from postwarden.servers.tls import write_self_signed
from postwarden.storage.factory import open_store
from postwarden.storage.mailbox import Field, UidSet

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
PASSWORD = "correct horse battery"
READY_TIMEOUT = 30


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def render_toml(top: dict[str, Any], sections: dict[str, dict[str, Any]],
                routes: Iterable[dict[str, str]] = ()) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for route in routes:
        lines.append("\n[[routes]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in route.items()]
    return "\n".join(lines) + "\n"


@functools.cache
def password_hash(password: str) -> str:
    """One argon2id hash per password for the whole run: each costs about 150 ms of
    CPU, and hundreds of test accounts share a few passwords. Each is still a real
    hash with the production parameters, checked by the server at every login."""
    return hash_password(password)


class ServerProcess:
    """Owns a data directory and config; start/stop/kill the server on it."""

    def __init__(self, root: Path, routes: Iterable[dict[str, str]] = (),
                 **overrides: dict[str, Any]) -> None:
        self.root = root
        self.config_path = root / "postwarden.toml"
        listen: dict[str, Any] = {
            "smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
            "submissions": ["127.0.0.1:0"], "pop3": ["127.0.0.1:0"], "pop3s": ["127.0.0.1:0"],
            "imap": [], "imaps": [],
        }
        listen.update(overrides.pop("listen", {}))
        sections: dict[str, dict[str, Any]] = {
            "listen": listen,
            "tls": {"cert": "var/tls/cert.pem", "key": "var/tls/key.pem"},
            "auth": {"plaintext_without_tls": "loopback"},
            "relay": {},
            "limits": {"shutdown_grace_seconds": 10},
            "delivery": {"retry_intervals": ["1s"]},
            # Sender checks need DNS: off unless a test brings a loopback DNS server.
            "auth_checks": {"enabled": False},
        }
        for name, table in overrides.items():
            sections.setdefault(name, {}).update(table)
        self.config_path.write_text(
            render_toml({"hostname": HOSTNAME, "data_dir": "var"}, sections, routes),
            encoding="utf-8",
        )
        write_self_signed(root / "var/tls/cert.pem", root / "var/tls/key.pem", HOSTNAME)
        self.cert = root / "var/tls/cert.pem"
        self.store = open_store(load(self.config_path))  # SQLite, or a shared PostgreSQL
        if DOMAIN not in self.store.directory.list_domains():  # another node made it
            add_local_domain(self.store.directory, DOMAIN)
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, list[tuple[str, int]]] = {}
        self.output: list[str] = []
        self._output_grew = threading.Condition()

    def sharing(self, hostname: str) -> ServerProcess:
        """A second server on the same data directory, greeting as ``hostname``."""
        twin = copy.copy(self)
        twin.config_path = self.root / f"{hostname}.toml"
        twin.config_path.write_text(self.config_path.read_text(encoding="utf-8").replace(
            f'hostname = "{HOSTNAME}"', f'hostname = "{hostname}"', 1), encoding="utf-8")
        twin.proc, twin.ports, twin.output = None, {}, []
        twin._output_grew = threading.Condition()
        return twin

    def add_user(self, address: str, password: str = PASSWORD) -> str:
        self.store.directory.add_account(address, password_hash(password))
        return address

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "postwarden", "-c", str(self.config_path), *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )

    def start(self, file_size_limit: int | None = None,
              env: dict[str, str] | None = None, serve_args: Iterable[str] = ()) -> ServerProcess:
        """Start and wait for ready; ``file_size_limit`` (RLIMIT_FSIZE) fakes a full disk;
        ``env`` is added to the server's environment; ``serve_args`` to its command line."""

        def limit_files() -> None:
            if file_size_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postwarden", "-c", str(self.config_path), "serve",
             *serve_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, preexec_fn=limit_files,
        )
        self.ports = {}
        assert self.proc.stdout is not None
        timer = threading.Timer(READY_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith("listening "):
                    _, kind, where = line.split()
                    host, port = where.rsplit(":", 1)
                    self.ports.setdefault(kind, []).append((host, int(port)))
                if line.startswith("postwarden ready"):
                    break
            else:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        finally:
            timer.cancel()
        self._drain_stderr()
        return self

    def _drain_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                with self._output_grew:
                    self.output.append(line)
                    self._output_grew.notify_all()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def addr(self, kind: str, index: int = 0) -> tuple[str, int]:
        return self.ports[kind][index]

    def port(self, kind: str) -> int:
        return self.ports[kind][0][1]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._pump.join(timeout=30)  # every log line read once stop() returns
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def wait_for_log(self, *words: str, timeout: float = 30) -> str:
        """The first log line holding every word, waiting for the server to write it."""

        def found() -> str | None:
            return next((ln for ln in self.output if all(w in ln for w in words)), None)

        with self._output_grew:
            line = self._output_grew.wait_for(found, timeout)
        assert line is not None, f"no log line with {words} in {timeout}s"
        return line

    def wait_for_log_count(self, count: int, *words: str, timeout: float = 30) -> list[str]:
        """Wait until ``count`` log lines hold every word; returns them."""

        def found() -> list[str] | None:
            lines = [ln for ln in self.output if all(w in ln for w in words)]
            return lines if len(lines) >= count else None

        with self._output_grew:
            lines = self._output_grew.wait_for(found, timeout)
        assert lines is not None, f"fewer than {count} log lines with {words} in {timeout}s"
        return lines

    def inbox(self, account: str) -> list[bytes]:
        """Message bytes in the account's INBOX, oldest first (read from the store)."""
        store = open_store(load(self.config_path))
        box = store.mailboxes.get_mailbox(account, "INBOX")
        assert box is not None
        found = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
        return [store.blobs.read_blob(m.blob.name) for m in found if m.blob is not None]


def worker_ports() -> range:
    """This test process's share of 20000-32767: all of it, or under pytest-xdist
    (``-n``) one slice per worker, so two workers never pick the same port; one
    worker's port is free when checked yet bound by the other's server moments later."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (32768 - 20000) // workers
    return range(20000 + index * size, 20000 + (index + 1) * size)


# Every port free_ports handed out in this test process: never handed out twice, as a
# port chosen for one server (Pebble's, a test's) stays unbound until that server starts,
# so a second pick meanwhile could name it again ("cannot listen: Address already in use").
_GIVEN: set[int] = set()


def free_ports(count: int) -> list[int]:
    """Loopback ports free now, for configs that must name a port before the server binds it.

    They are taken below the kernel's ephemeral range (32768 and up), so no
    client connection made meanwhile (Pebble's, the test's) can be given one
    as its source port before the server binds it, as a port from bind(0) can.
    """
    chosen: list[int] = []
    for port in random.sample(worker_ports(), 200):  # bounded: plenty are free
        if port in _GIVEN:  # free, but maybe named in a config whose server is not up yet
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            _GIVEN.update(chosen)
            return chosen
    raise RuntimeError("no free loopback ports below the ephemeral range")
