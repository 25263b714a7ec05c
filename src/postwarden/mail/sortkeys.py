"""Sort keys from header fields: base subject and sent date (RFC 5256 §2.1, §2.2)."""

from __future__ import annotations

import datetime
import email.utils
import re

_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")


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
