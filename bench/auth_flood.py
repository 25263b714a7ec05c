"""Legitimate login latency while a flood of failing logins runs (issue 8, defect 6).

    .venv/bin/python bench/auth_flood.py [--attackers 40] [--seconds 25] [--tries 3]

Starts a real ``postwarden serve`` with its default limits (``tests/serverproc.py``
writes the config) and one user. ``--attackers`` connections fail logins
without pause, each from its own rotating source address (127.0.1.1,
127.0.1.2, ... : a fresh one per connection, so the per-IP limit never
bites), alternating SMTP ``AUTH PLAIN`` and POP3 ``USER``/``PASS``, ``--tries``
wrong passwords per connection, each at another account name
(``victim-N@example.test``, unknown, which costs the server the same hash
as a wrong password), so neither the per-IP nor the per-account limit
bites and only the bounded hashing stands between the flood and the user.
Meanwhile a legitimate user at 127.0.0.1
logs in over POP3 (connect, USER, PASS, QUIT) every 0.5 s; it logged in once
before the flood began, as a mail client that polls does. Prints the
legitimate login latency (p50 / p95 / max), the failed attempts per second,
how many attempts were answered "try later" (throttled or busy), and the
server's CPU seconds. Run by hand, never by ``make test``; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import percentile  # noqa: E402

from serverproc import PASSWORD, ServerProcess  # noqa: E402

USER = "legit@example.test"
LEGIT_INTERVAL = 0.5
TIMEOUT = 60.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sources() -> itertools.cycle[str]:
    """127.0.1.1 ... 127.0.250.250: far more than the flood uses, never 127.0.0.x."""
    return itertools.cycle(f"127.0.{x}.{y}" for x in range(1, 251) for y in range(1, 251))


async def line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), TIMEOUT)


async def smtp_reply(reader: asyncio.StreamReader) -> bytes:
    while (text := await line(reader))[3:4] == b"-":
        pass
    return text


async def pop3_session(addr: tuple[str, int], source: str,
                       attempts: list[tuple[str, str]]) -> list[bytes]:
    """USER/PASS per (user, password) (stops after a success); the replies to PASS."""
    reader, writer = await asyncio.open_connection(*addr, local_addr=(source, 0))
    replies = []
    try:
        await line(reader)
        for user, password in attempts:
            writer.write(f"USER {user}\r\nPASS {password}\r\n".encode())
            await line(reader)
            replies.append(await line(reader))
            if replies[-1].startswith(b"+OK"):
                break
        writer.write(b"QUIT\r\n")
        await line(reader)
    finally:
        writer.close()
    return replies


async def smtp_session(addr: tuple[str, int], source: str,
                       attempts: list[tuple[str, str]]) -> list[bytes]:
    reader, writer = await asyncio.open_connection(*addr, local_addr=(source, 0))
    replies = []
    try:
        await smtp_reply(reader)
        writer.write(b"EHLO flood.test\r\n")
        await smtp_reply(reader)
        for user, password in attempts:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            writer.write(f"AUTH PLAIN {token}\r\n".encode())
            replies.append(await smtp_reply(reader))
        writer.write(b"QUIT\r\n")
        await smtp_reply(reader)
    finally:
        writer.close()
    return replies


async def attacker(n: int, server: ServerProcess, addresses: itertools.cycle[str], tries: int,
                   stop: asyncio.Event, outcomes: Counter[str]) -> None:
    for round_ in itertools.count():
        if stop.is_set():
            return
        source = next(addresses)
        wrong = [(f"victim-{n}-{round_}-{i}@example.test", "guess") for i in range(tries)]
        try:
            if (n + round_) % 2:
                replies = await smtp_session(server.addr("smtp"), source, wrong)
            else:
                replies = await pop3_session(server.addr("pop3"), source, wrong)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            outcomes["connection error"] += 1
            continue
        for reply in replies:
            failed = reply.startswith((b"535", b"-ERR [AUTH]"))
            outcomes["failed" if failed else "try later"] += 1


async def legit(server: ServerProcess, stop: asyncio.Event, latencies: list[float],
                refused: Counter[str]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        replies = await pop3_session(server.addr("pop3"), "127.0.0.1", [(USER, PASSWORD)])
        latencies.append(time.perf_counter() - start)
        if not replies[-1].startswith(b"+OK"):
            refused[replies[-1].decode(errors="replace").strip()] += 1
        await asyncio.sleep(LEGIT_INTERVAL)


async def flood(server: ServerProcess, args: argparse.Namespace) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    await pop3_session(server.addr("pop3"), "127.0.0.1", [(USER, PASSWORD)])  # a known client
    quiet: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        await pop3_session(server.addr("pop3"), "127.0.0.1", [(USER, PASSWORD)])
        quiet.append(time.perf_counter() - start)
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    addresses = sources()
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    tasks = [asyncio.ensure_future(attacker(n, server, addresses, args.tries, stop, outcomes))
             for n in range(args.attackers)]
    tasks.append(asyncio.ensure_future(legit(server, stop, latencies, refused)))
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=TIMEOUT)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    print(f"quiet server: legit POP3 login p50 {percentile(quiet, 50) * 1000:.0f} ms")
    print(f"{args.attackers} attackers, {args.tries} tries per connection, {elapsed:.1f} s: "
          f"{outcomes['failed']} failed attempts ({outcomes['failed'] / elapsed:.1f}/s), "
          f"{outcomes['try later']} answered try-later, "
          f"{outcomes['connection error']} connection errors; server CPU {cpu:.1f} s")
    print(f"legit POP3 logins during the flood: {len(latencies)}, "
          f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
          + (f"; refused: {dict(refused)}" if refused else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--tries", type=int, default=3, help="wrong passwords per connection")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pw-authflood-") as tmp:
        server = ServerProcess(Path(tmp))
        server.add_user(USER)
        server.start()
        try:
            asyncio.run(flood(server, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
