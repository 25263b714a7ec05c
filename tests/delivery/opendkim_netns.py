"""Runs OpenDKIM's ``opendkim-testmsg`` against keys served by a loopback DNS server.

opendkim-testmsg has no resolver option: libopendkim (Debian's is built
without libunbound) asks the system resolver, which reads /etc/resolv.conf
and always uses port 53. So this script runs inside a private network and
mount namespace (``unshare --map-root-user --net --mount``, started by the
test): it bind-mounts a resolv.conf naming 127.0.0.1 over the real one, brings
the namespace's own loopback up, serves the records on 127.0.0.1:53 there,
and verifies each message. Nothing leaves the namespace's loopback.

Usage: opendkim_netns.py RECORDS.json MESSAGE...; prints one JSON line per
message: {"file", "status", "stderr"} (status 0 = the signature verified),
then {"queries": [[name, type], ...]}, what the DNS server was asked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from dnsfake import DNSServer


def _private_resolver(folder: Path) -> None:
    conf = folder / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


async def _verify(records: dict[tuple[str, str], list[str]], messages: list[str]) -> None:
    server = DNSServer(records)
    await server.start(53)
    try:
        for name in messages:
            proc = await asyncio.create_subprocess_exec(
                "opendkim-testmsg", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            _out, err = await asyncio.wait_for(proc.communicate(Path(name).read_bytes()), 30)
            print(json.dumps({"file": name, "status": proc.returncode,
                              "stderr": err.decode(errors="replace").strip()}), flush=True)
        print(json.dumps({"queries": server.queries}), flush=True)
    finally:
        await server.close()


def main() -> None:
    raw = json.loads(Path(sys.argv[1]).read_text())
    records = {(name, kind): values for name, kind, values in raw}
    with tempfile.TemporaryDirectory() as folder:
        _private_resolver(Path(folder))
        asyncio.run(_verify(records, sys.argv[2:]))


if __name__ == "__main__":
    main()
