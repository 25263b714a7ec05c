"""Outbound SMTP: one session with a remote host, reused for many transactions.

``smtpclient`` carries the bytes (replies, STARTTLS, pipelined groups); here
every reply is read per recipient, never turned into exceptions, and
addresses go out exactly as we parsed them. Each recipient ends an attempt
``SENT``, ``DEFERRED`` or ``FAILED``, with the reply that decided it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from postwarden.delivery.resolver import Hop
from postwarden.delivery.smtpclient import Reply, SMTPClientError, SMTPConnection, dot_stuff
from postwarden.protocol.smtp.params import encode_xtext

log = logging.getLogger("postwarden.delivery")

# Errors after which the session cannot carry another transaction.
_SESSION_ERRORS = (SMTPClientError, OSError, TimeoutError)


class Outcome(enum.Enum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "bounced"


@dataclass(frozen=True, slots=True)
class RcptResult:
    """How one recipient's attempt ended; ``remote_mta`` is set when its reply is the peer's."""

    outcome: Outcome
    reply: str
    remote_mta: str | None


@dataclass(frozen=True, slots=True)
class OutRecipient:
    address: str
    notify: tuple[str, ...]
    orcpt: str | None


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One transaction: envelope with its DSN parameters, and the message bytes.

    ``head`` (DKIM signatures) goes on the wire before ``data``, so the stored
    message is neither rewritten nor copied to add it.
    """

    sender: str
    recipients: tuple[OutRecipient, ...]
    data: bytes
    envid: str | None
    ret: str | None
    smtputf8: bool
    head: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.data)

    @property
    def needs_smtputf8(self) -> bool:
        return self.smtputf8 or not all(
            a.isascii() for a in (self.sender, *(r.address for r in self.recipients))
        )


class HostUnavailable(Exception):
    """No host of the destination took a session; every recipient waits."""

    def __init__(self, reply: str, remote_mta: str | None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.remote_mta = remote_mta


def _outcome(code: int) -> Outcome:
    if 200 <= code < 300:
        return Outcome.SENT
    return Outcome.FAILED if 500 <= code < 600 else Outcome.DEFERRED


def _unverified_context() -> ssl.SSLContext:
    """Opportunistic TLS: encrypt when offered, never refuse on certificate grounds.

    MX hosts' certificates are rarely verifiable against the MX name (RFC 7672
    needs DANE for that), so checking would only turn TLS off in practice.
    No CA bundle is loaded: nothing is verified against it.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS = _unverified_context()


class Session:
    """An open SMTP session with one host, after EHLO (and STARTTLS when offered)."""

    def __init__(self, conn: SMTPConnection, hop: Hop) -> None:
        self._conn = conn
        self.hop = hop
        self.broken = False

    @classmethod
    async def open(
        cls, hops: Sequence[Hop], hostname: str, connect_timeout: float, command_timeout: float
    ) -> Session:
        """The first host, in order, that greets us and answers EHLO; else HostUnavailable."""
        last = HostUnavailable("451 4.4.1 No host to try", None)
        for hop in hops:
            try:
                conn, greeting = await SMTPConnection.connect(
                    hop.address, hop.port, connect_timeout, command_timeout
                )
            except _SESSION_ERRORS as exc:
                last = HostUnavailable(
                    f"451 4.4.1 Connection to {hop.name} [{hop.address}]:{hop.port} failed: "
                    f"{exc or type(exc).__name__}",
                    hop.name,
                )
                continue
            try:
                refusal = await cls._hello(conn, hop, hostname, greeting)
            except _SESSION_ERRORS as exc:
                conn.abort()
                last = HostUnavailable(
                    f"451 4.4.2 Connection with {hop.name} lost: {exc or type(exc).__name__}",
                    hop.name,
                )
                continue
            if refusal is not None:
                conn.abort()
                last = HostUnavailable(refusal.text, hop.name)
                continue
            return cls(conn, hop)
        raise last

    @staticmethod
    async def _hello(
        conn: SMTPConnection, hop: Hop, hostname: str, greeting: Reply
    ) -> Reply | None:
        """Greeting, EHLO, and STARTTLS with a second EHLO when offered; a refusal or None."""
        if greeting.code != 220:
            return greeting
        reply = await conn.ehlo(hostname)
        if reply.code != 250:
            return reply
        if "starttls" not in conn.extensions:
            return None
        [reply] = await conn.exchange([b"STARTTLS"], pipelining=False)
        if reply.code != 220:  # opportunistic: go on in plain text (RFC 3207 §4)
            log.info("tls host=%s mode=refused reply=%s", hop.name, reply.text)
            return None
        await conn.starttls(_TLS, None if hop.name == hop.address else hop.name)
        log.info("tls host=%s mode=opportunistic verify=none", hop.name)
        reply = await conn.ehlo(hostname)
        return None if reply.code == 250 else reply

    @property
    def tls(self) -> bool:
        return self._conn.is_tls

    def supports(self, extension: str) -> bool:
        return extension in self._conn.extensions

    @property
    def dsn(self) -> bool:
        return self.supports("dsn")

    async def send(self, msg: OutMessage) -> list[RcptResult]:
        """One transaction; the results are index-aligned with ``msg.recipients``."""
        name = self.hop.name
        n = len(msg.recipients)
        if msg.needs_smtputf8 and not self.supports("smtputf8"):
            reply = f"554 5.6.7 {name} does not support SMTPUTF8, which this message needs"
            return [RcptResult(Outcome.FAILED, reply, None)] * n
        limit = self._conn.extensions.get("size", "")
        if limit.isdigit() and 0 < int(limit) < msg.size:
            reply = f"552 5.3.4 Message size exceeds the limit of {name} ({limit} bytes)"
            return [RcptResult(Outcome.FAILED, reply, None)] * n
        results: list[RcptResult | None] = [None] * n
        try:
            return await self._transaction(msg, results)
        except _SESSION_ERRORS as exc:
            self.broken = True
            reply = f"451 4.4.2 Connection with {name} lost: {exc or type(exc).__name__}"
            return [r or RcptResult(Outcome.DEFERRED, reply, name) for r in results]

    async def _transaction(
        self, msg: OutMessage, results: list[RcptResult | None]
    ) -> list[RcptResult]:
        """MAIL, every RCPT and DATA as one pipelined group (when offered), then the data."""
        name = self.hop.name
        encoding = "utf-8" if msg.needs_smtputf8 else "ascii"
        mail = b" ".join([f"MAIL FROM:<{msg.sender}>".encode(encoding),
                          *self._mail_options(msg, msg.needs_smtputf8)])
        rcpts = [
            b" ".join([f"RCPT TO:<{r.address}>".encode(encoding), *self._rcpt_options(r)])
            for r in msg.recipients
        ]
        replies = await self._conn.exchange(
            [mail, *rcpts, b"DATA"], pipelining=self.supports("pipelining")
        )
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        accepted: list[int] = []
        for i, reply in enumerate(rcpt_replies):
            if mail_reply.code != 250:
                reply = mail_reply  # the sender was refused: that is every recipient's answer
            if reply.code in (250, 251):
                accepted.append(i)
            else:
                results[i] = RcptResult(_outcome(reply.code), reply.text, name)
        if data_reply.code == 354 and not accepted:
            # A peer that took DATA with nobody to deliver to gets an empty message end.
            await self._conn.write(b".\r\n")
            await self._conn.read_reply()
        if not accepted or data_reply.code != 354:
            final = RcptResult(_outcome(data_reply.code), data_reply.text, name)
            for i in accepted:
                results[i] = final
            await self._reset()
            return [r for r in results if r is not None]
        if msg.head:  # header lines: nothing to dot-stuff
            await self._conn.write(msg.head)
        await self._conn.write(dot_stuff(msg.data))
        reply = await self._conn.read_reply()
        final = RcptResult(_outcome(reply.code), reply.text, name)
        for i in accepted:
            results[i] = final
        return [r for r in results if r is not None]

    def _mail_options(self, msg: OutMessage, utf8: bool) -> list[bytes]:
        options = []
        if self.supports("size"):
            options.append(f"SIZE={msg.size}")
        if self.supports("8bitmime") and not msg.data.isascii():
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        if self.dsn:
            if msg.ret:
                options.append(f"RET={msg.ret}")
            if msg.envid:
                options.append(f"ENVID={encode_xtext(msg.envid)}")
        return [o.encode("ascii") for o in options]

    def _rcpt_options(self, rcpt: OutRecipient) -> list[bytes]:
        if not self.dsn:
            return []
        options = []
        if rcpt.notify:
            options.append("NOTIFY=" + ",".join(rcpt.notify))
        if rcpt.orcpt:
            addr_type, _, address = rcpt.orcpt.partition(";")
            options.append(f"ORCPT={encode_xtext(addr_type)};{encode_xtext(address)}")
        return [o.encode("ascii") for o in options]

    async def _reset(self) -> None:
        """RSET after a refused transaction so the session can carry the next one."""
        try:
            [reply] = await self._conn.exchange([b"RSET"], pipelining=False)
        except _SESSION_ERRORS:
            self.broken = True
            return
        if reply.code != 250:
            self.broken = True

    def abort(self) -> None:
        """Drop the connection at once (shutdown ran out of grace)."""
        self.broken = True
        self._conn.abort()

    async def close(self) -> None:
        """QUIT politely; a peer that already hung up is fine too."""
        if self.broken:
            self._conn.abort()
            return
        with contextlib.suppress(*_SESSION_ERRORS):
            await self._conn.quit()
