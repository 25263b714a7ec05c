"""Delivery throughput: queue N messages, then time the queue emptying into a sink.

    .venv/bin/python bench/delivery.py [-n 5000] [--size 2000]

The sink is a minimal SMTP server in a subprocess (so its CPU is not
counted), reached through a [[routes]] entry. Messages are queued through the
real intake first; then the queue manager starts and the clock runs until no
recipient is pending. Reports messages/second delivered and the CPU seconds
this process (event loop plus its SQLite thread) spent per 1000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from postwarden.config import from_dict
from postwarden.delivery.manager import QueueManager
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.sqlite.store import SqliteStore

SINK = r'''
import asyncio, sys

async def client(reader, writer):
    writer.write(b"220 sink ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"DATA":
            writer.write(b"354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")  # one call per message, not per line
            writer.write(b"250 2.0.0 Ok\r\n")
        elif verb == b"EHLO":
            writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 Ok\r\n")
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(client, "127.0.0.1", 0, limit=1 << 26)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


async def run(n: int, size: int, root: Path) -> None:
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SINK, stdout=asyncio.subprocess.PIPE
    )
    assert sink.stdout is not None
    port = int(await sink.stdout.readline())
    cfg = from_dict(
        {
            "hostname": "bench.test",
            "data_dir": "var",
            "delivery": {"retry_intervals": ["1h"]},
            "routes": [{"domain": "sink.test", "to": f"127.0.0.1:{port}"}],
        },
        root / "postwarden.toml",
    )
    store = SqliteStore(cfg.data_dir)
    holder: list[QueueManager] = []
    intake = Intake(
        store, store, RecipientPolicy(store, cfg.relay), cfg.hostname,
        cfg.delivery.max_received_headers, on_queued=lambda: holder and holder[0].wake(),
    )
    body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, size // 78)
    envelope = Envelope(
        parse_address("sender@bench.test"), (DsnRecipient(parse_address("rcpt@sink.test")),)
    )
    started = time.perf_counter()
    for start in range(0, n, 500):
        await asyncio.gather(
            *(intake.submit(envelope, body) for _ in range(min(500, n - start)))
        )
    queued_in = time.perf_counter() - started
    print(f"queued {n} messages of ~{len(body)} bytes in {queued_in:.2f}s")

    manager = QueueManager(cfg, store, store, intake)
    holder.append(manager)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await manager.start()
    while store.next_due_time() is not None:  # bounded by the sink draining the queue
        await asyncio.sleep(0.05)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await manager.stop(grace=5)
    intake.close()
    sink.kill()
    await sink.wait()
    left = len(store.queued_ids())
    print(f"delivered {n - left} messages in {wall:.2f}s: {(n - left) / wall:.0f} msgs/s")
    print(f"CPU: {cpu:.2f}s total, {cpu / n * 1000:.3f} CPU seconds per 1000 messages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="messages (default 5000)")
    parser.add_argument("--size", type=int, default=2000, help="approximate message bytes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.n, args.size, Path(tmp)))


if __name__ == "__main__":
    main()
