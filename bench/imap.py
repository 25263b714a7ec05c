"""IMAP on a big mailbox: postwarden against Dovecot, same messages, imaplib as the client.

    .venv/bin/python bench/imap.py [--messages 100000] [--repeat 3] [--idle 1000]
                                   [--server both|dovecot|postwarden] [--no-install]
                                   [--backend sqlite|postgresql|both] [--keep DIR]

Each server gets an INBOX of ``--messages`` messages from ``corpus.py``
(seeded, 2-20 KB, some multipart), then, warm:

- LOGIN + SELECT INBOX on a new connection (auth cache warm);
- ``FETCH 1:* (UID FLAGS)``;
- ``FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])``;
- ``UID SEARCH SUBJECT "kumquat"`` (10 % of the messages);
- ``UID SEARCH BODY "marzipan"`` (5 %);
- ``STORE 1:1000 +FLAGS (\\Seen)`` (the 1000 are unseen again, untimed, before each try);
- for each FETCH, SEARCH and STORE also the server's CPU time (its processes'
  user + system time from /proc, read before and after): the rest of the
  wall-clock time is the client's parsing and waiting;
- 1000 idle sessions (LOGIN, SELECT INBOX, IDLE): the server's extra memory,
  the sum of PSS over its processes (Dovecot runs one ``imap`` process per
  session) with the sessions held minus without; measured right after the
  first SELECT, before any FETCH 1:* has grown the server's heap.

Then one untimed round (Dovecot indexes the Maildir on the first SELECT and
fills its cache on the first FETCH; postwarden's searches scan what its
idle-time indexer has not reached; both are reported apart), then, once
postwarden's indexer has caught up (its database read, read-only),
``--repeat`` timed rounds; the median is reported, and each server's memory
after them. Every answer is
checked: FETCH returns every message, the searches return exactly the
corpus's known counts.

Dovecot (``dovecot_instance.py``): Debian's ``dovecot-imapd`` in a temp dir
on a loopback port, Maildir written directly. postwarden: ``postwarden
serve`` in a temp dir with SMTP and IMAP listeners, the same messages
delivered over SMTP (the real intake). Until postwarden has an IMAP listener,
its side reports "postwarden IMAP not built yet" and Dovecot runs alone.

``--backend postgresql`` runs postwarden on a throwaway, durable PostgreSQL
(``pgserver.py``) instead of SQLite, as column ``postwarden-pg``; ``both``
runs the two, one after the other, with the same corpus.

``--keep DIR`` loads postwarden's SQLite store into DIR once and serves it
again on later runs with the same ``--messages`` (no SMTP load; for
comparing FETCH before and after a change, back to back, on the same store).

Run by hand, never by ``make test``. Loopback only; temp dirs and servers are
removed at exit, on Ctrl-C and on SIGTERM. 100,000 messages take ~850 MB of
disk per server and a few minutes to generate and load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus
import dovecot_instance
import pgserver
from common import (
    PASSWORD,
    POSTWARDEN,
    USER,
    Server,
    apt_install,
    expect,
    raise_fd_limit,
    start_postwarden,
    stored_messages,
    tree_cpu_seconds,
    tree_pss_kb,
    with_limits,
)
from dovecot_instance import DovecotInstance

HOST = "127.0.0.1"
SUBJECT = next(m for m in corpus.MARKERS if m.word == corpus.SUBJECT_WORD)
BODY = next(m for m in corpus.MARKERS if m.word == corpus.BODY_WORD)
STORE_COUNT = 1000
IDLE_BATCH = 50
IDLE_TIMEOUT = 120.0  # seconds for one session to log in, select and enter IDLE
TARGET_RATIO = 1.5
TARGET_IDLE_MB = 60
INDEXER_WAIT = 1800.0  # seconds at most for postwarden's indexer before the timed rounds
NOT_BUILT = "postwarden IMAP not built yet"
OPERATIONS = (
    "LOGIN + SELECT",
    "FETCH 1:* (UID FLAGS)",
    "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
    f'UID SEARCH SUBJECT "{SUBJECT.word}"',
    f'UID SEARCH BODY "{BODY.word}"',
    f"STORE 1:{STORE_COUNT} +FLAGS (\\Seen)",
)

imaplib._MAXLINE = 100_000_000  # a UID SEARCH answer for 100,000 messages is one long line


class NotAvailable(Exception):
    """This server cannot run here; the message says why."""


@dataclass
class Target:
    """A running IMAP server with an INBOX full of the corpus."""

    name: str
    port: int
    user: str
    password: str
    pid: int  # memory is summed over this process and its children
    load_note: str
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the server's, per operation
    first: dict[str, float] = field(default_factory=dict)
    first_select: float = 0.0
    problems: list[str] = field(default_factory=list)
    idle: dict[str, float] = field(default_factory=dict)
    database: Path | None = None  # postwarden's SQLite file, read to see its indexer
    dsn: str = ""  # or its PostgreSQL database (--backend postgresql)
    memory_after: float = 0.0  # MB of PSS over the server's processes after the rounds

    def median(self, op: str) -> float:
        """Median seconds of an operation over the timed rounds."""
        return statistics.median(self.times[op])

    def median_cpu(self, op: str) -> float:
        """Median CPU seconds the server (all its processes) spent on an operation."""
        return statistics.median(self.cpu[op])


# --- the servers ---------------------------------------------------------------------------

def start_dovecot(stack: contextlib.ExitStack, args: argparse.Namespace) -> Target:
    """Install if needed, load the Maildir, start Dovecot; stopped by ``stack``."""
    if dovecot_instance.why_unavailable() and not args.no_install:
        apt_install("dovecot-imapd")
        stop_dovecot_service()
    if reason := dovecot_instance.why_unavailable():
        raise NotAvailable(reason)
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-dovecot-")))
    stack.callback(print, f"dovecot: removing {root} (slow for big mailboxes)", flush=True)
    server = DovecotInstance(root, sessions=args.idle, scheme=args.dovecot_scheme)
    started = time.perf_counter()
    count, size = server.load(corpus.generate(args.messages, seed=args.seed, to=USER))
    loaded = time.perf_counter() - started
    stack.callback(server.stop)
    server.start()
    note = (f"{count} messages, {size / 1e6:.0f} MB written to the Maildir in {loaded:.0f} s "
            "(generation included), indexed by Dovecot on the first SELECT")
    return Target("dovecot", server.port, dovecot_instance.USER, dovecot_instance.PASSWORD,
                  server.pid, note)


def stop_dovecot_service() -> None:
    """The package may start the system's Dovecot: stop it, it is not ours to measure."""
    for argv in (["systemctl", "disable", "--now", "dovecot"], ["service", "dovecot", "stop"]):
        with contextlib.suppress(OSError):
            subprocess.run(argv, capture_output=True, timeout=60, check=False)


def start_postwarden_imap(stack: contextlib.ExitStack, args: argparse.Namespace,
                          on_postgresql: bool = False) -> Target:
    """``postwarden serve`` with SMTP and IMAP on loopback, the corpus delivered over SMTP.

    ``max_connections`` (``args.idle + 100``) also raises the IMAP connection
    budget and the per-user and per-IP session limits (``make_config``).
    """
    keep = None if on_postgresql else args.keep  # a PostgreSQL run starts its database afresh
    kept = keep is not None and kept_store(keep, args.messages)
    if keep is not None:
        root = keep
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-imap-")))
    dsn = pgserver.database(pgserver.start(stack)) if on_postgresql else ""
    if kept:  # the config of the run that loaded it (ports 0), with this run's limits
        cfg = root / "postwarden.toml"
        cfg.write_text(with_limits(cfg.read_text(encoding="utf-8"), args.idle + 100),
                       encoding="utf-8")
        server = Server([POSTWARDEN, "-c", str(cfg), "serve"], root, "postwarden ready").start()
    else:
        if keep is not None:  # a partial or other-sized load: start again
            for child in root.iterdir():
                (shutil.rmtree if child.is_dir() else Path.unlink)(child)
        server = start_postwarden(root, max_connections=args.idle + 100,
                                  listeners=("smtp", "imap"), dsn=dsn)
    stack.callback(server.stop)
    if "imap" not in server.ports:
        raise NotAvailable(NOT_BUILT)
    if kept:
        note = f"{args.messages} messages kept in {root} by an earlier run"
    else:
        started = time.perf_counter()
        count = asyncio.run(deliver_over_smtp(server.port, args))
        loaded = time.perf_counter() - started
        note = f"{count} messages delivered over SMTP in {loaded:.0f} s (generation included)"
    if dsn:
        return Target("postwarden-pg", server.ports["imap"], USER, PASSWORD, server.pid, note,
                      dsn=dsn)
    return Target("postwarden", server.ports["imap"], USER, PASSWORD, server.pid, note,
                  database=root / "var" / "postwarden.sqlite3")


def kept_store(root: Path, messages: int) -> bool:
    """Does ``root`` hold a finished load of exactly ``messages`` messages?"""
    if not (root / "postwarden.toml").exists():
        return False
    try:
        return stored_messages(root) == messages
    except sqlite3.Error:
        return False


def dot_stuff(raw: bytes) -> bytes:
    """SMTP DATA transparency (RFC 5321 4.5.2) for a CRLF message."""
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


async def deliver_over_smtp(port: int, args: argparse.Namespace, sessions: int = 8) -> int:
    """Send the corpus to ``USER`` over ``sessions`` connections, many messages each."""
    messages: Iterator[bytes] = corpus.generate(args.messages, seed=args.seed, to=USER)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(HOST, port)
        await expect(reader, b"220")
        writer.write(b"EHLO loader.test\r\n")
        await expect(reader, b"250")
        for raw in messages:  # shared iterator: each message goes out once
            for command, code in ((b"MAIL FROM:<loader@x.test>", b"250"),
                                  (f"RCPT TO:<{USER}>".encode(), b"250"), (b"DATA", b"354")):
                writer.write(command + b"\r\n")
                await expect(reader, code)
            writer.write(dot_stuff(raw) + b".\r\n")
            await expect(reader, b"250")
            sent += 1
        writer.write(b"QUIT\r\n")
        writer.close()

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return sent


# --- the measurements ----------------------------------------------------------------------

def connect(t: Target, took: dict[str, float]) -> imaplib.IMAP4:
    """A new session, logged in, INBOX selected; the two steps' times go into ``took``."""
    started = time.perf_counter()
    client = imaplib.IMAP4(HOST, t.port)
    client.login(t.user, t.password)
    logged_in = time.perf_counter()
    status, data = client.select("INBOX")
    done = time.perf_counter()
    took["LOGIN"], took["SELECT"] = logged_in - started, done - logged_in
    took["LOGIN + SELECT"] = done - started
    if status != "OK":
        t.problems.append(f"SELECT: {status} {data}")
    return client


def fetched(data: list[object]) -> int:
    """FETCH responses in imaplib's answer (one with a literal is a tuple, then a b')')."""
    return sum(1 for item in data if isinstance(item, tuple) or item not in (b")", None))


def uids(data: list[object]) -> int:
    """How many UIDs a UID SEARCH answered."""
    return len(data[0].split()) if data and isinstance(data[0], bytes) else 0


def one_round(t: Target, n: int, cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Every operation once, on one session (the LOGIN + SELECT on a fresh one); checked.

    ``cpu`` gets the server's CPU seconds per FETCH, SEARCH and STORE (its
    process tree read from /proc before and after, outside the timed span):
    how much of the time is the server's work, and how much the client's."""
    took: dict[str, float] = {}
    cpu = {} if cpu is None else cpu
    client = connect(t, took)
    try:
        expected = {
            OPERATIONS[1]: n, OPERATIONS[2]: n,
            OPERATIONS[3]: SUBJECT.hits(n), OPERATIONS[4]: BODY.hits(n),
        }
        calls: dict[str, Callable[[], tuple[str, list[object]]]] = {
            OPERATIONS[1]: lambda: client.fetch("1:*", "(UID FLAGS)"),
            OPERATIONS[2]: lambda: client.fetch(
                "1:*", "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"),
            OPERATIONS[3]: lambda: client.uid("SEARCH", "SUBJECT", f'"{SUBJECT.word}"'),
            OPERATIONS[4]: lambda: client.uid("SEARCH", "BODY", f'"{BODY.word}"'),
        }
        for op, call in calls.items():
            before = tree_cpu_seconds(t.pid)
            started = time.perf_counter()
            status, data = call()
            took[op] = time.perf_counter() - started
            cpu[op] = tree_cpu_seconds(t.pid) - before
            got = fetched(data) if op.startswith("FETCH") else uids(data)
            if status != "OK" or got != expected[op]:
                t.problems.append(f"{op}: {status}, {got} answers, expected {expected[op]}")
        last = min(STORE_COUNT, n)
        client.store(f"1:{last}", "-FLAGS.SILENT", "(\\Seen)")  # untimed: unseen again
        op = OPERATIONS[5]
        before = tree_cpu_seconds(t.pid)
        started = time.perf_counter()
        status, data = client.store(f"1:{last}", "+FLAGS", "(\\Seen)")
        took[op] = time.perf_counter() - started
        cpu[op] = tree_cpu_seconds(t.pid) - before
        if status != "OK" or fetched(data) != last:
            t.problems.append(f"{op}: {status}, {fetched(data)} answers, expected {last}")
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
    return took


async def idle_session(t: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """LOGIN, SELECT INBOX, IDLE; returns the open connection."""
    reader, writer = await asyncio.open_connection(HOST, t.port)

    async def command(line: str, tag: bytes | None) -> None:
        writer.write(line.encode() + b"\r\n")
        while True:  # bounded by the server's answer and IDLE_TIMEOUT around us
            answer = await reader.readline()
            if not answer:
                raise ConnectionError(f"closed after {line.split()[1]}")
            if tag is None and answer.startswith(b"+"):
                return
            if tag is not None and answer.startswith(tag + b" "):
                if not answer.startswith(tag + b" OK"):
                    raise ConnectionError(answer.decode(errors="replace").strip())
                return

    await reader.readline()  # greeting
    await command(f'a LOGIN {t.user} "{t.password}"', b"a")
    await command("b SELECT INBOX", b"b")
    await command("c IDLE", None)
    return reader, writer


async def idle_memory(t: Target, count: int) -> dict[str, float]:
    """Hold ``count`` IDLE sessions; the server's summed PSS without and with them."""
    before = tree_pss_kb(t.pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed = 0
    started = time.perf_counter()
    try:
        for start in range(0, count, IDLE_BATCH):
            batch = await asyncio.gather(
                *(asyncio.wait_for(idle_session(t), IDLE_TIMEOUT)
                  for _ in range(min(IDLE_BATCH, count - start))), return_exceptions=True)
            for item in batch:
                if isinstance(item, BaseException):
                    failed += 1
                    if len(t.problems) < 20:
                        t.problems.append(f"idle session: {item!r}")
                else:
                    conns.append(item)
        opened = time.perf_counter() - started
        await asyncio.sleep(2)
        held = tree_pss_kb(t.pid)
    finally:
        for _, writer in conns:
            writer.write(b"DONE\r\nz LOGOUT\r\n")
            writer.close()
    return {"before": before, "held": held, "sessions": len(conns), "failed": failed,
            "opened_s": opened}


def measure(t: Target, args: argparse.Namespace) -> None:
    """The first SELECT, the idle sessions, the untimed first round, the timed rounds.

    The idle sessions come before any FETCH 1:*, whose answers for 100,000
    messages leave a Python server's heap hundreds of MB larger: measured
    after them, the baseline moved while the sessions were held.
    """
    print(f"{t.name}: {t.load_note}", flush=True)
    warm: dict[str, float] = {}
    client = connect(t, warm)  # Dovecot indexes the Maildir here
    client.logout()
    t.first_select = warm["SELECT"]
    if args.idle:
        t.idle = asyncio.run(idle_memory(t, args.idle))
    t.first = one_round(t, args.messages)
    print(f"{t.name}: first round (indexing, cache filling): "
          + "; ".join(f"{op} {fmt(s)}" for op, s in t.first.items()), flush=True)
    if t.database is not None or t.dsn:
        waited = wait_for_indexer(t)
        print(f"{t.name}: its background indexer caught up {waited:.1f} s after the first round",
              flush=True)
    for i in range(args.repeat):
        cpu: dict[str, float] = {}
        for op, seconds in one_round(t, args.messages, cpu).items():
            t.times.setdefault(op, []).append(seconds)
        for op, seconds in cpu.items():
            t.cpu.setdefault(op, []).append(seconds)
        print(f"{t.name}: timed round {i + 1}/{args.repeat} done", flush=True)
    t.memory_after = tree_pss_kb(t.pid) / 1024
    print(f"{t.name}: memory after the rounds: {t.memory_after:.0f} MB (PSS, all its processes)",
          flush=True)


UNINDEXED = ("SELECT count(*) FROM blobs b WHERE b.indexed = 0"
             " AND EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)")


def wait_for_indexer(t: Target, limit: float = INDEXER_WAIT) -> float:
    """Seconds until no delivered message waits for postwarden's idle-time indexer
    (the database read-only, every half second), so the timed rounds are warm
    for both servers; a backlog's searches are in the first round."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if t.database is not None:
            con = sqlite3.connect(f"file:{t.database}?mode=ro", uri=True)
            stack.callback(con.close)
        while time.perf_counter() - started < limit:
            waiting = (pgserver.count(t.dsn, UNINDEXED) if t.dsn
                       else con.execute(UNINDEXED).fetchone()[0])
            if not waiting:
                break
            time.sleep(0.5)
    return time.perf_counter() - started


# --- the report ----------------------------------------------------------------------------

def fmt(seconds: float) -> str:
    """Milliseconds under a second, else seconds."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report(targets: list[Target], skipped: dict[str, str], args: argparse.Namespace) -> None:
    """One row per operation, one column per server, and the ratio to Dovecot."""
    names = [t.name for t in targets]
    by = {t.name: t for t in targets}
    print()
    print(f"{args.messages} messages, median of {args.repeat} warm rounds, client imaplib")
    head = f"{'operation':<58}" + "".join(f"{n:>14}" for n in names)
    ratio = "postwarden" in by and "dovecot" in by
    print(head + (f"{'pw/dovecot':>12}" if ratio else ""))
    for op in (OPERATIONS[0], "LOGIN", "SELECT", *OPERATIONS[1:]):
        label = op if op in OPERATIONS else f"  of which {op}"
        row = f"{label:<58}" + "".join(f"{fmt(by[n].median(op)):>14}" for n in names)
        if ratio:
            r = by["postwarden"].median(op) / by["dovecot"].median(op)
            row += f"{r:>11.2f}x" + ("" if r <= TARGET_RATIO or op not in OPERATIONS
                                      else " ABOVE 1.5x")
        print(row)
    print(f"{'server CPU (all its processes), median of the rounds':<58}")
    for op in OPERATIONS[1:]:
        print(f"{'  ' + op:<58}" + "".join(f"{fmt(by[n].median_cpu(op)):>14}" for n in names))
    print(f"{'first SELECT after loading (indexing)':<58}"
          + "".join(f"{fmt(by[n].first_select):>14}" for n in names))
    print(f"{'memory after the rounds (PSS, MB)':<58}"
          + "".join(f"{by[n].memory_after:>14.0f}" for n in names))
    if args.idle:
        cells = []
        for n in names:
            idle = by[n].idle
            extra = (idle["held"] - idle["before"]) / 1024
            cells.append(f"{extra:.1f} MB")
        print(f"{f'{args.idle} idle sessions (IDLE): extra memory':<58}"
              + "".join(f"{c:>14}" for c in cells))
        for n in names:
            idle = by[n].idle
            per = (idle["held"] - idle["before"]) / max(1, idle["sessions"])
            print(f"  {n}: {idle['sessions']:.0f} sessions held ({idle['failed']:.0f} failed), "
                  f"opened in {idle['opened_s']:.1f} s; summed PSS {idle['before'] / 1024:.1f}"
                  f" -> {idle['held'] / 1024:.1f} MB, {per:.0f} KB per session"
                  + ("" if n != "postwarden" or per * idle["sessions"] / 1024 < TARGET_IDLE_MB
                     else f" ABOVE the {TARGET_IDLE_MB} MB target"))
    for name, reason in skipped.items():
        print(f"{name}: not measured: {reason}")
    for t in targets:
        print(f"{t.name}: {t.load_note}")
        for problem in t.problems:
            print(f"  WARNING {t.name}: {problem}")
    print(f"expected answers: {SUBJECT.hits(args.messages)} UIDs for SUBJECT, "
          f"{BODY.hits(args.messages)} for BODY (corpus seed {args.seed})")


def compare_backends(targets: list[Target]) -> None:
    """With --backend both: PostgreSQL's time over SQLite's, per operation."""
    by = {t.name: t for t in targets}
    if "postwarden" in by and "postwarden-pg" in by:
        sqlite, pg = by["postwarden"], by["postwarden-pg"]
        print("postwarden-pg/postwarden time (PostgreSQL over SQLite): " + "; ".join(
            f"{op} {pg.median(op) / sqlite.median(op):.2f}x" for op in OPERATIONS))


def main() -> None:
    """Parse flags, start the servers, measure each in turn, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="INBOX size")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--idle", type=int, default=1000,
                        help="idle sessions for the memory figure (0: skip)")
    parser.add_argument("--server", choices=("both", "dovecot", "postwarden"), default="both")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"),
                        default="sqlite",
                        help="postwarden's store: SQLite, a throwaway PostgreSQL "
                             "(column postwarden-pg), or both one after the other")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED, help="corpus seed")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install dovecot-imapd when it is missing")
    parser.add_argument("--dovecot-scheme", default="SSHA512",
                        help="Dovecot's password hash scheme (default SSHA512; Dovecot "
                             "verifies the hash on every login, cache or not)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="postwarden's store: load into DIR once, serve it again later")
    args = parser.parse_args()
    if args.messages < 1:
        sys.exit("--messages must be at least 1")
    raise_fd_limit(4 * args.idle + 4096)  # inherited by the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    load_before = os.getloadavg()[0]
    starters: dict[str, Callable[[contextlib.ExitStack, argparse.Namespace], Target]] = {
        "postwarden": start_postwarden_imap, "dovecot": start_dovecot,
        "postwarden-pg": lambda stack, args: start_postwarden_imap(stack, args, True)}
    wanted = ["postwarden", "dovecot"] if args.server == "both" else [args.server]
    if "postwarden" in wanted and args.backend != "sqlite":
        wanted.insert(wanted.index("postwarden") + 1, "postwarden-pg")
        if args.backend == "postgresql":
            wanted.remove("postwarden")
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for name in wanted:  # one server at a time: they never compete for the CPU
        with contextlib.ExitStack() as stack:
            try:
                target = starters[name](stack, args)
                measure(target, args)
            except (NotAvailable, RuntimeError, OSError, imaplib.IMAP4.error) as exc:
                skipped[name] = str(exc) if isinstance(exc, NotAvailable) else f"failed: {exc!r}"
                print(f"{name}: {skipped[name]}", flush=True)
                continue
            targets.append(target)
    if not targets:
        sys.exit("no server measured: " + "; ".join(skipped.values()))
    report(targets, skipped, args)
    compare_backends(targets)
    print(f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
