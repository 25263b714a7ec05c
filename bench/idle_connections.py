"""Memory cost of idle SMTP connections held open against postwarden.

    .venv/bin/python bench/idle_connections.py [-n 1000] [--no-ehlo] [--hold 5]

Starts ``postwarden serve`` (limits raised to allow ``-n`` connections from
127.0.0.1), warms it with one full message, then reads the server's VmRSS.
Opens ``-n`` connections (in batches, so the listen backlog never
overflows), reads each banner and, unless ``--no-ehlo``, does EHLO; holds them
``--hold`` seconds; reads VmRSS again; sends NOOP on every connection to
prove the server still serves all of them; closes them. Reports the extra RSS
(target from issue 2: under 60 MB for 1,000 connections) and per connection.

The soft fd limit is raised in this process before the server starts, so the
server inherits it too. Run by hand, never by ``make test``. Loopback only;
the temp dir and the server are removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    USER,
    Server,
    SMTPError,
    expect,
    make_body,
    proc_status_kb,
    raise_fd_limit,
    read_reply,
    send_message,
    start_postwarden,
)

BATCH = 50
TARGET_MB = 60

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_one(port: int, ehlo: bool) -> Conn:
    """Connect, read the banner, optionally EHLO."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(reader, b"220")
    if ehlo:
        writer.write(b"EHLO idle.test\r\n")
        await expect(reader, b"250")
    return reader, writer


async def noop_all(conns: list[Conn]) -> int:
    """NOOP on every connection; returns how many answered 250."""
    async def one(conn: Conn) -> bool:
        reader, writer = conn
        writer.write(b"NOOP\r\n")
        try:
            return (await asyncio.wait_for(read_reply(reader), 30)).startswith(b"250")
        except (TimeoutError, OSError, SMTPError):
            return False

    ok = 0
    for start in range(0, len(conns), BATCH * 4):
        ok += sum(await asyncio.gather(*(one(c) for c in conns[start:start + BATCH * 4])))
    return ok


async def measure(server: Server, n: int, ehlo: bool, hold: float) -> dict[str, float]:
    """Warm up, open ``n`` idle connections, read VmRSS around them, close them."""
    pid, port = server.pid, server.port
    await send_message("127.0.0.1", port, "sender@x.test", USER, make_body(1024))
    await asyncio.sleep(0.5)
    before = proc_status_kb(pid, "VmRSS")
    conns: list[Conn] = []
    started = time.perf_counter()
    try:
        for start in range(0, n, BATCH):
            conns += await asyncio.gather(
                *(open_one(port, ehlo) for _ in range(min(BATCH, n - start))))
        opened = time.perf_counter() - started
        await asyncio.sleep(hold)
        held = proc_status_kb(pid, "VmRSS")
        alive = await noop_all(conns)
        after_noop = proc_status_kb(pid, "VmRSS")
    finally:
        for _, writer in conns:
            writer.close()
    await asyncio.sleep(1.0)
    return {"before": before, "held": held, "after_noop": after_noop,
            "closed": proc_status_kb(pid, "VmRSS"), "hwm": proc_status_kb(pid, "VmHWM"),
            "alive": alive, "opened_s": opened}


def main() -> None:
    """Parse flags, run the measurement, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=1000)
    parser.add_argument("--no-ehlo", action="store_true", help="stay idle right after the banner")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold them idle")
    args = parser.parse_args()
    n = args.connections
    fd_limit = raise_fd_limit(n + 1024)
    if fd_limit < n + 64:
        sys.exit(f"fd limit {fd_limit} too low for {n} connections (raise the hard limit)")
    with tempfile.TemporaryDirectory(prefix="pw-idle-") as tmp:
        server = start_postwarden(Path(tmp), max_connections=n + 100)
        try:
            m = asyncio.run(measure(server, n, not args.no_ehlo, args.hold))
        finally:
            code = server.stop()
        problems = [line for line in server.stderr if "Too many open files" in line
                    or "EMFILE" in line]
    extra_mb = (max(m["held"], m["after_noop"]) - m["before"]) / 1024
    state = "after the banner" if args.no_ehlo else "after EHLO"
    print(f"{n} idle connections {state}, held {args.hold:.0f} s (opened in {m['opened_s']:.1f} s;"
          f" fd limit {fd_limit}, inherited by the server)")
    print(f"server VmRSS before:     {m['before'] / 1024:7.1f} MB (after one warm-up message)")
    print(f"server VmRSS held:       {m['held'] / 1024:7.1f} MB")
    print(f"server VmRSS after NOOP: {m['after_noop'] / 1024:7.1f} MB "
          f"({m['alive']:.0f}/{n} answered 250)")
    print(f"server VmRSS closed:     {m['closed'] / 1024:7.1f} MB (VmHWM {m['hwm'] / 1024:.1f} MB)")
    verdict = "meets" if extra_mb < TARGET_MB else "ABOVE"
    print(f"extra RSS: {extra_mb:.1f} MB = {extra_mb * 1024 / n:.1f} KB per connection "
          f"({verdict} the < {TARGET_MB} MB target)")
    if problems:
        print("server hit the fd limit:\n" + "".join(problems[:5]))
    if code not in (0, None):
        print(f"warning: postwarden exited {code}")


if __name__ == "__main__":
    main()
