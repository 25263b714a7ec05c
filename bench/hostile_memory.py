"""Server memory under connections that each leave something unfinished (issue 8, defect 9).

    .venv/bin/python bench/hostile_memory.py [-n 1000] [--mode header|line|noread] [--bytes N]

Starts ``postwarden serve`` (connection limits raised to ``-n``), warms it with
one message and reads the server's VmRSS. Then opens ``-n`` connections from
127.0.0.1; each one

* ``header``: EHLO, MAIL, RCPT, DATA, then ``--bytes`` octets of header lines
  and never the blank line that ends the header section (the attack of the
  issue: the server used to hold up to 1 MB of it per connection);
* ``line``: ``--bytes`` octets of one command line and never its CRLF;
* ``noread``: ``--bytes`` octets of pipelined NOOPs, never reading a reply
  (the server's replies back up, then its reads stop).

holds them ``--hold`` seconds, reads VmRSS again, closes them and reads it a
last time. Reports the extra RSS in total and per connection. Run by hand,
never by ``make test``. Loopback only; the temp dir and server are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    USER,
    Server,
    expect,
    make_body,
    proc_status_kb,
    raise_fd_limit,
    send_message,
    start_postwarden,
)

BATCH = 50
WHAT = {"header": "header section", "line": "command line",
        "noread": "pipeline of NOOPs whose replies are never read"}
PIECE = 64 * 1024

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def filler(size: int, mode: str) -> bytes:
    """``size`` octets that never finish: header lines without the blank line, or one line."""
    if mode == "line":
        return b"NOOP " + b"x" * max(0, size - 5)
    if mode == "noread":
        return (b"NOOP\r\n" * (size // 6 + 1))[:size]
    line = b"X-Filler: " + b"h" * 88 + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


async def open_one(port: int, mode: str, data: bytes) -> Conn:
    """Connect, get into the state ``mode`` attacks, send ``data`` and leave it unfinished."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(reader, b"220")
    if mode == "header":
        for command, code in ((b"EHLO hostile.test", b"250"),
                              (b"MAIL FROM:<a@hostile.test>", b"250"),
                              (f"RCPT TO:<{USER}>".encode(), b"250"), (b"DATA", b"354")):
            writer.write(command + b"\r\n")
            await expect(reader, code)
    for start in range(0, len(data), PIECE):
        writer.write(data[start:start + PIECE])
        if mode != "noread":  # a stalled server must not stall the bench
            await writer.drain()
    return reader, writer


async def measure(server: Server, n: int, mode: str, size: int,
                  hold: float) -> dict[str, float]:
    """Warm up, open the hostile connections, read VmRSS around them, close them."""
    pid, port = server.pid, server.port
    await send_message("127.0.0.1", port, "sender@x.test", USER, make_body(1024))
    await asyncio.sleep(0.5)
    before = proc_status_kb(pid, "VmRSS")
    data = filler(size, mode)
    conns: list[Conn] = []
    started = time.perf_counter()
    try:
        for start in range(0, n, BATCH):
            conns += await asyncio.gather(
                *(open_one(port, mode, data) for _ in range(min(BATCH, n - start))))
        sent = time.perf_counter() - started
        await asyncio.sleep(hold)
        held = proc_status_kb(pid, "VmRSS")
    finally:
        for _, writer in conns:
            writer.close()
        for _, writer in conns:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    await asyncio.sleep(2.0)
    return {"before": before, "held": held, "closed": proc_status_kb(pid, "VmRSS"),
            "hwm": proc_status_kb(pid, "VmHWM"), "sent_s": sent}


def main() -> None:
    """Parse flags, run the measurement, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=1000)
    parser.add_argument("--mode", choices=("header", "line", "noread"), default="header")
    parser.add_argument("--bytes", type=int, default=1_000_000,
                        help="octets each connection sends and never finishes")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold them")
    args = parser.parse_args()
    n = args.connections
    fd_limit = raise_fd_limit(n + 1024)
    if fd_limit < n + 64:
        sys.exit(f"fd limit {fd_limit} too low for {n} connections (raise the hard limit)")
    with tempfile.TemporaryDirectory(prefix="pw-hostile-") as tmp:
        server = start_postwarden(Path(tmp), max_connections=n + 100)
        try:
            m = asyncio.run(measure(server, n, args.mode, args.bytes, args.hold))
        finally:
            server.stop()
    extra_mb = (m["held"] - m["before"]) / 1024
    print(f"{n} connections, each {args.bytes:,} octets of an unfinished "
          f"{WHAT[args.mode]} "
          f"(sent in {m['sent_s']:.1f} s), held {args.hold:.0f} s")
    print(f"server VmRSS before: {m['before'] / 1024:7.1f} MB (after one warm-up message)")
    print(f"server VmRSS held:   {m['held'] / 1024:7.1f} MB")
    print(f"server VmRSS closed: {m['closed'] / 1024:7.1f} MB (VmHWM {m['hwm'] / 1024:.1f} MB)")
    print(f"extra RSS: {extra_mb:.1f} MB = {extra_mb * 1024 / n:.1f} KB per connection")


if __name__ == "__main__":
    main()
