"""A postwarden delivery stack in-process: real store, intake and queue manager.

Messages enter exactly as the SMTP server hands them over (through the
intake, with our Received header); reports land in the local sender's INBOX.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postwarden.config import Config, from_dict
from postwarden.delivery.manager import QueueManager
from postwarden.intake.accept import Accepted, Intake, new_queue_id
from postwarden.intake.headers import TraceInfo
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.interfaces import QueuedMessage
from postwarden.storage.mailbox import Field, UidSet
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.store import SqliteStore

HOSTNAME = "mx.local.test"
SENDER = "alice@local.test"


def message(subject: str = "hello", body: str = "Hi there.\r\n", extra: str = "") -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <someone@remote.test>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@local.test>\r\n{extra}\r\n{body}"
    ).encode()


def make_config(root: Path, **sections: Any) -> Config:
    raw: dict[str, Any] = {"hostname": HOSTNAME, "data_dir": "var"}
    delivery = {"retry_intervals": ["1h"], "connect_timeout": 5, "command_timeout": 10}
    delivery.update(sections.pop("delivery", {}))
    raw["delivery"] = delivery
    raw.update(sections)
    return from_dict(raw, root / "postwarden.toml")


class World:
    def __init__(self, root: Path, cfg: Config, *, intake_max_received: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = SqliteStore(cfg.data_dir)
        self.store.directory.add_domain("local.test")
        self.store.directory.add_account(SENDER, "x")
        self.manager: QueueManager | None = None
        self.aio = AsyncSqliteStore(self.store)
        self.intake = Intake(
            self.store.blobs, self.aio,
            RecipientPolicy(self.aio, cfg.relay, cfg.hostname),
            cfg.hostname, intake_max_received or cfg.delivery.max_received_headers,
            on_queued=self._wake,
        )
        self.manager = QueueManager(cfg, self.aio, self.aio, self.intake, clock=clock)

    def _wake(self) -> None:
        if self.manager is not None:
            self.manager.wake()

    async def start(self) -> World:
        assert self.manager is not None
        await self.manager.start()
        return self

    async def stop(self) -> None:
        if self.manager is not None:
            await self.manager.stop(grace=5)
        self.aio.close()
        self.store.close()

    async def submit(
        self,
        *recipients: str,
        sender: str | None = SENDER,
        data: bytes | None = None,
        notify: tuple[str, ...] = (),
        orcpt: str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        smtputf8: bool = False,
        trusted: bool = True,
    ) -> Accepted:
        """As the SMTP server does after DATA: trace header, then the intake."""
        queue_id = new_queue_id()
        trace = TraceInfo("client.local.test", "192.0.2.7", HOSTNAME, queue_id, "ESMTPSA", None)
        builder = self.intake.open_message(queue_id, trace, add_submission_headers=True)
        builder.write(data if data is not None else message())
        envelope = Envelope(
            sender=parse_address(sender) if sender else None,
            recipients=tuple(DsnRecipient(parse_address(r), notify, orcpt) for r in recipients),
            ret=ret, envid=envid, smtputf8=smtputf8,
        )
        return await self.intake.accept(queue_id, envelope, builder, trusted_origin=trusted)

    def inbox(self) -> list[email.message.Message]:
        box = self.store.mailboxes.get_mailbox(SENDER, "INBOX")
        assert box is not None
        return [
            email.message_from_bytes(
                self.store.blobs.read_blob(m.blob.name), policy=email.policy.compat32
            )
            for m in self.store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
            if m.blob is not None
        ]

    def queued(self, queue_id: str) -> QueuedMessage | None:
        return self.store.queue.get_queued(queue_id)

    async def until(self, check: Callable[[], bool], timeout: float = 15) -> None:
        """Bounded poll of observable state (the store lives in SQLite, not in events)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.02)

    def age(self, queue_id: str, seconds: float) -> None:
        """Time travel: make a queued message look ``seconds`` older."""
        with self.store.db.tx() as db:
            db.execute(
                "UPDATE queue_messages SET created = created - ? WHERE queue_id = ?",
                (seconds, queue_id),
            )


def delivery_status(report: email.message.Message) -> list[email.message.Message]:
    """The message/delivery-status part's field groups: [per-message, per-recipient...]."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    part = report.get_payload(1)
    assert isinstance(part, email.message.Message)
    assert part.get_content_type() == "message/delivery-status"
    groups = part.get_payload()
    assert isinstance(groups, list)
    return groups
