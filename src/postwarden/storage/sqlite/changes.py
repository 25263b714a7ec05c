"""The SQLite backend's change events: caught by a trigger, sent as datagrams.

Capture: every change to a mailbox bumps its ``highestmodseq``, so each
connection gets a TEMP trigger on that column which notes (mailbox, modseq)
for its thread; the store's transaction hands the notes to ``publish`` after
COMMIT and drops them after ROLLBACK. Every write path publishes without
having to remember to, as a PostgreSQL trigger calling ``pg_notify`` would.
A TEMP trigger lives only in our connections, so the schema itself does not
depend on a function that other tools (the ``sqlite3`` shell) lack.

Signal: each serving process binds a UNIX datagram socket in
``data_dir/events``; a commit sends one datagram of ``id:modseq`` pairs to
every other socket there, the CLI's commits included. A socket left by a
killed process refuses the datagram and is removed; a full receive buffer
drops it (events are hints). Sockets are addressed through an open directory
descriptor (``/proc/self/fd/N/name``) because a UNIX socket path may not
exceed 107 bytes and data directories can be deep. Hand-written: no library
offers a broadcast between the processes sharing a directory, and this is a
few socket calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from postwarden.storage.events import ChangeHub, MailboxChanged, MailboxWatch, coalesce

log = logging.getLogger("postwarden.storage")

EVENTS_DIR = "events"
# Below the smallest default socket buffer, so one datagram always fits.
MAX_DATAGRAM = 4096
_TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS postwarden_mailbox_changed"
    " AFTER UPDATE OF highestmodseq ON main.mailboxes"
    " BEGIN SELECT postwarden_mailbox_changed(NEW.id, NEW.highestmodseq); END"
)
_GONE = (errno.ECONNREFUSED, errno.ENOENT)


def encode(changes: Sequence[MailboxChanged]) -> list[bytes]:
    """``id:modseq`` pairs separated by spaces, split to fit the datagram size."""
    datagrams: list[bytes] = []
    current = b""
    for change in changes:
        item = b"%d:%d" % (change.mailbox_id, change.modseq)
        if current and len(current) + 1 + len(item) > MAX_DATAGRAM:
            datagrams.append(current)
            current = b""
        current = item if not current else current + b" " + item
    if current:
        datagrams.append(current)
    return datagrams


def decode(datagram: bytes) -> list[MailboxChanged]:
    """The pairs of a datagram; anything that does not parse is ignored (they are hints)."""
    changes = []
    for item in datagram.split():
        box, _, modseq = item.partition(b":")
        if box.isdigit() and modseq.isdigit():
            changes.append(MailboxChanged(int(box), int(modseq)))
    return changes


class SqliteChanges:
    """ChangePublisher and ChangeFeed for one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.hub = ChangeHub()
        self._directory = data_dir / EVENTS_DIR
        self._directory.mkdir(mode=0o700, exist_ok=True)
        # Opened at the first datagram: most stores (the CLI's) never send one.
        self._dirfd: int | None = None
        self._out: socket.socket | None = None
        self._lock = threading.Lock()
        self._in: socket.socket | None = None
        self._name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notes = threading.local()

    def _address(self, name: str) -> str:
        with self._lock:
            if self._dirfd is None:
                self._dirfd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dirfd}/{name}"

    def _socket(self) -> socket.socket:
        with self._lock:
            if self._out is None:
                self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._out.setblocking(False)
            return self._out

    # --- capture, in the store's threads ----------------------------------------

    def capture(self, conn: sqlite3.Connection) -> None:
        """Install the trigger on a connection (after the schema exists)."""
        conn.create_function("postwarden_mailbox_changed", 2, self._note)
        conn.execute(_TRIGGER)

    def _note(self, mailbox_id: int, modseq: int) -> None:
        notes: list[MailboxChanged] | None = getattr(self._notes, "list", None)
        if notes is None:
            notes = self._notes.list = []
        notes.append(MailboxChanged(mailbox_id, modseq))

    def committed(self) -> None:
        """The thread's transaction committed: publish what it changed."""
        notes: list[MailboxChanged] | None = getattr(self._notes, "list", None)
        if notes:
            self._notes.list = []
            self.publish(notes)

    def rolled_back(self) -> None:
        self._notes.list = []

    # --- publishing -----------------------------------------------------------------

    def publish(self, changes: Sequence[MailboxChanged]) -> None:
        changes = coalesce(changes)
        self.hub.publish(changes)
        self._send(encode(changes))

    def _send(self, datagrams: list[bytes]) -> None:
        try:
            names = [e.name for e in os.scandir(self._directory) if e.name != self._name]
        except OSError:
            return
        for name in names:
            address, out = self._address(name), self._socket()
            for datagram in datagrams:
                try:
                    out.sendto(datagram, address)
                except BlockingIOError:
                    break  # its buffer is full: it is busy and will poll
                except OSError as exc:
                    if exc.errno in _GONE:  # its process is gone
                        with contextlib.suppress(OSError):
                            os.unlink(self._directory / name)
                    else:
                        log.debug("change signal to %s failed: %s", name, exc)
                    break

    # --- listening, on the event loop ------------------------------------------------

    def watch(self, mailbox_id: int) -> MailboxWatch:
        return self.hub.watch(mailbox_id)

    def listen(self) -> None:
        """Hear other processes' changes from now on (call on the event loop)."""
        if self._in is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        sock.bind(self._address(name))
        self._in, self._name = sock, name
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._in is not None
        for _ in range(64):  # bounded: let the loop breathe under a flood
            try:
                datagram = self._in.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            self.hub.publish(decode(datagram))

    def close(self) -> None:
        if self._in is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._in.fileno())
            self._in.close()
            with contextlib.suppress(OSError):
                os.unlink(self._directory / (self._name or ""))
            self._in = self._name = None
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None
