"""One-line, key=value structured logging that grep and log shippers read.

``kv(event, **fields)`` renders ``event key=value key="two words"``; values
are quoted when needed and newlines escaped, so one event is one line. The
protocol code never passes secrets here: passwords are not fields anywhere.
"""

from __future__ import annotations

import logging
import sys


def _value(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    if any(c in text for c in ' "=') or not text.isprintable():
        text = '"' + text.replace('"', '\\"') + '"'
    return text


def kv(event: str, **fields: object) -> str:
    return " ".join([event, *(f"{k}={_value(v)}" for k, v in fields.items())])


def setup(level: int = logging.INFO) -> None:
    """Log to stderr with a timestamp; called once by ``serve``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    # Our format uses none of these: skip computing them for every record
    # (the "Optimization" advice of the logging HOWTO).
    logging._srcfile = None  # no caller lookup (a stack walk per record)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger("postwarden")
    root.handlers[:] = [handler]
    root.setLevel(level)
