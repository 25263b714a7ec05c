"""Memory under a flood of silent connections to the implicit-TLS ports (issue 8, defect 3).

    .venv/bin/python bench/tls_flood.py [-n 6000] [--kind pop3s] [--sources 1]
                                        [--hold 15] [--handshake-timeout SECONDS]

Starts a real ``postwarden serve`` with the default limits (``tests/serverproc.py``
writes the config), logs in once over the TLS port to warm it up, reads its
VmRSS (the baseline), then opens ``-n`` TCP connections to ``--kind`` from
``--sources`` loopback addresses (127.0.9.1, 127.0.9.2, ..., 127.0.10.1, ...) and never sends a
byte: no ClientHello. It counts the connections the server closed at once,
reads VmRSS while they are held, holds them ``--hold`` seconds (longer than
the handshake deadline, 10 s by default), reads VmRSS again, closes them all
and reads VmRSS a last time; then logs in once more to show the server still
serves. Peak is VmHWM over the whole flood.

``--handshake-timeout`` sets ``[limits] handshake_timeout_seconds``; leave it
out to run against a server that does not know the key (the "before" rows).
The soft fd limit is raised here and inherited by the server. Run by hand,
never by ``make test``; loopback only; the temp dir is removed at exit.
"""

from __future__ import annotations

import argparse
import base64
import select
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import proc_status_kb, raise_fd_limit, reset_peak_rss  # noqa: E402

from serverproc import PASSWORD, ServerProcess  # noqa: E402

USER = "flood@example.test"
GREETING = {"pop3s": b"+OK", "submissions": b"220"}


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


def login(server: ServerProcess, kind: str) -> float:
    """One TLS session with a login; returns its duration in seconds."""
    start = time.perf_counter()
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with socket.create_connection(server.addr(kind), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as conn:
        reader = conn.makefile("rb")
        assert reader.readline().startswith(GREETING[kind])
        if kind == "pop3s":
            conn.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\nQUIT\r\n".encode())
            replies = [reader.readline() for _ in range(3)]
        else:
            conn.sendall(b"EHLO bench.test\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            conn.sendall(b"AUTH PLAIN " + _plain() + b"\r\nQUIT\r\n")
            replies = [reader.readline() for _ in range(2)]
        assert all(r[:3] in (b"+OK", b"235", b"221") for r in replies), replies
    return time.perf_counter() - start


def _plain() -> bytes:
    return base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())


def closed_now(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (EOF or reset), without waiting."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    for fd, _ in poller.poll(0):
        try:
            closed += by_fd[fd].recv(1, socket.MSG_PEEK) == b""
        except OSError:
            closed += 1
    return closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=6000, help="silent connections")
    parser.add_argument("--kind", default="pop3s", choices=sorted(GREETING))
    parser.add_argument("--sources", type=int, default=1, help="client addresses to spread over")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds to hold them")
    parser.add_argument("--handshake-timeout", type=int, default=None)
    args = parser.parse_args()
    raise_fd_limit(args.n + 1000)
    limits = {} if args.handshake_timeout is None else {
        "handshake_timeout_seconds": args.handshake_timeout}
    with tempfile.TemporaryDirectory(prefix="pw-tlsflood-") as tmp:
        server = ServerProcess(Path(tmp), limits=limits)
        server.add_user(USER)
        server.start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            login(server, args.kind)
            base = proc_status_kb(pid, "VmRSS")
            reset_peak_rss(pid)
            socks: list[socket.socket] = []
            start = time.perf_counter()
            for i in range(args.n):
                k = i % args.sources
                source = f"127.0.{9 + k // 250}.{1 + k % 250}"
                socks.append(socket.create_connection(server.addr(args.kind), timeout=60,
                                                      source_address=(source, 0)))
            opened = time.perf_counter() - start
            time.sleep(2)  # a bench, not a test: let the server catch up with its backlog
            refused = closed_now(socks)
            during = proc_status_kb(pid, "VmRSS")
            time.sleep(max(0.0, args.hold - 2))
            held_after = args.n - closed_now(socks)
            after_deadline = proc_status_kb(pid, "VmRSS")
            for sock in socks:
                sock.close()
            time.sleep(3)
            after_close = proc_status_kb(pid, "VmRSS")
            peak = proc_status_kb(pid, "VmHWM")
            latency = login(server, args.kind)
        finally:
            server.stop()
    print(f"{args.n} silent connections to {args.kind} from {args.sources} address(es), "
          f"opened in {opened:.1f} s")
    print(f"closed by the server within 2 s: {refused}; still open after {args.hold:.0f} s: "
          f"{held_after}")
    print(f"VmRSS baseline {mb(base)}, flood held {mb(during)}, after {args.hold:.0f} s "
          f"{mb(after_deadline)}, after close {mb(after_close)}, peak {mb(peak)}")
    print(f"login after the flood: {latency * 1000:.0f} ms")


if __name__ == "__main__":
    main()
