"""`postwarden queue list|show|retry|remove`: the outbound queue from the shell.

These work on the database alone, so they are safe while the server runs:
the running queue manager polls the queue and notices a `retry` within a
second. `remove` sends no report unless `--report` asks for one: then the
sender gets a non-delivery report for the recipients still pending, through
the same intake the server uses.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from postwarden.config import Config
from postwarden.delivery.notify import send_reports, wants, within_origin
from postwarden.delivery.reports import Action, RecipientReport
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.storage.factory import Store, async_boundary
from postwarden.storage.interfaces import (
    NotFound,
    QueuedMessage,
    QueueStore,
    RecipientState,
    SenderProof,
)

REMOVED = "Removed from the queue by the administrator"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _next_attempt(msg: QueuedMessage, now: float) -> str:
    pending = [r.next_attempt for r in msg.recipients if r.state is RecipientState.PENDING]
    if not pending:
        return "-"
    first = min(pending)
    return "now" if first <= now else f"in {_age(first - now)}"


def _last_error(msg: QueuedMessage) -> str:
    errors = [r.last_error for r in msg.recipients if r.last_error]
    return errors[-1] if errors else "-"


def _get(queue: QueueStore, queue_id: str) -> QueuedMessage:
    msg = queue.get_queued(queue_id)
    if msg is None:
        raise NotFound(f"no such queue entry: {queue_id}")
    return msg


def _list(queue: QueueStore, now: float) -> None:
    ids = queue.queued_ids()
    if not ids:
        print("queue is empty")
        return
    print(f"{'ID':<16}  {'AGE':>5}  {'SENDER':<30}  {'NEXT':<8}  RECIPIENTS / LAST ERROR")
    for queue_id in ids:
        msg = queue.get_queued(queue_id)
        if msg is None:  # delivered since the listing began
            continue
        pending = [r.address for r in msg.recipients if r.state is RecipientState.PENDING]
        print(
            f"{msg.queue_id:<16}  {_age(now - msg.created):>5}  {msg.sender or '<>':<30}  "
            f"{_next_attempt(msg, now):<8}  {', '.join(pending) or '-'}"
        )
        print(f"{'':<16}  {'':>5}  {'':<30}  {'':<8}  {_last_error(msg)}")
    print(f"{len(ids)} message(s) in the queue")


def _show(msg: QueuedMessage, now: float) -> None:
    print(f"ID:          {msg.queue_id}")
    print(f"sender:      <{msg.sender}>")
    print(f"arrived:     {_when(msg.created)} UTC ({_age(now - msg.created)} ago)")
    print(f"size:        {msg.size}")
    print(f"envid:       {msg.envid or '-'}")
    print(f"ret:         {msg.ret or '-'}")
    print(f"smtputf8:    {'yes' if msg.smtputf8 else 'no'}")
    print(f"origin:      {'vouched for' if msg.trusted_origin else 'stranger'}"
          f"{'' if msg.trusted_origin else _stranger_reports(msg.sender_proof)}")
    print(f"delay note:  {'sent' if msg.delay_notified else 'not sent'}")
    held = msg.lease_owner is not None and msg.lease_until > now
    lease = f"by {msg.lease_owner} until {_when(msg.lease_until)} UTC" if held else "no"
    print(f"in delivery: {lease}")
    for r in msg.recipients:
        nxt = _when(r.next_attempt) + " UTC" if r.state is RecipientState.PENDING else "-"
        print(f"recipient:   <{r.address}>  state={r.state.value}  attempts={r.attempts}")
        print(f"  next:      {nxt}")
        print(f"  notify:    {','.join(r.notify) or '-'}  orcpt: {r.orcpt or '-'}")
        print(f"  remote:    {r.remote_mta or '-'}")
        print(f"  error:     {r.last_error or '-'}")


def _stranger_reports(proof: SenderProof) -> str:
    if proof is SenderProof.NONE:
        return " (no SPF or aligned DKIM pass: no reports)"
    vouched = f", {proof.value} passed" if proof.value else ""
    return f" (reports: headers only, no success{vouched})"


async def _report_removal(cfg: Config, store: Store, msg: QueuedMessage, now: float) -> int:
    """A failure report for the pending recipients that want one; returns reports sent."""
    msg = within_origin(msg)
    rcpts = [
        RecipientReport(r.address, r.orcpt, Action.FAILED, "5.0.0", REMOVED, None, now)
        for r in msg.recipients if r.state is RecipientState.PENDING and wants(r, "FAILURE")
    ]
    if not rcpts:
        return 0
    aio = async_boundary(store)
    policy = RecipientPolicy(aio, cfg.relay, cfg.hostname)
    intake = Intake(store.blobs, aio, policy, cfg.hostname, cfg.delivery.max_received_headers)
    try:
        original = store.blobs.read_blob(msg.blob)
        return await send_reports(intake, cfg.hostname, msg, original, {Action.FAILED: rcpts}, now)
    finally:
        await aio.aclose()


def _remove(cfg: Config, store: Store, queue_id: str, report: bool, now: float) -> None:
    msg = _get(store.queue, queue_id)
    # The report first: a crash in between leaves the message queued, never unreported.
    sent = asyncio.run(_report_removal(cfg, store, msg, now)) if report else 0
    if not store.queue.remove_queued(queue_id):
        raise NotFound(f"no such queue entry: {queue_id}")
    note = f"report sent to <{msg.sender}>" if sent else "no report sent"
    print(f"removed {queue_id} ({note})")


def run_queue_command(cfg: Config, store: Store, args: argparse.Namespace) -> int:
    """Dispatch one `queue` sub-command; errors are raised as StoreError subclasses."""
    now = time.time()
    match args.action:
        case "list":
            _list(store.queue, now)
        case "show":
            _show(_get(store.queue, args.id), now)
        case "retry" if args.all:
            print(f"{store.queue.retry_now(None, now)} recipient(s) scheduled for delivery now")
        case "retry":
            _get(store.queue, args.id)
            print(f"{store.queue.retry_now(args.id, now)} recipient(s) of {args.id} scheduled now")
        case "remove":
            _remove(cfg, store, args.id, args.report, now)
    return 0
