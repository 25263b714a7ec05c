"""A storage ``Query`` compiled to one SQL condition over the message row.

The condition is evaluated with ``m`` (messages), ``b`` (blobs) and ``p``
(parsed cache) joined, so a search is one statement over the mailbox's rows
and the indexes, never a read of message files. Header keys are
case-insensitive substrings of the normalised fields (as RFC 9051 asks);
body keys match whole words and word prefixes through the backend's
full-text index (SQLite's FTS5, PostgreSQL's text search), as Dovecot's
full-text search does. Placeholders are ``?``; the caller runs the text
through ``Dialect.sql``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postwarden.storage import mailbox as mb
from postwarden.storage.sql.dialect import Dialect

COLUMN = {
    mb.HeaderField.FROM: "from_",
    mb.HeaderField.TO: "to_",
    mb.HeaderField.CC: "cc",
    mb.HeaderField.BCC: "bcc",
    mb.HeaderField.SUBJECT: "subject",
    mb.HeaderField.DATE: "date",
    mb.HeaderField.MESSAGE_ID: "message_id",
    mb.HeaderField.IN_REPLY_TO: "in_reply_to",
    mb.HeaderField.REFERENCES: "refs",
}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class KeywordName:
    """A parameter the store replaces by the keyword's bit in this mailbox."""

    name: str


@dataclass(frozen=True, slots=True)
class Compiled:
    """A query as SQL: the condition, its parameters, and what it reads."""

    sql: str
    params: list[object]
    parsed: bool  # it reads the parsed cache (or the body index)
    body: bool  # it searches body text


@dataclass(slots=True)
class _Compiler:
    dialect: Dialect
    body_table: str
    params: list[object]
    parsed: bool = False
    body: bool = False

    def compile(self, query: mb.Query) -> str:
        match query:
            case mb.SearchAll():
                return "true"
            case mb.SearchUids(uids):
                sql, params = self.dialect.uid_condition(uids)
                self.params += params
                return sql
            case mb.SearchFlags(present, absent, keyword, keyword_present):
                parts = [f"(m.flags & {int(present)}) = {int(present)}",
                         f"(m.flags & {int(absent)}) = 0"]
                if keyword is not None:
                    self.params.append(KeywordName(keyword))
                    parts.append(f"(m.keywords & ?) {'<>' if keyword_present else '='} 0")
                return "(" + " AND ".join(parts) + ")"
            case mb.SearchHeader(header, text):
                self.parsed = True
                return self.contains(COLUMN[header], text)
            case mb.SearchBody(text, with_headers):
                self.parsed = True
                words = _WORD.findall(text)
                if not words:
                    return "true"
                self.body = True
                d = self.dialect
                self.params.append(d.word_and.join(d.word.format(w) for w in words))
                body = d.body_match.format(table=self.body_table)
                if not with_headers:
                    return body
                heads = [self.contains(c, text) for c in COLUMN.values()]
                return "(" + " OR ".join([body, *heads]) + ")"
            case mb.SearchDate(compare, when):
                self.params.append(when)
                return "m.internaldate < ?" if compare is mb.Compare.BEFORE \
                    else "m.internaldate >= ?"
            case mb.SearchSize(larger, smaller):
                parts = ["true"]
                if larger is not None:
                    self.params.append(larger)
                    parts.append("b.size + length(m.prefix) > ?")
                if smaller is not None:
                    self.params.append(smaller)
                    parts.append("b.size + length(m.prefix) < ?")
                return "(" + " AND ".join(parts) + ")"
            case mb.SearchModSeq(at_least):
                self.params.append(at_least)
                return "m.modseq >= ?"
            case mb.SearchNot(inner):
                return f"NOT ({self.compile(inner)})"
            case mb.SearchAnd(queries):
                parts = [self.compile(x) for x in queries]
                return "(" + " AND ".join(parts) + ")" if parts else "true"
            case mb.SearchOr(queries):
                parts = [self.compile(x) for x in queries]
                return "(" + " OR ".join(parts) + ")" if parts else "false"

    def contains(self, column: str, text: str) -> str:
        """Case-insensitive substring: the pattern match for ASCII (fast, ASCII case
        folding), else Unicode folding of both sides."""
        d = self.dialect
        if text.isascii():
            self.params.append("%" + re.sub(r"([\\%_])", r"\\\1", text) + "%")
            return f"coalesce(p.{column}, '') {d.like} ? ESCAPE '\\'"
        self.params.append(text)
        return f"{d.position}({d.fold}(coalesce(p.{column}, '')), {d.fold}(?)) > 0"


def compile_query(query: mb.Query, dialect: Dialect, body_table: str = "body_index") -> Compiled:
    """``query`` as one condition; body words are looked up in ``body_table`` where
    the dialect's body match names a table (SQLite's FTS5 table of blob ids)."""
    compiler = _Compiler(dialect, body_table, [])
    sql = compiler.compile(query)
    return Compiled(sql, compiler.params, compiler.parsed, compiler.body)
