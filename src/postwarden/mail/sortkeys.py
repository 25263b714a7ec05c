"""Sort and thread keys from header fields (RFC 5256): base subject, sent date, references."""

from __future__ import annotations

import datetime
import email.utils
import re

_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")
_MSG_ID = re.compile(r"<([^<>\s@]+@[^<>\s]+)>")


def base_subject(subject: str) -> str:
    """The RFC 5256 base subject of a decoded Subject (no "Re:", "[list]", "(fwd)")."""
    text = " ".join(subject.split())
    while True:
        text = _strip_trailers(text)  # step 2
        while True:  # steps 3-5
            before = text
            while m := _LEADER.match(text):
                text = text[m.end():]
            m = _LEADING_BLOB.match(text)
            if m is not None and text[m.end():]:
                text = text[m.end():]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):  # step 6
            text = text[5:-1]
            continue
        return text


def _strip_trailers(text: str) -> str:
    while m := _TRAILER.search(text):
        text = text[:m.start()]
    return text


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
    """The valid msg-ids ("<left@right>", brackets kept) in a field, in order."""
    if not value:
        return ()
    return tuple(f"<{m.group(1)}>" for m in _MSG_ID.finditer(value))


def thread_references(references: str | None, in_reply_to: str | None) -> tuple[str, ...]:
    """The parent chain for THREAD=REFERENCES (RFC 5256 §3 step 1).

    The References ids; without any valid one, the first valid In-Reply-To id.
    """
    ids = message_ids(references)
    if ids:
        return ids
    return message_ids(in_reply_to)[:1]
