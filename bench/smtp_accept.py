"""SMTP durable-accept rate: postwarden, a minimal aiosmtpd + fsync baseline, and Postfix.

    .venv/bin/python bench/smtp_accept.py [-s 20] [-m 5000] [-l 1024] [--python]

Load: ``-s`` concurrent sessions, one new connection per message, one local
recipient, ``-l``-byte messages, ``-m`` messages in total. The load generator
is Postfix's ``smtp-source`` (installed with apt when missing and running as
root; its CPU is C, not Python); without it an asyncio generator in this
process is used, with a warning.

The servers: postwarden (``postwarden serve``), the aiosmtpd baseline below,
and a throwaway Postfix instance (``postfix_instance.py``: Debian's package,
its own config and queue in a temp dir, a loopback port, mail for
``bench.test`` into a Maildir, nothing sent anywhere; needs root). They run
side by side (an idle one costs nothing) and get the same passes,
interleaved so that drift on the machine hits all alike:

1. throughput, ``--repeat`` times: ``smtp-source`` alone, messages / wall
   clock from its start to its exit; the median is reported;
2. latency: the same load once more, plus a sampler in this process that
   sends one message at a time on its own connection (EHLO, MAIL, RCPT,
   DATA) and times connect -> the ``250`` after the final dot. smtp-source
   cannot report per-message latency, so p50/p99 come from these samples.

Postfix acknowledges a message once its queue file is fsynced and delivers
it to the Maildir afterwards; after each of its passes the script waits for
the Maildir to hold every acknowledged message, so that its delivery work
never overlaps another server's pass, and reports that rate too
("to mailbox"). postwarden and the baseline store before they answer.

With ``--python`` (or no smtp-source) the generator times every message
itself and there is no separate latency pass. Then peak memory of each
server (VmHWM of the process; for Postfix, the highest sum of PSS over its
master and children, sampled every 0.5 s), CPU seconds (for Postfix,
every process it ran), and a check that every acknowledged message is in the
store (``messages`` rows for postwarden, files for the others).

Run by hand, never by ``make test``. Loopback only; temp dirs and child
processes (Postfix included) are removed at exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "delivery"))

import pgserver
from common import (
    USER,
    Server,
    find_smtp_source,
    make_body,
    percentile,
    proc_status_kb,
    raise_fd_limit,
    reset_peak_rss,
    send_message,
    start_postwarden,
    stored_messages,
    tree_cpu_seconds,
    tree_pss_kb,
)
from postfix_instance import PostfixInstance, why_unavailable

SENDER = "sender@x.test"
DRAIN_STALL = 60.0  # give up waiting for Postfix's Maildir after this long without progress

BASELINE = r'''
"""Minimal aiosmtpd server: each message written to a file, fsynced, renamed."""
import asyncio, itertools, os, sys
from aiosmtpd.smtp import SMTP

class Handler:
    def __init__(self, root):
        self.root, self.seq = root, itertools.count()

    async def handle_DATA(self, server, session, envelope):
        name = f"{os.getpid()}.{next(self.seq)}"
        tmp = os.path.join(self.root, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.root, "new", name))
        return "250 2.0.0 Ok: queued"

async def main(root):
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    handler = Handler(root)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="baseline.test", data_size_limit=None),
        "127.0.0.1", 0)
    print(f"listening smtp 127.0.0.1:{server.sockets[0].getsockname()[1]}")
    print("baseline ready", flush=True)
    await server.serve_forever()

asyncio.run(main(sys.argv[1]))
'''


@dataclass
class Result:
    """What one server did under the load."""

    name: str
    server: Server | PostfixInstance
    root: Path
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    peak_rss_kb: int = 0
    cpu_seconds: float = 0.0
    cpu_start: float = 0.0
    counted_from: int = 0  # ``expected`` when the CPU clock started
    warmup_rate: float = 0.0
    startup_hwm_kb: int = 0
    hwm_reset: bool = False
    stored: int = 0
    expected: int = 0
    mailbox_rates: list[float] = field(default_factory=list)
    workers: int = 1  # --workers: processes of one postwarden
    dsn: str = ""  # --backend postgresql: its database
    sent: pgserver.Counts | None = None  # statements to PostgreSQL over the counted passes

    @property
    def rate(self) -> float:
        """Median messages per second over the throughput passes."""
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        """Server CPU milliseconds per message over the counted passes."""
        return self.cpu_seconds * 1000 / max(1, self.expected - self.counted_from)

    @property
    def queues(self) -> bool:
        """True for Postfix: it answers before the message is in the mailbox."""
        return isinstance(self.server, PostfixInstance)

    @property
    def tree(self) -> bool:
        """True when the server is several processes (Postfix, postwarden --workers)."""
        return self.queues or self.workers > 1

    def memory_kb(self) -> int:
        """VmHWM of a one-process server; summed PSS of a server's processes now."""
        if self.tree:
            return tree_pss_kb(self.server.pid)
        return proc_status_kb(self.server.pid, "VmHWM")


async def drain(r: Result) -> float:
    """Wait until Postfix's Maildir holds every acknowledged message; returns the seconds.

    Bounded: gives up (with a warning) after DRAIN_STALL seconds without progress.
    """
    assert isinstance(r.server, PostfixInstance)
    started = last_change = time.perf_counter()
    seen = -1
    while (count := r.server.delivered()) < r.expected:
        if count != seen:
            seen, last_change = count, time.perf_counter()
        elif time.perf_counter() - last_change > DRAIN_STALL:
            print(f"  WARNING: {r.name} delivered {count} of {r.expected}; not waiting longer"
                  + r.server.log_tail(), flush=True)
            break
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def sample_memory(results: list[Result]) -> None:
    """Keep the highest summed PSS of multi-process servers, every 0.5 s until cancelled."""
    while True:  # cancelled by drive() when the passes are over
        for r in results:
            if r.tree:
                r.peak_rss_kb = max(r.peak_rss_kb, r.memory_kb())
        await asyncio.sleep(0.5)


async def python_load(port: int, sessions: int, messages: int, body: bytes) -> list[float]:
    """``sessions`` workers share ``messages``; returns the latency of every message."""
    remaining = messages
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await send_message("127.0.0.1", port, SENDER, USER, body))

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return latencies


async def smtp_source_load(exe: str, port: int, args: argparse.Namespace,
                           body: bytes, sample: bool) -> tuple[float, list[float], int]:
    """Run smtp-source once; with ``sample``, time single messages alongside it.

    Returns the wall time, the latencies of samples that finished while
    smtp-source was still running, and how many messages the sampler sent.
    """
    argv = [exe, "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
            "-f", SENDER, "-t", USER, f"127.0.0.1:{port}"]
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    latencies: list[float] = []
    sampled = 0
    if sample:
        waiter = asyncio.ensure_future(proc.wait())
        while not waiter.done():  # bounded: smtp-source sends a fixed number of messages
            latency = await send_message("127.0.0.1", port, SENDER, USER, body)
            sampled += 1
            if not waiter.done():
                latencies.append(latency)
    out, err = await proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({proc.returncode}): {(out + err).decode()}")
    return seconds, latencies, sampled


async def throughput_pass(r: Result, smtp_source: str | None, args: argparse.Namespace,
                          body: bytes) -> None:
    """One pass of the load against one server; appends its rate (and latencies)."""
    if smtp_source:
        seconds, _, _ = await smtp_source_load(smtp_source, r.server.port, args, body, False)
    else:
        started = time.perf_counter()
        r.latencies += await python_load(r.server.port, args.sessions, args.messages, body)
        seconds = time.perf_counter() - started
    r.rates.append(args.messages / seconds)
    r.expected += args.messages
    if r.queues:
        r.mailbox_rates.append(args.messages / (seconds + await drain(r)))
        print(f"  {r.name}: {r.rates[-1]:.0f} msgs/s acknowledged, "
              f"{r.mailbox_rates[-1]:.0f} msgs/s to mailbox", flush=True)
    else:
        print(f"  {r.name}: {r.rates[-1]:.0f} msgs/s", flush=True)


async def latency_pass(r: Result, smtp_source: str, args: argparse.Namespace,
                       body: bytes) -> None:
    """smtp-source load again, with the one-message-at-a-time sampler alongside."""
    _, r.latencies, sampled = await smtp_source_load(smtp_source, r.server.port, args, body,
                                                     True)
    r.expected += args.messages + sampled
    if r.queues:
        await drain(r)


async def drive(results: list[Result], smtp_source: str | None,
                args: argparse.Namespace, body: bytes) -> None:
    """Interleaved throughput passes (so drift hits all servers alike), then latency."""
    for r in results:  # the startup peak is reported apart
        r.startup_hwm_kb = r.memory_kb()
        r.hwm_reset = not r.tree and reset_peak_rss(r.server.pid)
    if args.warmup:
        print(f"warm-up: {args.warmup} messages per server, not counted", flush=True)
        warm = argparse.Namespace(**{**vars(args), "messages": args.warmup})
        for r in results:
            await throughput_pass(r, smtp_source, warm, body)
            r.warmup_rate = r.rates.pop()
            r.mailbox_rates.clear()
            r.latencies.clear()
    for r in results:
        r.cpu_start = tree_cpu_seconds(r.server.pid)
        r.counted_from = r.expected
        if r.dsn:
            pgserver.reset_counts(r.dsn)
    sampler = asyncio.ensure_future(sample_memory(results))
    for round_ in range(args.repeat):
        print(f"throughput pass {round_ + 1}/{args.repeat}", flush=True)
        for r in results if round_ % 2 == 0 else results[::-1]:
            await throughput_pass(r, smtp_source, args, body)
    if smtp_source:
        print("latency pass (smtp-source + sampler)", flush=True)
        for r in results:
            await latency_pass(r, smtp_source, args, body)
    sampler.cancel()
    for r in results:
        r.cpu_seconds = tree_cpu_seconds(r.server.pid) - r.cpu_start
        if r.dsn:
            r.sent = pgserver.counts(r.dsn)
        r.peak_rss_kb = max(r.peak_rss_kb, r.memory_kb())


def start_baseline(root: Path) -> Server:
    """Write the aiosmtpd baseline script into ``root`` and start it."""
    script = root / "baseline.py"
    script.write_text(BASELINE, encoding="utf-8")
    return Server([sys.executable, str(script), str(root / "mail")], root,
                  "baseline ready").start()


CHECKED = "postwarden+checks"
DKIM_SELECTOR = "bench"


@dataclass(frozen=True)
class AuthSetup:
    """--auth-checks: the loopback DNS server's address and the key that signs the body."""

    nameserver: str
    private_pem: bytes


def auth_dns(stack: contextlib.ExitStack) -> AuthSetup:
    """A loopback DNS server where the sender's SPF (MAIL FROM and HELO) passes, DMARC is
    p=reject and the DKIM key of the body's signature is published: every message runs
    SPF twice, one RSA-2048 DKIM verification and DMARC. Every answer has a TTL of 60 s,
    so after the warm-up they come from the server's cache: this measures the checks'
    work, not DNS round trips."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from dnsfake import ThreadedDNS
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    strings = " ".join(f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))
    domain = SENDER.rpartition("@")[2]
    dns = ThreadedDNS({(domain, "TXT"): ['"v=spf1 ip4:127.0.0.0/8 -all"'],
                       ("client.test", "TXT"): ['"v=spf1 ip4:127.0.0.0/8 -all"'],
                       (f"_dmarc.{domain}", "TXT"): ['"v=DMARC1; p=reject"'],
                       (f"{DKIM_SELECTOR}._domainkey.{domain}", "TXT"): [strings]})
    stack.callback(dns.close)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return AuthSetup(f"127.0.0.1:{dns.port}", pem)


def bench_body(args: argparse.Namespace, auth: AuthSetup | None) -> bytes:
    """The message every server gets; with --auth-checks, DKIM-signed (by dkimpy) once."""
    body = make_body(args.size)
    if auth is None:
        return body
    import dkim
    domain = SENDER.rpartition("@")[2].encode()
    return dkim.sign(body, DKIM_SELECTOR.encode(), domain, auth.private_pem,
                     include_headers=[b"from", b"to", b"subject"]) + body


def run(smtp_source: str | None, servers: list[str], args: argparse.Namespace) -> list[Result]:
    """Start the servers in temp dirs, load them, stop them, count what they stored."""
    with contextlib.ExitStack() as stack:
        results: list[Result] = []
        server: Server | PostfixInstance
        auth = auth_dns(stack) if CHECKED in servers else None
        extra = variants(args)
        cluster = pgserver.start(stack) if any(pg for _, pg in extra.values()) else None
        for name in servers:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"pw-{name}-")))
            workers, dsn = 1, ""
            match name:
                case "postwarden" | "postwarden+checks":
                    server = start_postwarden(
                        root, max_connections=max(5000, 4 * args.sessions),
                        nameserver=auth.nameserver if auth and name == CHECKED else "")
                case _ if name in extra:
                    workers, on_pg = extra[name]
                    dsn = pgserver.database(cluster) if cluster and on_pg else ""
                    server = start_postwarden(root, max_connections=max(5000, 4 * args.sessions),
                                              workers=workers, dsn=dsn)
                case "aiosmtpd+fsync":
                    server = start_baseline(root)
                case _:
                    server = PostfixInstance(root)
                    stack.callback(server.stop)  # registered first: stopped even if start fails
                    server.start()
            stack.callback(server.stop)
            results.append(Result(name, server, root, workers=workers, dsn=dsn))
        asyncio.run(drive(results, smtp_source, args, bench_body(args, auth)))
        for r in results:
            if r.queues:
                r.stored = r.server.delivered()
            code = r.server.stop()
            if code not in (0, None) and r.name.startswith("postwarden"):  # aiosmtpd: SIGTERM
                print(f"warning: {r.name} exited {code}: {''.join(r.server.stderr[-5:])}")
            if r.name.startswith("postwarden"):
                r.stored = stored_messages(r.root, r.dsn)
            elif r.name == "aiosmtpd+fsync":
                r.stored = len(os.listdir(r.root / "mail" / "new"))
        return results


def report(results: list[Result], generator: str, args: argparse.Namespace) -> None:
    """Print one row per server and the ratios."""
    print()
    print(f"{'server':<16}{'msgs/s':>8}{'(min-max)':>12}{'to mbox':>9}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'samples':>8}{'peak mem MB':>12}{'CPU s':>7}{'CPU ms/msg':>11}{'stored/acked':>14}")
    for r in results:
        p50 = percentile(r.latencies, 50) * 1000 if r.latencies else float("nan")
        p99 = percentile(r.latencies, 99) * 1000 if r.latencies else float("nan")
        spread = f"{min(r.rates):.0f}-{max(r.rates):.0f}"
        mailbox = statistics.median(r.mailbox_rates) if r.mailbox_rates else r.rate
        print(f"{r.name:<16}{r.rate:>8.0f}{spread:>12}{mailbox:>9.0f}{p50:>8.1f}{p99:>8.1f}"
              f"{len(r.latencies):>8}{r.peak_rss_kb / 1024:>12.1f}{r.cpu_seconds:>7.1f}"
              f"{r.cpu_ms_per_message:>11.2f}{f'{r.stored}/{r.expected}':>14}")
    print()
    print(f"load: {args.sessions} sessions, {args.messages} messages of {args.size} bytes, "
          f"one connection per message, generator {generator}")
    print(f"msgs/s = median over {args.repeat} interleaved passes of messages / wall time; "
          "to mbox = the same until the last one is in the mailbox (Postfix delivers after "
          "its 250; the others store before it)")
    if generator == "smtp-source":
        print("p50/p99 = connect -> 250 after the final dot, measured by a Python client "
              "sending one message at a time during an extra smtp-source pass")
    else:
        print("p50/p99 = connect -> 250 after the final dot, every message of the load")
    if args.warmup:
        print(f"warm-up on the fresh data dir ({args.warmup} msgs, not counted): " + ", ".join(
            f"{r.name} {r.warmup_rate:.0f} msgs/s" for r in results))
    print("peak mem = VmHWM of the server process during the load (reset after startup: "
          + ", ".join(f"{r.name} {'yes' if r.hwm_reset else 'NO'}" for r in results
                      if not r.tree)
          + "); for Postfix and --workers the highest sum of PSS over all its processes, "
          "sampled every "
          "0.5 s; at startup: " + ", ".join(
              f"{r.name} {r.startup_hwm_kb / 1024:.1f} MB" for r in results))
    print("CPU s = server user+sys over the throughput and latency passes (not the warm-up), "
          "for Postfix every process it ran; CPU ms/msg = that over those passes' messages "
          "(steadier than msgs/s when the machine is busy)")
    for r in results:
        if r.stored < r.expected:
            print(f"WARNING: {r.name} stored {r.stored} of {r.expected} acknowledged messages")
    by_name = {r.name: r for r in results}
    pw = by_name.get("postwarden")
    compare_variants(results, pw)
    if pw and CHECKED in by_name and pw.rate:
        ratio = by_name[CHECKED].rate / pw.rate
        on, off = by_name[CHECKED].cpu_ms_per_message, pw.cpu_ms_per_message
        print(f"ratio {CHECKED}/postwarden: {ratio:.0%} "
              f"({'meets' if ratio >= 0.7 else 'BELOW'} the 70 % target); CPU ms/msg "
              f"{on:.2f} vs {off:.2f}: the checks' own {on - off:.2f} ms, "
              f"CPU ratio {off / on if on else 0:.0%}"
              " (what the rate ratio tends to on a quiet machine, where the server is CPU-bound)")
    for other, target in (("postfix", 1.0), ("aiosmtpd+fsync", 1.3)):
        if pw and other in by_name and by_name[other].rate:
            ratio = pw.rate / by_name[other].rate
            verdict = "meets" if ratio >= target else "BELOW"
            print(f"ratio postwarden/{other}: {ratio:.2f}x ({verdict} the {target:.1f}x target); "
                  f"CPU per message {other}/postwarden: "
                  f"{by_name[other].cpu_ms_per_message / pw.cpu_ms_per_message:.2f}x")


def variants(args: argparse.Namespace) -> dict[str, tuple[int, bool]]:
    """The postwarden columns ``--workers`` and ``--backend`` add beside the one-process
    SQLite one: name -> (workers, on PostgreSQL)."""
    extra: dict[str, tuple[int, bool]] = {}
    if args.workers > 1:
        extra[f"postwarden-w{args.workers}"] = (args.workers, False)
    if args.backend == "postgresql":
        extra["postwarden-pg"] = (1, True)
        if args.workers > 1:
            extra[f"postwarden-pg-w{args.workers}"] = (args.workers, True)
    return extra


def compare_variants(results: list[Result], pw: Result | None) -> None:
    """Round trips to PostgreSQL per message, and each variant's rate against postwarden's."""
    for r in results:
        if r.sent:
            counted = max(1, r.expected - r.counted_from)
            print(f"{r.name}: {r.sent.statements / counted:.2f} statements (round trips) and "
                  f"{r.sent.commits / counted:.2f} COMMITs (write transactions) per accepted "
                  f"message ({r.sent.statements} and {r.sent.commits} for {counted} messages, "
                  "background work such as the indexer and the queue manager's polls "
                  "included); the most sent:")
            for calls, query in r.sent.busiest:
                print(f"  {calls / counted:6.2f}/msg  {query[:110]}")
        if pw and r is not pw and (r.workers > 1 or r.dsn) and pw.rate:
            print(f"ratio {r.name}/postwarden: {r.rate / pw.rate:.2f}x msgs/s; CPU ms/msg "
                  f"{r.cpu_ms_per_message:.2f} vs {pw.cpu_ms_per_message:.2f}")


def choose_servers(args: argparse.Namespace) -> list[str]:
    """The servers to run: all three unless told otherwise or Postfix cannot run here."""
    servers = ["postwarden", "aiosmtpd+fsync", "postfix"]
    if args.only:
        servers = [{"baseline": "aiosmtpd+fsync"}.get(args.only, args.only)]
    if args.auth_checks and "postwarden" in servers:
        servers.insert(servers.index("postwarden") + 1, CHECKED)
    if "postwarden" in servers:
        at = servers.index("postwarden") + 1
        servers[at:at] = list(variants(args))
    if args.backend == "postgresql" and (reason := pgserver.why_unavailable()):
        sys.exit(f"--backend postgresql: {reason}")
    if args.no_postfix and "postfix" in servers:
        servers.remove("postfix")
    if "postfix" in servers and (reason := why_unavailable()):
        print(f"WARNING: no Postfix column: {reason}", file=sys.stderr)
        servers.remove("postfix")
    if not servers:
        sys.exit("no server to run")
    return servers


def main() -> None:
    """Parse flags, pick the load generator, run the servers, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("-m", "--messages", type=int, default=5000, help="messages per pass")
    parser.add_argument("-l", "--size", type=int, default=1024, help="message payload bytes")
    parser.add_argument("--python", action="store_true",
                        help="use the asyncio generator even if smtp-source is available")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install postfix when it is missing")
    parser.add_argument("--only", choices=("postwarden", "baseline", "postfix"),
                        help="run one server only")
    parser.add_argument("--no-postfix", action="store_true", help="leave Postfix out")
    parser.add_argument("--warmup", type=int, default=2000,
                        help="uncounted messages first, on the fresh data dir (default 2000)")
    parser.add_argument("--auth-checks", action="store_true",
                        help="a second postwarden with [auth_checks] on (SPF/DKIM/DMARC, "
                             "loopback DNS) beside the first, same passes; with the Python "
                             "generator every message carries one DKIM signature")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="also run postwarden serve --workers N beside the one-process "
                             "postwarden, same passes (and on PostgreSQL with --backend)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: also run postwarden on a throwaway, durable "
                             "PostgreSQL (bench/pgserver.py) beside the SQLite one, and "
                             "count its statements per message")
    parser.add_argument("--repeat", type=int, default=3,
                        help="throughput passes per server, interleaved (default 3)")
    args = parser.parse_args()
    raise_fd_limit(4096 + 4 * args.sessions)  # inherited by the servers
    # Postfix's package brings smtp-source, so one install serves both.
    want_postfix = not args.no_postfix and args.only in (None, "postfix")
    smtp_source = None
    if not args.python or want_postfix:
        smtp_source = find_smtp_source(install=not args.no_install)
    if args.python:
        smtp_source = None
    elif smtp_source is None:
        print("WARNING: smtp-source not available (apt-get install postfix as root); using the "
              "Python generator, which competes with the server for CPU", file=sys.stderr)
    servers = choose_servers(args)
    # SIGTERM unwinds like Ctrl-C, so the ExitStack in run() stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    load_before = os.getloadavg()[0]
    results = run(smtp_source, servers, args)
    report(results, "smtp-source" if smtp_source else "python asyncio", args)
    print(f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (the servers and the generator make about 2)")

if __name__ == "__main__":
    main()
