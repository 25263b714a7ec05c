"""Message bytes on PostgreSQL: group commits with blobs in the database vs in S3,
and ``migrate`` of a SQLite store into each.

A throwaway PostgreSQL (``tests/pgcluster.py``) and a local S3 server (moto,
``tests/s3server.py``) on loopback. The store is driven directly (no SMTP):
``--messages`` acceptances of ``--size`` bytes to one local account, in group
commits of ``--batch``, as the intake's writer thread makes them. Then a SQLite
data directory with the same messages is migrated into an empty database,
once with the bytes into the database and once into S3.

    .venv/bin/python bench/blobs.py [--messages 2000] [--size 4096] [--batch 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgcluster import running_cluster
from postwarden.admin.migrate import migrate
from postwarden.config import from_dict
from postwarden.storage.factory import Store
from postwarden.storage.interfaces import Acceptance
from postwarden.storage.postgresql import PgStore
from postwarden.storage.sqlite import SqliteStore
from s3server import running_s3

ACCOUNT = "alice@example.test"


def fill(store: Store, messages: int, size: int, batch: int) -> float:
    """Accept ``messages`` in group commits; seconds taken."""
    store.directory.add_domain("example.test")
    store.directory.add_account(ACCOUNT, "hash")
    began = time.perf_counter()
    for first in range(0, messages, batch):
        group = []
        for n in range(first, min(first + batch, messages)):
            name = f"m{n:08d}"
            writer = store.blobs.new_blob(name)
            writer.write(b"Subject: %d\r\n\r\n" % n + os.urandom(size // 2).hex().encode())
            group.append(Acceptance(name, writer.commit(), "s@remote.test", (ACCOUNT,), ()))
        store.delivery.commit_acceptances(group)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with running_cluster() as cluster, running_s3() as s3, \
            tempfile.TemporaryDirectory() as tmp:
        def config(s3_bucket: str | None) -> dict[str, object]:
            return {"hostname": "h", "data_dir": str(Path(tmp) / "sqlite"),
                    "s3": s3.settings(s3_bucket) if s3_bucket else {}}

        rows = []
        for place in ("database", "s3"):
            cfg = from_dict(config(s3.bucket() if place == "s3" else None), Path(tmp) / "x")
            store = PgStore(cluster.database(), s3=cfg.s3 if place == "s3" else None)
            took = fill(store, args.messages, args.size, args.batch)
            store.close()
            rows.append((f"accept, blobs = {place}", took))
        sqlite = SqliteStore(Path(tmp) / "sqlite")
        rows.append(("accept, SQLite files (same run)",
                     fill(sqlite, args.messages, args.size, args.batch)))
        sqlite.close()
        for place in ("database", "s3"):
            cfg = from_dict(config(s3.bucket()), Path(tmp) / "x")
            began = time.perf_counter()
            report = migrate(cfg, cluster.database(), place)
            assert report.ok and report.blobs_verified == args.messages
            rows.append((f"migrate --blobs {place} (copy + read-back check)",
                         time.perf_counter() - began))
    print(f"{args.messages} messages of {args.size} bytes, group commits of {args.batch}")
    print("| run | seconds | messages/s |\n|---|---|---|")
    for what, took in rows:
        print(f"| {what} | {took:.2f} | {args.messages / took:,.0f} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
