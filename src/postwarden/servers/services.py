"""What app.py hands each listener: only the interfaces that listener needs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from postwarden.config import Config
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.intake.senderauth import SenderAuth
from postwarden.metrics import Metrics
from postwarden.servers.common import Authenticator, ConnectionLimiter
from postwarden.storage.boundary import AsyncDirectory, AsyncMailboxStore
from postwarden.storage.events import ChangeFeed


@dataclass(frozen=True, slots=True)
class SMTPServices:
    cfg: Config
    intake: Intake
    recipients: RecipientPolicy
    auth: Authenticator
    tls: ssl.SSLContext | None
    metrics: Metrics = field(default_factory=Metrics)
    sender_auth: SenderAuth | None = None  # [auth_checks] on the MX listener


@dataclass(frozen=True, slots=True)
class MailboxServices:
    """For POP3 and IMAP: mailbox reads/writes (and message files) through the
    async boundary, and the intake only for IMAP APPEND."""

    cfg: Config
    directory: AsyncDirectory
    mailboxes: AsyncMailboxStore
    auth: Authenticator
    tls: ssl.SSLContext | None
    changes: ChangeFeed  # IMAP IDLE and NOOP hear of mailbox changes here
    intake: Intake | None = None  # IMAP APPEND's door into the store (None: APPEND refused)
    metrics: Metrics = field(default_factory=Metrics)


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket's role."""

    kind: str  # a key of [listen]
    implicit_tls: bool
    limiter: ConnectionLimiter
