"""The selected mailbox as one IMAP session sees it: numbers, UIDs and held news.

A message sequence number is a position in the session's UID array, and
that array changes only when the client is told (EXISTS, EXPUNGE or
VANISHED). What other sessions (or SMTP) did is read from the store with
``changes_since`` and held here until RFC 9051 §7.5.1 lets it out: an
EXPUNGE renumbers the messages after it, so it is never sent while a FETCH,
STORE or SEARCH by sequence number is answered; new messages (EXISTS) and
flag changes (FETCH) may go with any command. The view itself does no I/O:
the session reads the store and hands the answers in (``absorb``).
"""

from __future__ import annotations

import bisect
import hashlib
import weakref
from array import array
from collections.abc import Iterable, Sequence

from postwarden.protocol.imap import responses as r
from postwarden.protocol.imap.sequence import SequenceSet
from postwarden.storage.mailbox import Changes, Flag, Mailbox, UidSet

SYSTEM_FLAGS: tuple[str, ...] = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_NAME = {
    Flag.SEEN: "\\Seen", Flag.ANSWERED: "\\Answered", Flag.FLAGGED: "\\Flagged",
    Flag.DELETED: "\\Deleted", Flag.DRAFT: "\\Draft",
}


def flag_names(flags: Flag, keywords: Iterable[str], recent: bool = False) -> tuple[str, ...]:
    """The FLAGS list of a message: system flags, then keywords (sorted: stable output)."""
    names = [name for bit, name in _FLAG_NAME.items() if flags & bit]
    names += sorted(keywords)
    if recent:
        names.append("\\Recent")
    return tuple(names)


# Sessions on one mailbox mostly hold the same UID array (400 KB at 100,000
# messages): each distinct array is kept once, shared by every view holding it.
_SHARED: weakref.WeakValueDictionary[tuple[int, bytes], array[int]] = (
    weakref.WeakValueDictionary())


def shared(mailbox_id: int, uids: array[int]) -> array[int]:
    """The one shared array equal to ``uids`` (which views never change in place)."""
    key = (mailbox_id, hashlib.blake2b(uids.tobytes(), digest_size=16).digest())
    found = _SHARED.get(key)
    if found is not None:
        return found
    _SHARED[key] = uids
    return uids


class SelectedView:
    """Sequence numbers, the MODSEQ the client knows, and updates not yet sent."""

    def __init__(self, mailbox: Mailbox, uids: array[int], modseq: int, *, readonly: bool,
                 recent: range) -> None:
        self.mailbox = mailbox
        # Ascending; position + 1 is the sequence number. Shared: replaced, never changed.
        self.uids = shared(mailbox.id, uids)
        self.modseq = modseq  # everything up to here has been read from the store
        self.readonly = readonly
        # The UID ranges this session claimed as \Recent (at SELECT, then as new mail
        # shows up): RFC 3501 gives each new message \Recent in one session only.
        # Replaced, never changed, so a FETCH rendering on a thread reads a whole tuple.
        self.recent_claims: tuple[range, ...] = (recent,) if recent else ()
        self.claimed_to = recent.stop  # UIDs from here on are not claimed by this session
        self._arrived: list[int] = []  # new UIDs, not yet announced by EXISTS
        self._vanished: set[int] = set()  # expunged elsewhere, not yet announced
        self._flags: dict[int, r.FetchData] = {}  # flag changes by others, by UID
        # (uid -> modseq) of this session's own flag changes, already reported to
        # the client: ``absorb`` must not report them a second time.
        self._own: dict[int, int] = {}

    # --- numbers and UIDs -------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.uids)

    @property
    def last_uid(self) -> int:
        if self._arrived:
            return self._arrived[-1]
        return self.uids[-1] if self.uids else 0

    def number(self, uid: int) -> int | None:
        """The sequence number of a UID in the view, None if the client does not know it."""
        at = bisect.bisect_left(self.uids, uid)
        if at < len(self.uids) and self.uids[at] == uid:
            return at + 1
        return None

    def recent(self, uid: int) -> bool:
        return any(uid in claim for claim in self.recent_claims)

    @property
    def recent_count(self) -> int:
        uids = self.uids
        return sum(bisect.bisect_left(uids, c.stop) - bisect.bisect_left(uids, c.start)
                   for c in self.recent_claims)

    @property
    def unclaimed(self) -> bool:
        """New mail this read-write view has not tried to claim as \\Recent yet."""
        return not self.readonly and self.last_uid >= self.claimed_to

    def claim(self, claimed: range) -> None:
        """A later claim: the UIDs no other session took since ours."""
        self.claimed_to = max(self.claimed_to, claimed.stop)
        if claimed:
            self.recent_claims = (*self.recent_claims, claimed)

    def messages(self, numbers: SequenceSet, *, uid: bool,
                 saved: Sequence[int] = ()) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages a set names, ascending.

        A UID set keeps only UIDs the client knows of (RFC 9051 §6.4.9); ``*``
        is the largest of them. ``saved`` is the SEARCHRES result (``$``), UIDs.
        """
        uids = self.uids
        if numbers.saved:
            found = ((self.number(u), u) for u in sorted(set(saved)))
            return [(n, u) for n, u in found if n is not None]
        out: list[tuple[int, int]] = []
        if not uid:
            for low, high in numbers.resolve(len(uids)):
                last = min(high, len(uids))
                out += zip(range(low, last + 1), uids[low - 1:last], strict=True)
            return out
        for low, high in numbers.resolve(uids[-1] if uids else 0):
            start = bisect.bisect_left(uids, low)
            stop = bisect.bisect_right(uids, high)
            out += zip(range(start + 1, stop + 1), uids[start:stop], strict=True)
        return out

    @staticmethod
    def uid_set(pairs: Sequence[tuple[int, int]]) -> UidSet:
        """The store's UID set for (number, UID) pairs, ascending and distinct as
        ``messages`` gives them (contiguous runs become ranges)."""
        if pairs and pairs[-1][1] - pairs[0][1] == len(pairs) - 1:  # one run: FETCH 1:*
            return UidSet.of([(pairs[0][1], pairs[-1][1])])
        ranges: list[tuple[int, int]] = []
        for _, u in pairs:
            if ranges and u == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], u)
            else:
                ranges.append((u, u))
        return UidSet.of(ranges)

    # --- what happened elsewhere ---------------------------------------------------------

    def reported(self, uid: int, modseq: int) -> None:
        """This session told its client of a change it made (STORE, FETCH setting \\Seen)."""
        self._own[uid] = modseq

    def absorb(self, changes: Changes, *, with_modseq: bool) -> None:
        """Take what the store says changed since ``modseq``; hold it for ``release``."""
        last = self.last_uid
        for update in changes.changed:
            if update.uid > last:
                self._arrived.append(update.uid)
                last = update.uid
                continue
            if self._own.get(update.uid) == update.modseq or self.number(update.uid) is None:
                continue
            items: list[r.FetchItem] = [
                r.UidItem(update.uid),
                r.FlagsItem(flag_names(update.flags, update.keywords, self.recent(update.uid))),
            ]
            if with_modseq:
                items.append(r.ModSeqItem(update.modseq))
            self._flags[update.uid] = r.FetchData(0, tuple(items))
        for uid in changes.vanished:
            self._flags.pop(uid, None)
            if self.number(uid) is not None:
                self._vanished.add(uid)
            elif uid in self._arrived:
                self._arrived.remove(uid)
        self._own.clear()
        self.modseq = max(self.modseq, changes.highestmodseq)

    def release(self, *, expunge: bool, qresync: bool, rev2: bool) -> list[r.Untagged]:
        """The held updates that may be sent now, in a safe order."""
        out: list[r.Untagged] = []
        if expunge and self._vanished:
            out += self.remove(sorted(self._vanished), qresync=qresync)
            self._vanished.clear()
        if self._arrived:
            self.uids = shared(self.mailbox.id, self.uids + array("I", self._arrived))
            self._arrived.clear()
            out.append(r.Exists(len(self.uids)))
            if not rev2:
                out.append(r.Recent(self.recent_count))
        for uid, data in sorted(self._flags.items()):
            number = self.number(uid)
            if number is not None:
                out.append(r.FetchData(number, data.items))
        self._flags.clear()
        return out

    def remove(self, uids: Sequence[int], *, qresync: bool) -> list[r.Untagged]:
        """Take expunged UIDs (ascending) out of the view; the responses that say so."""
        gone = [u for u in uids if self.number(u) is not None]
        if not gone:
            return []
        out: list[r.Untagged]
        if qresync:
            out = [r.Vanished(tuple(gone))]
        else:
            # Each EXPUNGE renumbers the ones after it: the k-th (from 0) of
            # ascending positions is announced as its position minus k.
            positions = [self.number(u) or 0 for u in gone]
            out = [r.Expunged(p - k) for k, p in enumerate(positions)]
        dropped = set(gone)
        self.uids = shared(self.mailbox.id,
                           array("I", (u for u in self.uids if u not in dropped)))
        self._vanished -= dropped
        return out
