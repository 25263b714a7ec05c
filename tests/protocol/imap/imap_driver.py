"""Drive an IMAPSession with bytes, as the byte-level IMAP tests do."""

from __future__ import annotations

from dataclasses import replace

from postwarden.protocol.imap import IMAPSession, IMAPSettings, State
from postwarden.protocol.imap.commands import Select
from postwarden.protocol.imap.events import NEED_DATA, PAUSED, Closed, Event, LoginAttempt
from postwarden.protocol.imap.responses import Done, Status

SETTINGS = IMAPSettings(
    hostname="mail.example.test", tls_active=False, starttls_available=True, plaintext_auth=True,
)
OK = Done(Status.OK, "completed")


def new(**changes: object) -> IMAPSession:
    session = IMAPSession(replace(SETTINGS, **changes))  # type: ignore[arg-type]
    assert session.data_to_send().startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    return session


def say(session: IMAPSession, data: bytes) -> tuple[bytes, Event | type[NEED_DATA] | type[PAUSED]]:
    """Feed client bytes; return what the machine wrote and the event it stopped at."""
    session.receive_data(data)
    event = session.next_event()
    return session.data_to_send(), event


def answer(session: IMAPSession, done: Done = OK) -> tuple[bytes, object]:
    """Complete the outstanding command; return the output and the next event."""
    session.send(done)
    event = session.next_event()
    return session.data_to_send(), event


def logged_in(**changes: object) -> IMAPSession:
    session = new(**changes)
    _, event = say(session, b"L LOGIN joe secret\r\n")
    assert isinstance(event, LoginAttempt)
    out, _ = answer(session, Done(Status.OK, "Logged in"))
    assert out.startswith(b"L OK [CAPABILITY ")
    assert session.state is State.AUTHENTICATED
    return session


def selected(**changes: object) -> IMAPSession:
    session = logged_in(**changes)
    _, event = say(session, b"S SELECT INBOX\r\n")
    assert isinstance(event, Select)
    out, _ = answer(session)
    assert out == b"S OK [READ-WRITE] completed\r\n"
    assert session.state is State.SELECTED
    return session


def drain(session: IMAPSession) -> list[object]:
    """Every event up to NEED_DATA, answering each decision with OK."""
    seen: list[object] = []
    for _ in range(100_000):
        event = session.next_event()
        if event is NEED_DATA:
            return seen
        if event is PAUSED:
            session.send(OK)
            continue
        seen.append(event)
        if isinstance(event, Closed):
            return seen
    raise AssertionError("the machine never asked for more data")
