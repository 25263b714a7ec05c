"""The SMTP server machine: ``SMTPSession`` and the events it emits."""

from postwarden.protocol.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataAborted,
    DataChunk,
    DataEnd,
    Decision,
    Event,
    Hello,
    MailFrom,
    MailRefused,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
)
from postwarden.protocol.smtp.machine import CHUNK_SIZE, SMTPSession, SMTPSettings, State

__all__ = [
    "CHUNK_SIZE",
    "NEED_DATA",
    "PAUSED",
    "AuthCredentials",
    "Closed",
    "DataAborted",
    "DataChunk",
    "DataEnd",
    "Decision",
    "Event",
    "Hello",
    "MailFrom",
    "MailRefused",
    "Quit",
    "RcptTo",
    "Reset",
    "SMTPSession",
    "SMTPSettings",
    "StartTLS",
    "State",
]
