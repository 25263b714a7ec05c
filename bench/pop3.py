"""POP3 benchmark: login + STAT + UIDL + RETR of every message in a big maildrop.

Builds a mailbox of N messages (default 10,000) in a temporary data
directory, serves it with the real ``POP3Server`` on 127.0.0.1 (its own
event loop in a thread), and fetches everything with poplib. It reports
messages/s and MB/s, and the same figures for plainly reading the message
files from disk in the same run; the ratio is the figure to watch.

    .venv/bin/python bench/pop3.py [--messages 10000] [--size 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import poplib
import tempfile
import threading
import time
import uuid
from pathlib import Path

from postwarden.config import from_dict
from postwarden.policy.passwords import hash_password
from postwarden.policy.throttle import AuthThrottle
from postwarden.servers.common import Authenticator
from postwarden.servers.pop3 import POP3Server
from postwarden.servers.services import MailboxServices
from postwarden.storage.interfaces import Acceptance, BlobRef
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore

USER = "bench@example.test"
PASSWORD = "bench password"


def message(i: int, size: int) -> bytes:
    """A plausible message of about ``size`` octets, with some lines to dot-stuff."""
    head = (f"From: sender{i}@remote.example\r\nTo: {USER}\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@remote.example>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    body = bytearray()
    while len(head) + len(body) < size:
        body += b".a line that needs a dot\r\n" if len(body) % 7 == 0 else line
    return head + bytes(body)


def fill(store: SqliteStore, count: int, size: int) -> list[Path]:
    """Write the files directly (no fsync each: this is set-up, not the benchmark)."""
    batch: list[Acceptance] = []
    paths: list[Path] = []
    for i in range(count):
        name = uuid.uuid4().hex
        path = store.blobs.blob_path(name)
        path.parent.mkdir(exist_ok=True)
        data = message(i, size)
        path.write_bytes(data)
        paths.append(path)
        batch.append(Acceptance(name, BlobRef(name, len(data)), "s@remote.example", (USER,), ()))
    store.delivery.commit_acceptances(batch)
    return paths


def raw_read(paths: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    for path in paths:
        with path.open("rb") as f:
            total += len(f.read())
    return time.perf_counter() - start, total


def serve(services: MailboxServices) -> tuple[asyncio.AbstractEventLoop, int]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> int:
        server = POP3Server(services, implicit_tls=False)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        return int(listener.sockets[0].getsockname()[1])

    return loop, asyncio.run_coroutine_threadsafe(start(), loop).result(30)


def fetch_all(port: int) -> tuple[float, float, int, int]:
    """Seconds for login (+ snapshot), seconds for the whole session, messages, octets."""
    start = time.perf_counter()
    client = poplib.POP3("127.0.0.1", port, timeout=300)
    client.user(USER)
    client.pass_(PASSWORD)
    logged_in = time.perf_counter() - start
    count, octets = client.stat()
    _, uids, _ = client.uidl()
    assert len(uids) == count
    for number in range(1, count + 1):
        client.retr(number)
    client.quit()
    return logged_in, time.perf_counter() - start, count, octets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096, help="approximate octets per message")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = from_dict({"hostname": "bench.example.test", "data_dir": "var"},
                        root / "postwarden.toml")
        store = SqliteStore(cfg.data_dir)
        store.directory.add_domain("example.test")
        store.directory.add_account(USER, hash_password(PASSWORD))
        paths = fill(store, args.messages, args.size)
        raw_seconds, raw_octets = raw_read(paths)  # also warms the page cache for both
        auth = Authenticator(AsyncSqliteStore(store), AuthThrottle(10, 900))
        services = MailboxServices(cfg, store.directory, store.mailboxes, store.blobs, auth, None)
        loop, port = serve(services)
        login_cold, seconds, count, octets = fetch_all(port)
        login_warm, warm_seconds, _, _ = fetch_all(port)  # wire sizes now cached
        loop.call_soon_threadsafe(loop.stop)
    mb = octets / 1e6
    print(f"messages: {count}, {mb:.1f} MB on the wire ({raw_octets / 1e6:.1f} MB on disk)")
    print(f"raw file reads : {raw_seconds:7.3f} s  {count / raw_seconds:9.0f} msg/s"
          f"  {raw_octets / 1e6 / raw_seconds:8.1f} MB/s")
    for label, total, login in (("POP3 first    ", seconds, login_cold),
                                ("POP3 again    ", warm_seconds, login_warm)):
        print(f"{label} : {total:7.3f} s  {count / total:9.0f} msg/s  {mb / total:8.1f} MB/s"
              f"  (login+snapshot {login:.3f} s)  ratio to raw reads {total / raw_seconds:.1f}x")


if __name__ == "__main__":
    main()
