r"""The POP3 and pop3s listeners: asyncio glue around ``protocol.pop3``.

Everything POP3 decides lives in the sans-IO machine; this module does the
I/O it asks for, every store call through the async boundary: checking
passwords (``Authenticator``), locking the maildrop (in the store, so
another process sees the lock too), taking the INBOX
snapshot (sizes from the store, no file is opened at login), streaming
messages in bounded ranged reads, marking retrieved ones ``\Seen``, the
STLS handshake, and applying deletions at QUIT. A connection that ends any
other way deletes nothing, because deletions exist only in the machine until
the UPDATE state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import uuid

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
)
from postwarden.servers import connlog
from postwarden.servers.common import LoginResult, Peer, PeerDeadline, plaintext_auth_allowed
from postwarden.servers.deadlines import InputClock
from postwarden.servers.services import MailboxServices
from postwarden.servers.starttls import drop_plaintext
from postwarden.storage.boundary import AsyncMailboxStore
from postwarden.storage.interfaces import StoreError, StoreUnavailable
from postwarden.storage.mailbox import (
    BlobHandle,
    Field,
    Flag,
    FlagChange,
    FlagMode,
    MailboxInUse,
    MessageMeta,
    UidSet,
)

log = logging.getLogger("postwarden.pop3")

READ_SIZE = 64 * 1024  # from the socket, per read
CHUNK_SIZE = 256 * 1024  # from a message file, per read: bounds memory per session
CLOSE_TIMEOUT = 5.0


def _kv(value: str) -> str:
    """A log value ``grep`` can split on: JSON-quoted if it has spaces or odd characters."""
    value = value[:200]
    if value and value.isprintable() and not any(c in value for c in ' "='):
        return value
    return json.dumps(value)


class DamagedMessage(OSError):
    """A message file whose size is not the one the store recorded (truncated, replaced)."""


async def _first_piece(store: AsyncMailboxStore, blob: BlobHandle, size: int) -> bytes:
    """The first piece of a message, checked against the size the store recorded.

    A file of another size is damaged; sending it would hand the client a
    cut-off message as if it were whole. (One octet more than expected is
    asked for, so a grown file shows too.)
    """
    want = min(size, CHUNK_SIZE)
    chunk = await store.read_message(blob, 0, want + 1 if size <= CHUNK_SIZE else want)
    if len(chunk) != want:
        raise DamagedMessage(f"file has {len(chunk)} bytes where {want} were expected")
    return chunk


class POP3Server:
    """One listener's POP3 service (``implicit_tls``: the pop3s port)."""

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
                connlog.current().commands = session.machine.lines_read
                with contextlib.suppress(Exception):
                    await session.unlock()
            connlog.closing(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)

    async def snapshot(self, account: str) -> tuple[int, dict[int, MessageMeta],
                                                     tuple[MaildropItem, ...]]:
        """INBOX as it is now: its id, messages by UID, and the machine's items.

        Wire sizes come from the store (measured when the message arrived),
        so no file is read at login; a message whose file has vanished is
        listed and answered ``-ERR`` at RETR.
        """
        mailboxes = self.services.mailboxes
        inbox = await mailboxes.get_mailbox(account, "INBOX")
        if inbox is None:
            await mailboxes.ensure_mailboxes(account)
            inbox = await mailboxes.get_mailbox(account, "INBOX")
            assert inbox is not None
        by_uid: dict[int, MessageMeta] = {}
        items: list[MaildropItem] = []
        for message in await mailboxes.metadata(inbox.id, UidSet.all(), Field.SIZE):
            assert message.blob is not None
            by_uid[message.uid] = message
            items.append(MaildropItem(message.uid, f"{inbox.uidvalidity}.{message.uid}",
                                      message.blob.wire_size))
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
        self.lock_owner = uuid.uuid4().hex  # this session, in the store's lock table
        self.mailbox_id = 0
        self.messages: dict[int, MessageMeta] = {}

    async def unlock(self) -> None:
        """Give the maildrop back; with the store unreachable the lock runs out by itself."""
        account, self.account = self.account, None
        if account is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.services.mailboxes.unlock_maildrop(account, self.lock_owner)

    async def lock(self, account: str) -> None:
        """RFC 1939's exclusive access: one session per maildrop, across processes.

        The lock outlives a server that dies holding it by
        ``maildrop_lock_seconds``; a live session ends long before that.
        """
        lease = self.services.cfg.limits.maildrop_lock_seconds
        await self.services.mailboxes.lock_maildrop(account, self.lock_owner,
                                                    time.time() + lease)

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
        await self.writer.start_tls(
            self.services.tls,
            ssl_handshake_timeout=self.services.cfg.limits.handshake_timeout_seconds)
        connlog.tls_started(self.writer)
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
            case LoginResult.BUSY:
                refusal = Refusal.BUSY
            case LoginResult.FAILED:
                refusal = Refusal.AUTH
        if refusal is None:
            try:
                await self.lock(account)
            except MailboxInUse:
                refusal = Refusal.IN_USE
            except StoreUnavailable as exc:
                log.warning("pop3 store-unavailable user=%s error=%s", _kv(account), _kv(str(exc)))
                refusal = Refusal.UNAVAILABLE
            except StoreError:
                log.exception("pop3 lock failed user=%s", _kv(account))
                refusal = Refusal.UNAVAILABLE
        outcome = "ok" if refusal is None else refusal.name.lower().replace("_", "-")
        if refusal is None:
            self.account = account
            try:
                self.mailbox_id, self.messages, items = await self.server.snapshot(account)
                await self.record_login()
            except StoreUnavailable as exc:
                log.warning("pop3 store-unavailable user=%s error=%s", _kv(account), _kv(str(exc)))
                await self.unlock()
                refusal, outcome = Refusal.UNAVAILABLE, "unavailable"
            except Exception:
                log.exception("pop3 snapshot failed user=%s", _kv(account))
                await self.unlock()
                refusal, outcome = Refusal.UNAVAILABLE, "unavailable"
        log.info(
            "pop3 login user=%s ip=%s method=%s tls=%s result=%s",
            _kv(account or attempt.username), self.ip, attempt.method,
            "yes" if self.machine.tls_active else "no", outcome,
        )
        self.services.metrics.auth("pop3", outcome)
        if refusal is None:
            log.info("pop3 maildrop user=%s ip=%s messages=%d",
                     _kv(account), self.ip, len(items))
            self.machine.send(LoginAccepted(items))
        else:
            self.machine.send(LoginRefused(refusal))

    async def record_login(self) -> None:
        """POP-before-SMTP: remember this IP, and forget logins older than the window."""
        now = time.time()
        directory = self.services.directory
        await directory.record_login(self.ip, now)
        await directory.expire_logins(
            now - self.services.cfg.relay.pop_before_smtp_minutes * 60)

    async def retrieve(self, event: Retrieve) -> None:
        r"""Stream the message through the machine, one bounded ranged read at a time.

        (The boundary reads a short range at once, a long one in a thread.)
        A full RETR marks the message ``\Seen`` (for IMAP clients of the box).
        """
        message = self.messages[event.item.ref]
        assert message.blob is not None
        name, size = message.blob.name, message.blob.size
        store = self.services.mailboxes  # reads the copy's own header lines, then the file
        try:
            chunk = await _first_piece(store, message.blob, size)
        except (OSError, StoreError) as exc:  # missing, unreadable or damaged: logged
            log.error("pop3 message-unavailable user=%s uid=%d blob=%s error=%s",
                      _kv(self.account or ""), message.uid, name, _kv(str(exc)))
            self.machine.send(MessageUnavailable())
            return
        self.machine.send(MessageStart())
        offset = 0
        while True:
            self.machine.send(MessageChunk(chunk))
            await self.flush()
            offset += len(chunk)
            if offset >= size or len(chunk) < CHUNK_SIZE or self.machine.message_done:
                break
            try:
                chunk = await store.read_message(message.blob, offset, CHUNK_SIZE)
            except (OSError, StoreError):
                chunk = b""  # vanished mid-way: the message ends where it could be read
        self.machine.send(MessageEnd())
        connlog.current().messages += 1
        if event.lines is None and not message.flags & Flag.SEEN:
            with contextlib.suppress(StoreUnavailable):  # sent; only \Seen waits for the store
                await self.services.mailboxes.store_flags(
                    self.mailbox_id, UidSet.from_uids([message.uid]),
                    FlagChange(FlagMode.ADD, Flag.SEEN))

    async def update(self, event: Update) -> None:
        """QUIT in TRANSACTION: the only place POP3 removes anything."""
        uids = [item.ref for item in event.deleted]
        ok = True
        if uids:
            try:
                removed = len(await self.services.mailboxes.expunge(
                    self.mailbox_id, UidSet.from_uids(uids), deleted_only=False))
            except StoreUnavailable as exc:
                log.warning("pop3 store-unavailable user=%s error=%s",
                            _kv(self.account or ""), _kv(str(exc)))
                ok = False
            except Exception:
                log.exception("pop3 delete failed user=%s", _kv(self.account or ""))
                ok = False
            else:
                log.info("pop3 delete user=%s ip=%s requested=%d removed=%d uids=%s",
                         _kv(self.account or ""), self.ip, len(uids), removed,
                         ",".join(map(str, uids)))
        await self.unlock()  # before "+OK": a client that reconnects at once must not see [IN-USE]
        self.machine.send(Updated(ok))
