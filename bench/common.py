"""Shared helpers for the SMTP benchmarks (``smtp_accept.py``, ``idle_connections.py``).

Everything runs on loopback: a real ``postwarden serve`` in a child process on
an OS-chosen port, started through the CLI exactly as an administrator would,
plus small asyncio SMTP clients. Nothing here is imported by the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
POSTWARDEN = str(VENV_BIN / "postwarden")
DOMAIN = "bench.test"
HOSTNAME = "mail.bench.test"
USER = f"user@{DOMAIN}"
PASSWORD = "bench-password-1"
READY_TIMEOUT = 30.0


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (VmRSS, VmHWM, ...) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5, Linux 4.0+); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


LISTENER_KINDS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


def make_config(root: Path, max_connections: int, listeners: tuple[str, ...] = ("smtp",),
                nameserver: str = "", dsn: str = "") -> Path:
    """``postwarden init`` in ``root``, then only ``listeners`` on port 0 and raised limits.

    Sender checks (``[auth_checks]``) need DNS: they are on only when a
    ``nameserver`` ("127.0.0.1:PORT", a loopback DNS server) is given.
    With a ``dsn`` the store is that PostgreSQL database (``pgserver.py``).
    Creates the local domain and one user (``USER``) through the CLI.
    """
    cfg = root / "postwarden.toml"
    run = [POSTWARDEN, "-c", str(cfg)]
    subprocess.run([*run, "init", "--hostname", HOSTNAME, "--domain", DOMAIN],
                   check=True, capture_output=True, timeout=60)
    text = cfg.read_text(encoding="utf-8")
    listen = "[listen]\n" + "".join(
        f"{kind} = [\"127.0.0.1:0\"]\n" if kind in listeners else f"{kind} = []\n"
        for kind in LISTENER_KINDS
    )
    text, n = re.subn(r"(?ms)^\[listen\].*?(?=^\[)", listen + "\n", text)
    assert n == 1, "init wrote no [listen] table"
    text = with_limits(text, max_connections)
    checks = "true" if nameserver else "false"
    text, n = re.subn(r"(?m)^(\[auth_checks\].*\n)enabled = true", rf"\1enabled = {checks}", text)
    assert n == 1, "init wrote no [auth_checks] enabled"
    text = re.sub(r"(?m)^nameservers = \[\]", f"nameservers = [\"{nameserver}\"]"
                  if nameserver else "nameservers = []", text)
    if dsn:
        text, n = re.subn(r'(?m)^backend = "sqlite"\nblobs = "files"',
                          f'backend = "postgresql"\ndsn = "{dsn}"\nblobs = "database"', text)
        assert n == 1, "init wrote no [storage] backend"
    cfg.write_text(text, encoding="utf-8")
    if dsn:  # init made the domain in its SQLite store
        subprocess.run([*run, "domain", "add", DOMAIN], check=True, capture_output=True,
                       timeout=60)
    subprocess.run([*run, "user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True, timeout=60)
    return cfg


def with_limits(text: str, max_connections: int) -> str:
    """A config's text with the connection and session limits all at ``max_connections``."""
    for key in ("max_connections", "max_connections_per_ip", "max_connections_smtp",
                "max_connections_imap", "max_sessions_per_user", "max_sessions_per_ip"):
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {max_connections}", text)
        assert n == 1, f"init wrote no {key}"
    return text


def free_port() -> int:
    """A loopback port free right now, for servers whose config must name their port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> int | None:
    """SIGTERM, then SIGKILL after 30 s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def log_tail(path: Path, markers: tuple[str, ...], lines: int = 5) -> str:
    """The last ``lines`` lines of a log file holding one of ``markers``, indented."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    bad = [line for line in text.splitlines() if any(m in line for m in markers)]
    return "".join(f"\n  {line}" for line in bad[-lines:])


class Server:
    """A server child process that prints its port on stdout; killed and reaped by ``stop``."""

    def __init__(self, argv: list[str], cwd: Path, ready_prefix: str) -> None:
        self.argv, self.cwd, self.ready_prefix = argv, cwd, ready_prefix
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0  # the SMTP listener's
        self.ports: dict[str, int] = {}  # every ``listening KIND HOST:PORT`` line
        self.stderr: list[str] = []

    def start(self) -> Server:
        """Start and wait (bounded) for ``listening KIND HOST:PORT`` lines and the ready line."""
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        timer = threading.Timer(READY_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith("listening "):
                    kind, address = line.split()[1:3]
                    self.ports.setdefault(kind, int(address.rsplit(":", 1)[1]))
                    self.port = self.ports.get("smtp", 0)
                if line.startswith(self.ready_prefix):
                    break
            else:
                raise RuntimeError("server did not start: " + (self.proc.stderr.read()
                                                               if self.proc.stderr else ""))
        finally:
            timer.cancel()
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:  # keep the pipe drained; the log is one line per message
            if len(self.stderr) < 200:
                self.stderr.append(line)

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; returns the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        return stop_process(proc)


def start_postwarden(root: Path, max_connections: int,
                     listeners: tuple[str, ...] = ("smtp",), nameserver: str = "",
                     workers: int = 1, dsn: str = "") -> Server:
    """Configure and start ``postwarden serve [--workers N]`` in ``root`` (on ``dsn``'s
    PostgreSQL database when given)."""
    cfg = make_config(root, max_connections, listeners, nameserver, dsn)
    return Server([POSTWARDEN, "-c", str(cfg), "serve", "--workers", str(workers)], root,
                  "postwarden ready").start()


def stored_messages(root: Path, dsn: str = "") -> int:
    """Rows in ``messages`` of the server's store (SQLite read-only, or ``dsn``)."""
    if dsn:
        import pgserver  # psycopg only for the PostgreSQL runs
        return pgserver.count(dsn, "SELECT count(*) FROM messages")
    db = root / "var" / "postwarden.sqlite3"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        con.close()


# --- a small asyncio SMTP client ------------------------------------------------------------

class SMTPError(Exception):
    """The server answered with an unexpected code."""


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """Read a (possibly multi-line) reply; return its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes) -> None:
    """Read a reply and check its code."""
    line = await read_reply(reader)
    if not line.startswith(code):
        raise SMTPError(line.decode("ascii", "replace").strip())


def make_body(size: int) -> bytes:
    """A message of about ``size`` bytes of payload after a minimal header, dot-stuffed, CRLF."""
    head = b"From: sender@x.test\r\nTo: " + USER.encode() + b"\r\nSubject: bench\r\n\r\n"
    lines = [b"x" * 78] * (size // 80)
    tail = size - len(lines) * 80
    if tail > 2:
        lines.append(b"x" * (tail - 2))
    return head + b"\r\n".join(lines) + b"\r\n"


async def send_message(host: str, port: int, sender: str, rcpt: str, body: bytes) -> float:
    """One connection, one message, QUIT. Returns seconds from connect to the 250 after DATA."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await expect(reader, b"220")
        for command, code in ((b"EHLO client.test", b"250"), (f"MAIL FROM:<{sender}>".encode(),
                              b"250"), (f"RCPT TO:<{rcpt}>".encode(), b"250"), (b"DATA", b"354")):
            writer.write(command + b"\r\n")
            await expect(reader, code)
        writer.write(body + b".\r\n")
        await expect(reader, b"250")
        latency = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        await read_reply(reader)
        return latency
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < p <= 100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def apt_install(package: str) -> bool:
    """``apt-get update`` + ``apt-get install`` a Debian package when root; False otherwise."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"installing {package} (apt-get update, apt-get install) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600,
                   check=False)
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        print(f"apt-get install {package} failed:\n" + result.stderr[-2000:], flush=True)
    return result.returncode == 0


def find_smtp_source(install: bool) -> str | None:
    """Path of Postfix's ``smtp-source``; installs Debian's ``postfix`` when asked and root.

    After the install the system's postfix service is stopped and disabled so
    that it neither holds port 25 nor competes for CPU during the run.
    """
    for candidate in (shutil.which("smtp-source"), "/usr/sbin/smtp-source"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not install:
        return None
    if os.geteuid() == 0 and shutil.which("debconf-set-selections"):
        subprocess.run(["debconf-set-selections"], capture_output=True, timeout=60, check=False,
                       input="postfix postfix/main_mailer_type select No configuration\n",
                       text=True)
    if apt_install("postfix"):
        stop_postfix_service()
    return "/usr/sbin/smtp-source" if os.access("/usr/sbin/smtp-source", os.X_OK) else None


def stop_postfix_service() -> None:
    """Stop the system's Postfix master (the package may start it) and keep it from starting."""
    for argv in (["systemctl", "disable", "--now", "postfix"], ["service", "postfix", "stop"],
                 ["postfix", "stop"]):
        if shutil.which(argv[0]):
            subprocess.run(argv, capture_output=True, timeout=60, check=False)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants now (a snapshot of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:  # bounded: /proc is finite and a pid has one parent
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its live descendants and the children it has reaped.

    For a one-process server this is its own CPU; for Postfix's master it adds
    every smtpd, cleanup, qmgr, virtual ... that runs or has run.
    """
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_pss_kb(pid: int) -> int:
    """Proportional set size of a process and its descendants (shared pages counted once)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total
