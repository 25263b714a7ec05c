"""Run only the delivery queue of a config, as `serve` would, until SIGTERM.

The crash and CLI tests start this in a subprocess so that they can kill -9
it mid-delivery and restart it, or drive it with `postwarden queue ...`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from postwarden.config import load
from postwarden.delivery.manager import QueueManager
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.storage.sqlite.aio import AsyncSqliteStore
from postwarden.storage.sqlite.store import SqliteStore


async def main(path: str) -> None:
    cfg = load(path)
    store = SqliteStore(cfg.data_dir)
    wake: list[QueueManager] = []
    aio = AsyncSqliteStore(store)
    intake = Intake(
        store.blobs, aio, RecipientPolicy(aio, cfg.relay, cfg.hostname), cfg.hostname,
        cfg.delivery.max_received_headers, on_queued=lambda: wake[0].wake(),
    )
    manager = QueueManager(cfg, aio, aio, intake)
    wake.append(manager)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await manager.start()
    print("ready", flush=True)
    await stop.wait()
    await manager.stop(grace=5)
    aio.close()
    store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[1]))
