"""Sort and thread keys from header fields (RFC 5256): base subject, sent date, references."""

from __future__ import annotations

import datetime
import email.utils
import re
from dataclasses import dataclass

_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")
_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s]+>")
# One whose local part is quoted (RFC 5322 §3.6.4): the quotes are normalised away.
_QUOTED_MSG_ID = re.compile(r'<("(?:[^"\\\r\n]|\\.)*"|[^<>\s@"]+)@([^<>\s]+)>')
_QUOTED_PAIR = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Subject:
    """A Subject as RFC 5256 threads it: the base subject, and whether the message
    is a reply or forward (extraction removed a "Re:"/"Fwd:" leader, a "(fwd)"
    trailer, or a "[fwd: ...]" wrapper; a "[list]" blob alone does not count)."""

    base: str
    reply: bool


def base_subject(subject: str) -> str:
    """The RFC 5256 base subject of a decoded Subject (no "Re:", "[list]", "(fwd)")."""
    return parse_subject(subject).base


def parse_subject(subject: str) -> Subject:
    """RFC 5256 §2.1's extraction (step 1's decoding is done by the parsed cache)."""
    text = " ".join(subject.split())
    reply = False
    while True:
        text, forwarded = _strip_trailers(text)  # step 2
        reply |= forwarded
        while True:  # steps 3-5
            before = text
            while m := _LEADER.match(text):
                reply |= not m.group().isspace()
                text = text[m.end():]
            m = _LEADING_BLOB.match(text)
            if m is not None and text[m.end():]:
                text = text[m.end():]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):  # step 6
            text = text[5:-1]
            reply = True
            continue
        return Subject(text, reply)


def _strip_trailers(text: str) -> tuple[str, bool]:
    """Without trailing blanks and "(fwd)"s; True when a "(fwd)" went."""
    forwarded = False
    while m := _TRAILER.search(text):
        forwarded |= not m.group().isspace()
        text = text[:m.start()]
    return text, forwarded


def sent_date(value: str | None) -> datetime.datetime | None:
    """The Date field as an aware datetime, None when absent or unreadable.

    A date without a usable zone is taken as UTC (RFC 5256: compare in UTC).
    """
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when


def message_ids(value: str | None) -> tuple[str, ...]:
    """The valid msg-ids ("<left@right>", brackets kept) in a field, in order.

    A quoted local part is unquoted, so <"a1"@x> and <a1@x> are one id, as
    RFC 5256's REFERENCES requires; otherwise ids compare case-sensitively.
    """
    if not value:
        return ()
    if '"' not in value:
        return tuple(_MSG_ID.findall(value))
    return tuple(f"<{_unquote(m[1])}@{m[2]}>" for m in _QUOTED_MSG_ID.finditer(value))


def _unquote(local: str) -> str:
    if local.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def thread_references(references: str | None, in_reply_to: str | None) -> tuple[str, ...]:
    """The parent chain for THREAD=REFERENCES (RFC 5256 §3 step 1).

    The References ids; without any valid one, the first valid In-Reply-To id.
    """
    ids = message_ids(references)
    if ids:
        return ids
    return message_ids(in_reply_to)[:1]
