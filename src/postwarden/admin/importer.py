"""``postwarden import --mbox FILE | --maildir DIR USER``: existing mail into a mailbox.

Files are read with Python's ``mailbox`` module; every message goes through
the intake's append, the path of IMAP APPEND (durable file, then its row,
quota enforced), so an import is as safe as a client's upload and a running
server's IMAP sessions see the messages arrive.
"""

from __future__ import annotations

import asyncio
import calendar
import mailbox
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postwarden.admin import AdminError
from postwarden.config import Config
from postwarden.intake.accept import Intake
from postwarden.intake.recipients import RecipientPolicy
from postwarden.protocol.imap import utf7
from postwarden.storage.factory import AsyncStore, async_boundary, closing, open_store
from postwarden.storage.interfaces import StoreError
from postwarden.storage.mailbox import DELIMITER, INBOX, Flag, QuotaExceeded

# Maildir info flags (the letters after ":2,") and mbox Status/X-Status letters.
MAILDIR_FLAGS = {"S": Flag.SEEN, "R": Flag.ANSWERED, "F": Flag.FLAGGED, "T": Flag.DELETED,
                 "D": Flag.DRAFT}
MBOX_FLAGS = {"R": Flag.SEEN, "A": Flag.ANSWERED, "F": Flag.FLAGGED, "D": Flag.DELETED}
PASSED_KEYWORD = "$Forwarded"  # maildir "P" (passed on): the keyword clients use for it
FROM_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
FROM_LINE_DATE = "%a %b %d %H:%M:%S %Y"  # asctime, as mbox writers put after the sender


@dataclass(frozen=True, slots=True)
class Item:
    """One message to append: bytes as stored (CRLF lines), where, flags, internal date."""

    data: bytes
    mailbox: str
    flags: Flag
    keywords: frozenset[str]
    internaldate: float | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    per_mailbox: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.per_mailbox.values())


def import_mbox(cfg: Config, path: Path, account: str, target: str) -> ImportReport:
    """Every message of the mbox file ``path`` into ``account``'s mailbox ``target``."""
    if not path.is_file():
        raise AdminError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(5)
    if head and head != b"From ":
        raise AdminError(f"{path} is not an mbox file (it does not start with a 'From ' line)")
    box = mailbox.mbox(path, create=False)
    return _run(cfg, account, _mbox_items(box, target))


def import_maildir(cfg: Config, path: Path, account: str, target: str) -> ImportReport:
    """A Maildir++ folder tree: the top into ``target``, ``.A.B`` into mailbox ``A/B``."""
    if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
        raise AdminError(f"{path} is not a maildir (it needs cur, new and tmp folders)")
    root = mailbox.Maildir(path, factory=None, create=False)
    return _run(cfg, account, _maildir_items(root, target))


def _mbox_items(box: mailbox.mbox, target: str) -> Iterator[Item]:
    for key in box.iterkeys():
        message = box.get_message(key)
        flags = Flag(0)
        for letter in message.get_flags():
            flags |= MBOX_FLAGS.get(letter, Flag(0))
        data = FROM_QUOTED.sub(rb"\1", box.get_bytes(key))  # mboxrd: one ">" less
        yield Item(_crlf(data), target, flags, frozenset(), _from_line_date(message.get_from()))


def _maildir_items(root: mailbox.Maildir, target: str) -> Iterator[Item]:
    folders = [(target, root)]
    for name in sorted(root.list_folders()):
        parts = [utf7.decode(p) for p in name.split(".")]  # Maildir++ names are IMAP UTF-7
        if parts[0].upper() == INBOX:
            parts = parts[1:] if len(parts) > 1 else [target]
        folders.append((DELIMITER.join(parts), root.get_folder(name)))
    for mailbox_name, folder in folders:
        for key in folder.iterkeys():
            message = folder.get_message(key)
            flags = Flag(0)
            for letter in message.get_flags():
                flags |= MAILDIR_FLAGS.get(letter, Flag(0))
            keywords = frozenset({PASSED_KEYWORD} if "P" in message.get_flags() else ())
            yield Item(_crlf(folder.get_bytes(key)), mailbox_name, flags, keywords,
                       message.get_date())  # the file's mtime: when it was delivered


def _crlf(data: bytes) -> bytes:
    """Stored messages have CRLF line ends, as they arrive over SMTP."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def _from_line_date(from_line: str) -> float | None:
    """The UTC date after the sender on a From_ line; None when there is none readable."""
    parts = from_line.split(None, 1)
    if len(parts) < 2:
        return None
    try:
        return calendar.timegm(time.strptime(" ".join(parts[1].split()[:5]), FROM_LINE_DATE))
    except ValueError:
        return None


def _run(cfg: Config, account: str, items: Iterator[Item]) -> ImportReport:
    sync = open_store(cfg)
    store = async_boundary(sync)
    intake = Intake(sync.blobs, store, RecipientPolicy(store, cfg.relay, cfg.hostname),
                    cfg.hostname, cfg.delivery.max_received_headers)
    return asyncio.run(closing(store, _import(store, intake, account, items,
                                              cfg.imap.max_append_size)))


async def _import(store: AsyncStore, intake: Intake, account: str, items: Iterator[Item],
                  max_size: int) -> ImportReport:
    if await store.get_account(account) is None:
        raise AdminError(f"no such user: {account}")
    await store.ensure_mailboxes(account)
    counts: Counter[str] = Counter()
    ready: set[str] = set()
    try:
        for item in items:
            if len(item.data) > max_size:  # as APPEND refuses it (APPENDLIMIT)
                raise AdminError(f"message {counts.total() + 1} is larger than [imap]"
                                 f" max_append_size ({len(item.data)} > {max_size} octets):"
                                 f" stopped after {counts.total()} messages"
                                 f" ({_summary(counts)})")
            if item.mailbox not in ready:
                if await store.get_mailbox(account, item.mailbox) is None:
                    await store.create_mailbox(account, item.mailbox)
                ready.add(item.mailbox)
            writer = intake.open_append()
            try:
                writer.write(item.data)
            except BaseException:
                writer.abort()
                raise
            await intake.append(writer, account, item.mailbox, flags=item.flags,
                                keywords=item.keywords, internaldate=item.internaldate)
            counts[item.mailbox] += 1
    except QuotaExceeded:
        raise AdminError(f"{account} is over quota: stopped after {counts.total()} messages"
                         f" ({_summary(counts)})") from None
    except (mailbox.Error, UnicodeError, StoreError) as exc:
        raise AdminError(f"stopped after {counts.total()} messages: {exc}") from None
    return ImportReport(dict(counts))


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "none"
