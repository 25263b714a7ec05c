"""The IMAP machine alone, no sockets: what parsing and encoding cost per message.

The server benchmark (``bench/imap.py``) times whole operations against
Dovecot; this one isolates the protocol room, so a slow FETCH 1:* can be
blamed on the right room. Each figure is the best of three runs.

    .venv/bin/python bench/imap_protocol.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from postwarden.protocol.imap import IMAPSession, IMAPSettings
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.events import NEED_DATA, PAUSED
from postwarden.protocol.imap.fetch import BodySection, Section, SectionText

SETTINGS = IMAPSettings("bench.test", tls_active=True, starttls_available=False,
                        plaintext_auth=True)
OK = r.Done(r.Status.OK, "done")
HEADER = (b"From: Alice Example <alice@example.test>\r\n"
          b"Subject: Quarterly numbers for the board meeting\r\n"
          b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n")


def session() -> IMAPSession:
    """A session logged in and with INBOX selected."""
    machine = IMAPSession(SETTINGS)
    machine.receive_data(b"l LOGIN u p\r\ns SELECT INBOX\r\n")
    for _ in range(2):  # the LoginAttempt, then the Select
        machine.next_event()
        machine.send(OK)
    machine.data_to_send()
    return machine


def best(run: Callable[[], None]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    n = parser.parse_args().messages
    name = BodySection(Section((), SectionText.HEADER_FIELDS, ("FROM", "SUBJECT", "DATE")),
                       peek=True).response_name()
    flags = [r.FetchData(i, (r.UidItem(i), r.FlagsItem(("\\Seen",)))) for i in range(1, n + 1)]
    headers = [r.FetchData(i, (r.UidItem(i), r.SectionItem(name, HEADER)))
               for i in range(1, n + 1)]

    def send_all(responses: list[r.FetchData]) -> Callable[[], None]:
        def run() -> None:
            machine = session()
            for response in responses:
                machine.send(response)
            machine.data_to_send()
        return run

    burst = b"".join(b"t%d UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM DATE)])\r\n" % i
                     for i in range(n // 10))

    def pipelined() -> None:
        machine = session()
        machine.receive_data(burst)
        while machine.next_event() is not NEED_DATA:
            machine.send(OK)

    message = b"x" * 76 + b"\r\n"
    big = message * (25 * 1024 * 1024 // len(message))

    def append() -> None:
        machine = session()
        machine.receive_data(b"a APPEND INBOX {%d+}\r\n" % len(big))
        machine.next_event()
        machine.send(r.Proceed())
        machine.receive_data(big + b"\r\n")
        while machine.next_event() is not PAUSED:
            pass

    rows = [
        (f"{n:,} FETCH (UID FLAGS) responses encoded", best(send_all(flags)), n),
        (f"{n:,} FETCH (UID BODY[HEADER.FIELDS ...]) responses encoded", best(send_all(headers)),
         n),
        (f"{n // 10:,} pipelined UID FETCH commands parsed", best(pipelined), n // 10),
    ]
    for label, seconds, count in rows:
        print(f"| {label} | {seconds:.3f} s | {seconds / count * 1e6:.1f} us each |")
    seconds = best(append)
    print(f"| APPEND of {len(big) / 2**20:.0f} MiB streamed | {seconds:.3f} s "
          f"| {len(big) / 2**20 / seconds:,.0f} MiB/s |")


if __name__ == "__main__":
    main()
