"""A throwaway PostgreSQL server for one test run, on loopback.

The Debian ``postgresql`` package's binaries make a cluster in a temporary
directory (``initdb``), and the server listens on a free loopback port and
on a UNIX socket in that directory. It starts once per test session (a few
seconds). Every store gets a schema of its own in one shared database
(``schema()``): as separate as a database for our tables, and far cheaper
than ``CREATE DATABASE``, which copies 7.5 MB of catalogs each time
(hundreds of stores per run made the run slower and its directory a
gigabyte). ``database()`` makes a whole database where a test needs one.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster
belongs to the ``postgres`` system user (or ``nobody``) and the server runs
as that user; the tests connect over TCP with ``trust`` authentication,
which is acceptable only because the server listens on 127.0.0.1 alone and
lives no longer than the test run.

Durability is switched off (``fsync``, ``full_page_writes``): a test
database never has to survive a crash of the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from serverproc import free_ports

READY = "database system is ready to accept connections"
_ENV = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
START_TIMEOUT = 60.0
SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian keeps them off the PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def _run_as() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and there is neither a postgres nor a nobody user")


class PgCluster:
    """``initdb`` + ``postgres`` in a temporary directory; ``database()`` for a fresh one."""

    def __init__(self, bindir: Path, settings: Mapping[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = dict(settings or {})  # after (so over) the test settings below
        self.root = Path(tempfile.mkdtemp(prefix="postwarden-pg-"))
        self.port = free_ports(1)[0]  # below the ephemeral range: kept across halt()
        self._user = _run_as()
        self._names = itertools.count(1)
        self._shared: str | None = None  # the database schema() makes schemas in
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._grew = threading.Condition()

    @property
    def socket_dir(self) -> Path:
        return self.root

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _as_user(self) -> dict[str, Any]:
        user = self._user
        return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                        "extra_groups": []}

    def start(self) -> PgCluster:
        user = self._user
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", SUPERUSER,
             "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, text=True, env=_ENV, cwd=self.root,
            **self._as_user())
        self.resume()
        return self

    def resume(self) -> None:
        """Run the server on the cluster's directory and port; back when it is ready."""
        with self._grew:
            self._lines.clear()
        self._proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
             "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
             "-c", "max_connections=300", "-c", "shared_buffers=32MB",
             "-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic",
             *(f"-c{name}={value}" for name, value in self.settings.items())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=_ENV, cwd=self.root, **self._as_user())
        threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()
        self._wait_ready()

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are ended), keeping its data: a
        database outage, until ``resume()``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)
            proc.wait(timeout=30)
        self._proc = None

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._grew:
                self._lines.append(line.rstrip("\n"))
                self._grew.notify_all()
        with self._grew:
            self._grew.notify_all()  # it exited: wake the waiter to say so

    def _wait_ready(self) -> None:
        """Wait for the server's own "ready" line (bounded); its log if it never comes."""
        assert self._proc is not None
        proc = self._proc

        def settled() -> bool:
            return any(READY in line for line in self._lines) or proc.poll() is not None

        with self._grew:
            self._grew.wait_for(settled, START_TIMEOUT)
            ready = any(READY in line for line in self._lines)
        if not ready:
            self.stop()
            raise RuntimeError("PostgreSQL did not start:\n" + "\n".join(self._lines[-20:]))

    def database(self) -> str:
        """A new, empty database; its DSN."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own name: no quoting issue
        return self.dsn(name)

    def schema(self) -> str:
        """A new, empty schema in the shared test database; a DSN that works in it."""
        if self._shared is None:
            self._shared = self.database()
        name = f"s{next(self._names)}"
        with psycopg.connect(self._shared, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self._shared}?options=-csearch_path%3D{name}"

    def log(self) -> list[str]:
        with self._grew:
            return list(self._lines)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the directory."""
        try:
            self.halt()
        except subprocess.TimeoutExpired:
            proc, self._proc = self._proc, None
            if proc is not None:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (apt-get install postgresql)")
    cluster = PgCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()
