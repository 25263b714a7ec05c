"""CPU of one full sender check in process: the piece `smtp_accept.py --auth-checks` adds.

    .venv/bin/python bench/auth_checks.py [-n 2000] [--rounds 5]

The message, the loopback DNS server and its records are `smtp_accept.py`'s
(SPF for the sender's domain and the HELO name, DMARC p=reject, one RSA-2048
DKIM signature). The DNS answers are fetched once first, so the rounds
measure what the server does per message once they are cached: the
envelope step (SPF for MAIL FROM and HELO, as a task, as the server starts it
at RCPT), then the facts of the message (DKIM, DMARC) and the decision with
its Authentication-Results header. Prints the process CPU per check, best
and median of the rounds: steadier than the server benchmark on a shared
machine, as there is no socket, no store and no other process in it. To
compare two trees, run the script of one with ``PYTHONPATH`` at the other's
``src``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "delivery"))

from smtp_accept import SENDER, auth_dns, bench_body

from postwarden.config import AuthChecksConfig, HostPort
from postwarden.intake import authfacts
from postwarden.intake.authdns import AuthDNS
from postwarden.intake.headers import MessageBuilder, TraceInfo, received_header
from postwarden.intake.held import HeldWriter
from postwarden.policy.authchecks import AuthVerdict, decide
from postwarden.storage.interfaces import BlobRef

HOSTNAME = "mail.bench.test"


class Discard:
    """A blob writer that keeps nothing: the store is not what is measured."""

    size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def commit(self) -> BlobRef:
        return BlobRef("-", self.size)

    def abort(self) -> None:
        self.size = 0


async def not_local(domain: str) -> bool:
    return False


def held_message(body: bytes) -> bytes:
    """The bytes the server checks: our Received header, then the client's message."""
    trace = TraceInfo("client.test", "127.0.0.1", HOSTNAME, "0123456789ABCDEF", "ESMTP",
                      "user@bench.test")
    writer = HeldWriter(Discard())
    builder = MessageBuilder(writer, received_header(trace), hostname=HOSTNAME,
                             add_submission_headers=False)
    builder.write(body)
    builder.finish()
    return writer.held()


async def measure(nameserver: str, message: bytes, checks: int, rounds: int) -> list[float]:
    """Microseconds of process CPU per check, one figure per round."""
    host, port = nameserver.split(":")
    dns = AuthDNS([HostPort(host, int(port))], 5)
    cfg = AuthChecksConfig()
    sender = {"client_ip": "127.0.0.1", "helo": "client.test", "mail_from": SENDER}

    async def check() -> AuthVerdict:
        envelope = asyncio.ensure_future(authfacts.envelope_facts(
            dns, cfg, is_local=not_local, **sender))
        facts = await authfacts.gather(dns, cfg, message=message, trusted="",
                                       is_local=not_local, envelope=envelope, **sender)
        return decide(facts, cfg, HOSTNAME)

    first = await check()  # fills the DNS cache
    if first.rule != "checked" or "dkim=pass" not in first.header:
        sys.exit(f"the bench message does not pass its checks: {first.rule} {first.reasons}")
    per_check = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(checks):
            await check()
        per_check.append((time.process_time() - started) * 1e6 / checks)
    return per_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--checks", type=int, default=2000, help="checks per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (best and median shown)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        auth = auth_dns(stack)
        message = held_message(bench_body(argparse.Namespace(size=1024), auth))
        per_check = asyncio.run(measure(auth.nameserver, message, args.checks, args.rounds))
    print(f"one full sender check: {min(per_check):.0f} us CPU best, "
          f"{statistics.median(per_check):.0f} us median of {args.rounds} rounds "
          f"x {args.checks} checks ({len(message)}-byte message, answers cached)")


if __name__ == "__main__":
    main()
