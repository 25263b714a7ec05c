"""Watch one mailbox from a process of its own and print its first change event.

The change-event tests start this to stand for a second server or the CLI on
the same data directory: it prints ``watching`` once it listens, then
``changed MODSEQ`` when it hears of a commit made by another process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from postwarden.storage.sqlite import SqliteStore


async def main(data_dir: str, mailbox_id: str) -> None:
    store = SqliteStore(Path(data_dir))
    store.changes.listen()
    with store.changes.watch(int(mailbox_id)) as watch:
        print("watching", flush=True)
        print(f"changed {await watch.wait()}", flush=True)
    store.changes.close()
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
