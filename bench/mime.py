"""How much the MIME structure parser costs at intake, and what it stores.

Parses N generated messages (``corpus.py``: 2-20 KB, a mix of plain,
alternative, mixed, nested and forwarded) fed in chunks as the SMTP intake
would, then renders BODYSTRUCTURE from the cached value and extracts body
text. Python's ``email.message_from_bytes`` on the same bytes is the
reference (it parses whole messages in memory and gives no offsets).

    .venv/bin/python bench/mime.py [--messages 5000] [--chunk 65536]
"""

from __future__ import annotations

import argparse
import email
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).parent))

from corpus import message

from postwarden.mail.mime import MessageStructure, MimeParser
from postwarden.mail.mime_codec import dumps, loads
from postwarden.mail.mime_decode import extract_text
from postwarden.protocol.imap.bodystructure import bodystructure, envelope

T = TypeVar("T")


def parse(raw: bytes, chunk: int) -> MessageStructure:
    parser = MimeParser()
    for start in range(0, len(raw), chunk):
        parser.feed(raw[start:start + chunk])
    return parser.close()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--messages", type=int, default=5000)
    args.add_argument("--chunk", type=int, default=65536)
    opts = args.parse_args()
    messages = [message(i) for i in range(opts.messages)]
    megabytes = sum(len(m) for m in messages) / 1e6

    def timed(label: str, work: Callable[[], list[T]]) -> list[T]:
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        print(f"{label:<44} {seconds:7.3f} s  {opts.messages / seconds:9,.0f} msgs/s"
              f"  {megabytes / seconds:7.1f} MB/s")
        return result

    print(f"{opts.messages} messages, {megabytes:.1f} MB, chunk {opts.chunk}")
    structures = timed("MimeParser feed+close", lambda: [parse(m, opts.chunk) for m in messages])
    timed("email.message_from_bytes (reference)",
          lambda: [email.message_from_bytes(m) for m in messages])
    rows = timed("dumps (cache row)", lambda: [dumps(s) for s in structures])
    timed("loads", lambda: [loads(r) for r in rows])
    timed("BODYSTRUCTURE + ENVELOPE from the value",
          lambda: [(bodystructure(s), envelope(s.envelope)) for s in structures])
    timed("body text (ranged reads of text parts)", lambda: [
        extract_text(s, lambda a, b, m=m: m[a:b], 100_000)
        for s, m in zip(structures, messages, strict=True)])
    print(f"cache row: {sum(len(r) for r in rows) / len(rows):.0f} bytes on average")


if __name__ == "__main__":
    main()
