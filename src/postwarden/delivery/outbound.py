"""Outbound SMTP: one session with a remote host, reused for many transactions.

aiosmtplib carries the bytes (connection, reply parsing, dot-stuffing, STARTTLS);
MAIL and RCPT are sent with ``execute_command`` so that addresses go out
exactly as we parsed them and every reply is inspected here, per recipient,
instead of being turned into exceptions. Each recipient ends an attempt
``SENT``, ``DEFERRED`` or ``FAILED``, with the reply that decided it.
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from postwarden.delivery.resolver import Hop

log = logging.getLogger("postwarden.delivery")

# Errors after which the session cannot carry another transaction.
_SESSION_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


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
    """One transaction: envelope with its DSN parameters, and the message bytes."""

    sender: str
    recipients: tuple[OutRecipient, ...]
    data: bytes
    envid: str | None
    ret: str | None
    smtputf8: bool

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


def _reply_text(code: int, message: str) -> str:
    """A reply as one line, e.g. ``550 5.7.1 Unable to relay``."""
    return f"{code} {' '.join(message.splitlines())}".strip()


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

    def __init__(self, smtp: aiosmtplib.SMTP, hop: Hop, tls: bool) -> None:
        self._smtp = smtp
        self.hop = hop
        self.tls = tls
        self.broken = False

    @classmethod
    async def open(
        cls, hops: Sequence[Hop], hostname: str, connect_timeout: float, command_timeout: float
    ) -> Session:
        """The first host, in order, that greets us and answers EHLO; else HostUnavailable."""
        last = HostUnavailable("451 4.4.1 No host to try", None)
        for hop in hops:
            smtp = aiosmtplib.SMTP(
                hostname=hop.address, port=hop.port, local_hostname=hostname,
                timeout=command_timeout, start_tls=False,
            )
            try:
                await smtp.connect(timeout=connect_timeout)
                await smtp.ehlo()
                tls = False
                if smtp.supports_extension("starttls"):
                    await smtp.starttls(
                        tls_context=_TLS,
                        server_hostname=None if hop.name == hop.address else hop.name,
                    )
                    await smtp.ehlo()
                    tls = True
                    log.info("tls host=%s mode=opportunistic verify=none", hop.name)
            except aiosmtplib.SMTPResponseException as exc:
                smtp.close()
                last = HostUnavailable(_reply_text(exc.code, exc.message), hop.name)
                continue
            except _SESSION_ERRORS as exc:
                smtp.close()
                last = HostUnavailable(
                    f"451 4.4.1 Connection to {hop.name} [{hop.address}]:{hop.port} failed: "
                    f"{exc or type(exc).__name__}",
                    hop.name,
                )
                continue
            return cls(smtp, hop, tls)
        raise last

    def supports(self, extension: str) -> bool:
        return self._smtp.supports_extension(extension)

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
        limit = self._smtp.esmtp_extensions.get("size", "")
        if limit.isdigit() and 0 < int(limit) < len(msg.data):
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
        name = self.hop.name
        utf8 = msg.needs_smtputf8
        encoding = "utf-8" if utf8 else "ascii"
        options = self._mail_options(msg, utf8)
        resp = await self._smtp.execute_command(
            b"MAIL", f"FROM:<{msg.sender}>".encode(encoding), *options
        )
        if resp.code != 250:
            await self._reset()
            r = RcptResult(_outcome(resp.code), _reply_text(resp.code, resp.message), name)
            return [r] * len(results)
        accepted: list[int] = []
        for i, rcpt in enumerate(msg.recipients):
            resp = await self._smtp.execute_command(
                b"RCPT", f"TO:<{rcpt.address}>".encode(encoding), *self._rcpt_options(rcpt)
            )
            if resp.code in (250, 251):
                accepted.append(i)
            else:
                results[i] = RcptResult(
                    _outcome(resp.code), _reply_text(resp.code, resp.message), name
                )
        if not accepted:
            await self._reset()
            return [r for r in results if r is not None]
        data = msg.data if msg.data.endswith(b"\r\n") else msg.data + b"\r\n"
        try:
            resp = await self._smtp.data(data)
            final = RcptResult(Outcome.SENT, _reply_text(resp.code, resp.message), name)
        except aiosmtplib.SMTPDataError as exc:
            final = RcptResult(_outcome(exc.code), _reply_text(exc.code, exc.message), name)
        for i in accepted:
            results[i] = final
        return [r for r in results if r is not None]

    def _mail_options(self, msg: OutMessage, utf8: bool) -> list[bytes]:
        options = []
        if self.supports("size"):
            options.append(f"SIZE={len(msg.data)}")
        if self.supports("8bitmime") and not msg.data.isascii():
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        if self.dsn:
            if msg.ret:
                options.append(f"RET={msg.ret}")
            if msg.envid:
                options.append(f"ENVID={msg.envid}")
        return [o.encode("ascii") for o in options]

    def _rcpt_options(self, rcpt: OutRecipient) -> list[bytes]:
        if not self.dsn:
            return []
        options = []
        if rcpt.notify:
            options.append("NOTIFY=" + ",".join(rcpt.notify))
        if rcpt.orcpt:
            options.append(f"ORCPT={rcpt.orcpt}")
        return [o.encode("ascii", "replace") for o in options]

    async def _reset(self) -> None:
        """RSET after a refused transaction so the session can carry the next one."""
        try:
            resp = await self._smtp.execute_command(b"RSET")
        except _SESSION_ERRORS:
            self.broken = True
            return
        if resp.code != 250:
            self.broken = True

    def abort(self) -> None:
        """Drop the connection at once (shutdown ran out of grace)."""
        self.broken = True
        self._smtp.close()

    async def close(self) -> None:
        """QUIT politely; a peer that already hung up is fine too."""
        try:
            if not self.broken and self._smtp.is_connected:
                await self._smtp.quit()
        except _SESSION_ERRORS:
            pass
        finally:
            self._smtp.close()
