"""A byte-level stand-in for the server glue, for the SMTP machine's tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from postwarden.mail.reply import AUTH_OK, OK, RECIPIENT_OK, SENDER_OK, Reply
from postwarden.protocol.smtp import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Closed,
    DataChunk,
    DataEnd,
    Event,
    MailFrom,
    RcptTo,
    SMTPSession,
    SMTPSettings,
    StartTLS,
)

HOST = "mx.example.test"
BANNER = f"220 {HOST} ESMTP postwarden\r\n".encode()
QUEUED = OK.with_text("Ok: queued as TEST1")
SETTINGS = SMTPSettings(
    hostname=HOST,
    max_message_size=10_000,
    max_recipients=3,
    starttls_available=True,
    tls_active=False,
    auth_available=True,
    auth_without_tls=False,
)

Decide = Callable[[Event], Reply]


def default_decide(event: Event) -> Reply:
    match event:
        case MailFrom():
            return SENDER_OK
        case RcptTo():
            return RECIPIENT_OK
        case DataEnd():
            return QUEUED
        case AuthCredentials():
            return AUTH_OK
    raise AssertionError(f"no decision for {event}")


class Driver:
    """Feeds bytes, answers decisions, records events; returns the bytes sent."""

    def __init__(self, decide: Decide = default_decide, **settings: Any) -> None:
        self.session = SMTPSession(replace(SETTINGS, **settings))
        self.decide = decide
        self.events: list[Event] = []
        self.banner = self.session.data_to_send()

    def feed(self, data: bytes) -> bytes:
        self.session.receive_data(data)
        self.pump()
        return self.session.data_to_send()

    def pump(self) -> None:
        while True:
            event = self.session.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            assert not isinstance(event, type)
            self.events.append(event)
            if isinstance(event, AuthCredentials):
                reply = self.decide(event)
                self.session.send(reply, login=event.username if reply.is_positive else None)
            elif isinstance(event, MailFrom | RcptTo | DataEnd):
                self.session.send(self.decide(event))
            if isinstance(event, Closed | StartTLS):
                return

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.of(DataChunk))


def replies(*items: Reply) -> bytes:
    return b"".join(item.encode() for item in items)
