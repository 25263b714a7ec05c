"""The queue manager: picks due recipients, delivers them, records every attempt.

Shape (after Postfix's qmgr): a runner takes due messages into a bounded
active window, splits each message's due recipients by next hop (one job per
hop, so all recipients for one host share one transaction), and hands jobs to
per-destination workers. A worker holds one SMTP session and drains its
destination's jobs over it, so messages to one host reuse the connection.
Workers are bounded per destination and in total.

Durability: a message's results are recorded only after the attempt, and an
entry is dropped only when no recipient is pending, so a crash at any point
resends (at-least-once) but never loses. Reports go through the intake, the
only door into storage, with the null sender: a report never causes another.

Several managers (two `serve` processes on one data directory, or nodes on
one database) share the queue through leases: a manager claims due messages
for ``[delivery] lease_seconds``, extends the lease while it works on them,
and its results count only while it still holds the lease from that same
claim (each claim has a fresh token), which recording them releases. A
manager that dies leaves leases that run out, and another takes its messages
over; only what it had in flight can go out twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dkim import DKIMException

from postwarden.config import Config, Route
from postwarden.delivery.dkimsign import Signer
from postwarden.delivery.notify import (
    next_hop_notify,
    send_reports,
    unproven_sender,
    wants,
    within_origin,
)
from postwarden.delivery.outbound import (
    HostUnavailable,
    Outcome,
    OutMessage,
    OutRecipient,
    RcptResult,
    Session,
)
from postwarden.delivery.reports import Action, RecipientReport, permanent_status, status_of
from postwarden.delivery.resolver import Hop, MXResolver, ResolveError
from postwarden.intake.accept import Intake
from postwarden.log import kv
from postwarden.metrics import Metrics
from postwarden.policy.retry import next_retry
from postwarden.policy.routing import NextHop, next_hop
from postwarden.storage.boundary import AsyncBlobs, AsyncQueue
from postwarden.storage.interfaces import (
    AttemptRecord,
    QueuedMessage,
    QueueRecipient,
    RecipientState,
    StoreUnavailable,
)

log = logging.getLogger("postwarden.delivery")
T = TypeVar("T")

# The longest the runner sleeps without looking at the queue, so that a
# `queue retry` from the CLI (another process) is noticed within a second.
POLL_SECONDS = 1.0
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def received_count(message: bytes) -> int:
    """Received fields in the header section: the hop count for loop detection."""
    match = _HEADER_END.search(message)
    head = message if match is None else message[: match.end()]
    return len(_RECEIVED.findall(head))


@dataclass(slots=True)
class _Tracker:
    """One message in the active window, gathering its jobs' results."""

    msg: QueuedMessage
    jobs: int = 0
    data: bytes | None = None
    head: bytes | None = None  # DKIM signatures, made once per message
    # (recipient, result, whether the peer took the DSN parameters)
    results: list[tuple[QueueRecipient, RcptResult, bool]] = field(default_factory=list)
    reported: bool = False  # its reports are in; only the record is left


@dataclass(slots=True)
class _Job:
    tracker: _Tracker
    recipients: tuple[QueueRecipient, ...]


@dataclass(slots=True)
class _Destination:
    """One next hop and the jobs waiting for it."""

    hop: NextHop
    jobs: deque[_Job] = field(default_factory=deque)
    workers: int = 0


def lease_owner(hostname: str) -> str:
    """Names this manager in the queue's leases: unique per process run."""
    return f"{hostname}/{os.getpid()}/{os.urandom(4).hex()}"


class QueueManager:
    def __init__(self, cfg: Config, queue: AsyncQueue, blobs: AsyncBlobs, intake: Intake,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time) -> None:
        self._cfg = cfg
        self._clock = clock  # wall time, as leases and retry times are kept in the queue
        self._metrics = metrics or Metrics()
        self._d = cfg.delivery
        self._queue = queue
        self._blobs = blobs
        self._intake = intake
        self._signer = Signer(cfg.data_dir, self._d.dkim_rotation_delay)
        self._resolver = MXResolver(cfg.dns.nameservers, self._d.mx_port, self._d.connect_timeout)
        self.owner = lease_owner(cfg.hostname)
        self._wake_event = asyncio.Event()
        self._slots = asyncio.Semaphore(self._d.max_concurrent)
        self._inflight: dict[str, _Tracker] = {}
        self._destinations: dict[str, _Destination] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def reroute(self, routes: tuple[Route, ...]) -> None:
        """SIGHUP: destinations looked up from now on follow these ``[[routes]]``."""
        self._cfg = dataclasses.replace(self._cfg, routes=routes)

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the runner; due mail (also from before a restart) goes at once."""
        self._runner = asyncio.create_task(self._run(), name="delivery-runner")

    def wake(self) -> None:
        """New mail was queued: look now rather than at the next poll."""
        self._wake_event.set()

    async def stop(self, grace: float) -> None:
        """Take no new work; give deliveries in flight ``grace`` seconds, then cancel.

        A cancelled delivery was never recorded, so its recipients stay
        queued and go out after the restart; finished ones are recorded now.
        """
        self._stopping = True
        self._wake_event.set()
        if self._runner is not None:
            await self._runner
        if self._workers:
            _, late = await asyncio.wait(set(self._workers), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for tracker in list(self._inflight.values()):
            if tracker.results:
                await self._finalize(tracker)
        self._inflight.clear()
        # What was cancelled is free for another manager at once, not after the lease.
        await self._queue.release_leases(self.owner)

    def _spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        into.add(task)
        task.add_done_callback(into.discard)
        task.add_done_callback(_log_crash)

    # --- the runner -------------------------------------------------------------

    async def _run(self) -> None:
        """Claim and dispatch until stopped; a store outage pauses it, never ends it."""
        while not self._stopping:
            try:
                await self._claim_loop()
            except StoreUnavailable as exc:
                log.warning(kv("delivery store-unavailable", error=str(exc),
                               retry=f"{POLL_SECONDS:.0f}s"))
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_event.wait(), POLL_SECONDS)

    async def _claim_loop(self) -> None:
        lease = self._d.lease_seconds
        extended = time.monotonic()
        while not self._stopping:
            self._wake_event.clear()
            now = self._clock()
            if self._inflight and time.monotonic() - extended >= lease / 3:
                extended = time.monotonic()
                await self._queue.extend_leases(self.owner, now + lease)
            # Connections are bounded apart, by [delivery] max_concurrent.
            room = self._d.active_window - len(self._inflight)
            if room >= self._d.active_window // 4 or not self._inflight:
                claimed = await self._queue.claim_due(self.owner, now, room, now + lease)
                for msg in claimed:
                    self._dispatch(within_origin(msg), now)
                if len(claimed) >= room > 0:
                    continue  # the window is not full and more may be waiting
            nxt = await self._queue.next_due_time()
            timeout = POLL_SECONDS if nxt is None or nxt <= now else min(POLL_SECONDS, nxt - now)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake_event.wait(), timeout)

    def _dispatch(self, msg: QueuedMessage, now: float) -> None:
        due = [
            r for r in msg.recipients
            if r.state is RecipientState.PENDING and r.next_attempt <= now
        ]
        tracker = _Tracker(msg)
        self._inflight[msg.queue_id] = tracker
        if not due:  # changed since the claim (`queue` CLI): give the lease back
            self._spawn(self._finalize(tracker), self._tasks)
            return
        groups: dict[str, tuple[NextHop, list[QueueRecipient]]] = {}
        for rcpt in due:
            hop = next_hop(
                rcpt.address.rpartition("@")[2], self._cfg.routes, self._d.smarthost,
                self._d.mx_port,
            )
            groups.setdefault(hop.key, (hop, []))[1].append(rcpt)
        tracker.jobs = len(groups)
        for key, (hop, rcpts) in groups.items():
            dest = self._destinations.setdefault(key, _Destination(hop))
            dest.jobs.append(_Job(tracker, tuple(rcpts)))
            if dest.workers < min(self._d.max_per_destination, len(dest.jobs)):
                dest.workers += 1
                self._spawn(self._worker(key, dest), self._workers)

    # --- workers ----------------------------------------------------------------

    async def _worker(self, key: str, dest: _Destination) -> None:
        """Drain one destination's jobs over one session (reconnecting if it breaks)."""
        session: Session | None = None
        down: RcptResult | None = None  # the destination failed this pass: defer the rest
        try:
            async with self._slots:
                while dest.jobs and not self._stopping:
                    job = dest.jobs.popleft()
                    results, session, down = await self._attempt(dest, job, session, down)
                    self._job_done(job, results, session is not None and session.dsn)
        except asyncio.CancelledError:
            if session is not None:
                session.abort()  # no polite QUIT: stop() has no more time to give
            raise
        finally:
            dest.workers -= 1
            if dest.workers == 0 and not dest.jobs:
                self._destinations.pop(key, None)
            if session is not None:
                await session.close()

    async def _attempt(
        self, dest: _Destination, job: _Job, session: Session | None, down: RcptResult | None
    ) -> tuple[list[RcptResult], Session | None, RcptResult | None]:
        tracker = job.tracker
        n = len(job.recipients)
        if tracker.data is None:
            try:
                tracker.data = await self._blobs.read_blob(tracker.msg.blob)
            except StoreUnavailable:
                gone = RcptResult(Outcome.DEFERRED, "451 4.3.0 Message store unavailable", None)
                return self._logged(job, [gone] * n, "-"), session, down
        data: bytes = tracker.data
        hops = received_count(data)
        if hops > self._d.max_received_headers:
            reply = f"554 5.4.6 Too many hops ({hops} Received headers): mail loop?"
            loop = RcptResult(Outcome.FAILED, reply, None)
            return self._logged(job, [loop] * n, "-"), session, down
        if down is not None:
            return self._logged(job, [down] * n, down.remote_mta or "-"), session, down
        if session is not None and session.broken:
            await session.close()
            session = None
        if session is None:
            try:
                session = await self._open(dest.hop)
            except ResolveError as exc:
                outcome = Outcome.FAILED if exc.permanent else Outcome.DEFERRED
                down = RcptResult(outcome, exc.reply, None)
            except HostUnavailable as exc:
                down = RcptResult(Outcome.DEFERRED, exc.reply, exc.remote_mta)
            if down is not None:  # the same answer holds for this destination's other jobs
                return self._logged(job, [down] * n, down.remote_mta or "-"), None, down
        assert session is not None
        msg = tracker.msg
        if tracker.head is None:
            tracker.head = await self._sign(msg, data)
        out = OutMessage(
            sender=self._envelope_sender(msg),
            recipients=tuple(OutRecipient(r.address, next_hop_notify(msg, r), r.orcpt)
                             for r in job.recipients),
            data=data, envid=msg.envid, ret=msg.ret, smtputf8=msg.smtputf8, head=tracker.head,
        )
        results = await session.send(out)
        return self._logged(job, results, session.hop.name), session, None

    def _envelope_sender(self, msg: QueuedMessage) -> str:
        """A stranger's mail leaving us can only be alias forwarding: it gets an SRS sender.

        So SPF at the next hop checks us, and its bounces come back through us
        (``policy.srs``), unless nothing vouched for that sender: then the
        address says so and its bounces are refused. Our own users' and
        reports' senders go out as they are.
        """
        srs = self._intake.recipients.srs
        if srs is None or msg.trusted_origin or not msg.sender:
            return msg.sender
        return srs.forward(msg.sender, self._clock(), proven=not unproven_sender(msg))

    async def _sign(self, msg: QueuedMessage, data: bytes) -> bytes:
        """DKIM signatures for mail we vouch for (never for a stranger's), made in a thread.

        A message dkimpy cannot sign, or an unreadable key, goes out unsigned
        with a warning rather than waiting: the receiver judges it as unsigned.
        """
        if not msg.trusted_origin:
            return b""
        try:
            head, used = await asyncio.to_thread(self._signer.signature, data)
        except (DKIMException, OSError, ValueError, KeyError) as exc:
            log.warning(kv("dkim", queue_id=msg.queue_id, outcome="unsigned",
                           reason=f"{type(exc).__name__}: {exc}"))
            return b""
        if used:
            log.info(kv("dkim", queue_id=msg.queue_id, outcome="signed", keys=used))
        return head

    async def _open(self, hop: NextHop) -> Session:
        hops: list[Hop] = await self._resolver.hops(hop)
        return await Session.open(
            hops, self._cfg.hostname, self._d.connect_timeout, self._d.command_timeout
        )

    def _logged(self, job: _Job, results: list[RcptResult], host: str) -> list[RcptResult]:
        delay = self._clock() - job.tracker.msg.created
        for rcpt, result in zip(job.recipients, results, strict=True):
            log.info(kv(
                "delivery", queue_id=job.tracker.msg.queue_id, rcpt=rcpt.address,
                host=result.remote_mta or host, reply=result.reply, delay=f"{delay:.1f}s",
                outcome=result.outcome.value,
            ))
            self._metrics.delivery(result.outcome.value, delay)
        return results

    def _job_done(self, job: _Job, results: Sequence[RcptResult], dsn: bool) -> None:
        tracker = job.tracker
        pairs = zip(job.recipients, results, strict=True)
        tracker.results.extend((r, res, dsn) for r, res in pairs)
        tracker.jobs -= 1
        if tracker.jobs == 0:
            self._spawn(self._finalize(tracker), self._tasks)

    # --- after the attempt: reports, then the record ------------------------------

    async def _finalize(self, tracker: _Tracker) -> None:
        """Send the reports the attempt calls for, then record it; then it leaves the window.

        With the store unreachable it tries again every second, holding the
        message (and extending its lease) meanwhile, so what was sent is not
        sent again once the store is back; a stop gives up, and the message
        goes again after the restart (at-least-once), as after a crash.
        """
        while True:
            try:
                await self._report_and_record(tracker)
                break
            except StoreUnavailable as exc:
                log.warning(kv("delivery store-unavailable", queue_id=tracker.msg.queue_id,
                               error=str(exc), retry=f"{POLL_SECONDS:.0f}s"))
                if self._stopping:
                    break
                await asyncio.sleep(POLL_SECONDS)
        if self._inflight.get(tracker.msg.queue_id) is tracker:  # not a later claim's
            del self._inflight[tracker.msg.queue_id]
        self._wake_event.set()

    async def _report_and_record(self, tracker: _Tracker) -> None:
        """Reports first: a crash in between resends a report (at-least-once) rather
        than losing one."""
        msg = tracker.msg
        now = self._clock()
        expired = now - msg.created >= self._d.max_queue_lifetime
        delivered: list[int] = []
        failed: list[tuple[int, str, str | None]] = []
        deferred: list[tuple[int, str, str | None, float]] = []
        reports: dict[Action, list[RecipientReport]] = {}
        delay_notice = (
            not msg.delay_notified and now - msg.created >= self._d.delay_warning_after
        )
        for rcpt, res, dsn in tracker.results:
            report: RecipientReport | None = None
            if res.outcome is Outcome.SENT:
                delivered.append(rcpt.id)
                if not dsn and wants(rcpt, "SUCCESS"):
                    report = RecipientReport(
                        rcpt.address, rcpt.orcpt, Action.RELAYED, "2.0.0", res.reply,
                        res.remote_mta, now,
                    )
            elif res.outcome is Outcome.FAILED or expired:
                failed.append((rcpt.id, res.reply, res.remote_mta))
                status = "5.4.7" if res.outcome is Outcome.DEFERRED else status_of(res.reply)
                if wants(rcpt, "FAILURE"):
                    report = RecipientReport(
                        rcpt.address, rcpt.orcpt, Action.FAILED, permanent_status(status),
                        res.reply, res.remote_mta, now,
                    )
            else:
                when = next_retry(msg.created, now, self._d.retry_intervals)
                deferred.append((rcpt.id, res.reply, res.remote_mta, when))
                if delay_notice and wants(rcpt, "DELAY"):
                    report = RecipientReport(
                        rcpt.address, rcpt.orcpt, Action.DELAYED, status_of(res.reply),
                        res.reply, res.remote_mta, now,
                        will_retry_until=msg.created + self._d.max_queue_lifetime,
                    )
            if report is not None:
                reports.setdefault(report.action, []).append(report)
        if msg.sender and reports and not tracker.reported:
            await self._send_reports(tracker, reports, now)
        tracker.reported = True
        record = AttemptRecord(
            msg.queue_id, tuple(delivered), tuple(failed), tuple(deferred),
            delay_notified=delay_notice and bool(deferred), lease_token=msg.lease_token,
        )
        # Joins the attempts finishing now in one transaction (one fsync).
        began = time.monotonic()
        recorded = await self._queue.record_attempt(self.owner, record)
        self._metrics.store_call("record_attempt", time.monotonic() - began)
        if not recorded:
            log.warning(kv(
                "lease-lost", queue_id=msg.queue_id, outcome="possible-duplicate",
                detail="results not recorded: the entry was removed, or its lease ran out"
                " and it was claimed again, and may be delivered again",
            ))

    async def _send_reports(
        self, tracker: _Tracker, reports: dict[Action, list[RecipientReport]], now: float
    ) -> None:
        if tracker.data is None:
            tracker.data = await self._blobs.read_blob(tracker.msg.blob)
        await send_reports(self._intake, self._cfg.hostname, tracker.msg, tracker.data,
                           reports, now)


def _log_crash(task: asyncio.Task[Any]) -> None:
    """A bug in a worker must show in the log, not vanish with the task."""
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery task failed", exc_info=task.exception())
