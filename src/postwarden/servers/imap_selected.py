"""The selected state: SELECT/EXAMINE, FETCH, STORE, SEARCH, SORT, THREAD, COPY/MOVE,
EXPUNGE, CLOSE, UNSELECT, CHECK and NOOP, over a ``SelectedView``.

After each command the news from other sessions goes out with it (new
messages, flag changes), and expunges too unless the command was a FETCH,
STORE or SEARCH by sequence number (RFC 9051 §7.5.1). Large FETCHes go in
batches: one trip through the store boundary per batch, output flushed
between batches so memory stays bounded whatever the mailbox size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.fetch import sets_seen
from postwarden.protocol.imap.search import uses_modseq
from postwarden.servers import imap_fetch
from postwarden.servers.imap_core import SessionCore
from postwarden.servers.imap_search import Evaluator, sort_uids
from postwarden.servers.imap_thread import thread
from postwarden.servers.imap_view import SYSTEM_FLAGS, SelectedView, flag_names
from postwarden.storage.boundary import ReadBlob
from postwarden.storage.events import MailboxWatch
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import (
    Field,
    Flag,
    FlagChange,
    FlagMode,
    FlagUpdate,
    MessageMeta,
    QuotaExceeded,
    SearchFlags,
    UidSet,
    split_flags,
)

FETCH_BATCH = 2000  # messages per trip through the store boundary
_MODES = {c.StoreMode.REPLACE: FlagMode.SET, c.StoreMode.ADD: FlagMode.ADD,
          c.StoreMode.REMOVE: FlagMode.REMOVE}
_READ_ONLY = r.Done(r.Status.NO, "The mailbox is read-only", r.Code.READ_ONLY)


def _by_number(pairs: Sequence[tuple[int, int]]) -> dict[int, int]:
    return {u: n for n, u in pairs}


class SelectedCommands(SessionCore):
    def __init__(self) -> None:
        self.view: SelectedView | None = None
        self.watch: MailboxWatch | None = None  # the selected mailbox's change hints
        self.saved: list[int] = []  # SEARCHRES ($), as UIDs

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.machine.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.machine.enabled

    def close_view(self) -> None:
        if self.watch is not None:
            self.watch.close()
        self.view = self.watch = None
        self.saved = []

    # --- news from elsewhere ----------------------------------------------------------

    async def news(self, *, poll: bool = False) -> bool:
        """Has the selected mailbox changed since the client last heard?

        The change feed says so at no cost; ``poll`` also asks the store
        (O(1)), for a hint lost between processes.
        """
        view, watch = self.view, self.watch
        if view is None or watch is None:
            return False
        if watch.pending():
            watch.take()
            return True
        if not poll:
            return False
        try:
            status = await self.services.mailboxes.status(view.mailbox.id)
        except NotFound:
            return False
        return status.highestmodseq > view.modseq

    async def push_updates(self, *, expunge: bool, poll: bool = False,
                           heard: bool = False) -> None:
        """Send what changed elsewhere (expunges only if ``expunge``); ``heard``:
        the caller has just taken a change hint itself."""
        view = self.view
        if view is None:
            return
        if heard or await self.news(poll=poll):
            changes = await self.services.mailboxes.changes_since(view.mailbox.id, view.modseq)
            view.absorb(changes, with_modseq=self.condstore)
            if view.unclaimed:  # new mail: \Recent here unless another session took it
                view.claim(await self.services.mailboxes.claim_recent(view.mailbox.id))
        for response in view.release(expunge=expunge, qresync=self.qresync,
                                     rev2=self.machine.imap4rev2):
            self.machine.send(response)

    async def selected_command(self, command: c.Command) -> None:
        match command:
            case c.Select():
                await self.select(command)
            case c.Noop() | c.Check():
                await self.push_updates(expunge=True, poll=True)
                self.machine.send(r.Done(r.Status.OK, f"{_verb(command)} completed"))
            case c.Close() | c.Unselect():
                await self.close(command)
            case _ if self.view is None:  # the machine only sends these when selected
                self.machine.send(r.Done(r.Status.BAD, "No mailbox selected"))
            case c.Fetch():
                await self.fetch(command, self.view)
            case c.Store():
                await self.store_flags(command, self.view)
            case c.Search() | c.Sort() | c.Thread():
                await self.search(command, self.view)
            case c.Copy():
                await self.copy(command, self.view)
            case c.Expunge():
                await self.expunge(command, self.view)
            case _:
                self.machine.send(r.Done(r.Status.BAD, "Command not supported"))

    # --- SELECT, CLOSE ------------------------------------------------------------------

    async def select(self, command: c.Select) -> None:
        send, mailboxes = self.machine.send, self.services.mailboxes
        if self.view is not None:
            self.close_view()
            send(r.Condition(r.Status.OK, "Previous mailbox closed", r.Code.CLOSED))
        mailbox = await mailboxes.get_mailbox(self.account, command.mailbox)
        if mailbox is None:
            send(r.Done(r.Status.NO, "No such mailbox", r.Code.NONEXISTENT))
            return
        self.watch = self.services.changes.watch(mailbox.id)  # before reading: miss nothing
        status = await mailboxes.status(mailbox.id)
        uids = await mailboxes.uids(mailbox.id)
        recent = (range(status.uidnext, status.uidnext) if command.readonly
                  else await mailboxes.claim_recent(mailbox.id))
        view = SelectedView(mailbox, uids, status.highestmodseq, readonly=command.readonly,
                            recent=recent)
        rev2 = self.machine.imap4rev2
        send(r.Flags(SYSTEM_FLAGS))
        send(r.Exists(view.count))
        if not rev2:
            send(r.Recent(view.recent_count))
            if status.unseen:
                unseen = await mailboxes.search(mailbox.id, SearchFlags(absent=Flag.SEEN))
                number = view.number(unseen[0]) if unseen else None
                if number is not None:
                    send(r.Condition(r.Status.OK, "First unseen", r.Unseen(number)))
        send(r.Condition(r.Status.OK, "Flags the client may change", r.PermanentFlags(
            () if command.readonly else (*SYSTEM_FLAGS, "\\*"))))
        send(r.Condition(r.Status.OK, "UIDs valid", r.UidValidity(mailbox.uidvalidity)))
        send(r.Condition(r.Status.OK, "Predicted next UID", r.UidNext(status.uidnext)))
        send(r.Condition(r.Status.OK, "Highest", r.HighestModSeq(status.highestmodseq)))
        self.view = view
        if command.qresync is not None and command.qresync.uidvalidity == mailbox.uidvalidity:
            await self.resync(view, command.qresync)
        self.machine.send(r.Done(r.Status.OK, "SELECT completed" if not command.readonly
                                 else "EXAMINE completed"))

    async def resync(self, view: SelectedView, qresync: c.QResync) -> None:
        """QRESYNC (RFC 7162 §3.2.5): what vanished and what changed since the client's MODSEQ."""
        changes = await self.services.mailboxes.changes_since(view.mailbox.id, qresync.modseq)
        known = qresync.known_uids
        wanted = (None if known is None
                  else UidSet.of(known.resolve(max(view.last_uid, changes.vanished[-1]
                                                   if changes.vanished else 0))))
        vanished = tuple(u for u in changes.vanished if wanted is None or u in wanted)
        if vanished:
            self.machine.send(r.Vanished(vanished, earlier=True))
        for update in changes.changed:
            number = view.number(update.uid)
            if number is None or (wanted is not None and update.uid not in wanted):
                continue
            self.machine.send(r.FetchData(number, (
                r.UidItem(update.uid),
                r.FlagsItem(flag_names(update.flags, update.keywords, view.recent(update.uid))),
                r.ModSeqItem(update.modseq))))

    async def close(self, command: c.Close | c.Unselect) -> None:
        view = self.view
        if view is not None and isinstance(command, c.Close) and not view.readonly:
            await self.services.mailboxes.expunge(view.mailbox.id)
        self.close_view()
        self.machine.send(r.Done(r.Status.OK, f"{_verb(command)} completed"))

    # --- FETCH ------------------------------------------------------------------------------

    async def fetch(self, command: c.Fetch, view: SelectedView) -> None:
        mailboxes = self.services.mailboxes
        pairs = view.messages(command.messages, uid=command.uid, saved=self.saved)
        plan = imap_fetch.plan(command.attributes, uid=command.uid,
                               modseq=command.changed_since is not None,
                               utf8=self.machine.utf8)
        if command.vanished and command.changed_since is not None and pairs:
            changes = await mailboxes.changes_since(view.mailbox.id, command.changed_since)
            asked = UidSet.of(command.messages.resolve(view.last_uid))
            gone = tuple(u for u in changes.vanished if u in asked)
            if gone:
                self.machine.send(r.Vanished(gone, earlier=True))
        seen: frozenset[int] = frozenset()
        if pairs and not view.readonly and any(sets_seen(a) for a in command.attributes):
            result = await mailboxes.store_flags(view.mailbox.id, view.uid_set(pairs),
                                                 FlagChange(FlagMode.ADD, Flag.SEEN))
            for update in result.changed:
                view.reported(update.uid, update.modseq)
            seen = frozenset(update.uid for update in result.changed)
        failed: list[int] = []
        unknown = False
        spans = imap_fetch.spans(plan, len(pairs))

        def render(i: int) -> asyncio.Future[imap_fetch.Wire] | None:
            if i >= len(spans):
                return None
            start, stop = spans[i]
            return asyncio.ensure_future(self._fetch_batch(
                view, pairs[start:stop], plan, seen, command.changed_since))

        # The next batch renders while this one is written: at most two in memory.
        upcoming = render(0)
        try:
            for i in range(len(spans)):
                assert upcoming is not None
                wire = await upcoming
                upcoming = render(i + 1)
                self.machine.send(r.FetchBlock(wire.data))
                failed += wire.failed
                unknown = unknown or wire.unknown_encoding
                await self.flush()
        finally:
            if upcoming is not None:
                upcoming.cancel()
        await self.push_updates(expunge=command.uid)
        if unknown:
            self.machine.send(r.Done(r.Status.NO, "Unknown Content-Transfer-Encoding",
                                     r.Code.UNKNOWN_CTE))
        elif failed:
            self.machine.send(r.Done(r.Status.NO, "Some messages could not be read: "
                                     + ",".join(map(str, failed[:20])), r.Code.SERVERBUG))
        else:
            self.machine.send(r.Done(r.Status.OK, "FETCH completed"))

    async def _fetch_batch(self, view: SelectedView, batch: Sequence[tuple[int, int]],
                           plan: imap_fetch.FetchPlan, seen: frozenset[int],
                           changed_since: int | None) -> imap_fetch.Wire:
        """One store trip for the batch: its metadata, then its responses, encoded
        off the event loop (sections are read from the files as they go); a
        second trip if some message is not in the parsed cache yet."""
        recent = view.recent_claims  # replaced, never changed: safe to read on the thread

        def render(metas: list[MessageMeta], read: ReadBlob) -> imap_fetch.Wire | None:
            if imap_fetch.lacks(plan, metas):
                return None
            chosen = [(n, meta) for (n, uid), meta in zip(batch, metas, strict=False)
                      if uid == meta.uid]  # usually all: the UIDs asked for, in order
            if len(chosen) != len(batch):  # some were expunged meanwhile
                numbers = _by_number(batch)
                chosen = [(numbers[meta.uid], meta) for meta in metas if meta.uid in numbers]
            if changed_since is not None:
                chosen = [(n, meta) for n, meta in chosen if meta.modseq > changed_since]
            return imap_fetch.render_wire(read, plan, chosen, recent, seen)

        read_messages = self.services.mailboxes.read_messages
        uids = view.uid_set(batch)
        wire = await read_messages(view.mailbox.id, uids, plan.fields, render)
        if wire is None:
            wire = await read_messages(view.mailbox.id, uids, plan.fields | plan.uncached,
                                       render)
        assert wire is not None  # with the file fields, nothing lacks
        return wire

    # --- STORE ------------------------------------------------------------------------------

    async def store_flags(self, command: c.Store, view: SelectedView) -> None:
        if view.readonly:
            self.machine.send(_READ_ONLY)
            return
        mailboxes = self.services.mailboxes
        pairs = view.messages(command.messages, uid=command.uid, saved=self.saved)
        bits, keywords = split_flags(f for f in command.flags if f.lower() != "\\recent")
        change = FlagChange(_MODES[command.mode], bits, keywords, command.unchanged_since)
        failed: tuple[int, ...] = ()
        if pairs:
            result = await mailboxes.store_flags(view.mailbox.id, view.uid_set(pairs), change)
            failed = result.failed
            for update in result.changed:
                view.reported(update.uid, update.modseq)
            await self._report_flags(command, view, pairs, result.changed, set(failed))
        await self.push_updates(expunge=command.uid)
        if failed:
            numbers = _by_number(pairs)
            modified = sorted(failed) if command.uid else sorted(numbers[u] for u in failed)
            self.machine.send(r.Done(r.Status.OK, "Conditional STORE failed for some",
                                     r.Modified(tuple(modified))))
        else:
            self.machine.send(r.Done(r.Status.OK, "STORE completed"))

    async def _report_flags(self, command: c.Store, view: SelectedView,
                            pairs: Sequence[tuple[int, int]], changed: Sequence[FlagUpdate],
                            failed: set[int]) -> None:
        """The FETCH responses of a STORE: every message's flags, or with .SILENT
        under CONDSTORE only the new MODSEQs (RFC 7162 §3.1.3)."""
        numbers = _by_number(pairs)
        if command.silent:
            if not (self.condstore and command.unchanged_since is not None):
                return
            for update in changed:
                items: tuple[r.FetchItem, ...] = (r.ModSeqItem(update.modseq),)
                if command.uid:
                    items = (r.UidItem(update.uid), *items)
                self.machine.send(r.FetchData(numbers[update.uid], items))
            return
        kept = [(n, u) for n, u in pairs if u not in failed]
        for at in range(0, len(kept), FETCH_BATCH):
            batch = kept[at:at + FETCH_BATCH]
            for meta in await self.services.mailboxes.metadata(view.mailbox.id,
                                                               view.uid_set(batch)):
                items = (r.FlagsItem(flag_names(meta.flags, meta.keywords,
                                                view.recent(meta.uid))),)
                if command.uid:
                    items = (r.UidItem(meta.uid), *items)
                if self.condstore:
                    items = (*items, r.ModSeqItem(meta.modseq))
                if meta.uid in numbers:
                    self.machine.send(r.FetchData(numbers[meta.uid], items))
            await self.flush()

    # --- SEARCH, SORT, THREAD ------------------------------------------------------------------

    async def search(self, command: c.Search | c.Sort | c.Thread, view: SelectedView) -> None:
        mailboxes = self.services.mailboxes
        uids = await Evaluator(view, self.saved, mailboxes).run(command.key)
        modseq: int | None = None
        if uses_modseq(command.key) and uids:
            metas = await mailboxes.metadata(view.mailbox.id, UidSet.from_uids(uids))
            modseq = max(meta.modseq for meta in metas) if metas else None
        # SORT and THREAD parse every Date and Subject they are given (seconds of CPU
        # for 100,000 messages): done beside the metadata read, off the event loop.
        match command:
            case c.Sort(criteria=criteria):
                ordered = await mailboxes.read_messages(
                    view.mailbox.id, UidSet.from_uids(uids),
                    Field.HEADERS | Field.SIZE | Field.INTERNALDATE,
                    lambda metas, _: sort_uids(metas, criteria))
                self.machine.send(r.SortData(self._numbers(view, ordered, command.uid), modseq))
            case c.Thread(algorithm=algorithm):
                shown = dict(zip(uids, uids if command.uid else  # read on another thread
                                 [view.number(u) or 0 for u in uids], strict=True))
                threads = await mailboxes.read_messages(
                    view.mailbox.id, UidSet.from_uids(uids), Field.HEADERS | Field.INTERNALDATE,
                    lambda metas, _: thread(algorithm, metas, shown.__getitem__))
                self.machine.send(r.ThreadData(threads))
            case c.Search(returns=None):
                self.machine.send(r.SearchData(self._numbers(view, uids, command.uid), modseq))
            case c.Search(returns=returns):
                self._esearch(command, view, uids, returns or (), modseq)
        await self.push_updates(expunge=command.uid)
        self.machine.send(r.Done(r.Status.OK, f"{_verb(command)} completed"))

    @staticmethod
    def _numbers(view: SelectedView, uids: Sequence[int], uid: bool) -> tuple[int, ...]:
        if uid:
            return tuple(uids)
        return tuple(n for n in map(view.number, uids) if n is not None)

    def _esearch(self, command: c.Search, view: SelectedView, uids: list[int],
                 returns: tuple[c.SearchReturn, ...], modseq: int | None) -> None:
        """ESEARCH (RFC 4731) and SAVE (RFC 5182)."""
        options = set(returns)
        if c.SearchReturn.SAVE in options:
            options.discard(c.SearchReturn.SAVE)
            only_ends = options and options <= {c.SearchReturn.MIN, c.SearchReturn.MAX}
            if only_ends and uids:
                ends = {uids[0]} if c.SearchReturn.MIN in options else set()
                ends |= {uids[-1]} if c.SearchReturn.MAX in options else set()
                self.saved = sorted(ends)
            else:
                self.saved = list(uids)
            if not options:
                return
        if not options:
            options = {c.SearchReturn.ALL}
        numbers = self._numbers(view, uids, command.uid)
        SR = c.SearchReturn
        self.machine.send(r.ESearchData(
            uid=command.uid,
            min=numbers[0] if SR.MIN in options and numbers else None,
            max=numbers[-1] if SR.MAX in options and numbers else None,
            count=len(numbers) if SR.COUNT in options else None,
            all=numbers if SR.ALL in options and numbers else None,
            modseq=modseq,
        ))

    # --- COPY, MOVE, EXPUNGE --------------------------------------------------------------------

    async def copy(self, command: c.Copy, view: SelectedView) -> None:
        mailboxes = self.services.mailboxes
        if command.move and view.readonly:
            self.machine.send(_READ_ONLY)
            return
        target = await mailboxes.get_mailbox(self.account, command.mailbox)
        if target is None:
            self.machine.send(r.Done(r.Status.NO, "No such mailbox", r.Code.TRYCREATE))
            return
        pairs = view.messages(command.messages, uid=command.uid, saved=self.saved)
        code: r.CopyUid | None = None
        if pairs:
            operation = mailboxes.move if command.move else mailboxes.copy
            try:
                result = await operation(view.mailbox.id, view.uid_set(pairs), target.id)
            except QuotaExceeded:
                self.machine.send(r.Done(r.Status.NO, "Over quota", r.Code.OVERQUOTA))
                return
            if result.mapping:
                code = r.CopyUid(result.uidvalidity, tuple(s for s, _ in result.mapping),
                                 tuple(t for _, t in result.mapping))
            if command.move:
                self.machine.send(r.Condition(r.Status.OK, "Moved", code))
                for response in view.remove(sorted(s for s, _ in result.mapping),
                                            qresync=self.qresync):
                    self.machine.send(response)
        await self.push_updates(expunge=True)
        verb = "MOVE" if command.move else "COPY"
        self.machine.send(r.Done(r.Status.OK, f"{verb} completed",
                                 None if command.move else code))

    async def expunge(self, command: c.Expunge, view: SelectedView) -> None:
        if view.readonly:
            self.machine.send(_READ_ONLY)
            return
        uids: UidSet | None = None
        if command.uids is not None:
            pairs = view.messages(command.uids, uid=True, saved=self.saved)
            uids = view.uid_set(pairs)
        if uids is None or uids.ranges:
            expunged = await self.services.mailboxes.expunge(view.mailbox.id, uids)
            for response in view.remove(sorted(e.uid for e in expunged), qresync=self.qresync):
                self.machine.send(response)
        await self.push_updates(expunge=True)
        self.machine.send(r.Done(r.Status.OK, "EXPUNGE completed"))


def _verb(command: c.Command) -> str:
    return type(command).__name__.upper()
