"""Sending delivery reports back to a message's sender, from the queue manager or the CLI.

Reports go through the intake, the only door into storage, with the null
sender: a local sender gets them in the INBOX at once, a remote one through
the queue, and a report that cannot be delivered never causes another.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from postwarden.delivery.reports import Action, RecipientReport, ReportInput, compose_report
from postwarden.intake.accept import Intake, IntakeError
from postwarden.log import kv
from postwarden.mail.address import AddressError, parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.interfaces import QueuedMessage, QueueRecipient, SenderProof

log = logging.getLogger("postwarden.delivery")


def within_origin(msg: QueuedMessage) -> QueuedMessage:
    """The message with the DSN options its origin entitles it to.

    Anyone may put a victim's address in MAIL FROM, so a message whose client
    neither authenticated nor may relay (say, a stranger writing to an alias
    that forwards off-site) gets reports with the headers only, whatever RET
    says, and no success notice: neither from us nor asked of the next hop.
    When the sender checks found that neither SPF nor aligned DKIM vouched
    for its domain, ``send_reports`` sends nothing and ``next_hop_notify``
    asks the next hop for no report at all.
    """
    if msg.trusted_origin:
        return msg
    recipients = tuple(
        dataclasses.replace(r, notify=tuple(n for n in r.notify if n != "SUCCESS") or ("NEVER",))
        if "SUCCESS" in r.notify else r
        for r in msg.recipients
    )
    return dataclasses.replace(msg, ret="HDRS", recipients=recipients)


def unproven_sender(msg: QueuedMessage) -> bool:
    """A stranger's envelope sender that neither SPF nor DKIM aligned with its domain
    vouched for when the mail came in: it gets no reports, from us or through us."""
    return not msg.trusted_origin and msg.sender_proof is SenderProof.NONE


def next_hop_notify(msg: QueuedMessage, rcpt: QueueRecipient) -> tuple[str, ...]:
    """The NOTIFY to ask of the next hop: none at all for a sender nothing vouched for."""
    if unproven_sender(msg):
        return ("NEVER",)
    return rcpt.notify


def wants(rcpt: QueueRecipient, kind: str) -> bool:
    """RFC 3461 NOTIFY; without it we report failures and delays (§4.1)."""
    if not rcpt.notify:
        return kind in ("FAILURE", "DELAY")
    return kind in rcpt.notify


async def send_reports(
    intake: Intake,
    hostname: str,
    msg: QueuedMessage,
    original: bytes,
    reports: dict[Action, list[RecipientReport]],
    now: float,
) -> int:
    """One report per action to the envelope sender; returns how many were accepted."""
    if not msg.sender:
        return 0  # never a report to <>
    if unproven_sender(msg):
        log.info(kv("report-suppressed", queue_id=msg.queue_id, to=msg.sender,
                    reason="neither SPF nor DKIM aligned with the sender's domain passed"
                           " when it came in (a forged sender gets no backscatter)"))
        return 0
    try:
        to = parse_address(msg.sender)
    except AddressError:
        log.warning(kv("report-skipped", queue_id=msg.queue_id, reason="bad sender"))
        return 0
    info = ReportInput(hostname, msg.sender, msg.envid, msg.ret, msg.created, original)
    sent = 0
    for action, rcpts in reports.items():
        token = os.urandom(8).hex()
        data = compose_report(
            info, action, rcpts, now=now, boundary=f"{msg.queue_id}.{token}",
            message_id=f"<{msg.queue_id}.{token}@{hostname}>",
        )
        envelope = Envelope(sender=None, recipients=(DsnRecipient(to),))
        try:
            accepted = await intake.submit(envelope, data)
        except IntakeError as exc:
            log.warning(kv("report-refused", queue_id=msg.queue_id, error=str(exc)))
            continue
        sent += 1
        log.info(kv(
            "report", queue_id=msg.queue_id, action=action.value, to=msg.sender,
            report_id=accepted.queue_id,
        ))
    return sent
