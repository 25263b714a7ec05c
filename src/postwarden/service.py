"""The process under a service manager: telling systemd its state, and giving up root.

``Notifier`` speaks sd_notify(3): one ``KEY=value`` datagram per state change
to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (``@`` meaning Linux's
abstract namespace). Hand-written because the protocol is a single
``send``: the pure-Python ``sdnotify`` package has had no release since
2017, and ``systemd-python``/``cysystemd`` are C extensions that need
libsystemd to build, for what is ten lines here.

``drop_privileges`` is what Postfix and Dovecot do: the listening sockets are
bound as root (ports below 1024), then the process becomes an ordinary user
for good (supplementary groups, gid, uid, in that order) before it reads any
mail. The supplementary groups are the user's own from /etc/group (as
initgroups(3) sets them), so membership of ``ssl-cert`` still reads keys.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ServiceError(Exception):
    """Why the process cannot run as configured; the message is one line naming the key."""


class Notifier:
    """sd_notify to ``$NOTIFY_SOCKET``; does nothing when not started by systemd."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        path = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        self.problem: str | None = None  # why a NOTIFY_SOCKET that was given cannot be used
        if path.startswith(("/", "@")):
            address = "\0" + path[1:] if path.startswith("@") else path
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(address)  # now, while we may still open it: the path may be root's
            except OSError as exc:
                sock.close()
                self.problem = f"{path}: {exc.strerror or exc}"
            else:
                self.sock = sock
        elif path:
            self.problem = f"{path}: not a socket path"
        self.watchdog_seconds = _watchdog_interval(env)

    @classmethod
    def channel(cls, sock: socket.socket, watchdog_seconds: float | None) -> Notifier:
        """States told over ``sock`` instead: a ``serve --workers`` worker to its supervisor,
        in the same format, so the worker's code does not know which it talks to."""
        notifier = cls({})
        notifier.sock, notifier.watchdog_seconds = sock, watchdog_seconds
        return notifier

    def send(self, **states: str | int) -> None:
        """``send(READY=1, STATUS="...")``; a lost datagram is not worth failing over, nor
        waiting for: a reader that lets its buffer fill must not stop our loop."""
        if self.sock is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in states.items())
        with contextlib.suppress(OSError):
            self.sock.send(message.encode(), socket.MSG_DONTWAIT)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises; None when no watchdog is asked of this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom the process becomes: names for the log, numbers for the system calls."""

    user: str
    group: str
    uid: int
    gid: int


def identity(user: str, group: str) -> Identity:
    """Look the names up (before dropping: /etc may be unreadable later)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ServiceError(f"service.user: no such user {user!r}") from None
    if not group:
        return Identity(user, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid, entry.pw_gid)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ServiceError(f"service.group: no such group {group!r}") from None
    return Identity(user, group, entry.pw_uid, gid)


def drop_privileges(who: Identity) -> None:
    """Become ``who`` for good: groups first (they need root), the uid last."""
    if os.geteuid() != 0:
        if os.geteuid() == who.uid:
            return  # already that user (started so by the service manager, say)
        raise ServiceError(f"service.user: cannot become {who.user!r}: not started as root")
    os.initgroups(who.user, who.gid)  # its groups in /etc/group too: ssl-cert, say
    os.setgid(who.gid)
    os.setuid(who.uid)
    if os.getuid() != who.uid or os.geteuid() != who.uid or os.getegid() != who.gid:
        raise ServiceError(f"service.user: still not {who.user!r} after setuid")


# What the server writes in data_dir (the rest, such as tls/, it only reads).
WRITTEN = ("", "postwarden.sqlite3", "postwarden.sqlite3-wal", "postwarden.sqlite3-shm",
           "messages", "events")


def check_writable(data_dir: Path) -> None:
    """The data directory and what the server writes in it must be ours, said in one line
    (else the first delivery would fail deep in SQLite with "readonly database")."""
    paths = [data_dir / name for name in WRITTEN] if data_dir.exists() else [data_dir.parent]
    for path in paths:
        if path.exists() and not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
            owner = _owner(path)
            raise ServiceError(
                f"data_dir: {path} is not writable by uid {os.geteuid()} (owned by {owner});"
                f" chown -R the data directory to the service user")


def _owner(path: Path) -> str:
    stat = path.stat()
    try:
        return pwd.getpwuid(stat.st_uid).pw_name
    except KeyError:
        return f"uid {stat.st_uid}"
