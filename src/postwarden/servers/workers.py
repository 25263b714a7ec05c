"""``serve --workers N``: a supervisor and N worker processes sharing the listeners and the store.

The shape is Postfix's and Dovecot's master: the supervisor binds every
listener N times with SO_REUSEPORT (as root, before privileges go), forks
worker k with set k, and accepts nothing itself. The kernel spreads new
connections over the sets by a hash of the client's address and port, so
each worker's accept loop sees only its own connections (one shared socket
would wake every worker for each, and asyncio's eager accept lets one busy
worker take most). The supervisor keeps every set open: while a dead worker
is restarted, the connections the kernel queued on its set wait there, and
the new worker, forked with the same sockets, needs no privilege to take
them up.

The supervisor opens no store and runs no mail work. It only starts the
workers, restarts one that dies (after a pause that doubles while it keeps
dying young, each death logged), forwards SIGHUP (reload) and SIGTERM/SIGINT
(graceful drain) to them, and tells systemd ``READY=1`` once every worker
said it is ready and ``WATCHDOG=1`` while every running worker pings. A
worker reports to it over a datagram socketpair in sd_notify's own format
(``service.Notifier.channel``), so the worker is the one-process server
unchanged. A worker that fails before the first ``READY`` stops the whole
start: its one-line error is on stderr, and a restart would only repeat it.

Hand-written: the standard library gives fork, signals and selectors, and
supervisor libraries (supervisord, circus) are daemons of their own rather
than a master loop to embed; this is one small loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postwarden.log import kv
from postwarden.service import Notifier

log = logging.getLogger("postwarden")

Listeners = list[tuple[str, socket.socket]]  # (kind, listening socket)
# A worker's whole life: its index, its sockets, its channel to us; returns the exit status.
WorkerMain = Callable[[int, Listeners, Notifier], int]

RESTART_FIRST = 0.25  # seconds before restarting a worker that died
RESTART_MAX = 30.0  # the pause doubles up to this while a worker keeps dying young
LIVED_LONG = 60.0  # a worker that ran this long died of something new: first pause again
KILL_AFTER = 10.0  # after a drain's grace, workers still running get SIGKILL
CHANNEL_BYTES = 4096
SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def twins(first: Listeners, count: int, make: Callable[[socket.socket], socket.socket],
          ) -> list[Listeners]:
    """``count`` sets of listeners: ``first`` and twins of it on the same addresses."""
    sets = [first]
    try:
        for _ in range(count - 1):
            sets.append([])
            for kind, sock in first:
                sets[-1].append((kind, make(sock)))
    except OSError:
        for listeners in sets[1:]:
            for _, sock in listeners:
                sock.close()
        raise
    return sets


@dataclass(slots=True)
class _Worker:
    """One worker slot: its sockets stay; the process in it comes and goes."""

    index: int
    listeners: Listeners
    pid: int = 0  # 0: not running
    channel: socket.socket | None = None  # our end of its socketpair
    started: float = 0.0
    ready: bool = False
    pinged: float = 0.0  # when it last said WATCHDOG=1
    pause: float = RESTART_FIRST
    restart_at: float | None = None


class Supervisor:
    """Runs N workers until SIGTERM/SIGINT; ``run`` returns the exit status."""

    def __init__(self, slots: Sequence[Listeners], main: WorkerMain, notifier: Notifier,
                 grace: float, *, on_ready: Callable[[], None] = lambda: None,
                 on_hangup: Callable[[], None] = lambda: None) -> None:
        self.workers = [_Worker(i, listeners) for i, listeners in enumerate(slots, 1)]
        self.main = main
        self.notifier = notifier
        self.grace = grace  # a worker's own drain time ([limits] shutdown_grace_seconds)
        self.on_ready = on_ready  # once, when every worker is first ready
        self.on_hangup = on_hangup  # SIGHUP, before it is forwarded
        self.stopping: float | None = None  # when SIGTERM came
        self.kill_at: float | None = None  # then SIGKILL for what still runs, once
        self.all_ready = False
        self.failed = 0  # a worker's exit status when it died before the first READY
        self._selector = selectors.DefaultSelector()
        self._fds: tuple[int, ...] = ()

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self._selector.register(wake_read, selectors.EVENT_READ)
        previous = {sig: signal.signal(sig, _noted) for sig in SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_write)  # the signal number, written there
        self._fds = (wake_read, wake_write)
        try:
            for worker in self.workers:
                self._spawn(worker)
            while any(w.pid for w in self.workers) or self.stopping is None:
                self._step(wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            os.close(wake_read)
            os.close(wake_write)
        log.info(kv("workers-stopped", workers=len(self.workers)))
        return self.failed

    def _step(self, wake_read: int) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.fd == wake_read:
                with contextlib.suppress(BlockingIOError):
                    for number in os.read(wake_read, 256):
                        self._signalled(number)
            else:
                self._heard(key.data)
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                self._spawn(worker)
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            for worker in self.workers:
                if worker.pid:
                    log.warning(kv("worker-killed", worker=worker.index, pid=worker.pid,
                                   reason="still running after the drain"))
                    _kill(worker.pid, signal.SIGKILL)
        self._watchdog(now)

    def _timeout(self) -> float | None:
        """Until the next restart, kill deadline or watchdog ping is due."""
        now = time.monotonic()
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.kill_at is not None:
            due.append(self.kill_at)
        if self.notifier.watchdog_seconds is not None:
            due.append(now + self.notifier.watchdog_seconds / 2)
        return max(0.0, min(due) - now) if due else None

    def _signalled(self, number: int) -> None:
        match number:
            case signal.SIGCHLD:
                self._reap()
            case signal.SIGHUP:
                self.notifier.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(
                    time.CLOCK_MONOTONIC) // 1000)
                self.on_hangup()
                self._forward(signal.SIGHUP)
                self.notifier.send(READY=1, STATUS=f"{self._running()} workers serving")
            case signal.SIGTERM | signal.SIGINT if self.stopping is None:
                self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> None:
        self.stopping = time.monotonic()
        self.kill_at = self.stopping + self.grace + KILL_AFTER
        self.notifier.send(STOPPING=1, STATUS=f"stopping {self._running()} workers")
        for worker in self.workers:
            worker.restart_at = None
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.pid:
                _kill(worker.pid, sig)

    def _running(self) -> int:
        return sum(1 for w in self.workers if w.pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is not None:
                self._ended(worker, status)

    def _ended(self, worker: _Worker, status: int) -> None:
        lived = time.monotonic() - worker.started
        how = describe(status)
        self._close_channel(worker)
        worker.pid, worker.ready = 0, False
        if self.stopping is not None:
            log.info(kv("worker-exited", worker=worker.index, status=how))
            return
        if not self.all_ready:  # a start that fails would fail again: stop, say nothing more
            log.error(kv("worker-failed", worker=worker.index, status=how,
                         during="start", action="stopping all workers"))
            self.failed = max(os.waitstatus_to_exitcode(status), 1)
            self._stop(signal.SIGTERM)
            return
        if lived >= LIVED_LONG:
            worker.pause = RESTART_FIRST
        self._retry_later(worker, "worker-died", status=how, lived=f"{lived:.1f}s")

    @staticmethod
    def _retry_later(worker: _Worker, event: str, **why: str) -> None:
        """Start ``worker`` again after its pause, which doubles while it keeps failing."""
        worker.restart_at = time.monotonic() + worker.pause
        log.warning(kv(event, worker=worker.index, **why, restart_in=f"{worker.pause:g}s"))
        worker.pause = min(worker.pause * 2, RESTART_MAX)

    def _heard(self, worker: _Worker) -> None:
        """A datagram from a worker's Notifier: READY=1, WATCHDOG=1, STATUS=..."""
        assert worker.channel is not None
        try:
            lines = worker.channel.recv(CHANNEL_BYTES).decode(errors="replace").splitlines()
        except OSError:
            return
        if "WATCHDOG=1" in lines:
            worker.pinged = time.monotonic()
        if "READY=1" in lines and not worker.ready:
            worker.ready, worker.pinged = True, time.monotonic()
            log.info(kv("worker-ready", worker=worker.index, pid=worker.pid))
            if not self.all_ready and all(w.ready for w in self.workers):
                self.all_ready = True
                self.on_ready()
                self.notifier.send(READY=1, STATUS=f"{len(self.workers)} workers serving")

    def _watchdog(self, now: float) -> None:
        """WATCHDOG=1 for systemd while every running worker's event loop pings."""
        every = self.notifier.watchdog_seconds
        if every is None or self.stopping is not None or not self.all_ready:
            return
        if all(now - w.pinged < 2 * every for w in self.workers if w.ready):
            self.notifier.send(WATCHDOG=1)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart_at = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals wait until the child has its own handlers (else they reach our wakeup pipe).
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: try again as after a death
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            ours.close()
            theirs.close()
            self._retry_later(worker, "worker-fork-failed", error=exc.strerror or str(exc))
            return
        if pid == 0:  # the worker: nothing of the supervisor's loop comes along
            status = 1
            try:
                ours.close()
                status = self._child(worker, theirs, supervisor)
            except BaseException:  # never back into the supervisor's loop
                log.exception(kv("worker-crashed", worker=worker.index))
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        theirs.close()
        worker.pid, worker.channel, worker.started = pid, ours, time.monotonic()
        self._selector.register(ours, selectors.EVENT_READ, worker)
        log.info(kv("worker-started", worker=worker.index, pid=pid))

    def _child(self, worker: _Worker, channel: socket.socket, supervisor: int) -> int:
        try:
            if not _drain_when_orphaned(supervisor):
                return 0
            signal.set_wakeup_fd(-1)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            self._selector.close()
            for fd in self._fds:
                os.close(fd)
            for other in self.workers:
                if other.channel is not None:
                    other.channel.close()
                if other is not worker:
                    for _, sock in other.listeners:
                        sock.close()
            return self.main(worker.index, worker.listeners,
                             Notifier.channel(channel, self.notifier.watchdog_seconds))
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()

    def _close_channel(self, worker: _Worker) -> None:
        if worker.channel is not None:
            self._selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None


def _noted(signum: int, frame: object) -> None:
    """Python must have a handler for the wakeup fd to be written; the loop does the work."""


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def describe(status: int) -> str:
    """A wait status in words: ``exit 2``, ``killed by SIGKILL``, ``killed by signal 40``
    (the real-time signals have no ``signal.Signals`` name)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _drain_when_orphaned(supervisor: int) -> bool:
    """Have the kernel send this worker SIGTERM when the supervisor dies.

    A supervisor killed with SIGKILL (or by the OOM killer) forwards nothing;
    without this its workers would serve on as orphans that no restart,
    reload or stop reaches. False when the supervisor is already gone.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning(kv("worker-parent-death-signal", error=os.strerror(ctypes.get_errno())))
    return os.getppid() == supervisor
