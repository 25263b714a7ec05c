"""The imap and imaps listeners: asyncio glue around ``protocol.imap``.

Every byte of IMAP syntax and every ordering rule lives in the sans-IO
machine; this module does what its events ask: checking passwords, asking
the store (always through the async boundary, never on the event loop),
reading message bytes by range, the STARTTLS handshake, DEFLATE after COMPRESS, and
waiting for news while IDLE. Mailbox-level commands are in
``imap_mailboxes``, the selected-state ones in ``imap_selected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import zlib
from collections import Counter
from typing import ClassVar

from postwarden.log import kv
from postwarden.protocol.imap import IMAPSession, IMAPSettings
from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendData,
    AppendEnd,
    Closed,
    CompressionStarted,
    Enabled,
    IdleDone,
    LoginAttempt,
)
from postwarden.servers import connlog
from postwarden.servers.common import LoginResult, Peer, PeerDeadline, plaintext_auth_allowed
from postwarden.servers.deadlines import InputClock
from postwarden.servers.imap_mailboxes import MailboxCommands
from postwarden.servers.imap_selected import SelectedCommands
from postwarden.servers.services import MailboxServices
from postwarden.servers.starttls import drop_plaintext
from postwarden.storage.interfaces import StoreUnavailable

log = logging.getLogger("postwarden.imap")

READ_SIZE = 64 * 1024
CLOSE_TIMEOUT = 5.0
INFLATE_STEP = 256 * 1024  # inflated octets fed to the machine per step: bounds a deflate bomb


class IMAPServer:
    """One listener's IMAP service (``implicit_tls``: the imaps port).

    Session counts are class attributes: the imap and imaps listeners are
    separate instances that share the per-user and per-IP login limits.
    """

    _per_user: ClassVar[Counter[str]] = Counter()
    _per_ip: ClassVar[Counter[str]] = Counter()

    def __init__(self, services: MailboxServices, *, implicit_tls: bool) -> None:
        self.services = services
        self.implicit_tls = implicit_tls

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer | None = None) -> None:
        """Serve one connection from start to end; never raises; closes the writer."""
        session = _Session(self, reader, writer, peer or Peer.of(writer))
        try:
            await session.run()
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            log.debug(kv("imap-connection-lost", ip=session.ip, error=str(exc)))
        except Exception:
            log.exception(kv("imap-session-failed", ip=session.ip))
        finally:
            session.end()
            connlog.current().commands = session.machine.lines_read
            connlog.closing(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)


class _Session(MailboxCommands, SelectedCommands):
    """One connection: the machine, the socket, and the logged-in user's view."""

    def __init__(self, server: IMAPServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: Peer) -> None:
        self.server = server
        self.services = services = server.services
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.ip = str(peer.client_ip)
        self.deadline = PeerDeadline()
        cfg = services.cfg
        self.settings = cfg.imap
        tls = server.implicit_tls
        self.machine = IMAPSession(IMAPSettings(
            hostname=cfg.hostname, tls_active=tls,
            starttls_available=services.tls is not None and not tls,
            plaintext_auth=plaintext_auth_allowed(cfg.auth, peer, tls),
            max_line_length=cfg.imap.max_line_length,
            max_literal_size=cfg.imap.max_literal_size,
            max_command_size=cfg.imap.max_command_size,
            max_append_size=cfg.imap.max_append_size,
            max_bad_commands=cfg.limits.max_bad_commands,
        ))
        self.account = ""
        self.deflate: zlib._Compress | None = None
        self.inflate: zlib._Decompress | None = None
        self.idle_tag: str | None = None
        # Each whole command line (or APPEND message) is timed, never a single
        # read, so dripping octets holds nothing open: before login for
        # preauth_seconds, logged in for autologout_seconds, in IDLE for
        # idle_seconds; an APPEND message also at the minimum data rate.
        limits = cfg.limits
        self.login_clock = InputClock(cfg.imap.preauth_seconds)
        self.session_clock = InputClock(cfg.imap.autologout_seconds,
                                        limits.data_timeout_seconds, limits.data_min_rate)
        self.idle_clock = InputClock(cfg.imap.idle_seconds)
        super().__init__()

    def end(self) -> None:
        """Give back the session's place in the per-user and per-IP counts."""
        self.deadline.close()
        self.close_view()
        self.append_abort()  # a message cut off by a dropped connection
        self._free_place()

    def _hold_place(self, account: str) -> None:
        """Count this session for its user and address. Done in the same step as the
        check against the limits, with no await between, so logins finishing at the
        same moment cannot all pass a limit that has room for one."""
        self.account = account
        IMAPServer._per_user[account] += 1
        IMAPServer._per_ip[self.ip] += 1

    def _free_place(self) -> None:
        if not self.account:
            return
        for counter, key in ((IMAPServer._per_user, self.account),
                             (IMAPServer._per_ip, self.ip)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        self.account = ""

    async def run(self) -> None:
        """Until the machine says Closed: each event answered, output flushed, input read."""
        while True:
            event = self.machine.next_event()
            match event:
                case LoginAttempt():
                    await self.login(event)
                case c.StartTLS():
                    await self.start_tls()
                case Closed():
                    await self.flush()
                    return
                case CompressionStarted(pending):
                    await self.flush()
                    self.deflate = zlib.compressobj(wbits=-15)
                    self.inflate = zlib.decompressobj(wbits=-15)
                    if pending:  # (b"" would mean end of input)
                        self.feed(pending)
                case c.Idle(tag):
                    self.idle_tag = tag
                    with contextlib.suppress(StoreUnavailable):  # news waits for the store
                        await self.push_updates(expunge=True)
                case IdleDone():
                    self.idle_tag = None
                case Enabled() | c.Id():
                    pass
                case AppendData(data):
                    self.append_data(data)
                case AppendEnd():
                    try:
                        await self.append_end()
                    except StoreUnavailable as exc:
                        self.unavailable(exc, "Append")
                case AppendAborted():
                    self.append_abort()
                case _ if event is NEED_DATA or event is PAUSED:
                    await self.flush()
                    await self.read()
                case _:
                    await self.command(event)  # type: ignore[arg-type]

    async def command(self, command: c.Command) -> None:
        """A command that needs the store: the mailbox or selected-state handlers."""
        try:
            if not await self.mailbox_command(command):
                await self.selected_command(command)
        except StoreUnavailable as exc:
            self.unavailable(exc, type(command).__name__)
        except Exception:
            log.exception(kv("imap-command-failed", user=self.account, ip=self.ip,
                             command=type(command).__name__))
            self.machine.send(r.Done(r.Status.NO, "Internal error", r.Code.SERVERBUG))

    def unavailable(self, exc: StoreUnavailable, doing: str) -> None:
        """The store cannot be reached: NO [UNAVAILABLE], one log line, the session goes on."""
        log.warning(kv("imap-store-unavailable", user=self.account, ip=self.ip, command=doing,
                       error=str(exc)))
        self.machine.send(r.Done(r.Status.NO, "Database unavailable; try again later",
                                 r.Code.UNAVAILABLE))

    # --- I/O --------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Input to the machine, inflated first after COMPRESS (in bounded steps)."""
        if self.inflate is None or not data:
            self.machine.receive_data(data)
            return
        self.machine.receive_data(self.inflate.decompress(data, INFLATE_STEP))

    def clock(self) -> InputClock:
        if self.idle_tag is not None:
            return self.idle_clock
        return self.session_clock if self.account else self.login_clock

    def seconds_left(self) -> float:
        """For the line (or APPEND message) the client is on, in this phase."""
        appending = self.appending is not None
        return self.clock().seconds_left((self.machine.lines_read, appending), appending)

    async def read(self) -> None:
        if self.inflate is not None and self.inflate.unconsumed_tail:
            self.feed(self.inflate.unconsumed_tail)
            return
        if self.idle_tag is not None:
            await self.idle_wait()
            return
        try:
            seconds = self.seconds_left()
            if seconds <= 0:
                raise TimeoutError
            data = await self.deadline.wait(self.reader.read(READ_SIZE), seconds)
        except TimeoutError:
            log.info(kv("imap-timeout", user=self.account, ip=self.ip,
                        phase="session" if self.account else "login"))
            self.machine.send(r.Condition(r.Status.BYE, "Autologout; idle for too long"
                                          if self.account else "Too slow to log in"))
            return
        except (ConnectionError, ssl.SSLError):
            data = b""
        self.clock().received(len(data))
        self.feed(data)

    async def idle_wait(self) -> None:
        """IDLE: input or news, whichever comes first, for at most ``idle_seconds``
        from the IDLE command until its DONE line is complete.

        News comes from the change feed at once; every ``idle_poll_ms`` the
        store is asked too, in case a hint from another process was lost.
        """
        limit = time.monotonic() + self.seconds_left()
        reading = asyncio.ensure_future(self.reader.read(READ_SIZE))
        hint: asyncio.Future[int] | None = None
        try:
            while not reading.done():
                left = limit - time.monotonic()
                if left <= 0:
                    log.info(kv("imap-timeout", user=self.account, ip=self.ip, phase="idle"))
                    self.machine.send(r.Condition(r.Status.BYE, "IDLE for too long"))
                    return
                if hint is None and self.watch is not None:
                    hint = asyncio.ensure_future(self.watch.wait())
                waiting: set[asyncio.Future[object]] = {reading}  # type: ignore[arg-type]
                if hint is not None:
                    waiting.add(hint)  # type: ignore[arg-type]
                await asyncio.wait(waiting, timeout=min(left, self.settings.idle_poll_ms / 1000),
                                   return_when=asyncio.FIRST_COMPLETED)
                heard = hint is not None and hint.done()
                if heard:
                    hint = None
                if not reading.done():
                    with contextlib.suppress(StoreUnavailable):  # news waits for the store
                        await self.push_updates(expunge=True, poll=not heard, heard=heard)
                    await self.flush()
            try:
                data = reading.result()
            except (ConnectionError, ssl.SSLError):
                data = b""
            self.feed(data)
        finally:
            for future in (reading, hint):
                if future is not None and not future.done():
                    future.cancel()
                    with contextlib.suppress(BaseException):
                        await future

    async def start_tls(self) -> None:
        """As POP3's STLS: no yield between the OK and the handshake (CVE-2011-0411)."""
        assert self.services.tls is not None
        await drop_plaintext(self.reader, self.writer)
        self.writer.write(self.machine.data_to_send())
        await self.writer.start_tls(
            self.services.tls,
            ssl_handshake_timeout=float(self.services.cfg.limits.handshake_timeout_seconds))
        connlog.tls_started(self.writer)
        self.machine.send(r.TLSStarted())

    # --- login ------------------------------------------------------------------------------

    async def login(self, attempt: LoginAttempt) -> None:
        result, account = await self.services.auth.login_as(
            self.ip, attempt.authzid, attempt.username, attempt.password)
        per_user, per_ip = IMAPServer._per_user, IMAPServer._per_ip
        match result:
            case LoginResult.THROTTLED:
                done = r.Done(r.Status.NO, "Too many failed logins; try later",
                              r.Code.UNAVAILABLE)
            case LoginResult.BUSY:
                done = r.Done(r.Status.NO, "Server busy; try again soon", r.Code.UNAVAILABLE)
            case LoginResult.OK if per_user[account] >= self.settings.max_sessions_per_user:
                done = r.Done(r.Status.NO, "Too many sessions for this user", r.Code.LIMIT)
            case LoginResult.OK if per_ip[self.ip] >= self.settings.max_sessions_per_ip:
                done = r.Done(r.Status.NO, "Too many sessions from this address", r.Code.LIMIT)
            case LoginResult.OK:
                done = r.Done(r.Status.OK, "Logged in")
            case _:  # FAILED, and anything not known to be a success
                done = r.Done(r.Status.NO, "Authentication failed",
                              r.Code.AUTHENTICATIONFAILED)
        ok = done.status is r.Status.OK
        if ok:
            self._hold_place(account)
            try:
                await self._logged_in(account)
            except Exception as exc:  # not logged in: the place goes back at once
                self._free_place()
                if isinstance(exc, StoreUnavailable):
                    log.warning(kv("imap-store-unavailable", user=account, ip=self.ip,
                                   command="Login", error=str(exc)))
                else:
                    log.exception(kv("imap-login-setup-failed", user=account))
                ok, done = False, r.Done(r.Status.NO, "Mailbox unavailable", r.Code.UNAVAILABLE)
        outcome = "ok" if ok else (done.code.value if isinstance(done.code, r.Code) else "no")
        log.info(kv("imap-login", user=account or attempt.username, ip=self.ip,
                    method=attempt.mechanism, tls="yes" if self.machine.tls_active else "no",
                    result=outcome))
        self.services.metrics.auth("imap", outcome)
        self.machine.send(done)

    async def _logged_in(self, account: str) -> None:
        """The special-use mailboxes, and IMAP-before-SMTP's record."""
        await self.services.mailboxes.ensure_mailboxes(account)
        now = time.time()
        directory = self.services.directory
        await directory.record_login(self.ip, now)
        await directory.expire_logins(
            now - self.services.cfg.relay.pop_before_smtp_minutes * 60)
