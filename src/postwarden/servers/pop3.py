"""The POP3 and pop3s listeners: asyncio glue around ``protocol.pop3``.

Everything POP3 decides lives in the sans-IO machine; this module does the
I/O it asks for: checking passwords (``Authenticator``), locking the maildrop,
taking the INBOX snapshot, streaming message files in bounded pieces, the
STLS handshake, and applying deletions at QUIT. A connection that ends any
other way deletes nothing, because deletions exist only in the machine until
the UPDATE state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar

from postwarden.protocol.pop3 import (
    NEED_DATA,
    Closed,
    LoginAccepted,
    LoginAttempt,
    LoginRefused,
    MaildropItem,
    MessageChunk,
    MessageEnd,
    MessageStart,
    MessageUnavailable,
    POP3Machine,
    Refusal,
    Retrieve,
    StartTLS,
    TimedOut,
    TLSStarted,
    Update,
    Updated,
    wire_size,
)
from postwarden.servers.common import LoginResult, Peer, PeerDeadline, plaintext_auth_allowed
from postwarden.servers.deadlines import InputClock
from postwarden.servers.services import MailboxServices
from postwarden.servers.starttls import drop_plaintext
from postwarden.storage.interfaces import StoredMessage

log = logging.getLogger("postwarden.pop3")

READ_SIZE = 64 * 1024  # from the socket, per read
CHUNK_SIZE = 256 * 1024  # from a message file, per read: bounds memory per session
INLINE_READ_LIMIT = 64 * 1024  # messages up to this size are read without a thread hop
MAX_CACHED_SIZES = 200_000
CLOSE_TIMEOUT = 5.0


def _kv(value: str) -> str:
    """A log value ``grep`` can split on: JSON-quoted if it has spaces or odd characters."""
    value = value[:200]
    if value and value.isprintable() and not any(c in value for c in ' "='):
        return value
    return json.dumps(value)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            yield chunk


class DamagedMessage(OSError):
    """A message file whose size is not the one the store recorded (truncated, replaced)."""


def _open_and_read(path: Path, size: int) -> tuple[BinaryIO, bytes]:
    """Open a message file and read its first piece: one thread hop for small messages.

    The file must have the size the store recorded at delivery; otherwise it
    is damaged, and sending it would hand the client a cut-off message as if
    it were whole.
    """
    f = path.open("rb")
    try:
        actual = os.fstat(f.fileno()).st_size
        if actual != size:
            raise DamagedMessage(f"file has {actual} bytes, the store recorded {size}")
        return f, f.read(CHUNK_SIZE)
    except BaseException:
        f.close()
        raise


class POP3Server:
    """One listener's POP3 service (``implicit_tls``: the pop3s port).

    Maildrop locks and the size cache are class attributes because the pop3
    and pop3s listeners are separate instances that must see one another's
    sessions (RFC 1939's exclusive-access lock, answered ``[IN-USE]``).
    """

    _in_use: ClassVar[set[str]] = set()
    # blob name -> wire size. Message files never change once committed, so a
    # size computed once (by reading the file) stays right; bounded by clearing.
    _sizes: ClassVar[dict[str, int]] = {}

    def __init__(self, services: MailboxServices, *, implicit_tls: bool) -> None:
        self.services = services
        self.implicit_tls = implicit_tls

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer | None = None) -> None:
        """Serve one connection from start to end; never raises; closes the writer."""
        session: _Session | None = None
        try:
            session = _Session(self, reader, writer, peer or Peer.of(writer))
            await session.run()
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            log.debug("pop3 connection lost ip=%s error=%s",
                      session.ip if session else "?", _kv(str(exc)))
        except Exception:
            log.exception("pop3 session failed ip=%s", session.ip if session else "?")
        finally:
            if session is not None:
                session.unlock()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)

    def snapshot(self, account: str) -> tuple[int, dict[int, StoredMessage],
                                               tuple[MaildropItem, ...]]:
        """INBOX as it is now: its id, messages by UID, and the machine's items.

        Runs in a worker thread: it may read files to learn their wire size.
        A message whose file has vanished is left out rather than failing login.
        """
        mailboxes, blobs = self.services.mailboxes, self.services.blobs
        inbox = mailboxes.get_mailbox(account, "INBOX")
        if inbox is None:
            mailboxes.ensure_mailboxes(account)
            inbox = mailboxes.get_mailbox(account, "INBOX")
            assert inbox is not None
        by_uid: dict[int, StoredMessage] = {}
        items: list[MaildropItem] = []
        for message in mailboxes.list_messages(inbox.id):
            size = self._sizes.get(message.blob)
            if size is None:
                try:
                    size = wire_size(_chunks(blobs.blob_path(message.blob)))
                except OSError:
                    continue
                if len(self._sizes) >= MAX_CACHED_SIZES:
                    self._sizes.clear()
                self._sizes[message.blob] = size
            by_uid[message.uid] = message
            items.append(MaildropItem(message.uid, f"{inbox.uidvalidity}.{message.uid}", size))
        return inbox.id, by_uid, tuple(items)


class _Session:
    """One connection's state on the server side of the machine."""

    def __init__(
        self, server: POP3Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self.server = server
        self.services = server.services
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.ip = str(self.peer.client_ip)
        self.deadline = PeerDeadline()  # made in, and cancelling, the session's task
        self.timeout = float(self.services.cfg.limits.command_timeout_seconds)
        self.clock = InputClock(self.timeout)  # bounds each whole command line
        tls = server.implicit_tls
        self.machine = POP3Machine(
            plaintext_auth=plaintext_auth_allowed(self.services.cfg.auth, self.peer, tls),
            tls_active=tls,
            tls_available=self.services.tls is not None,
            max_bad_commands=self.services.cfg.limits.max_bad_commands,
        )
        self.account: str | None = None
        self.mailbox_id = 0
        self.messages: dict[int, StoredMessage] = {}

    def unlock(self) -> None:
        if self.account is not None:
            POP3Server._in_use.discard(self.account)
            self.account = None

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            self.deadline.close()

    async def _serve(self) -> None:
        while True:
            event = self.machine.next_event()
            match event:
                case Closed():
                    await self.flush()
                    return
                case LoginAttempt():
                    await self.login(event)
                case Retrieve():
                    await self.retrieve(event)
                case StartTLS():
                    await self.start_tls()
                case Update():
                    await self.update(event)
                case _:  # PAUSED cannot happen: every event above is answered
                    assert event is NEED_DATA, event
                    await self.flush()
                    await self.read()

    async def read(self) -> None:
        try:
            seconds = self.clock.seconds_left(self.machine.lines_read)
            if seconds <= 0:
                raise TimeoutError
            data = await self.deadline.wait(self.reader.read(READ_SIZE), seconds)
        except TimeoutError:
            self.machine.send(TimedOut())
            return
        except (ConnectionError, ssl.SSLError):
            data = b""
        self.machine.receive_data(data)

    async def flush(self) -> None:
        data = self.machine.data_to_send()
        if data:
            self.writer.write(data)
            await self.deadline.wait(self.writer.drain(), self.timeout)

    async def start_tls(self) -> None:
        """Send "+OK", then hand the socket to TLS without yielding to the loop in between.

        Not yielding matters twice: the client's ClientHello, sent once it sees
        "+OK", cannot land in the plaintext reader buffer; and whatever is in
        that buffer now was sent before "+OK", so it is discarded rather than
        returned after the handshake as if it came over TLS (CVE-2011-0411).
        """
        assert self.services.tls is not None
        await drop_plaintext(self.reader, self.writer)
        self.writer.write(self.machine.data_to_send())
        await self.writer.start_tls(self.services.tls, ssl_handshake_timeout=self.timeout)
        self.machine.send(TLSStarted(
            plaintext_auth_allowed(self.services.cfg.auth, self.peer, tls_active=True)
        ))

    async def login(self, attempt: LoginAttempt) -> None:
        authzid = attempt.authzid.strip().lower()
        if authzid and authzid != attempt.username.strip().lower():
            result, account = LoginResult.FAILED, ""  # no logging in as somebody else
        else:
            result, account = await self.services.auth.login(
                self.ip, attempt.username, attempt.password)
        refusal: Refusal | None = None
        match result:
            case LoginResult.THROTTLED:
                refusal = Refusal.THROTTLED
            case LoginResult.FAILED:
                refusal = Refusal.AUTH
            case LoginResult.OK if account in POP3Server._in_use:
                refusal = Refusal.IN_USE
        outcome = "ok" if refusal is None else refusal.name.lower().replace("_", "-")
        if refusal is None:
            POP3Server._in_use.add(account)
            self.account = account
            try:
                self.mailbox_id, self.messages, items = await asyncio.to_thread(
                    self.server.snapshot, account)
                await asyncio.to_thread(self.record_login)
            except Exception:
                log.exception("pop3 snapshot failed user=%s", _kv(account))
                self.unlock()
                refusal, outcome = Refusal.UNAVAILABLE, "unavailable"
        log.info(
            "pop3 login user=%s ip=%s method=%s tls=%s result=%s",
            _kv(account or attempt.username), self.ip, attempt.method,
            "yes" if self.machine.tls_active else "no", outcome,
        )
        if refusal is None:
            log.info("pop3 maildrop user=%s ip=%s messages=%d",
                     _kv(account), self.ip, len(items))
            self.machine.send(LoginAccepted(items))
        else:
            self.machine.send(LoginRefused(refusal))

    def record_login(self) -> None:
        """POP-before-SMTP: remember this IP, and forget logins older than the window."""
        now = time.time()
        directory = self.services.directory
        directory.record_login(self.ip, now)
        directory.expire_logins(now - self.services.cfg.relay.pop_before_smtp_minutes * 60)

    async def retrieve(self, event: Retrieve) -> None:
        """Stream the message file through the machine, one bounded piece at a time.

        Small messages (most mail) are read on the loop: one short read from
        the page cache costs less than the hop to a worker thread (the
        benchmark runs about 40% faster); larger ones are read in a thread.
        """
        message = self.messages[event.item.ref]
        try:
            path = self.services.blobs.blob_path(message.blob)
            if message.size <= INLINE_READ_LIMIT:
                f, chunk = _open_and_read(path, message.size)
            else:
                f, chunk = await asyncio.to_thread(_open_and_read, path, message.size)
        except OSError as exc:  # missing, unreadable or damaged: a temporary error, logged
            log.error("pop3 message-unavailable user=%s uid=%d blob=%s error=%s",
                      _kv(self.account or ""), message.uid, message.blob, _kv(str(exc)))
            self.machine.send(MessageUnavailable())
            return
        try:
            self.machine.send(MessageStart())
            while True:
                self.machine.send(MessageChunk(chunk))
                await self.flush()
                if len(chunk) < CHUNK_SIZE or self.machine.message_done:
                    break
                chunk = await asyncio.to_thread(f.read, CHUNK_SIZE)
        finally:
            f.close()
        self.machine.send(MessageEnd())

    async def update(self, event: Update) -> None:
        """QUIT in TRANSACTION: the only place POP3 removes anything."""
        uids = [item.ref for item in event.deleted]
        ok = True
        if uids:
            try:
                removed = await asyncio.to_thread(
                    self.services.mailboxes.expunge, self.mailbox_id, uids)
            except Exception:
                log.exception("pop3 delete failed user=%s", _kv(self.account or ""))
                ok = False
            else:
                log.info("pop3 delete user=%s ip=%s requested=%d removed=%d uids=%s",
                         _kv(self.account or ""), self.ip, len(uids), removed,
                         ",".join(map(str, uids)))
        self.unlock()  # before "+OK": a client that reconnects at once must not see [IN-USE]
        self.machine.send(Updated(ok))
