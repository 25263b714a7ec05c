"""One-line, key=value structured logging that grep and log shippers read.

``kv(event, **fields)`` renders ``event key=value key="two words"``; values
are quoted when needed and newlines escaped, so one event is one line. The
protocol code never passes secrets here: passwords are not fields anywhere.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path


def _value(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    if any(c in text for c in ' "=') or not text.isprintable():
        text = '"' + text.replace('"', '\\"') + '"'
    return text


def kv(event: str, **fields: object) -> str:
    return " ".join([event, *(f"{k}={_value(v)}" for k, v in fields.items())])


class _Text(logging.Formatter):
    """``<RFC 3339 time with milliseconds and zone> LEVEL logger message``; with a process
    tag (``serve --workers``) the logger reads ``postwarden[w1/4242]`` as Postfix's do."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = f"[{tag}]" if tag else ""

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{timestamp(record.created)} {record.levelname} {record.name}{self.tag}"
                f" {record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JSON(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message (and
    process, with ``serve --workers``)."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, str] = {"time": timestamp(record.created), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        if self.tag:
            event["process"] = self.tag
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-30T17:46:32.123+00:00``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class _Syslog(logging.Formatter):
    """``LEVEL message``: syslog (or journald) stamps the time and host itself."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname} {record.getMessage()}"


def syslog_handler(address: str) -> logging.Handler:
    """RFC 3164 lines, ``<PRI>postwarden[PID]: LEVEL message``, facility mail, to ``address``.

    The local datagram form that syslog(3) writes to ``/dev/log``, which
    rsyslog, syslog-ng and journald all read. SysLogHandler would start
    without a listener and drop every line; we raise OSError instead.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
    handler = logging.handlers.SysLogHandler(
        address, logging.handlers.SysLogHandler.LOG_MAIL, socktype=socket.SOCK_DGRAM)
    handler.ident = f"postwarden[{os.getpid()}]: "
    handler.setFormatter(_Syslog())
    return handler


def setup(level: int = logging.INFO, fmt: str = "text", file: Path | None = None,
          syslog: str | None = None, tag: str = "") -> None:
    """Log to ``file`` (appending) or stderr, as text or JSON, and to ``syslog`` if given;
    ``tag`` names the process among ``serve --workers`` (``w1/4242``, ``main/4241``).

    Called at start and again on SIGHUP, which reopens the file (after logrotate).
    """
    handlers = [syslog_handler(syslog)] if syslog is not None else []
    handler: logging.Handler = (
        logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(sys.stderr))
    handler.setFormatter(_JSON(tag) if fmt == "json" else _Text(tag))
    handlers.insert(0, handler)
    # Our format uses none of these: skip computing them for every record
    # (the "Optimization" advice of the logging HOWTO).
    logging._srcfile = None  # no caller lookup (a stack walk per record)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger("postwarden")
    old, root.handlers[:] = root.handlers[:], handlers
    for gone in old:
        gone.close()
    root.setLevel(level)
