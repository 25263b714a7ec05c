"""SEARCH keys turned into the store's query type, and SORT over the parsed cache.

Most keys have a store equivalent and run on its indexes in one query
(``to_query``). The few that do not (``\\Recent``, which only the session
knows; SENTBEFORE/ON/SINCE; HEADER with a field the store does not index)
are evaluated here over the store's metadata, and combined with the rest
as UID sets (``evaluate``), so an unusual key costs time only for itself.
Every store call goes through the async boundary; HEADER over raw headers
reads the files in one trip.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
from collections.abc import Sequence

from postwarden.mail.mime_headers import field_values
from postwarden.mail.sortkeys import base_subject, sent_date
from postwarden.protocol.imap import search as s
from postwarden.protocol.imap.commands import SortCriterion, SortKey
from postwarden.servers.imap_view import SelectedView
from postwarden.storage import mailbox as m
from postwarden.storage.boundary import AsyncMailboxStore, ReadBlob

_HEADERS = {f.value: f for f in m.HeaderField}
_DAY = 86400.0


def _midnight(day: datetime.date) -> float:
    return datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()


def _flag_query(flag: str, present: bool) -> m.Query | None:
    bit = m.FLAG_NAMES.get(flag.lower())
    if bit is not None:
        return m.SearchFlags(present=bit) if present else m.SearchFlags(absent=bit)
    if flag.startswith("\\"):
        return None  # \Recent: the session's business
    return m.SearchFlags(keyword=flag, keyword_present=present)


def to_query(key: s.SearchKey, view: SelectedView, saved: Sequence[int]) -> m.Query | None:
    """The store's query for ``key``, or None if part of it has no store equivalent."""
    match key:
        case s.All():
            return m.SearchAll()
        case s.FlagKey(flag, present):
            return _flag_query(flag, present)
        case s.Header(name, value) if name.lower() in _HEADERS and value:
            return m.SearchHeader(_HEADERS[name.lower()], value)
        case s.Body(value):
            return m.SearchBody(value)
        case s.Text(value):
            return m.SearchBody(value, with_headers=True)
        case s.InternalDate(op, day):
            start, end = _midnight(day), _midnight(day) + _DAY
            match op:
                case s.DateOp.BEFORE:
                    return m.SearchDate(m.Compare.BEFORE, start)
                case s.DateOp.SINCE:
                    return m.SearchDate(m.Compare.ON_OR_AFTER, start)
            return m.SearchAnd((m.SearchDate(m.Compare.ON_OR_AFTER, start),
                                m.SearchDate(m.Compare.BEFORE, end)))
        case s.Size(op, octets):
            if op is s.SizeOp.LARGER:
                return m.SearchSize(larger_than=octets)
            return m.SearchSize(smaller_than=octets)
        case s.Sequence(numbers):
            return m.SearchUids(view.uid_set(view.messages(numbers, uid=False, saved=saved)))
        case s.Uid(uids):
            return m.SearchUids(view.uid_set(view.messages(uids, uid=True, saved=saved)))
        case s.ModSeq(modseq):
            return m.SearchModSeq(modseq)
        case s.Not(inner):
            query = to_query(inner, view, saved)
            return None if query is None else m.SearchNot(query)
        case s.Or(left, right):
            a, b = to_query(left, view, saved), to_query(right, view, saved)
            return None if a is None or b is None else m.SearchOr((a, b))
        case s.And(keys):
            parts = [to_query(k, view, saved) for k in keys]
            if any(p is None for p in parts):
                return None
            return m.SearchAnd(tuple(p for p in parts if p is not None))
    return None


def _header_value(meta: m.MessageMeta, name: str) -> str | None:
    for key, value in meta.headers:
        if key == name:
            return value
    return None


def _sent_matches(op: s.DateOp, day: datetime.date, meta: m.MessageMeta) -> bool:
    when = sent_date(_header_value(meta, "date"))
    sent = when.date() if when is not None else datetime.datetime.fromtimestamp(
        meta.internaldate, datetime.UTC).date()
    match op:
        case s.DateOp.BEFORE:
            return sent < day
        case s.DateOp.ON:
            return sent == day
    return sent >= day


class Evaluator:
    """Runs one SEARCH: store queries where possible, the rest over metadata."""

    def __init__(self, view: SelectedView, saved: Sequence[int],
                 store: AsyncMailboxStore) -> None:
        self.view = view
        self.saved = saved
        self.store = store
        self.universe = frozenset(view.uids)
        self._metas: list[m.MessageMeta] | None = None

    async def _all_meta(self) -> list[m.MessageMeta]:
        if self._metas is None:
            self._metas = await self.store.metadata(
                self.view.mailbox.id, m.UidSet.all(),
                m.Field.HEADERS | m.Field.SIZE | m.Field.INTERNALDATE)
        return self._metas

    async def run(self, key: s.SearchKey) -> list[int]:
        """Matching UIDs the client knows of, ascending."""
        return sorted(await self.evaluate(key))

    async def evaluate(self, key: s.SearchKey) -> set[int]:
        query = to_query(key, self.view, self.saved)
        if query is not None:
            return {u for u in await self.store.search(self.view.mailbox.id, query)
                    if u in self.universe}
        match key:
            case s.Not(inner):
                return set(self.universe) - await self.evaluate(inner)
            case s.Or(left, right):
                return await self.evaluate(left) | await self.evaluate(right)
            case s.And(keys):
                result = set(self.universe)
                for k in keys:
                    result &= await self.evaluate(k)
                    if not result:
                        break
                return result
            case s.FlagKey(present=present):  # \Recent
                return {u for u in self.universe if self.view.recent(u) == present}
            case s.SentDate(op, day):
                return {meta.uid for meta in await self._all_meta()
                        if meta.uid in self.universe and _sent_matches(op, day, meta)}
            case s.Header(name, value):
                universe = self.universe

                def matching(metas: list[m.MessageMeta], read: ReadBlob) -> set[int]:
                    return {meta.uid for meta in metas
                            if meta.uid in universe and meta.blob is not None
                            and _header_has(m.read_message(read, meta.blob, 0,
                                                           meta.blob.header_size), name, value)}

                return await self.store.read_messages(self.view.mailbox.id, m.UidSet.all(),
                                                      m.Field.SIZE, matching)
        return set()


def _header_has(header: bytes, name: str, value: str) -> bool:
    """HEADER name value over the raw header: decoded, case-insensitive substring."""
    needle = value.lower()
    return any(needle in found.lower() for found in field_values(header, name))


# --- SORT (RFC 5256) ---------------------------------------------------------------------


def _first_mailbox(value: str | None) -> str:
    """The sort key of an address field: the first address's local part (RFC 5256 §3)."""
    if not value:
        return ""
    addresses = email.utils.getaddresses([value])
    if not addresses:
        return ""
    return addresses[0][1].partition("@")[0].lower()


def _sort_value(key: SortKey, meta: m.MessageMeta) -> tuple[float, str]:
    """A number or a string, as one comparable type."""
    match key:
        case SortKey.ARRIVAL:
            return meta.internaldate, ""
        case SortKey.DATE:
            when = sent_date(_header_value(meta, "date"))
            return (when.timestamp() if when is not None else meta.internaldate), ""
        case SortKey.SIZE:
            return float(meta.blob.size if meta.blob is not None else 0), ""
        case SortKey.SUBJECT:  # compared without case, as I18NLEVEL=1 asks (RFC 5256 §1)
            return 0.0, base_subject(_header_value(meta, "subject") or "").casefold()
        case SortKey.FROM:
            return 0.0, _first_mailbox(_header_value(meta, "from"))
        case SortKey.TO:
            return 0.0, _first_mailbox(_header_value(meta, "to"))
    return 0.0, _first_mailbox(_header_value(meta, "cc"))


def sort_uids(metas: Sequence[m.MessageMeta], criteria: Sequence[SortCriterion]) -> list[int]:
    """UIDs in the order of the criteria; ties broken by UID (RFC 5256 §3)."""
    ordered = sorted(metas, key=lambda meta: meta.uid)
    for criterion in reversed(criteria):
        ordered.sort(key=functools.partial(_sort_value, criterion.key),
                     reverse=criterion.reverse)
    return [meta.uid for meta in ordered]
