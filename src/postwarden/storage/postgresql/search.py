"""A storage ``Query`` compiled to one PostgreSQL condition over the message row.

Evaluated with ``m`` (messages), ``b`` (blobs) and ``p`` (parsed cache)
joined, like the SQLite backend's. Header keys are case-insensitive
substrings (``strpos`` on ``lower``, which folds any script under a UTF-8
database); body keys match whole words and word prefixes through
PostgreSQL's own text search (a GIN index on a ``simple`` tsvector: no
stemming, as with SQLite's FTS5).
"""

from __future__ import annotations

import re

from postwarden.storage.mailbox import (
    Compare,
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
    UidSet,
)
from postwarden.storage.sqlite.search import COLUMN

_WORD = re.compile(r"\w+")
INLINE_RANGES = 32  # more UID ranges than this go in as two arrays


def uid_condition(uids: UidSet) -> tuple[str, list[object]]:
    """``m.uid`` in the set: a few BETWEENs, or a join on arrays of range bounds."""
    ranges = uids.ranges
    if not ranges:
        return "false", []
    if len(ranges) <= INLINE_RANGES:
        return ("(" + " OR ".join(["m.uid BETWEEN %s AND %s"] * len(ranges)) + ")",
                [n for r in ranges for n in r])
    return ("EXISTS (SELECT 1 FROM unnest(%s::bigint[], %s::bigint[]) r(lo, hi)"
            " WHERE m.uid BETWEEN r.lo AND r.hi)",
            [[r[0] for r in ranges], [r[1] for r in ranges]])


def compile_query(query: Query) -> tuple[str, list[object], bool]:
    """(SQL condition, its parameters, whether it needs the parsed cache)."""
    params: list[object] = []
    needs = [False]
    sql = _compile(query, params, needs)
    return sql, params, needs[0]


def _contains(column: str, text: str, params: list[object]) -> str:
    params.append(text)
    return f"strpos(lower(coalesce(p.{column}, '')), lower(%s)) > 0"


def _compile(q: Query, params: list[object], needs: list[bool]) -> str:
    match q:
        case SearchAll():
            return "true"
        case SearchUids(uids):
            sql, more = uid_condition(uids)
            params.extend(more)
            return sql
        case SearchFlags(present, absent, keyword, keyword_present):
            parts = [f"(m.flags & {int(present)}) = {int(present)}",
                     f"(m.flags & {int(absent)}) = 0"]
            if keyword is not None:
                params.append(keyword)
                bits = ("coalesce((SELECT 1::bigint << k.bit FROM keywords k"
                        " WHERE k.mailbox_id = m.mailbox_id AND k.name = %s), 0)")
                parts.append(f"(m.keywords & {bits}) {'<>' if keyword_present else '='} 0")
            return "(" + " AND ".join(parts) + ")"
        case SearchHeader(header, text):
            needs[0] = True
            return _contains(COLUMN[header], text, params)
        case SearchBody(text, with_headers):
            needs[0] = True
            words = _WORD.findall(text.lower())
            if not words:
                return "true"
            params.append(" & ".join(f"{w}:*" for w in words))
            body = "coalesce(p.body @@ to_tsquery('simple', %s), false)"
            if not with_headers:
                return body
            heads = [_contains(c, text, params) for c in COLUMN.values()]
            return "(" + " OR ".join([body, *heads]) + ")"
        case SearchDate(compare, when):
            params.append(when)
            return "m.internaldate < %s" if compare is Compare.BEFORE else "m.internaldate >= %s"
        case SearchSize(larger, smaller):
            parts = ["true"]
            if larger is not None:
                params.append(larger)
                parts.append("b.size + length(m.prefix) > %s")
            if smaller is not None:
                params.append(smaller)
                parts.append("b.size + length(m.prefix) < %s")
            return "(" + " AND ".join(parts) + ")"
        case SearchModSeq(at_least):
            params.append(at_least)
            return "m.modseq >= %s"
        case SearchNot(inner):
            return f"NOT ({_compile(inner, params, needs)})"
        case SearchAnd(queries):
            return "(" + " AND ".join(_compile(x, params, needs) for x in queries) + ")" \
                if queries else "true"
        case SearchOr(queries):
            return "(" + " OR ".join(_compile(x, params, needs) for x in queries) + ")" \
                if queries else "false"
