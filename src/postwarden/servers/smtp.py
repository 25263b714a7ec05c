"""The SMTP listener: socket glue between the sans-IO machine, policy and intake.

It only reads, feeds ``SMTPSession``, acts on its events and writes; every
ordering and syntax rule lives in the machine, every decision in policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from postwarden.intake.accept import IntakeError, new_queue_id
from postwarden.intake.authfacts import EnvelopeFacts
from postwarden.intake.headers import HeaderSectionTooLarge, MessageBuilder, TraceInfo
from postwarden.intake.held import HeldWriter
from postwarden.log import kv
from postwarden.mail import reply as R
from postwarden.mail.address import Address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.mail.reply import Reply
from postwarden.policy.authchecks import AuthVerdict
from postwarden.policy.relay import ClientFacts, Decision
from postwarden.protocol.smtp import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataAborted,
    DataChunk,
    DataEnd,
    Hello,
    MailFrom,
    MailRefused,
    Quit,
    RcptTo,
    Reset,
    SMTPSession,
    SMTPSettings,
    StartTLS,
)
from postwarden.servers import connlog
from postwarden.servers.common import LoginResult, Peer, PeerDeadline, plaintext_auth_allowed
from postwarden.servers.deadlines import InputClock
from postwarden.servers.services import SMTPServices
from postwarden.servers.starttls import drop_plaintext
from postwarden.storage.interfaces import StoreUnavailable

log = logging.getLogger("postwarden.smtp")
READ_SIZE = 256 * 1024
SUBMISSION_KINDS = ("submission", "submissions")


@dataclass(slots=True)
class Transaction:
    """One MAIL..DATA transaction as the server sees it."""

    queue_id: str
    mail: MailFrom
    accepted: list[DsnRecipient] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    message: MessageBuilder | None = None
    failed: Reply | None = None  # storing the data failed; the rest is read and dropped
    checked: bool = False  # [auth_checks] apply: the message is held until its verdict
    verdict: AuthVerdict | None = None  # theirs, once made
    envelope: asyncio.Task[EnvelopeFacts] | None = None  # SPF, started at the first RCPT

    def discard(self) -> None:
        if self.message is not None:
            self.message.writer.abort()
            self.message = None
        if self.envelope is not None:
            self.envelope.cancel()


class SMTPConnection:
    """State of one client connection; ``run`` drives it to the end."""

    def __init__(
        self,
        services: SMTPServices,
        kind: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        shutdown: asyncio.Event,
        peer: Peer,
    ) -> None:
        self.s = services
        self.kind = kind
        self.reader = reader
        self.writer = writer
        self.shutdown = shutdown
        self.peer = peer
        self.deadline = PeerDeadline()  # made in, and cancelling, the session's task
        limits = services.cfg.limits
        self.clock = InputClock(limits.command_timeout_seconds, limits.data_timeout_seconds,
                                limits.data_min_rate)
        self.tls = writer.get_extra_info("ssl_object") is not None
        self.submission = kind in SUBMISSION_KINDS
        self.idle = False
        self.txn: Transaction | None = None
        self.machine = SMTPSession(
            SMTPSettings(
                hostname=services.cfg.hostname,
                max_message_size=limits.max_message_size,
                max_recipients=limits.max_recipients,
                starttls_available=services.tls is not None and not self.tls,
                tls_active=self.tls,
                auth_available=True,
                auth_without_tls=self._auth_without_tls(),
                max_bad_commands=limits.max_bad_commands,
                rcpt_error_soft_limit=limits.rcpt_error_soft_limit,
                rcpt_error_hard_limit=limits.rcpt_error_hard_limit,
            )
        )

    @property
    def auth_user(self) -> str | None:
        """The login, as the machine keeps it: STARTTLS forgets it there, once."""
        return self.machine.login

    def _auth_without_tls(self) -> bool:
        # Submission offers AUTH only after STARTTLS (SPEC §3) unless the
        # administrator explicitly allows plaintext everywhere.
        if self.submission:
            return self.s.cfg.auth.plaintext_without_tls == "always"
        return plaintext_auth_allowed(self.s.cfg.auth, self.peer, False)

    # --- the loop -------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._loop()
        except TimeoutError:  # silent too long, or not reading our replies
            log.info(kv("smtp timeout", ip=self.peer.client_ip))
            with contextlib.suppress(ConnectionError, OSError):
                self.writer.write(R.TIMEOUT.encode())
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            log.exception(kv("smtp session-error", ip=self.peer.client_ip))
        finally:
            self.deadline.close()
            self._end_transaction("disconnected")
            connlog.current().commands = self.machine.lines_read
            self.writer.close()

    async def _flush(self) -> None:
        data = self.machine.data_to_send()
        if data:
            self.writer.write(data)
            await self.deadline.wait(self.writer.drain(),
                                     self.s.cfg.limits.command_timeout_seconds)

    async def _read(self) -> bytes:
        if self.shutdown.is_set() and self.txn is None:
            self.writer.write(R.SERVICE_UNAVAILABLE.encode())
            return b""
        machine = self.machine
        in_message = machine.in_message
        seconds = self.clock.seconds_left((machine.lines_read, in_message), in_message)
        if seconds <= 0:
            raise TimeoutError
        self.idle = self.txn is None
        try:
            data = await self.deadline.wait(self.reader.read(READ_SIZE), seconds)
        finally:
            self.idle = False
        self.clock.received(len(data))
        return data

    def close_if_idle(self) -> None:
        """Shutdown: a client waiting between transactions is told 421 and let go."""
        if self.idle:
            self.writer.write(R.SERVICE_UNAVAILABLE.encode())
            self.writer.close()

    async def _loop(self) -> None:
        machine = self.machine
        while True:
            event = machine.next_event()
            if event is NEED_DATA:
                await self._flush()
                machine.receive_data(await self._read())
                continue
            match event:
                case type() if event is PAUSED:
                    raise RuntimeError("SMTP machine paused without a pending decision")
                case Hello() | Reset():
                    self._end_transaction("reset")
                case MailFrom():
                    machine.send(await self._unless_unavailable(self._mail_from(event)))
                case RcptTo():
                    machine.send(await self._unless_unavailable(self._rcpt_to(event)))
                    if machine.delay_replies:  # a recipient prober: tarpit it
                        await asyncio.sleep(self.s.cfg.limits.rcpt_error_delay_ms / 1000)
                case DataChunk(data=chunk):
                    self._data_chunk(chunk)
                case DataAborted(reply=reply):
                    self._end_transaction(f"refused {reply.code} {reply.status}",
                                          rule=f"status-{reply.status}")
                case DataEnd():
                    machine.send(await self._unless_unavailable(self._data_end(), ends=True))
                case MailRefused(reply=reply):  # SIZE= over the limit: no transaction began
                    self.s.metrics.message_refused(self.kind, f"status-{reply.status}")
                case StartTLS():
                    await self._start_tls()
                case AuthCredentials():
                    reply, login = await self._auth(event)
                    machine.send(reply, login=login)
                case Quit() | Closed():
                    await self._flush()
                    return
            await self._flush()

    # --- decisions ------------------------------------------------------

    async def _unless_unavailable(self, decision: Awaitable[Reply], ends: bool = False) -> Reply:
        """The decision, or 451 4.3.0 when the store cannot be reached (nothing committed).

        At the end of DATA (``ends``) the transaction is over: the client
        sends the whole message again later. A refused RCPT leaves it open.
        """
        try:
            return await decision
        except StoreUnavailable as exc:
            log.warning(kv("smtp store-unavailable", ip=self.peer.client_ip, error=str(exc)))
            if ends:
                self._end_transaction("refused 451 store unavailable", rule="store-unavailable")
            return R.TEMP_FAILURE

    async def _mail_from(self, mail: MailFrom) -> Reply:
        self._end_transaction("reset")
        if self.submission and self.auth_user is None:
            return R.AUTH_REQUIRED
        sender = mail.sender.address
        refusal = await self.s.recipients.check_sender(self.auth_user, sender)
        if refusal is not None:
            log.info(kv("smtp sender", ip=self.peer.client_ip, user=self.auth_user,
                        sender=sender, decision="reject", rule=refusal.rule))
            self.s.metrics.message_refused(self.kind, refusal.rule)
            return refusal.reply
        self.txn = Transaction(new_queue_id(), mail, checked=await self._checks_apply())
        return R.SENDER_OK

    async def _checks_apply(self) -> bool:
        """Sender checks are for the MX listener's unauthenticated, untrusted clients."""
        return (self.s.sender_auth is not None and self.kind == "smtp"
                and not self.s.recipients.vouches_for_sender(await self._facts()))

    async def _rcpt_to(self, rcpt: RcptTo) -> Reply:
        txn = self.txn
        if txn is None:  # the machine only asks after a positive MAIL
            return R.BAD_SEQUENCE
        decision = await self._decide(rcpt.address, null_sender=txn.mail.sender.address is None)
        txn.decisions.append(f"{rcpt.address}:{decision.verdict.value}:{decision.rule}")
        self.s.metrics.relay_decision(decision.verdict.value, decision.rule)
        if decision.accepted:
            txn.accepted.append(DsnRecipient(rcpt.address, rcpt.notify, rcpt.orcpt))
            if txn.checked and txn.envelope is None:
                txn.envelope = self._begin_checks(txn)
        return decision.reply

    def _begin_checks(self, txn: Transaction) -> asyncio.Task[EnvelopeFacts]:
        assert self.s.sender_auth is not None
        hello = self.machine.hello
        return self.s.sender_auth.begin(client_ip=str(self.peer.client_ip),
                                        helo=hello.name if hello else "",
                                        mail_from=str(txn.mail.sender.address or ""))

    async def _decide(self, address: Address, *, null_sender: bool) -> Decision:
        return await self.s.recipients.check_recipient(await self._facts(), address,
                                                       null_sender=null_sender)

    async def _facts(self) -> ClientFacts:
        return await self.s.recipients.client_facts(
            self.peer.client_ip, self.peer.local_ip, tls=self.tls, auth_user=self.auth_user,
            now=time.time(),
        )

    def _data_chunk(self, chunk: bytes) -> None:
        txn = self.txn
        if txn is None or txn.failed is not None:
            return
        try:
            if txn.message is None:
                txn.message = self.s.intake.open_message(
                    txn.queue_id, self._trace(txn),
                    add_submission_headers=self.auth_user is not None, hold=txn.checked,
                )
            txn.message.write(chunk)
        except HeaderSectionTooLarge:  # refused at the end; the rest is read and dropped
            log.info(kv("smtp header-too-large", queue_id=txn.queue_id, ip=self.peer.client_ip))
            txn.discard()
            txn.failed = R.HEADER_TOO_BIG
        except OSError as exc:  # disk full, file size limit, I/O error
            log.error(kv("smtp store-error", queue_id=txn.queue_id, error=str(exc)))
            txn.discard()
            txn.failed = R.STORAGE_FULL

    def _trace(self, txn: Transaction) -> TraceInfo:
        hello = self.machine.hello
        assert hello is not None  # the machine allows no MAIL before EHLO/HELO
        protocol = "ESMTP" if hello.extended else "SMTP"
        if self.tls:
            protocol += "S"
        if self.auth_user:
            protocol += "A"
        tls_info = ""
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            tls_info = f"using {ssl_object.version()} with cipher {ssl_object.cipher()[0]}"
        only = str(txn.accepted[0].address) if len(txn.accepted) == 1 else None
        login = self.auth_user if self.s.cfg.auth.received_header_shows_login else None
        return TraceInfo(hello.name, str(self.peer.client_ip), self.s.cfg.hostname,
                         txn.queue_id, protocol, only, tls_info, login)

    async def _data_end(self) -> Reply:
        txn = self.txn
        if txn is None:
            return R.BAD_SEQUENCE
        if txn.message is None:  # empty message: still gets our trace header
            self._data_chunk(b"")
        if txn.failed is not None:
            reply = txn.failed
            self._end_transaction(f"refused {reply.code} {reply.status}",
                                  rule=f"status-{reply.status}")
            return reply
        assert txn.message is not None
        txn.message.finish()  # the header section is read: its From: can be checked
        refusal = await self.s.recipients.check_header_from(self.auth_user,
                                                            txn.message.from_fields)
        if refusal is not None:
            self._end_transaction(f"refused {refusal.reply.code} {refusal.rule}",
                                  rule=refusal.rule)
            return refusal.reply
        if txn.checked and (refused := await self._sender_checks(txn, txn.message)) is not None:
            self._end_transaction(f"refused {refused.code} {refused.status}",
                                  rule="auth_checks")
            return refused
        mail = txn.mail
        envelope = Envelope(
            sender=mail.sender.address,
            recipients=tuple(txn.accepted),
            ret=mail.ret,
            envid=mail.envid,
            body=mail.body or "7BIT",
            smtputf8=mail.smtputf8,
        )
        message, txn.message = txn.message, None
        try:
            accepted = await self.s.intake.accept(
                txn.queue_id, envelope, message,
                trusted_origin=self.s.recipients.vouches_for_sender(await self._facts()),
                verdict=txn.verdict,
            )
        except IntakeError as exc:
            reply = (Reply(554, exc.status, exc.public) if exc.permanent
                     else R.TEMP_FAILURE)
            self._end_transaction(f"refused {reply.code} {exc}", rule=f"status-{reply.status}")
            return reply
        except StoreUnavailable:
            raise  # answered by _unless_unavailable, in one log line
        except Exception:
            log.exception(kv("smtp intake-failure", queue_id=txn.queue_id))
            self._end_transaction("refused 451 local error", rule="local-error")
            return R.TEMP_FAILURE
        self._end_transaction("queued", size=message.size, local=len(accepted.local_accounts),
                              remote=accepted.remote_count)
        return R.OK.with_text(f"Ok: queued as {txn.queue_id}")

    async def _sender_checks(self, txn: Transaction, message: MessageBuilder) -> Reply | None:
        """SPF/DKIM/DMARC/ARC: the refusal, or None with the A-R header written."""
        assert self.s.sender_auth is not None and isinstance(message.writer, HeldWriter)
        hello = self.machine.hello
        verdict = await self.s.sender_auth.check(
            client_ip=str(self.peer.client_ip), helo=hello.name if hello else "",
            mail_from=str(txn.mail.sender.address or ""), message=message.writer.held(),
            queue_id=txn.queue_id, envelope=txn.envelope)
        txn.verdict = verdict
        if verdict.reply is not None:
            return verdict.reply
        message.writer.release(verdict.header.encode(), self.s.cfg.hostname)
        return None

    def _end_transaction(self, result: str, rule: str = "", **extra: object) -> None:
        """Log and count the transaction once (if a recipient was tried) and forget it.

        ``rule`` names what refused the message, for the refusal counter.
        """
        txn, self.txn = self.txn, None
        if txn is None:
            return
        txn.discard()
        if result == "queued":
            self.s.metrics.message_accepted(self.kind)
            connlog.current().messages += 1
        elif rule:
            self.s.metrics.message_refused(self.kind, rule)
        if txn.decisions or result == "queued":
            log.info(kv("smtp transaction", listener=self.kind, ip=self.peer.client_ip,
                        user=self.auth_user, sender=f"<{txn.mail.sender}>",
                        rcpts=",".join(txn.decisions), queue_id=txn.queue_id,
                        result=result, **extra))

    async def _start_tls(self) -> None:
        """Send 220 and hand the socket to TLS without yielding to the loop in between.

        Not yielding matters twice: the client's ClientHello, sent once it sees
        the 220, cannot land in the plaintext buffer; and whatever plaintext is
        buffered now (sent before the 220) is dropped, never read as if it came
        over TLS. The machine drops its own copy in tls_started().
        """
        assert self.s.tls is not None
        dropped = await drop_plaintext(self.reader, self.writer)
        if dropped:
            log.info(kv("smtp starttls-dropped", ip=self.peer.client_ip, octets=dropped))
        self.writer.write(self.machine.data_to_send())
        await self.writer.start_tls(
            self.s.tls, ssl_handshake_timeout=self.s.cfg.limits.handshake_timeout_seconds)
        self.tls = True
        connlog.tls_started(self.writer)
        self._end_transaction("reset")
        self.machine.tls_started()  # forgets EHLO and the login (RFC 3207 §4.2)

    async def _auth(self, creds: AuthCredentials) -> tuple[Reply, str | None]:
        """The reply, and on success the account now logged in."""
        ip = str(self.peer.client_ip)
        result, account = await self.s.auth.login(ip, creds.username, creds.password)
        # Acting for another user (a SASL authzid) is not offered: the right
        # password still gets no session.
        foreign = bool(creds.authzid) and creds.authzid.lower() != account
        outcome = "authzid-refused" if result is LoginResult.OK and foreign else result.value
        log.info(kv("smtp auth", ip=ip, user=creds.username, mechanism=creds.mechanism,
                    result=outcome))
        self.s.metrics.auth(self.kind, outcome)
        match result:
            case LoginResult.OK if not foreign:
                return R.AUTH_OK, account
            case LoginResult.THROTTLED:
                return R.AUTH_THROTTLED, None
            case LoginResult.BUSY:
                return R.AUTH_BUSY, None
            case _:
                return R.AUTH_FAILED, None


class SMTPServer:
    """One per listener kind (smtp, submission, submissions)."""

    def __init__(self, services: SMTPServices, kind: str, shutdown: asyncio.Event) -> None:
        self.services = services
        self.kind = kind
        self.shutdown = shutdown
        self.connections: set[SMTPConnection] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer) -> None:
        conn = SMTPConnection(self.services, self.kind, reader, writer, self.shutdown, peer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    def close_idle(self) -> None:
        for conn in list(self.connections):
            conn.close_if_idle()
