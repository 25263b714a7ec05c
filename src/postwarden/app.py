"""The composition root: builds each room, hands it only what it needs, runs ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from postwarden import config as configmod
from postwarden import log as logsetup
from postwarden.config import Config, ConfigError, LimitsConfig
from postwarden.delivery.manager import QueueManager
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.intake.senderauth import SenderAuth
from postwarden.log import kv
from postwarden.mail import reply as R
from postwarden.metrics import Metrics
from postwarden.policy.srs import from_config as srs_from_config
from postwarden.policy.throttle import AuthThrottle
from postwarden.servers.certificates import Challenges, Issued, certificate_pair
from postwarden.servers.common import Authenticator, ConnectionLimiter, Peer
from postwarden.servers.gate import Door, Gate, Handler, bind, twin
from postwarden.servers.hashing import HashPool
from postwarden.servers.http import HTTPServer, Site
from postwarden.servers.imap import IMAPServer
from postwarden.servers.pop3 import POP3Server
from postwarden.servers.services import MailboxServices, SMTPServices
from postwarden.servers.smtp import SMTPServer
from postwarden.servers.tls import LiveTLS
from postwarden.servers.workers import Listeners, Supervisor, WorkerMain, twins
from postwarden.service import Notifier, ServiceError, check_writable, drop_privileges, identity
from postwarden.storage.factory import Store, async_boundary, open_store
from postwarden.storage.interfaces import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from postwarden.servers.acme import Renewer

log = logging.getLogger("postwarden")
IMPLICIT_TLS = frozenset({"submissions", "pop3s", "imaps"})
SERVICE = {  # listener -> the connection budget it counts against
    "smtp": "smtp", "submission": "submission", "submissions": "submission",
    "pop3": "pop3", "pop3s": "pop3", "imap": "imap", "imaps": "imap", "http": "http",
    "acme_tls": "http",
}
_SMTP_BUSY = R.TOO_MANY_CONNECTIONS.encode()
_POP3_BUSY = b"-ERR [SYS/TEMP] too many connections\r\n"
_IMAP_BUSY = b"* BYE [UNAVAILABLE] too many connections\r\n"
_HTTP_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BUSY = {"smtp": _SMTP_BUSY, "submission": _SMTP_BUSY, "pop3": _POP3_BUSY, "imap": _IMAP_BUSY,
        "http": _HTTP_BUSY}
ACME_VALIDATION_SECONDS = 10  # a validator's connection: handshake, then it closes
LOGIN_RECORD_SWEEP_SECONDS = 60
STORE_UPKEEP_SECONDS = 2.0  # short idle steps keep indexing off the intake's way
M_MMAP_THRESHOLD = -3  # mallopt() parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024
READY_STORE_TIMEOUT = 5.0  # /readyz: a store slower than this to answer is "not ready"


# What a SIGHUP cannot change under a running process: kept, and logged as needing a restart.
RESTART_ONLY = ("hostname", "data_dir", "listen", "delivery", "dns", "storage", "service")
RESTART_ONLY_LIMITS = (  # built into long-lived parts at start: throttle, hash pool, doors, store
    "auth_failures_per_ip", "auth_failures_per_account", "auth_failure_window_seconds",
    "auth_workers", "auth_queue_timeout_seconds", "auth_flood_failures_per_minute",
    "auth_failure_delay_seconds", "auth_cache_entries", "handshake_timeout_seconds",
    "max_header_size", "mime_max_parts", "mime_max_depth", "mime_max_header_bytes",
    "mime_max_total_header_bytes",
)


def live_part(old: Config, new: Config) -> Config:
    """``new`` with what needs a restart kept as it is in ``old``."""
    limits = dataclasses.replace(
        new.limits, **{name: getattr(old.limits, name) for name in RESTART_ONLY_LIMITS})
    return dataclasses.replace(new, limits=limits,
                               **{name: getattr(old, name) for name in RESTART_ONLY})


def needs_restart(old: Config, new: Config) -> list[str]:
    """The settings that changed but cannot apply until a restart."""
    return ([name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
            + [f"limits.{name}" for name in RESTART_ONLY_LIMITS
               if getattr(old.limits, name) != getattr(new.limits, name)])


def connection_limits(limits: LimitsConfig) -> tuple[int, int, dict[str, int]]:
    """The ConnectionLimiter's numbers: in total, per client address, per service."""
    return limits.max_connections, limits.max_connections_per_ip, {
        "smtp": limits.max_connections_smtp,
        "submission": limits.max_connections_submission,
        "pop3": limits.max_connections_pop3,
        "imap": limits.max_connections_imap,
        "http": limits.max_connections_http,
    }



def bind_listeners(cfg: Config, reuse_port: bool = False) -> Listeners:
    """Every configured listening socket, bound now (as root, before privileges go)."""
    bound: Listeners = []
    try:
        for kind, addresses in cfg.listen.items():
            for hp in addresses:
                bound += [(kind, sock) for sock in bind(hp, reuse_port)]
    except OSError:
        for _, sock in bound:
            sock.close()
        raise
    return bound


class App:
    def __init__(self, cfg: Config, store: Store | None = None, *,
                 tls: LiveTLS | None = None, listeners: Listeners | None = None,
                 log_tag: str = "", upkeep: bool = True, worker: bool = False) -> None:
        self.cfg = cfg
        self.log_tag = log_tag  # which worker of ``serve --workers`` this is, in the log
        # Indexing and sweeps: one worker's job (safe in several, but each would parse
        # the same new messages: 1.6 parses per message with two workers, bench/README).
        self.upkeep = upkeep
        self.worker = worker  # one of ``serve --workers``: no ACME (see serve)
        self.metrics = Metrics()
        self.store = store or open_store(cfg)
        self.aio = async_boundary(self.store)
        self.live_tls = tls or LiveTLS(certificate_pair(cfg))
        self.tls = self.live_tls.context  # every TLS listener and STARTTLS holds this one
        self.challenges = Challenges()
        self.renewer: Renewer | None = None  # built once [acme] is on (start or SIGHUP)
        self.renewal: asyncio.Task[None] | None = None
        self.listeners = listeners  # bound by serve() before dropping privileges
        limits = cfg.limits
        throttle = AuthThrottle(limits.auth_failures_per_ip, limits.auth_failure_window_seconds,
                                limits.auth_failures_per_account,
                                flood_per_minute=limits.auth_flood_failures_per_minute,
                                failure_delay=limits.auth_failure_delay_seconds)
        hashes = HashPool(limits.auth_workers, limits.auth_queue_timeout_seconds)
        self.auth = Authenticator(self.aio, throttle, hashes, limits.auth_cache_entries)
        self.recipients = recipients = RecipientPolicy(self.aio, cfg.relay, cfg.hostname,
                                                       srs_from_config(cfg))
        self.intake = Intake(self.store.blobs, self.aio, recipients, cfg.hostname,
                             cfg.delivery.max_received_headers, on_queued=self._wake_queue,
                             max_header_size=cfg.limits.max_header_size,
                             metrics=self.metrics)
        self.queue = QueueManager(cfg, self.aio, self.aio, self.intake, self.metrics)
        self.shutdown = asyncio.Event()
        self.limiter = ConnectionLimiter(*connection_limits(limits))
        self.gate = Gate(self.limiter, self.shutdown, cfg.proxy_from, self.metrics)
        checks = SenderAuth(cfg, recipients) if cfg.auth_checks.enabled else None
        smtp = SMTPServices(cfg, self.intake, recipients, self.auth, self.tls, self.metrics,
                            sender_auth=checks)
        mailbox = MailboxServices(cfg, self.aio, self.aio, self.auth, self.tls,
                                  self.store.changes, self.intake, self.metrics)
        self.smtp_servers = {
            kind: SMTPServer(smtp, kind, self.shutdown)
            for kind in ("smtp", "submission", "submissions")
        }
        self.pop3_servers = {
            kind: POP3Server(mailbox, implicit_tls=kind == "pop3s") for kind in ("pop3", "pop3s")
        }
        self.imap_servers = {
            kind: IMAPServer(mailbox, implicit_tls=kind == "imaps") for kind in ("imap", "imaps")
        }
        self.http = HTTPServer(Site(cfg.hostname, self.metrics, self.readiness,
                                    self.count_queue, self.bound_ports,
                                    self.challenges.http01), cfg)
        self.bound: list[tuple[str, str, int]] = []
        self.started = False

    @property
    def sessions(self) -> set[asyncio.Task[None]]:
        return self.gate.sessions

    def _wake_queue(self) -> None:
        self.queue.wake()

    def _handler(self, kind: str) -> Handler | None:
        if kind in self.smtp_servers:
            return self.smtp_servers[kind].handle
        if kind in self.pop3_servers:
            return self.pop3_servers[kind].handle
        if kind in self.imap_servers:
            return self.imap_servers[kind].handle
        if kind == "http":
            return self.http.handle
        if kind == "acme_tls":
            return self.validated
        return None

    def _door(self, kind: str) -> Door:
        service = SERVICE[kind]
        tls = self.challenges.alpn.context if kind == "acme_tls" else (
            self.tls if kind in IMPLICIT_TLS else None)
        return Door(kind, service, BUSY[service], tls, self.cfg.limits.handshake_timeout_seconds)

    @staticmethod
    async def validated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: Peer) -> None:
        """``acme_tls``: the handshake was the answer (RFC 8737 §3); wait for the validator
        to close, bounded."""
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(ACME_VALIDATION_SECONDS):
                await reader.read()

    def start_renewer(self) -> None:
        """With ``[acme]`` on, build the renewer and run it in the background; without,
        do nothing: the ACME client's libraries are imported only here."""
        if not self.cfg.acme.enabled or self.renewer is not None:
            return
        if self.worker:  # serve refuses [acme] with workers; a SIGHUP may still turn it on
            log.error(kv("acme-ignored", reason="not available with several workers"))
            return
        from postwarden.servers.acme import Renewer

        self.renewer = Renewer(self.cfg, self.install_certificate, self.challenges)
        self.renewal = asyncio.ensure_future(self.renewer.run())

    def install_certificate(self, issued: Issued) -> None:
        """A certificate the renewer just stored: served from the next handshake on."""
        self.live_tls.swap(issued.pair)

    async def start(self) -> None:
        self.store.changes.listen()  # other processes' commits wake our watchers too
        listeners, self.listeners = self.listeners or bind_listeners(self.cfg), None
        for kind, sock in listeners:
            handler = self._handler(kind)
            if handler is None:
                log.warning(kv("listener-skipped", listener=kind,
                               reason="not implemented in this version"))
                sock.close()
                continue
            self.gate.listen(sock, self._door(kind), handler)
            host, port = sock.getsockname()[:2]
            self.bound.append((kind, host, port))
        await self.queue.start()
        self.started = True

    def bound_ports(self) -> dict[str, int]:
        """The first port each listener kind bound (what clients are told to use)."""
        ports: dict[str, int] = {}
        for kind, _, port in self.bound:
            ports.setdefault(kind, port)
        return ports

    async def readiness(self) -> str | None:
        """For /readyz: None when every listener is bound and the store answers."""
        if not self.started or self.shutdown.is_set():
            return "listeners not bound" if not self.started else "shutting down"
        began = time.monotonic()
        try:
            async with asyncio.timeout(READY_STORE_TIMEOUT):
                await self.aio.list_domains()
        except Exception as exc:  # any failure of the store means "not ready", with why
            return f"store not answering: {type(exc).__name__}"
        self.metrics.store_call("probe", time.monotonic() - began)
        return None

    async def count_queue(self) -> None:
        """Queue size and oldest age for a scrape, read off the event loop."""

        def read() -> tuple[int, float]:
            ids = self.store.queue.queued_ids()  # oldest first
            oldest = self.store.queue.get_queued(ids[0]) if ids else None
            return len(ids), 0.0 if oldest is None else max(0.0, time.time() - oldest.created)

        began = time.monotonic()
        count, age = await asyncio.to_thread(read)
        self.metrics.store_call("queue_count", time.monotonic() - began)
        self.metrics.queue(count, age)

    async def rounds(self, event: str, period: float,
                     work: Callable[[], Awaitable[None]]) -> None:
        """``work`` once a ``period``, the first a period in; a round that fails is one
        log line (a store outage a warning, without traceback) and the next tries again."""
        while True:
            await asyncio.sleep(period)
            try:
                await work()
            except StoreUnavailable as exc:
                log.warning(kv(f"{event}-unavailable", error=str(exc)))
            except Exception:
                log.exception(kv(f"{event}-failed"))

    async def sweep_login_records(self) -> None:
        """Forget POP/IMAP-before-SMTP logins and failed logins that left their windows."""
        now = time.time()
        await self.aio.expire_logins(now - max(self.cfg.relay.pop_before_smtp_minutes * 60, 60))
        await self.aio.expire_login_failures(self.auth.throttle.since(now))

    async def upkeep_store(self) -> None:
        """Index new messages in the background."""
        await asyncio.to_thread(self.store.upkeep, self.cfg.storage.index_batch)

    async def collect_blobs(self) -> None:
        """The blob collector (its rounds never at start-up: a store put back from a
        backup first shows what it has); on PostgreSQL one node at a time."""
        swept = await asyncio.to_thread(self.store.collect_blobs, time.time(),
                                        self.cfg.storage.blob_grace_seconds)
        log.info(kv("blob-gc", swept="skipped: another node" if swept is None else swept))

    def reload(self) -> None:
        """SIGHUP: read the config again and apply what can change under running sessions.

        Relay rules apply from the next decision on, the certificate from the
        next handshake, routes from the next delivery; sessions that start
        after the reload get the new limits, auth checks, [auth] and [imap]
        (running ones keep theirs); the log file is reopened (logrotate).
        Domains, users and aliases live in the store and are read per
        decision, so they need no reload. What only a restart can change
        (RESTART_ONLY, RESTART_ONLY_LIMITS) keeps its old value and is logged
        as needing a restart. A config that does not load keeps the old one.
        """
        try:
            new = configmod.load(self.cfg.path)
            self.live_tls.swap(certificate_pair(new))  # a bad pair raises, keeping the live one
        except ConfigError as exc:
            log.error(kv("reload-failed", error=str(exc), kept="previous configuration"))
            return
        old = self.cfg
        live = live_part(old, new)
        try:
            setup_logging(live, self.log_tag)
        except OSError as exc:
            log.error(kv("reload-log-failed", error=exc.strerror or exc, kept="previous log"))
            live = dataclasses.replace(live, log=old.log)
        self._apply(live)
        for setting in needs_restart(old, new):
            log.warning(kv("reload-needs-restart", setting=setting))
        changed = [f.name for f in dataclasses.fields(Config)
                   if getattr(old, f.name) != getattr(live, f.name)]
        log.info(kv("reloaded", config=self.cfg.path, applied=",".join(changed) or "-"))

    def _apply(self, cfg: Config) -> None:
        """Hand the reloaded settings to every room that holds them."""
        self.cfg = cfg
        self.recipients.relay = cfg.relay
        self.gate.proxy_from = cfg.proxy_from
        self.limiter.resize(*connection_limits(cfg.limits))
        self.http.limits = cfg.limits
        self.queue.reroute(cfg.routes)
        if self.renewer is not None:
            self.renewer.configure(cfg)
        else:
            self.start_renewer()
        checks = SenderAuth(cfg, self.recipients) if cfg.auth_checks.enabled else None
        for smtp in self.smtp_servers.values():
            smtp.services = dataclasses.replace(smtp.services, cfg=cfg, sender_auth=checks)
        for pop3 in self.pop3_servers.values():
            pop3.services = dataclasses.replace(pop3.services, cfg=cfg)
        for imap in self.imap_servers.values():
            imap.services = dataclasses.replace(imap.services, cfg=cfg)

    async def stop(self) -> None:
        """Stop accepting, let transactions finish (bounded), lose nothing acknowledged."""
        grace = self.cfg.limits.shutdown_grace_seconds
        self.shutdown.set()
        self.gate.close()
        for smtp in self.smtp_servers.values():
            smtp.close_idle()
        if self.sessions:
            _, pending = await asyncio.wait(set(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.queue.stop(grace)
        self.auth.close()
        await self.aio.aclose()
        self.store.close()

    async def run(self, ready: Callable[[App], None] = lambda app: None,
                  notifier: Notifier | None = None) -> None:
        notify = notifier or Notifier({})
        await self.start()
        background: list[asyncio.Future[None]] = []
        if self.upkeep:
            background += [
                asyncio.ensure_future(self.rounds("login-sweep", LOGIN_RECORD_SWEEP_SECONDS,
                                                  self.sweep_login_records)),
                asyncio.ensure_future(self.rounds("store-upkeep", STORE_UPKEEP_SECONDS,
                                                  self.upkeep_store)),
                asyncio.ensure_future(self.rounds("blob-gc",
                                                  self.cfg.storage.blob_gc_interval_seconds,
                                                  self.collect_blobs))]
        self.start_renewer()
        if notify.watchdog_seconds is not None:
            background.append(asyncio.ensure_future(self.watchdog(notify, notify.watchdog_seconds)))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.hangup, notify)
        # What start-up built (modules, tables, the config) lives as long as the
        # process: frozen, the collector stops walking it again on every full
        # collection, which a FETCH 1:* of 100,000 messages' tuples triggers
        # (a third of that FETCH's CPU before).
        gc.freeze()
        ready(self)
        notify.send(READY=1, STATUS=f"serving on {len(self.bound)} sockets")
        await stop.wait()
        notify.send(STOPPING=1, STATUS=f"stopping, {len(self.sessions)} sessions open")
        log.info(kv("shutdown", sessions=len(self.sessions)))
        for task in background:
            task.cancel()
        if self.renewal is not None:
            self.renewal.cancel()
        await self.stop()

    def hangup(self, notify: Notifier) -> None:
        """SIGHUP, told to systemd as a reload (``Type=notify-reload`` wants the clock too)."""
        notify.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        self.reload()
        notify.send(READY=1, STATUS=f"serving on {len(self.bound)} sockets")

    async def watchdog(self, notify: Notifier, every: float) -> None:
        """WATCHDOG=1 from the event loop itself: a loop stuck on a call stops the pings."""
        while True:
            notify.send(WATCHDOG=1)
            await asyncio.sleep(every)


def _announce(hostname: str, bound: list[tuple[str, str, int]]) -> None:
    for kind, host, port in bound:
        print(f"listening {kind} {host}:{port}", flush=True)
    print(f"postwarden ready: {hostname}", flush=True)


def keep_big_buffers_returnable() -> None:
    """Pin glibc's mmap threshold at 128 KiB, so memory freed after a flood goes back.

    asyncio's TLS transport allocates a 256 KiB read buffer per connection.
    glibc raises its mmap threshold after the first such buffer is freed, so
    later ones come from the heap, which does not shrink: after 200 silent
    TLS clients timed out, RSS stayed 60 MB above its baseline. With the
    threshold pinned, each buffer is its own mapping, unmapped when freed
    (bench/tls_flood.py). Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def become_service_user(cfg: Config) -> bool:
    """Drop to ``[service] user``/``group`` (after binding); True when staying root."""
    if not cfg.service.user:
        return os.geteuid() == 0
    who = identity(cfg.service.user, cfg.service.group)
    drop_privileges(who)
    check_writable(cfg.data_dir)
    log.info(kv("privileges-dropped", user=who.user, group=who.group, uid=who.uid, gid=who.gid))
    return False


def setup_logging(cfg: Config, tag: str = "") -> None:
    logsetup.setup(fmt=cfg.log.format, file=cfg.log.file,
                   syslog=cfg.log.syslog_socket if cfg.log.syslog else None, tag=tag)


def serve(cfg: Config, workers: int | None = None) -> None:
    """Bind, become the service user, then open the store and serve until SIGTERM.

    The certificate is read before the drop too (keys are often root's);
    the store is opened after it, so every file it creates is the user's.
    With ``workers`` (or ``[service] workers``) above one, a supervisor binds
    a set of listeners per worker and forks the workers (servers/workers.py).
    """
    count = workers or cfg.service.workers
    if count > 1 and cfg.acme.enabled:  # the CA's validation may reach another worker
        _fail("acme: not available with several workers (a challenge is answered by the"
              " worker that asked); use service.workers = 1 or certificates from elsewhere")
    try:
        setup_logging(cfg, f"main/{os.getpid()}" if count > 1 else "")
    except OSError as exc:
        where = exc.filename or cfg.log.syslog_socket  # the file has a name, the socket not
        _fail(f"cannot open the log {where}: {exc.strerror or exc}")
    keep_big_buffers_returnable()
    notifier = Notifier()
    if notifier.problem:  # systemd would wait for READY=1 in vain, then stop us
        log.warning(kv("notify-socket-unusable", error=notifier.problem))
    tls = LiveTLS(certificate_pair(cfg))
    try:
        slots = twins(bind_listeners(cfg, reuse_port=count > 1), count, twin)
    except OSError as exc:
        _fail(f"cannot listen: {exc.strerror or exc}")
    try:
        root = become_service_user(cfg)
    except ServiceError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"service.user: cannot switch: {exc.strerror or exc}")

    def ready(hostname: str, bound: list[tuple[str, str, int]]) -> None:
        _announce(hostname, bound)
        if root:  # said once serving: a store that does not open gets its error alone
            log.warning(kv("running-as-root", hint="set [service] user to an unprivileged account"))

    try:
        if count == 1:
            asyncio.run(App(cfg, tls=tls, listeners=slots[0]).run(
                lambda app: ready(app.cfg.hostname, app.bound), notifier))
            return
        open_store(cfg).close()  # migrated once, and a bad store is one line, before any fork
        bound = [(kind, *sock.getsockname()[:2]) for kind, sock in slots[0]]
        status = Supervisor(
            slots, _worker(cfg, tls), notifier, cfg.limits.shutdown_grace_seconds,
            on_ready=lambda: ready(cfg.hostname, bound),
            on_hangup=lambda: _reopen_log(cfg, f"main/{os.getpid()}")).run()
    finally:
        notifier.close()
    if status:
        raise SystemExit(status)


def _worker(cfg: Config, tls: LiveTLS) -> WorkerMain:
    """What each worker process runs: the one-process server on its own listeners."""

    def main(index: int, listeners: Listeners, notifier: Notifier) -> int:
        tag = f"w{index}/{os.getpid()}"
        setup_logging(cfg, tag)
        try:
            asyncio.run(App(cfg, tls=tls, listeners=listeners, log_tag=tag,
                            upkeep=index == 1, worker=True).run(notifier=notifier))
        except StoreError as exc:
            print(f"postwarden: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"postwarden: error: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0

    return main


def _reopen_log(cfg: Config, tag: str) -> None:
    """SIGHUP in the supervisor: its log reopened (logrotate), where the new config says."""
    try:
        setup_logging(configmod.load(cfg.path), tag)
    except (ConfigError, OSError) as exc:  # the workers say the same in their reload lines
        log.error(kv("reload-log-failed", error=exc, kept="previous log"))


def _fail(message: str) -> NoReturn:
    print(f"postwarden: error: {message}", file=sys.stderr)
    raise SystemExit(2)
