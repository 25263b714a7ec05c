"""The wire form of IMAP responses (RFC 9051 §7, §9).

Strings are written the cheapest safe way: an atom where the grammar
allows one and the text is all atom characters, a quoted string when the
octets are short and hold no CR, LF, NUL (or 8-bit, for IMAP4rev1
clients), and a literal otherwise, so any value, however hostile, comes
out as well-formed IMAP. Mailbox names are modified UTF-7 unless the
client enabled UTF-8 (IMAP4rev2).
"""

from __future__ import annotations

import datetime
import functools
from typing import assert_never

from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap import utf7
from postwarden.protocol.imap.reader import ATOM_CHARS
from postwarden.protocol.imap.sequence import compact

DELIMITER = "/"  # the hierarchy delimiter (SPEC §6)
MAX_QUOTED = 1024  # longer strings go as literals, which clients read without scanning
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTED_SPECIALS = frozenset(b'"\\')


def string(data: bytes, *, utf8: bool = False) -> bytes:
    """A quoted string if safe, else a literal."""
    quotable = (
        len(data) <= MAX_QUOTED and b"\r" not in data and b"\n" not in data
        and b"\0" not in data and (utf8 or data.isascii())
    )
    if quotable:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(data: bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if data is None else string(data, utf8=utf8)


def astring(text: str, *, utf8: bool = False) -> bytes:
    raw = text.encode("utf-8")
    if raw and raw.upper() != b"NIL" and all(octet in ATOM_CHARS for octet in raw):
        return raw
    return string(raw, utf8=utf8)


def literal8(data: bytes) -> bytes:
    return b"~{%d}\r\n" % len(data) + data


def mailbox(name: str, *, utf8: bool) -> bytes:
    return astring(name if utf8 else utf7.encode(name), utf8=utf8)


@functools.lru_cache(maxsize=1024)
def flag_list(flags: tuple[str, ...]) -> bytes:
    """``(\\Seen $Junk)``; cached, as a mailbox has few distinct flag sets."""
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def date_time(when: datetime.datetime) -> bytes:
    """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 9051 date-time, day space-padded)."""
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = (f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
            f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"')
    return text.encode("ascii")


def _text(text: str) -> bytes:
    """Human-readable text: one line, and never mistaken for a response code."""
    clean = " ".join(text.split()) or "done"
    if clean.startswith("["):
        clean = " " + clean
    return clean.encode("utf-8")


def uid_set(numbers: tuple[int, ...]) -> bytes:
    """A set as ranges when ascending (COPYUID pairs stay in step), else as listed."""
    if list(numbers) == sorted(numbers):
        return compact(numbers).encode("ascii")
    return ",".join(str(n) for n in numbers).encode("ascii")


def code(value: r.ResponseCode) -> bytes:
    match value:
        case r.Code():
            body = value.value
        case r.UidNext(uid):
            body = f"UIDNEXT {uid}"
        case r.UidValidity(uidvalidity):
            body = f"UIDVALIDITY {uidvalidity}"
        case r.Unseen(number):
            body = f"UNSEEN {number}"
        case r.HighestModSeq(modseq):
            body = f"HIGHESTMODSEQ {modseq}"
        case r.AppendUid(uidvalidity, uid):
            body = f"APPENDUID {uidvalidity} {uid}"
        case r.CopyUid(uidvalidity, source, destination):
            body = (f"COPYUID {uidvalidity} {uid_set(source).decode()} "
                    f"{uid_set(destination).decode()}")
        case r.PermanentFlags(flags):
            body = "PERMANENTFLAGS " + flag_list(flags).decode("ascii")
        case r.Modified(numbers):
            body = "MODIFIED " + uid_set(numbers).decode()
        case r.BadCharset(charsets):
            body = "BADCHARSET (" + " ".join(charsets) + ")"
    return b"[" + body.encode("ascii") + b"] "


def status(tag: str, state: r.Status, text: str, value: r.ResponseCode | str | None) -> bytes:
    """``tag OK [code] text``; a ``str`` code is written as given (machine-made codes)."""
    match value:
        case None:
            rendered = b""
        case str():
            rendered = b"[" + value.encode("ascii") + b"] "
        case _:
            rendered = code(value)
    head = tag.encode("ascii") + b" " + state.value.encode() + b" "
    return head + rendered + _text(text) + b"\r\n"


def _fetch_item(item: r.FetchItem, utf8: bool) -> bytes:
    # FETCH 1:* on a large mailbox: isinstance is cheaper than a class pattern with captures.
    if isinstance(item, r.UidItem):
        return b"UID %d" % item.uid
    if isinstance(item, r.FlagsItem):
        return b"FLAGS " + flag_list(item.flags)
    if isinstance(item, r.SectionItem):
        return item.name.encode("ascii") + b" " + nstring(item.data, utf8=utf8)
    match item:
        case r.ModSeqItem(modseq):
            return b"MODSEQ (%d)" % modseq
        case r.InternalDateItem(when):
            return b"INTERNALDATE " + date_time(when)
        case r.SizeItem(octets):
            return b"RFC822.SIZE %d" % octets
        case r.BinaryItem(name, data):
            if data is not None and b"\0" in data:
                return name.encode("ascii") + b" " + literal8(data)
            return name.encode("ascii") + b" " + nstring(data, utf8=utf8)
        case r.BinarySizeItem(name, size):
            return name.encode("ascii") + b" %d" % size
        case r.RenderedItem(name, value):
            return name.encode("ascii") + b" " + value
        case _:
            assert_never(item)


def _thread(tree: r.ThreadTree) -> bytes:
    """One thread: ``(3 6 (4 23)(44 7 96))``; a stack, not recursion, as a thread
    can nest as deeply as a mailbox's replies do."""
    out = bytearray(b"(")
    stack = [iter(tree)]
    after_number = False
    while stack:
        member = next(stack[-1], None)
        if member is None:
            out += b")"
            stack.pop()
            after_number = False
            continue
        if after_number:
            out += b" "
        if isinstance(member, int):
            out += b"%d" % member
            after_number = True
        else:
            out += b"("
            stack.append(iter(member))
            after_number = False
    return bytes(out)


def _numbers(numbers: tuple[int, ...]) -> bytes:
    return b"".join(b" %d" % n for n in numbers)


def fetch(response: r.FetchData, *, utf8: bool = False) -> bytes:
    """``* n FETCH (...)``: the hot path of FETCH 1:*, so kept apart and lean."""
    items = b" ".join([_fetch_item(item, utf8) for item in response.items])
    return b"* %d FETCH (%b)\r\n" % (response.number, items)


def untagged(response: r.Untagged, *, tag: str = "", utf8: bool = False) -> bytes:
    """One untagged response, CRLF included; ``tag`` is the command's, for ESEARCH."""
    if type(response) is r.FetchData:
        return fetch(response, utf8=utf8)
    match response:
        case r.Condition(state, text, value):
            return status("*", state, text, value)
        case r.Exists(count):
            body = b"%d EXISTS" % count
        case r.Recent(count):
            body = b"%d RECENT" % count
        case r.Expunged(number):
            body = b"%d EXPUNGE" % number
        case r.Vanished(uids, earlier):
            body = b"VANISHED " + (b"(EARLIER) " if earlier else b"") + uid_set(uids)
        case r.Flags(flags):
            body = b"FLAGS " + flag_list(flags)
        case r.SearchData(numbers, modseq) | r.SortData(numbers, modseq):
            word = b"SEARCH" if isinstance(response, r.SearchData) else b"SORT"
            body = word + _numbers(numbers)
            if modseq is not None and numbers:
                body += b" (MODSEQ %d)" % modseq
        case r.ESearchData(uid, low, high, count, found, modseq):
            body = b"ESEARCH (TAG " + string(tag.encode("ascii")) + b")"
            body += b" UID" if uid else b""
            body += b"" if low is None else b" MIN %d" % low
            body += b"" if high is None else b" MAX %d" % high
            body += b"" if count is None else b" COUNT %d" % count
            body += b" ALL " + uid_set(found) if found else b""
            body += b"" if modseq is None else b" MODSEQ %d" % modseq
        case r.ThreadData(threads):
            body = b"THREAD" + (b" " if threads else b"") + b"".join(_thread(t) for t in threads)
        case r.ListData(name, attributes, lsub, child_info, old_name):
            body = (b"LSUB (" if lsub else b"LIST (") + " ".join(attributes).encode("ascii")
            body += b") " + string(DELIMITER.encode()) + b" " + mailbox(name, utf8=utf8)
            extended = []
            if child_info:
                extended.append(b'"CHILDINFO" ("SUBSCRIBED")')
            if old_name is not None:
                extended.append(b'"OLDNAME" (' + mailbox(old_name, utf8=utf8) + b")")
            if extended:
                body += b" (" + b" ".join(extended) + b")"
        case r.StatusData(name, items):
            pairs = " ".join(f"{item.value} {value}" for item, value in items)
            body = b"STATUS " + mailbox(name, utf8=utf8) + b" (" + pairs.encode("ascii") + b")"
        case r.QuotaData(root, resources):
            inner = " ".join(f"{name} {usage} {limit}" for name, usage, limit in resources)
            body = b"QUOTA " + astring(root, utf8=utf8) + b" (" + inner.encode("ascii") + b")"
        case r.QuotaRootData(name, roots):
            body = b"QUOTAROOT " + mailbox(name, utf8=utf8)
            body += b"".join(b" " + astring(root, utf8=utf8) for root in roots)
    return b"* " + body + b"\r\n"
