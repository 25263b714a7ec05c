"""A storage ``Query`` compiled to one SQL condition over the message row.

The condition is evaluated with ``m`` (messages), ``b`` (blobs) and ``p``
(parsed cache) joined, so a search is one statement over the mailbox's rows
and the indexes, never a read of message files. Header keys are
case-insensitive substrings of the normalised fields (as RFC 9051 asks);
body keys match whole words and word prefixes through the FTS5 index, as
Dovecot's full-text search does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postwarden.storage.mailbox import (
    Compare,
    HeaderField,
    Query,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchDate,
    SearchFlags,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSize,
    SearchUids,
)

COLUMN = {
    HeaderField.FROM: "from_",
    HeaderField.TO: "to_",
    HeaderField.CC: "cc",
    HeaderField.BCC: "bcc",
    HeaderField.SUBJECT: "subject",
    HeaderField.DATE: "date",
    HeaderField.MESSAGE_ID: "message_id",
    HeaderField.IN_REPLY_TO: "in_reply_to",
    HeaderField.REFERENCES: "refs",
}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class KeywordName:
    """A parameter the store replaces by the keyword's bit in this mailbox."""

    name: str


def compile_query(query: Query, body_table: str = "body_index"
                  ) -> tuple[str, list[object], bool]:
    """(SQL condition, its parameters, whether it needs the parsed cache);
    body words are looked up in ``body_table`` (an FTS5 table of blob ids)."""
    params: list[object] = []
    needs = [False]
    sql = _compile(query, params, needs, body_table)
    return sql, params, needs[0]


def _like(column: str, text: str, params: list[object]) -> str:
    """Case-insensitive substring: LIKE (ASCII case folding in C), or a fold for the rest."""
    if text.isascii():
        params.append("%" + re.sub(r"([\\%_])", r"\\\1", text) + "%")
        return f"coalesce(p.{column}, '') LIKE ? ESCAPE '\\'"
    params.append(text.casefold())
    return f"instr(pw_fold(p.{column}), ?) > 0"


def _compile(q: Query, params: list[object], needs: list[bool], body_table: str) -> str:
    match q:
        case SearchAll():
            return "1"
        case SearchUids(uids):
            if not uids.ranges:
                return "0"
            for r in uids.ranges:
                params.extend(r)
            return "(" + " OR ".join(["m.uid BETWEEN ? AND ?"] * len(uids.ranges)) + ")"
        case SearchFlags(present, absent, keyword, keyword_present):
            parts = [f"(m.flags & {int(present)}) = {int(present)}",
                     f"(m.flags & {int(absent)}) = 0"]
            if keyword is not None:
                params.append(KeywordName(keyword))
                parts.append("(m.keywords & ?) != 0" if keyword_present
                             else "(m.keywords & ?) = 0")
            return "(" + " AND ".join(parts) + ")"
        case SearchHeader(header, text):
            needs[0] = True
            return _like(COLUMN[header], text, params)
        case SearchBody(text, with_headers):
            needs[0] = True
            words = _WORD.findall(text)
            if not words:
                return "1"
            params.append(" AND ".join(f'"{w}"*' for w in words))
            body = f"m.blob_id IN (SELECT rowid FROM {body_table} WHERE {body_table} MATCH ?)"
            if not with_headers:
                return body
            heads = [_like(c, text, params) for c in COLUMN.values()]
            return "(" + " OR ".join([body, *heads]) + ")"
        case SearchDate(compare, when):
            params.append(when)
            return "m.internaldate < ?" if compare is Compare.BEFORE else "m.internaldate >= ?"
        case SearchSize(larger, smaller):
            parts = ["1"]
            if larger is not None:
                params.append(larger)
                parts.append("b.size + length(m.prefix) > ?")
            if smaller is not None:
                params.append(smaller)
                parts.append("b.size + length(m.prefix) < ?")
            return "(" + " AND ".join(parts) + ")"
        case SearchModSeq(at_least):
            params.append(at_least)
            return "m.modseq >= ?"
        case SearchNot(inner):
            return f"NOT ({_compile(inner, params, needs, body_table)})"
        case SearchAnd(queries):
            parts = [_compile(x, params, needs, body_table) for x in queries]
            return "(" + " AND ".join(parts) + ")" if parts else "1"
        case SearchOr(queries):
            parts = [_compile(x, params, needs, body_table) for x in queries]
            return "(" + " OR ".join(parts) + ")" if parts else "0"
