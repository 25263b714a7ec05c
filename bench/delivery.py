"""Delivery throughput: queue N messages, then time the queue emptying into a sink.

    .venv/bin/python bench/delivery.py [-n 5000] [--size 2000] [--rtt-ms 20] [--no-pipelining]
                                       [--dkim rsa|ed25519|both]

The sink is a minimal SMTP server in a subprocess (so its CPU is not
counted), reached through a [[routes]] entry. Messages are queued through the
real intake first; then the queue manager starts and the clock runs until no
recipient is pending. Reports messages/second delivered and the CPU seconds
this process (event loop plus its SQLite thread) spent per 1000 messages.
``--rtt-ms`` makes every sink reply leave that much later, as over a network,
and ``--no-pipelining`` withholds PIPELINING: together they show what
pipelining saves on a real link. ``--dkim`` gives bench.test keys of that
kind, so every message is signed at delivery (dual-signed with ``both``), and
first times signing alone: milliseconds of CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from postwarden.config import from_dict
from postwarden.delivery import dkimsign
from postwarden.delivery.manager import QueueManager
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.mail.address import parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.store import SqliteStore

SINK = r'''
import asyncio, sys

RTT = float(sys.argv[1]) / 1000  # every reply leaves this much later: a network round trip
PIPELINING = sys.argv[2] == "1"

async def client(reader, writer):
    loop = asyncio.get_running_loop()

    def send(data):
        if RTT:
            loop.call_later(RTT, writer.write, data)
        else:
            writer.write(data)

    send(b"220 sink ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"DATA":
            send(b"354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")  # one call per message, not per line
            send(b"250 2.0.0 Ok\r\n")
        elif verb == b"EHLO":
            send(b"250-sink\r\n" + (b"250-PIPELINING\r\n" if PIPELINING else b"")
                 + b"250 8BITMIME\r\n")
        elif verb == b"QUIT":
            send(b"221 bye\r\n")
            break
        else:
            send(b"250 Ok\r\n")
    await asyncio.sleep(RTT)
    writer.close()

async def main():
    server = await asyncio.start_server(client, "127.0.0.1", 0, limit=1 << 26)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


DKIM_CHOICES = {"rsa": ("rsa-sha256",), "ed25519": ("ed25519-sha256",),
                "both": dkimsign.ALGORITHMS}


def signing_cost(data_dir: Path, message: bytes, rounds: int = 200) -> None:
    """CPU per signature, key files read as in delivery: what --dkim adds per message."""
    signer = dkimsign.Signer(data_dir, 0)
    head, used = signer.signature(message)
    assert head.startswith(b"DKIM-Signature:"), "no key for the author domain"
    cpu0 = time.process_time()
    for _ in range(rounds):
        signer.signature(message)
    per = (time.process_time() - cpu0) / rounds
    print(f"signing ({used}): {per * 1000:.2f} ms CPU per message")


async def run(n: int, size: int, root: Path, rtt_ms: float, pipelining: bool,
              dkim: str | None) -> None:
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SINK, str(rtt_ms), "1" if pipelining else "0",
        stdout=asyncio.subprocess.PIPE,
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
    aio = AsyncSqliteStore(store)
    intake = Intake(
        store.blobs, aio, RecipientPolicy(aio, cfg.relay, cfg.hostname), cfg.hostname,
        cfg.delivery.max_received_headers, on_queued=lambda: holder and holder[0].wake(),
    )
    body = (b"From: <sender@bench.test>\r\nSubject: bench\r\n\r\n"
            + (b"x" * 76 + b"\r\n") * max(1, size // 78))
    if dkim is not None:
        for algorithm in DKIM_CHOICES[dkim]:
            dkimsign.generate(cfg.data_dir, "bench.test", None, algorithm, time.time())
        signing_cost(cfg.data_dir, body)
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

    manager = QueueManager(cfg, aio, aio, intake)
    holder.append(manager)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await manager.start()
    while store.queue.next_due_time() is not None:  # bounded by the sink draining the queue
        await asyncio.sleep(0.05)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await manager.stop(grace=5)
    aio.close()
    sink.kill()
    await sink.wait()
    left = len(store.queue.queued_ids())
    print(f"delivered {n - left} messages in {wall:.2f}s: {(n - left) / wall:.0f} msgs/s")
    print(f"CPU: {cpu:.2f}s total, {cpu / n * 1000:.3f} CPU seconds per 1000 messages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="messages (default 5000)")
    parser.add_argument("--size", type=int, default=2000, help="approximate message bytes")
    parser.add_argument("--rtt-ms", type=float, default=0,
                        help="the sink answers this much later, like a remote host (default 0)")
    parser.add_argument("--no-pipelining", action="store_true",
                        help="the sink does not offer PIPELINING")
    parser.add_argument("--dkim", choices=sorted(DKIM_CHOICES),
                        help="sign every message with keys of this kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.n, args.size, Path(tmp), args.rtt_ms, not args.no_pipelining,
                        args.dkim))


if __name__ == "__main__":
    main()
