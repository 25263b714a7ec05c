"""The envelope of one message transaction, as the intake receives it."""

from __future__ import annotations

from dataclasses import dataclass, field

from postwarden.mail.address import Address


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One RCPT with its RFC 3461 parameters."""

    address: Address
    notify: tuple[str, ...] = ()  # e.g. ("SUCCESS", "FAILURE"), or ("NEVER",)
    orcpt: str | None = None  # "rfc822;user@example" as given


@dataclass(frozen=True, slots=True)
class Envelope:
    """Sender (None = null sender), recipients and DSN/body parameters."""

    sender: Address | None
    recipients: tuple[DsnRecipient, ...]
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None
    body: str = "7BIT"  # "7BIT" | "8BITMIME" | "BINARYMIME"
    smtputf8: bool = False
    extra: dict[str, str] = field(default_factory=dict)
