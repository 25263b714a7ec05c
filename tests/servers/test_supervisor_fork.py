"""The supervisor of ``serve --workers`` when the kernel refuses a fork.

A unit test on top of tests/e2e/test_workers.py: making a real fork fail
needs a process limit, which root (as CI runs) ignores, so ``os.fork`` is
made to fail here and only the supervisor's own bookkeeping is real.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

import pytest

from postwarden.servers.workers import RESTART_FIRST, SIGNALS, Supervisor
from postwarden.service import Notifier


def refuse_fork() -> int:
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def test_a_refused_fork_is_retried_after_the_pause_with_signals_unblocked(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor([[]], lambda *_: 0, Notifier({}), grace=1.0)
    worker = supervisor.workers[0]
    monkeypatch.setattr(os, "fork", refuse_fork)
    with caplog.at_level(logging.WARNING, logger="postwarden"):
        supervisor._spawn(worker)  # raised OSError (ending the supervisor) before
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not blocked & set(SIGNALS)  # SIGCHLD, SIGTERM... reach the supervisor again
    assert worker.pid == 0 and worker.restart_at is not None
    assert worker.pause == 2 * RESTART_FIRST  # a second refusal waits longer
    assert any(r.getMessage().startswith("worker-fork-failed worker=1 error=")
               for r in caplog.records)
